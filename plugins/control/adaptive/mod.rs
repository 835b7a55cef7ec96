//! The `adaptive` node (the guide's AdaptiveStreaming, done right): placed between a JPEG encoder
//! and an MJPEG sink, it moves each viewer along a ladder of variants (JPEG quality first, then
//! size) from how that viewer keeps up: a viewer that misses frames because it reads too slowly
//! goes down a step, one that keeps up goes back up, with hysteresis (`ladder.rs`). Viewers on the
//! same step share one encode, so the encoder runs one encode per step in use, never one per
//! viewer. A viewer that asks for `?quality=` gets exactly that and is not moved. The encoder's
//! own falling behind shows up as missed frames for every viewer, so it moves them all down.
//!
//! ```yaml
//! front_adaptive: { type: adaptive, inputs: [front_jpeg] }     # default ladder
//! front_mjpeg:    { type: mjpeg_sink, inputs: [front_adaptive] }
//! ```

mod ladder;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Context, Handler, Message, Recipient};
use prometheus::IntGauge;
use serde::Deserialize;
use serde_json::json;

pub use ladder::{LadderPosition, Thresholds};

use crate::error::{BuildError, ServiceError};
use crate::fanout::Subscriber;
use crate::messages::{EncodedFrame, Shutdown};
use crate::node::{
    check_range, AdaptPolicy, BuildContext, EncodedFeed, FieldIssue, JpegVariant, NodeConfig,
    NodeHandle, Port, PortKind, Ports,
};

/// Settings of an `adaptive` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Steps from best to most frugal, each `{ quality: 1..=100, scale: 1|2|4 }` (scale divides
    /// width and height). Default: q80, q60, q40, q40 at 1/2 size, q30 at 1/4 size.
    #[serde(default = "default_ladder")]
    pub ladder: Vec<JpegVariant>,
    /// Share of frames a viewer misses above which it moves down. Default 0.2.
    #[serde(default = "default_down_loss")]
    pub down_loss: f64,
    /// Share of frames missed at or below which it moves up. Default 0.02.
    #[serde(default = "default_up_loss")]
    pub up_loss: f64,
    /// Seconds the loss must last before a move down. Default 1.
    #[serde(default = "default_hold_down_s")]
    pub hold_down_s: f64,
    /// Seconds of clean delivery before a move up. Default 4.
    #[serde(default = "default_hold_up_s")]
    pub hold_up_s: f64,
}

fn default_ladder() -> Vec<JpegVariant> {
    let v = |quality, scale| JpegVariant { quality, scale };
    vec![v(80, 1), v(60, 1), v(40, 1), v(40, 2), v(30, 4)]
}
fn default_down_loss() -> f64 {
    0.2
}
fn default_up_loss() -> f64 {
    0.02
}
fn default_hold_down_s() -> f64 {
    1.0
}
fn default_hold_up_s() -> f64 {
    4.0
}

impl NodeConfig for AdaptiveConfig {
    const TYPE: &'static str = "adaptive";

