//! `GET /api/stats[/{camera}]`: the guide's stream-manager numbers (frames, dropped, latency,
//! bandwidth, viewers, and where they sit on adaptive ladders) per camera. Totals come from the metrics; rates and the recent latency come
//! from the difference between now and a sample taken a few seconds ago by a background task.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::metrics::{CameraTotals, Metrics};

/// How far back rates look.
const WINDOW: Duration = Duration::from_secs(3);
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

type Sample = (Instant, BTreeMap<String, CameraTotals>);

#[derive(Default)]
pub struct StatsWindow {
    samples: Mutex<VecDeque<Sample>>,
}

impl StatsWindow {
    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back(sample);
        while samples.len() > 1 && samples[1].0.elapsed() >= WINDOW {
            samples.pop_front();
        }
    }

    fn oldest(&self) -> Option<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .front()
            .cloned()
    }
}

/// Samples the metrics in the background, for rates.
pub fn spawn_sampler(window: Arc<StatsWindow>, metrics: Arc<Metrics>) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            window.push((Instant::now(), metrics.camera_totals()));
        }
    });
}

/// One camera's numbers, from its totals now and (for rates) `before` seconds ago.
pub fn camera_stats(now: &CameraTotals, before: Option<(&CameraTotals, f64)>) -> Value {
    let dropped: f64 = now.dropped.values().sum();
    let mut stats = json!({
        "frames_captured": now.frames_captured,
        "frames_sent": now.frames_sent,
        "bytes_sent": now.bytes_sent,
        "dropped": dropped,
        "dropped_by_reason": now.dropped,
        "viewers": now.viewers,
        "ladder_viewers_per_step": now.ladder,
        "rtp_packets_lost": now.rtp_packets_lost,
    });
    if let Some((old, seconds)) = before.filter(|(_, s)| *s > 0.0) {
        let rate = |a: f64, b: f64| ((a - b) / seconds * 10.0).round() / 10.0;
        let old_dropped: f64 = old.dropped.values().sum();
        let sent = now.latency_count - old.latency_count;
        stats["window_seconds"] = json!((seconds * 10.0).round() / 10.0);
        stats["fps_in"] = json!(rate(now.frames_captured, old.frames_captured));
        stats["fps_out"] = json!(rate(now.frames_sent, old.frames_sent));
        stats["dropped_per_second"] = json!(rate(dropped, old_dropped));
        stats["bandwidth_bps"] = json!(rate(now.bytes_sent * 8.0, old.bytes_sent * 8.0));
        stats["latency_ms"] = if sent > 0.0 {
            json!(
                ((now.latency_sum_seconds - old.latency_sum_seconds) / sent * 10_000.0).round()
                    / 10.0
            )
        } else {
            Value::Null
        };
    }
    stats
}

/// Every camera's numbers; `cameras` gives the order and which exist.
pub fn all(window: &StatsWindow, metrics: &Metrics, cameras: &[String]) -> BTreeMap<String, Value> {
    let now = metrics.camera_totals();
    let oldest = window.oldest();
    cameras
        .iter()
        .map(|camera| {
            let current = now.get(camera).cloned().unwrap_or_default();
            let before = oldest.as_ref().and_then(|(at, totals)| {
                totals.get(camera).map(|t| (t, at.elapsed().as_secs_f64()))
            });
            (camera.clone(), camera_stats(&current, before))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_recent_latency_come_from_the_difference() {
        let old = CameraTotals {
            frames_captured: 100.0,
            frames_sent: 100.0,
            bytes_sent: 1e6,
            latency_sum_seconds: 0.5,
            latency_count: 100.0,
            ..Default::default()
        };
        let mut now = CameraTotals {
            frames_captured: 160.0,
            frames_sent: 220.0,
            bytes_sent: 3e6,
            latency_sum_seconds: 0.74,
            latency_count: 220.0,
            viewers: 2.0,
            ..Default::default()
        };
        now.dropped.insert("behind".into(), 4.0);
        now.ladder
            .insert("front_adaptive".into(), vec![1.0, 0.0, 1.0]);
        let s = camera_stats(&now, Some((&old, 2.0)));
        assert_eq!(s["fps_in"], 30.0);
        assert_eq!(s["fps_out"], 60.0);
        assert_eq!(s["bandwidth_bps"], 8e6);
        assert_eq!(s["latency_ms"], 2.0);
        assert_eq!(s["dropped"], 4.0);
        assert_eq!(s["dropped_by_reason"]["behind"], 4.0);
        assert_eq!(s["viewers"], 2.0);
        assert_eq!(
            s["ladder_viewers_per_step"]["front_adaptive"],
            json!([1.0, 0.0, 1.0])
        );
        assert!(camera_stats(&now, None).get("fps_in").is_none());
    }
}
