//! The `adaptive` node (the guide's AdaptiveStreaming, done right): placed on the edge between an
//! encoder and its sink, it moves each viewer along a ladder of variants from how that viewer's
//! delivery goes, with hysteresis (`ladder.rs`):
//!
//! - **MJPEG** (after a `jpeg_encoder`): JPEG quality first, then size. The signal is the frames a
//!   viewer misses because it reads too slowly. The encoder's own falling behind shows up as missed
//!   frames for every viewer, so it moves them all down. A viewer that asks for `?quality=` gets
//!   exactly that and is not moved.
//! - **WebRTC** (after an `h264_encoder`): bitrate first, then size. The signal is the share of
//!   packets the peer's receiver reports lost (RTCP receiver reports), plus the packets of frames
//!   the encoder was too busy for.
//!
//! - **WebRTC over a camera that passes its own H.264 through** (an RTSP or RTP camera wired
//!   straight to it): the top step is the camera's stream, untouched; the ladder's steps come
//!   below it, made by a decoder and an encoder the node starts as its parts (`transcode.rs`) and
//!   that work only while a peer sits on a lower step. Peers switch at a keyframe of the step they
//!   move to: the encoder makes one on request; the camera's cannot be asked for, so a peer moving
//!   up gets the camera's frames since its last keyframe at once, as a joining peer does.
//!
//! Viewers on the same step share one encode, so the encoder runs one encode per step in use,
//! never one per viewer. The node's kind follows its input; a ladder given in the YAML fixes it.
//!
//! ```yaml
//! front_adaptive: { type: adaptive, inputs: [front_jpeg] }     # default JPEG ladder
//! front_mjpeg:    { type: mjpeg_sink, inputs: [front_adaptive] }
//! front_h264_adaptive: { type: adaptive, inputs: [front_h264] } # default H.264 ladder
//! front_rtc:      { type: webrtc_sink, inputs: [front_h264_adaptive] }
//! gate:           { type: camera, source: "rtsp://192.168.1.30/stream1" }
//! gate_adaptive:  { type: adaptive, inputs: [gate] }  # the camera's stream, then 1000k ... 150k/4
//! gate_rtc:       { type: webrtc_sink, inputs: [gate_adaptive] }
//! ```
//!
//! Why parts inside the node rather than an `h264_decoder` and an `h264_encoder` in the YAML: a
//! node has one input, and the ladder needs both the camera's stream and the encoder's; the parts
//! are the same node types, so there is still one decoder and one encoder in the code, and the
//! decoder part shares the camera's decoding with its `h264_decoder` node (one decode for MJPEG
//! viewers and peers on a lower step at the same time).

mod ladder;
#[cfg(feature = "webrtc")]
mod transcode;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, Recipient,
    Running, WrapFuture,
};
use prometheus::IntGauge;
use serde::Deserialize;
use serde_json::json;

pub use ladder::{LadderPosition, Thresholds};

use crate::adapt::AdaptPolicy;
use crate::error::{BuildError, ServiceError};
use crate::fanout::Subscriber;
use crate::frame::EncodedFrame;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, StatsFn};
use crate::port::{Feed, H264Feed, H264Variant, JpegFeed, JpegVariant, Port, PortKind, Ports};
use crate::stop::{stop_on, StopToken, Stopper};

/// Settings of an `adaptive` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Steps from best to most frugal: `{ quality: 1..=100, scale: 1|2|4 }` for MJPEG or
    /// `{ bitrate_kbps: 100..=50000, scale: 1|2|4 }` for WebRTC (scale divides width and height).
    /// Default for MJPEG: q80, q60, q40, q40 at 1/2 size, q30 at 1/4 size; for WebRTC: 2000,
    /// 1000 and 500 kbit/s, 300 at 1/2 size, 150 at 1/4 size. Over a camera that passes its own
    /// H.264 through, the camera's stream is the top step and these steps follow below it; the
    /// default there leaves out 2000 kbit/s (the camera's stream takes its place).
    #[serde(default)]
    pub ladder: Option<Vec<LadderStep>>,
    /// Share lost above which a viewer moves down. Default 0.2 for MJPEG (frames a viewer is too
    /// slow for), 0.1 for WebRTC (packets lost: video suffers well before a fifth of them go).
    #[serde(default)]
    pub down_loss: Option<f64>,
    /// Share lost at or below which it moves up. Default 0.02.
    #[serde(default = "default_up_loss")]
    pub up_loss: f64,
    /// Seconds the loss must last before a move down. Default 1.
    #[serde(default = "default_hold_down_s")]
    pub hold_down_s: f64,
    /// Seconds of clean delivery before a move up. Default 4.
    #[serde(default = "default_hold_up_s")]
    pub hold_up_s: f64,
}