    fn ports(&self) -> Ports {
        Ports {
            input: Some(PortKind::Jpeg),
            output: Some(PortKind::Jpeg),
        }
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        check_range(&mut issues, "ladder", self.ladder.len(), 1..=8);
        for (i, step) in self.ladder.iter().enumerate() {
            if !(1..=100).contains(&step.quality) || ![1, 2, 4].contains(&step.scale) {
                issues.push(FieldIssue::new(
                    "ladder",
                    format!("'ladder' step {i}: quality must be 1..=100 and scale 1, 2 or 4 (got {step})"),
                ));
            }
        }
        check_range(&mut issues, "down_loss", self.down_loss, 0.01..=1.0);
        check_range(&mut issues, "up_loss", self.up_loss, 0.0..=1.0);
        if self.up_loss >= self.down_loss {
            issues.push(FieldIssue::new(
                "up_loss",
                format!(
                    "'up_loss' ({}) must be below 'down_loss' ({})",
                    self.up_loss, self.down_loss
                ),
            ));
        }
        check_range(&mut issues, "hold_down_s", self.hold_down_s, 0.1..=600.0);
        check_range(&mut issues, "hold_up_s", self.hold_up_s, 0.1..=600.0);
        issues
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let gauges: Vec<IntGauge> = (0..self.ladder.len())
            .map(|i| cx.metrics.ladder_viewers(i))
            .collect();
        let counts: Arc<Vec<AtomicI64>> =
            Arc::new(self.ladder.iter().map(|_| AtomicI64::new(0)).collect());
        let addr = Tracker {
            gauges,
            counts: counts.clone(),
        }
        .start();
        let feed = AdaptiveFeed {
            upstream: cx.jpeg_input()?,
            ladder: self.ladder.clone().into(),
            thresholds: Thresholds {
                down_loss: self.down_loss,
                up_loss: self.up_loss,
                hold_down: Duration::from_secs_f64(self.hold_down_s),
                hold_up: Duration::from_secs_f64(self.hold_up_s),
            },
            tracker: addr.clone().recipient(),
        };
        let ladder: Vec<String> = self.ladder.iter().map(JpegVariant::to_string).collect();
        Ok(NodeHandle {
            output: Some(Port::Jpeg(Arc::new(feed))),
            services: Vec::new(),
            stats: Some(Box::new(move || {
                let viewers: Vec<i64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                json!({ "ladder": ladder, "viewers_per_step": viewers })
            })),
            stop: Box::new(move || addr.do_send(Shutdown)),
        })
    }
}

struct AdaptiveFeed {
    upstream: Arc<dyn EncodedFeed>,
    ladder: Arc<[JpegVariant]>,
    thresholds: Thresholds,
    tracker: Recipient<StepChanged>,
}

impl EncodedFeed for AdaptiveFeed {
    /// Without a variant: the top of the ladder.
    fn subscribe(
        &self,
        variant: Option<JpegVariant>,
    ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
        self.upstream
            .subscribe(Some(variant.unwrap_or(self.ladder[0])))
    }

    fn policy(&self) -> Option<Box<dyn AdaptPolicy>> {
        self.tracker.do_send(StepChanged {
            from: None,
            to: Some(0),
        });
        Some(Box::new(ViewerPolicy {
            position: LadderPosition::new(self.ladder.len(), self.thresholds.clone()),
            ladder: self.ladder.clone(),
            tracker: self.tracker.clone(),
        }))
    }
}

/// One viewer's position, reported to the tracker as it moves.
struct ViewerPolicy {
    position: LadderPosition,
    ladder: Arc<[JpegVariant]>,
    tracker: Recipient<StepChanged>,
}

impl AdaptPolicy for ViewerPolicy {
    fn initial(&self) -> JpegVariant {
        self.ladder[self.position.step()]
    }

    fn observe(&mut self, now: Instant, skipped: u64) -> Option<JpegVariant> {
        let from = self.position.step();
        let to = self.position.observe(now, skipped)?;
        tracing::debug!(from, to, "viewer moved on the ladder");
        self.tracker.do_send(StepChanged {
            from: Some(from),
            to: Some(to),
        });
        Some(self.ladder[to])
    }
}

impl Drop for ViewerPolicy {
    fn drop(&mut self) {
        self.tracker.do_send(StepChanged {
            from: Some(self.position.step()),
            to: None,
        });
    }
}

/// A viewer joined (`from: None`), moved, or left (`to: None`).
#[derive(Message)]
#[rtype(result = "()")]
struct StepChanged {
    from: Option<usize>,
    to: Option<usize>,
}

/// Counts the viewers on each step, for metrics and `/api/graph`.
struct Tracker {
    gauges: Vec<IntGauge>,
    counts: Arc<Vec<AtomicI64>>,
}

impl Actor for Tracker {
    type Context = Context<Self>;
}

impl Handler<StepChanged> for Tracker {
    type Result = ();
    fn handle(&mut self, msg: StepChanged, _: &mut Self::Context) {
        for (step, delta) in [(msg.from, -1), (msg.to, 1)] {
            if let Some(i) = step {
                self.counts[i].fetch_add(delta, Ordering::Relaxed);
                self.gauges[i].add(delta);
            }
        }
    }
}

impl Handler<Shutdown> for Tracker {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
