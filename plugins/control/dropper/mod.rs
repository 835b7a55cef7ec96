//! The `frame_dropper` node (the guide's FrameDropper): passes at most `target_fps` frames per
//! second, evenly spaced by capture time rather than in bursts, and counts what it drops
//! (`camgraph_frames_dropped_total{reason="rate_limit"}`). Frames pass through as they are: the same
//! shared pixels, never copied. Like every node it lets go of its input while nobody listens.
//!
//! ```yaml
//! front_10fps: { type: frame_dropper, inputs: [front], target_fps: 10 }
//! front_jpeg:  { type: jpeg_encoder, inputs: [front_10fps] }
//! ```

use std::sync::Arc;

use actix::{Actor, Context, StreamHandler};
use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::json;

use crate::error::BuildError;
use crate::fanout::{watch_demand, Fanout, InputLink};
use crate::frame::Frame;
use crate::metrics::DropReason;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle};
use crate::pacing::RateLimiter;
use crate::port::{Port, PortKind, Ports};
use crate::stop::{stop_on, StopToken, Stopper};

/// Settings of a `frame_dropper` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameDropperConfig {
    /// Most frames per second to pass (0.1..=120). Required.
    pub target_fps: f64,
}

impl NodeConfig for FrameDropperConfig {
    const TYPE: &'static str = "frame_dropper";

    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::Frames, Some(PortKind::Frames))
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        check_range(&mut issues, "target_fps", self.target_fps, 0.1..=120.0);
        issues
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let output = Fanout::new();
        let passed = cx.metrics.frames_sent();
        let dropped = cx.metrics.frames_dropped(DropReason::RateLimit);
        let behind = cx.metrics.frames_dropped(DropReason::Behind);
        let stop = Stopper::new();
        let dropper = Dropper {
            input: InputLink::new(cx.frames_input()?),
            output: output.clone(),
            limiter: RateLimiter::new(self.target_fps),
            passed: passed.clone(),
            dropped: dropped.clone(),
            behind,
            stop: stop.token(),
        };
        dropper.start();
        Ok(NodeHandle {
            output: Some(Port::Frames(output)),
            services: Default::default(),
            stats: Some(Box::new(
                move || json!({ "passed": passed.get(), "dropped": dropped.get() }),
            )),
            stop,
        })
    }
}

struct Dropper {
    input: InputLink<Frame>,
    output: Fanout<Frame>,
    limiter: RateLimiter,
    passed: IntCounter,
    dropped: IntCounter,
    behind: IntCounter,
    stop: StopToken,
}

impl Actor for Dropper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
        watch_demand(self.output.demand(), ctx, |act, consumers, ctx| {
            act.input.follow(consumers > 0, ctx)
        });
    }
}

impl StreamHandler<(Arc<Frame>, u64)> for Dropper {
    fn handle(&mut self, (frame, skipped): (Arc<Frame>, u64), _: &mut Self::Context) {
        self.behind.inc_by(skipped);
        if self.limiter.admit(frame.captured_at) {
            self.passed.inc();
            self.output.publish(frame);
        } else {
            self.dropped.inc();
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use std::time::Duration;

    use super::*;
    use crate::frame::PixelFormat;

    #[actix_rt::test]
    async fn thirty_in_ten_out_the_same_frames_not_copies() {
        let input = Fanout::<Frame>::new();
        let (cx, _) = crate::testing::context("drop", "frame_dropper", Port::Frames(input.clone()));
        let handle = FrameDropperConfig { target_fps: 10.0 }.build(cx).unwrap();
        let Some(Port::Frames(out)) = handle.output.clone() else {
            panic!("frames output")
        };
        assert!(!input.has_subscribers());
        let mut sub = out.subscribe();
        crate::testing::wait_for("the dropper to subscribe", || input.has_subscribers()).await;
        // 3 s of 30 fps input, by capture time; the consumer reads every frame that passes.
        let mut passed = Vec::new();
        for i in 0..90u64 {
            let frame = Arc::new(Frame {
                camera: "cam".into(),
                seq: i,
                captured_at: UNIX_EPOCH
                    + Duration::from_secs(1000)
                    + Duration::from_secs_f64(i as f64 / 30.0),
                width: 1,
                height: 1,
                format: PixelFormat::Rgb24,
                data: bytes::Bytes::from_static(&[0, 0, 0]),
            });
            input.publish(frame.clone());
            // Let the dropper handle it before the next one (it must see every input frame).
            let mut waited = 0;
            while handle
                .stats
                .as_ref()
                .map(|s| s()["passed"].as_u64().unwrap() + s()["dropped"].as_u64().unwrap())
                < Some(i + 1)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
                waited += 1;
                assert!(waited < 2000, "dropper stalled");
            }
            if let Ok(Some((got, _))) =
                tokio::time::timeout(Duration::from_millis(0), sub.next()).await
            {
                assert!(
                    Arc::ptr_eq(&got, &frame),
                    "passed frames are the same shared frame"
                );
                passed.push(got.seq);
            }
        }
        assert_eq!(passed.len(), 30, "{passed:?}");
        assert!(
            passed.windows(2).all(|w| w[1] - w[0] == 3),
            "evenly spaced: {passed:?}"
        );
        handle.stop.fire();
    }
}