/// One step of a ladder as the YAML gives it: a JPEG quality or an H.264 bitrate, and a size.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderStep {
    pub quality: Option<u8>,
    pub bitrate_kbps: Option<u32>,
    #[serde(default = "full_size")]
    pub scale: u8,
}

fn full_size() -> u8 {
    1
}

fn default_jpeg_ladder() -> Vec<JpegVariant> {
    let v = |quality, scale| JpegVariant { quality, scale };
    vec![v(80, 1), v(60, 1), v(40, 1), v(40, 2), v(30, 4)]
}
/// The default WebRTC ladder (public for `camgraph-bench ladder`).
pub fn default_h264_ladder() -> Vec<H264Variant> {
    let v = |bitrate_kbps, scale| H264Variant {
        bitrate_kbps,
        scale,
    };
    vec![v(2000, 1), v(1000, 1), v(500, 1), v(300, 2), v(150, 4)]
}
fn default_down_loss(kind: PortKind) -> f64 {
    match kind {
        PortKind::H264 => 0.1,
        _ => 0.2,
    }
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

impl AdaptiveConfig {
    /// The kind the ladder's first step fixes: `None` without a ladder (the input decides) or
    /// when that step is itself unclear (reported by `validate`).
    fn ladder_kind(&self) -> Option<PortKind> {
        let first = self.ladder.as_ref()?.first()?;
        match (first.quality, first.bitrate_kbps) {
            (Some(_), None) => Some(PortKind::Jpeg),
            (None, Some(_)) => Some(PortKind::H264),
            _ => None,
        }
    }

    fn jpeg_ladder(&self) -> Vec<JpegVariant> {
        match &self.ladder {
            None => default_jpeg_ladder(),
            Some(steps) => steps
                .iter()
                .map(|s| JpegVariant {
                    quality: s.quality.unwrap_or_default(),
                    scale: s.scale,
                })
                .collect(),
        }
    }

    /// The H.264 ladder; over a camera's own H.264 (`below_camera`), the steps below its stream.
    fn h264_ladder(&self, below_camera: bool) -> Vec<H264Variant> {
        match &self.ladder {
            None if below_camera => default_h264_ladder().split_off(1),
            None => default_h264_ladder(),
            Some(steps) => steps
                .iter()
                .map(|s| H264Variant {
                    bitrate_kbps: s.bitrate_kbps.unwrap_or_default(),
                    scale: s.scale,
                })
                .collect(),
        }
    }

    fn thresholds(&self, kind: PortKind) -> Thresholds {
        Thresholds {
            down_loss: self.down_loss.unwrap_or(default_down_loss(kind)),
            up_loss: self.up_loss,
            hold_down: Duration::from_secs_f64(self.hold_down_s),
            hold_up: Duration::from_secs_f64(self.hold_up_s),
        }
    }

    /// Every problem of every step, each step's problems on one line.
    fn validate_ladder(&self, issues: &mut Vec<FieldIssue>) {
        let Some(steps) = &self.ladder else { return };
        check_range(issues, "ladder", steps.len(), 1..=8);
        let kind = self.ladder_kind();
        for (i, step) in steps.iter().enumerate() {
            let mut problems = Vec::new();
            match (step.quality, step.bitrate_kbps) {
                (Some(_), Some(_)) | (None, None) => {
                    problems
                        .push("give either 'quality' (MJPEG) or 'bitrate_kbps' (WebRTC)".into());
                    if !crate::port::SCALES.contains(&step.scale) {
                        problems.push(format!("scale must be 1, 2 or 4 (got {})", step.scale));
                    }
                }
                (Some(_), None) if kind == Some(PortKind::H264) => problems.push(
                    "a 'quality' step in a ladder of 'bitrate_kbps' steps: one kind per ladder"
                        .into(),
                ),
                (None, Some(_)) if kind == Some(PortKind::Jpeg) => problems.push(
                    "a 'bitrate_kbps' step in a ladder of 'quality' steps: one kind per ladder"
                        .into(),
                ),
                (Some(quality), None) => problems.extend(
                    JpegVariant {
                        quality,
                        scale: step.scale,
                    }
                    .problems(),
                ),
                (None, Some(bitrate_kbps)) => problems.extend(
                    H264Variant {
                        bitrate_kbps,
                        scale: step.scale,
                    }
                    .problems(),
                ),
            }
            let same = |a: &LadderStep, b: &LadderStep| {
                (a.quality, a.bitrate_kbps, a.scale) == (b.quality, b.bitrate_kbps, b.scale)
            };
            if let Some(j) = steps[..i].iter().position(|earlier| same(earlier, step)) {
                problems.push(format!("the same as step {j}"));
            }
            if !problems.is_empty() {
                issues.push(FieldIssue::new(
                    "ladder",
                    format!("'ladder' step {i}: {}", problems.join("; ")),
                ));
            }
        }
    }
}

impl NodeConfig for AdaptiveConfig {
    const TYPE: &'static str = "adaptive";

    fn ports(&self) -> Ports {
        match self.ladder_kind() {
            Some(kind) => Ports::Takes(kind, Some(kind)),
            None => Ports::Through(&[PortKind::Jpeg, PortKind::H264]),
        }
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        self.validate_ladder(&mut issues);
        if let Some(down) = self.down_loss {
            check_range(&mut issues, "down_loss", down, 0.01..=1.0);
        }
        check_range(&mut issues, "up_loss", self.up_loss, 0.0..=1.0);
        // Against the down_loss that applies: given, or the default of each kind it may be.
        let kinds = match self.ladder_kind() {
            Some(kind) => vec![kind],
            None => vec![PortKind::Jpeg, PortKind::H264],
        };
        let lowest_down = kinds
            .into_iter()
            // Not `thresholds()`: its hold times are not checked yet (1e99 s is no Duration).
            .map(|k| self.down_loss.unwrap_or(default_down_loss(k)))
            .fold(f64::INFINITY, f64::min);
        if self.up_loss >= lowest_down {
            let down = match (self.down_loss, self.ladder_kind()) {
                (Some(d), _) => d.to_string(),
                (None, Some(_)) => format!("{lowest_down}, its default"),
                (None, None) => "not given: 0.2 for MJPEG and 0.1 for WebRTC".into(),
            };
            issues.push(FieldIssue::new(
                "up_loss",
                format!(
                    "'up_loss' ({}) must be below 'down_loss' ({down})",
                    self.up_loss
                ),
            ));
        }
        check_range(&mut issues, "hold_down_s", self.hold_down_s, 0.1..=600.0);
        check_range(&mut issues, "hold_up_s", self.hold_up_s, 0.1..=600.0);
        issues
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let stop = Stopper::new();
        // The step names and the tracker's counts outlive the feed, for the node's stats, with
        // those of the node's parts (over a camera's own H.264: its decoder and encoder).
        let (output, (names, tracker), parts_stats): (Port, _, PartStats) = match cx.inputs.first()
        {
            Some(Port::Jpeg(upstream)) => {
                let steps = Steps::start(
                    self.jpeg_ladder(),
                    self.thresholds(PortKind::Jpeg),
                    &cx,
                    &stop,
                    Vec::new(),
                );
                let kept = steps.kept();
                let upstream = upstream.clone();
                let output = Port::Jpeg(Arc::new(AdaptiveJpeg { upstream, steps }));
                (output, kept, Vec::new())
            }
            #[cfg(feature = "webrtc")]
            Some(Port::H264(upstream)) if upstream.passes_through(None) => {
                let lower = self.h264_ladder(true);
                let (parts, encoded) = transcode::Parts::start(upstream.clone(), lower.len(), &cx)?;
                let ladder = [H264Variant::CAMERA].into_iter().chain(lower).collect();
                let thresholds = self.thresholds(PortKind::H264);
                let steps = Steps::start(ladder, thresholds, &cx, &stop, parts.stops);
                let kept = steps.kept();
                let camera = upstream.clone();
                let feed = transcode::AdaptivePassthrough {
                    camera,
                    encoded,
                    steps,
                };
                (Port::H264(Arc::new(feed)), kept, parts.stats)
            }
            #[cfg(not(feature = "webrtc"))]
            Some(Port::H264(upstream)) if upstream.passes_through(None) => {
                return Err(BuildError::new(
                    &cx.id,
                    "its input passes a camera's own H.264 through: its lower steps need an H.264 \
                     decoder and encoder, which come with the webrtc feature",
                ))
            }
            Some(Port::H264(upstream)) => {
                let steps = Steps::start(
                    self.h264_ladder(false),
                    self.thresholds(PortKind::H264),
                    &cx,
                    &stop,
                    Vec::new(),
                );
                let kept = steps.kept();
                let upstream = upstream.clone();
                let output = Port::H264(Arc::new(AdaptiveVideo { upstream, steps }));
                (output, kept, Vec::new())
            }
            _ => {
                return Err(BuildError::new(
                    &cx.id,
                    "needs one input of kind 'jpeg' or 'h264'",
                ))
            }
        };
        let counts = tracker.counts.clone();
        Ok(NodeHandle {
            output: Some(output),
            services: Default::default(),
            stats: Some(Box::new(move || {
                let viewers: Vec<i64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                let mut stats = json!({ "ladder": names, "viewers_per_step": viewers });
                for (name, part) in &parts_stats {
                    stats[*name] = part.as_ref().map_or(json!(null), |f| f());
                }
                stats
            })),
            stop,
        })
    }
}

/// The stats of a node's parts (over a camera's own H.264: its decoder and encoder), by name.
type PartStats = Vec<(&'static str, Option<StatsFn>)>;

/// The ladder of one node, and the tracker counting the viewers on each step.
struct Steps<V> {
    ladder: Arc<[V]>,
    thresholds: Thresholds,
    tracker: TrackerHandle,
}

#[derive(Clone)]
struct TrackerHandle {
    addr: Addr<Tracker>,
    counts: Arc<Vec<AtomicI64>>,
}

impl<V: Copy + Send + Sync + std::fmt::Display + 'static> Steps<V> {
    /// Starts the tracker, which stops `parts` (the node's own parts, if any) with the node.
    fn start(
        ladder: Vec<V>,
        thresholds: Thresholds,
        cx: &BuildContext,
        stop: &Stopper,
        parts: Vec<Stopper>,
    ) -> Self {
        let gauges: Vec<IntGauge> = (0..ladder.len())
            .map(|i| cx.metrics.ladder_viewers(i))
            .collect();
        let counts: Arc<Vec<AtomicI64>> =
            Arc::new(ladder.iter().map(|_| AtomicI64::new(0)).collect());
        let addr = Tracker {
            gauges,
            counts: counts.clone(),
            parts,
            stop: stop.token(),
        }
        .start();
        Self {
            ladder: ladder.into(),
            thresholds,
            tracker: TrackerHandle { addr, counts },
        }
    }

    /// The step names and the tracker, for the node's stats.
    fn kept(&self) -> (Vec<String>, TrackerHandle) {
        let names = self.ladder.iter().map(V::to_string).collect();
        (names, self.tracker.clone())
    }

    fn top(&self) -> V {
        self.ladder[0]
    }

    /// A new viewer's policy, counted on the top step.
    fn policy(&self) -> Box<dyn AdaptPolicy<V>> {
        let tracker = self.tracker.addr.clone().recipient();
        tracker.do_send(StepChanged {
            from: None,
            to: Some(0),
        });
        Box::new(ViewerPolicy {
            position: LadderPosition::new(self.ladder.len(), self.thresholds.clone()),
            ladder: self.ladder.clone(),
            tracker,
        })
    }
}

struct AdaptiveJpeg {
    upstream: Arc<JpegFeed>,
    steps: Steps<JpegVariant>,
}

impl Feed<JpegVariant> for AdaptiveJpeg {
    /// Without a variant: the top of the ladder.
    fn subscribe(
        &self,
        variant: Option<JpegVariant>,
    ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
        self.upstream
            .subscribe(Some(variant.unwrap_or(self.steps.top())))
    }

    fn default_variant(&self) -> Option<JpegVariant> {
        Some(self.steps.top())
    }

    fn policy(&self) -> Option<Box<dyn AdaptPolicy<JpegVariant>>> {
        Some(self.steps.policy())
    }
}

struct AdaptiveVideo {
    upstream: Arc<H264Feed>,
    steps: Steps<H264Variant>,
}

impl Feed<H264Variant> for AdaptiveVideo {
    /// Without a variant: the top of the ladder.
    fn subscribe(
        &self,
        variant: Option<H264Variant>,
    ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
        self.upstream
            .subscribe(Some(variant.unwrap_or(self.steps.top())))
    }

    fn default_variant(&self) -> Option<H264Variant> {
        Some(self.steps.top())
    }

    fn request_keyframe(&self, variant: Option<H264Variant>) {
        self.upstream
            .request_keyframe(Some(variant.unwrap_or(self.steps.top())));
    }

    fn policy(&self) -> Option<Box<dyn AdaptPolicy<H264Variant>>> {
        Some(self.steps.policy())
    }
}

/// One viewer's position, reported to the tracker as it moves.
struct ViewerPolicy<V> {
    position: LadderPosition,
    ladder: Arc<[V]>,
    tracker: Recipient<StepChanged>,
}

impl<V: Copy + Send + Sync> AdaptPolicy<V> for ViewerPolicy<V> {
    fn initial(&self) -> V {
        self.ladder[self.position.step()]
    }

    fn observe(&mut self, now: Instant, lost: u64, total: u64) -> Option<V> {
        let from = self.position.step();
        let to = self.position.observe(now, lost, total)?;
        tracing::debug!(from, to, "viewer moved on the ladder");
        self.tracker.do_send(StepChanged {
            from: Some(from),
            to: Some(to),
        });
        Some(self.ladder[to])
    }

    fn refused(&mut self) {
        let from = self.position.step();
        self.position.undo();
        self.tracker.do_send(StepChanged {
            from: Some(from),
            to: Some(self.position.step()),
        });
    }
}

impl<V> Drop for ViewerPolicy<V> {
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

/// Counts the viewers on each step, for metrics and `/api/graph`; stops the node's parts when the
/// node stops, and ends after them (the node has stopped once they have).
struct Tracker {
    gauges: Vec<IntGauge>,
    counts: Arc<Vec<AtomicI64>>,
    parts: Vec<Stopper>,
    stop: StopToken,
}

impl Actor for Tracker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        let parts = std::mem::take(&mut self.parts);
        if parts.is_empty() {
            return Running::Stop;
        }
        for part in &parts {
            part.fire();
        }
        let stopped = async move {
            futures_util::future::join_all(parts.iter().map(Stopper::stopped)).await;
        };
        ctx.spawn(stopped.into_actor(self).map(|_, _, ctx| ctx.stop()));
        Running::Continue
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::SystemTime;

    use super::*;
    use crate::adapt::FeedReader;
    use crate::fanout::Fanout;
    use crate::frame::Codec;

    /// An encoder stand-in: one fan-out per variant asked for; with `full`, it refuses every
    /// variant but the first.
    #[derive(Default)]
    struct Encoder {
        outputs: Mutex<BTreeMap<JpegVariant, Fanout<EncodedFrame>>>,
        full: bool,
        asked: Mutex<Vec<u8>>,
    }

    impl Feed<JpegVariant> for Encoder {
        fn subscribe(
            &self,
            variant: Option<JpegVariant>,
        ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
            let variant = variant.expect("the adaptive node always names a variant");
            self.asked.lock().unwrap().push(variant.quality);
            let mut outputs = self.outputs.lock().unwrap();
            if self.full && !outputs.is_empty() && !outputs.contains_key(&variant) {
                return Err(ServiceError::Busy("no room for another variant".into()));
            }
            Ok(outputs.entry(variant).or_default().subscribe())
        }
    }

    impl Encoder {
        /// Publishes frame `seq` on every variant listened to, as an encoder that skipped `behind`
        /// camera frames before it.
        fn publish(&self, seq: u64, behind: u64) {
            for (variant, out) in self.outputs.lock().unwrap().iter() {
                if out.has_subscribers() {
                    out.publish(Arc::new(EncodedFrame {
                        camera: "cam".into(),
                        seq,
                        captured_at: SystemTime::now(),
                        codec: Codec::Jpeg,
                        keyframe: true,
                        width: 640 / u32::from(variant.scale),
                        height: 360 / u32::from(variant.scale),
                        data: vec![variant.quality; 10].into(),
                        behind,
                    }));
                }
            }
        }
    }

    /// An adaptive node (hold_down_s 0.5) over `encoder`, one viewer reading it, and frames
    /// published at 30 fps, frame `seq` after `behind(seq)` frames the encoder skipped.
    fn viewer_of(
        encoder: &Arc<Encoder>,
        behind: fn(u64) -> u64,
    ) -> (
        NodeHandle,
        FeedReader<JpegVariant>,
        tokio::task::JoinHandle<()>,
    ) {
        let (cx, _) = crate::testing::context("adaptive", "adaptive", Port::Jpeg(encoder.clone()));
        let config: AdaptiveConfig = serde_yaml::from_str("hold_down_s: 0.5").unwrap();
        let handle = config.build(cx).unwrap();
        let Some(Port::Jpeg(feed)) = handle.output.clone() else {
            panic!("a jpeg output")
        };
        let reader = FeedReader::open(feed, None).unwrap();
        let encoder = encoder.clone();
        let publisher = tokio::spawn(async move {
            for seq in 0u64.. {
                encoder.publish(seq, behind(seq));
                tokio::time::sleep(Duration::from_millis(33)).await;
            }
        });
        (handle, reader, publisher)
    }

    #[actix_rt::test]
    async fn an_encoder_that_falls_behind_moves_its_viewers_down() {
        let encoder = Arc::new(Encoder::default());
        // 1 s keeping up, then an encoder that manages one camera frame in three.
        let (handle, mut reader, publisher) =
            viewer_of(&encoder, |seq| if seq < 30 { 0 } else { 2 });
        let mut qualities = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let (frame, _) = reader.next().await.expect("frames");
            if qualities.last() != Some(&frame.data[0]) {
                qualities.push(frame.data[0]);
            }
            if frame.data[0] < 80 && frame.seq >= 30 {
                break;
            }
            assert!(
                frame.seq >= 30 || frame.data[0] == 80,
                "moved while the encoder kept up"
            );
        }
        publisher.abort();
        assert_eq!(
            qualities,
            [80, 60],
            "the viewer moved one step down when the encoder fell behind"
        );
        handle.stop.fire();
    }

    #[actix_rt::test]
    async fn a_step_the_encoder_refuses_leaves_the_viewer_where_it_is() {
        let encoder = Arc::new(Encoder {
            full: true,
            ..Default::default()
        });
        let (handle, mut reader, publisher) = viewer_of(&encoder, |_| 2);
        let deadline = Instant::now() + Duration::from_secs(6);
        while encoder.asked.lock().unwrap().len() < 3 && Instant::now() < deadline {
            let (frame, _) = reader.next().await.expect("frames");
            assert_eq!(frame.data[0], 80, "the viewer stays on the variant it has");
        }
        publisher.abort();
        // Without the refusal undone, the second try would be one step further down (q40).
        assert_eq!(*encoder.asked.lock().unwrap(), [80, 60, 60]);
        // The tracker runs on this thread: let it take its messages before reading its counts.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let stats = (handle.stats.as_ref().unwrap())();
        assert_eq!(stats["viewers_per_step"], json!([1, 0, 0, 0, 0]), "{stats}");
        handle.stop.fire();
    }
}
