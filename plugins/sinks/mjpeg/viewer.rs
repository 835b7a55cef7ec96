//! One MJPEG viewer's response body: waits for the newest JPEG of its quality, thins to its fps,
//! and yields the part header, the shared JPEG bytes (not copied) and the part end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use prometheus::{Histogram, IntCounter, IntGauge};

use crate::adapt::FeedReader;
use crate::frame::EncodedFrame;
use crate::metrics::{DropReason, NodeMetrics};
use crate::mjpeg;
use crate::pacing::RateLimiter;
use crate::port::JpegVariant;

#[derive(Clone)]
pub(super) struct ViewerMetrics {
    pub sent: IntCounter,
    pub bytes: IntCounter,
    pub dropped_behind: IntCounter,
    pub dropped_rate_limit: IntCounter,
    pub latency: Histogram,
    pub viewers: IntGauge,
}

impl ViewerMetrics {
    pub fn new(m: &NodeMetrics) -> Self {
        Self {
            sent: m.frames_sent(),
            bytes: m.bytes_sent(),
            dropped_behind: m.frames_dropped(DropReason::Behind),
            dropped_rate_limit: m.frames_dropped(DropReason::RateLimit),
            latency: m.latency_seconds(),
            viewers: m.viewers("mjpeg"),
        }
    }
}

/// Counts a viewer while its response lives.
pub(super) struct ViewerGuard {
    count: Arc<AtomicUsize>,
    gauge: IntGauge,
}

impl ViewerGuard {
    pub fn new(count: Arc<AtomicUsize>, gauge: IntGauge) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        Self { count, gauge }
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

struct Viewer {
    frames: FeedReader<JpegVariant>,
    limiter: Option<RateLimiter>,
    /// Chunks of the current part still to yield.
    pending: VecDeque<Bytes>,
    metrics: ViewerMetrics,
    /// The last frame sent, repeated when no new one comes for `KEEPALIVE`.
    last: Option<Arc<EncodedFrame>>,
    _guard: ViewerGuard,
}

/// How long a viewer may go without a part before the last one is sent again.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) fn mjpeg_body(
    frames: FeedReader<JpegVariant>,
    fps: Option<f64>,
    guard: ViewerGuard,
    metrics: ViewerMetrics,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let viewer = Viewer {
        frames,
        limiter: fps.map(RateLimiter::new),
        pending: VecDeque::with_capacity(2),
        metrics,
        last: None,
        _guard: guard,
    };
    stream::unfold(viewer, |mut v| async move {
        if let Some(chunk) = v.pending.pop_front() {
            return Some((Ok(chunk), v));
        }
        loop {
            let (frame, skipped) = match tokio::time::timeout(KEEPALIVE, v.frames.next()).await {
                Ok(next) => next?,
                Err(_) => {
                    // No new frame (capture stopped, camera idle): send the last picture again so
                    // the connection is written to and a viewer that left is noticed.
                    let Some(last) = v.last.clone() else { continue };
                    v.metrics.bytes.inc_by(last.data.len() as u64);
                    v.pending.push_back(last.data.clone());
                    v.pending.push_back(Bytes::from_static(mjpeg::PART_END));
                    return Some((Ok(mjpeg::part_header(last.data.len(), last.captured_at)), v));
                }
            };
            if skipped > 0 {
                v.metrics.dropped_behind.inc_by(skipped);
            }
            if let Some(limiter) = &mut v.limiter {
                if !limiter.admit(frame.captured_at) {
                    v.metrics.dropped_rate_limit.inc();
                    continue;
                }
            }
            let len = frame.data.len();
            v.last = Some(frame.clone());
            v.metrics.sent.inc();
            v.metrics.bytes.inc_by(len as u64);
            let age = SystemTime::now()
                .duration_since(frame.captured_at)
                .unwrap_or_default();
            v.metrics.latency.observe(age.as_secs_f64());
            v.pending.push_back(frame.data.clone());
            v.pending.push_back(Bytes::from_static(mjpeg::PART_END));
            return Some((Ok(mjpeg::part_header(len, frame.captured_at)), v));
        }
    })
}
