//! Every Prometheus metric camgraph exports, named in one place. Nodes get a `NodeMetrics` with the
//! `camera`, `node` and `type` labels already applied and take their counters from it once, at
//! start, so the frame path never looks a metric up.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

const NODE_LABELS: &[&str] = &["camera", "node", "type"];

/// Buckets from 0.5 ms to 2 s: they resolve both a 1 ms encode and a stalled viewer.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.0,
];

/// The registry and every metric family.
pub struct Metrics {
    registry: Registry,
    frames_captured: IntCounterVec,
    frames_encoded: IntCounterVec,
    frames_sent: IntCounterVec,
    frames_dropped: IntCounterVec,
    bytes_sent: IntCounterVec,
    viewers: IntGaugeVec,
    encode_seconds: HistogramVec,
    latency_seconds: HistogramVec,
    camera_up: IntGaugeVec,
    encoder_settings: IntGaugeVec,
    reloads: IntCounterVec,
    reconnects: IntCounterVec,
    rtp_lost: IntCounterVec,
    ladder_viewers: IntGaugeVec,
}

fn labels(extra: &[&'static str]) -> Vec<&'static str> {
    NODE_LABELS.iter().chain(extra).copied().collect()
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, extra: &[&'static str]| {
            let c =
                IntCounterVec::new(Opts::new(name, help), &labels(extra)).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, extra: &[&'static str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), &labels(extra)).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(SECONDS_BUCKETS.to_vec());
            let h = HistogramVec::new(opts, NODE_LABELS).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let metrics = Metrics {
            frames_captured: counter(
                "camgraph_frames_captured_total",
                "Frames captured by a camera.",
                &[],
            ),
            frames_encoded: counter(
                "camgraph_frames_encoded_total",
                "Frames encoded, per encoder node.",
                &[],
            ),
            frames_sent: counter("camgraph_frames_sent_total", "Frames sent to viewers.", &[]),
            frames_dropped: counter(
                "camgraph_frames_dropped_total",
                "Frames not processed or not sent, by reason.",
                &["reason"],
            ),
            bytes_sent: counter(
                "camgraph_bytes_sent_total",
                "Payload bytes sent to viewers.",
                &[],
            ),
            viewers: gauge(
                "camgraph_viewers",
                "Viewers connected, by protocol.",
                &["protocol"],
            ),
            encode_seconds: histogram(
                "camgraph_encode_duration_seconds",
                "Time to encode one frame.",
            ),
            latency_seconds: histogram(
                "camgraph_capture_to_send_latency_seconds",
                "Time from capture to handing the frame to a viewer's connection.",
            ),
            camera_up: gauge(
                "camgraph_camera_up",
                "1 while a camera delivers frames, 0 while it is down.",
                &[],
            ),
            encoder_settings: gauge(
                "camgraph_encoder_active_settings",
                "Distinct settings an encoder is currently producing (one encode per setting).",
                &[],
            ),
            reloads: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "camgraph_config_reloads_total",
                        "Configuration reloads, by result (success, failure).",
                    ),
                    &["result"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(c.clone()))
                    .expect("unique metric");
                // Both results exist from the start, so dashboards show 0 rather than nothing.
                for result in ["success", "failure"] {
                    c.with_label_values(&[result]);
                }
                c
            },
            ladder_viewers: gauge(
                "camgraph_ladder_viewers",
                "Viewers on each step of an adaptive ladder (step 0 is the best).",
                &["step"],
            ),
            reconnects: counter(
                "camgraph_camera_reconnects_total",
                "Times a camera came back after failing.",
                &[],
            ),
            rtp_lost: counter(
                "camgraph_rtp_packets_lost_total",
                "RTP packets that WebRTC peers' receiver reports count as lost.",
                &[],
            ),
            registry,
        };
        let build_info = IntGaugeVec::new(
            Opts::new("camgraph_build_info", "Always 1; labels give the build."),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
            .registry
            .register(Box::new(build_info))
            .expect("unique metric");
        Arc::new(metrics)
    }

    /// Counts a configuration reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// Metrics labelled for one node.
    pub fn node(self: &Arc<Self>, camera: &str, node: &str, type_name: &str) -> NodeMetrics {
        NodeMetrics {
            metrics: self.clone(),
            labels: [camera.to_string(), node.to_string(), type_name.to_string()],
        }
    }

    /// Drops every series of node `node`: it was stopped (removed, or restarted with new settings),
    /// and a removed camera must not linger on dashboards. A restarted node starts again from 0,
    /// which Prometheus treats as a counter reset.
    pub fn forget_node(&self, node: &str) {
        let families: [(&str, &dyn Forget, &[&str]); 13] = [
            ("camgraph_frames_captured_total", &self.frames_captured, &[]),
            ("camgraph_frames_encoded_total", &self.frames_encoded, &[]),
            ("camgraph_frames_sent_total", &self.frames_sent, &[]),
            (
                "camgraph_frames_dropped_total",
                &self.frames_dropped,
                &["reason"],
            ),
            ("camgraph_bytes_sent_total", &self.bytes_sent, &[]),
            ("camgraph_viewers", &self.viewers, &["protocol"]),
            (
                "camgraph_encode_duration_seconds",
                &self.encode_seconds,
                &[],
            ),
            (
                "camgraph_capture_to_send_latency_seconds",
                &self.latency_seconds,
                &[],
            ),
            ("camgraph_camera_up", &self.camera_up, &[]),
            (
                "camgraph_encoder_active_settings",
                &self.encoder_settings,
                &[],
            ),
            ("camgraph_camera_reconnects_total", &self.reconnects, &[]),
            ("camgraph_ladder_viewers", &self.ladder_viewers, &["step"]),
            ("camgraph_rtp_packets_lost_total", &self.rtp_lost, &[]),
        ];
        for family in self.registry.gather() {
            let Some((_, vec, extra)) = families.iter().find(|(name, _, _)| *name == family.name())
            else {
                continue;
            };
            for m in family.get_metric() {
                let value = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                };
                if value("node").as_deref() != Some(node) {
                    continue;
                }
                let values: Vec<String> = NODE_LABELS
                    .iter()
                    .chain(extra.iter())
                    .map(|n| value(n).unwrap_or_default())
                    .collect();
                vec.forget(&values.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
    }

    /// Per-camera totals of the streaming metrics, for `GET /api/stats`: the same numbers as
    /// `/metrics`, summed over each camera's nodes.
    pub fn camera_totals(&self) -> BTreeMap<String, CameraTotals> {
        let mut totals: BTreeMap<String, CameraTotals> = BTreeMap::new();
        for family in self.registry.gather() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value())
                };
                let Some(camera) = label("camera") else {
                    continue;
                };
                let streamed = matches!(label("type"), Some("mjpeg_sink" | "webrtc_sink"));
                let t = totals.entry(camera.to_string()).or_default();
                match family.name() {
                    "camgraph_frames_captured_total" => {
                        t.frames_captured += m.get_counter().get_value()
                    }
                    "camgraph_frames_sent_total" if streamed => {
                        t.frames_sent += m.get_counter().get_value()
                    }
                    "camgraph_bytes_sent_total" if streamed => {
                        t.bytes_sent += m.get_counter().get_value()
                    }
                    "camgraph_viewers" => t.viewers += m.get_gauge().get_value(),
                    "camgraph_frames_dropped_total" => {
                        let reason = label("reason").unwrap_or("unknown").to_string();
                        *t.dropped.entry(reason).or_default() += m.get_counter().get_value();
                    }
                    "camgraph_capture_to_send_latency_seconds" => {
                        t.latency_sum_seconds += m.get_histogram().get_sample_sum();
                        t.latency_count += m.get_histogram().get_sample_count() as f64;
                    }
                    "camgraph_rtp_packets_lost_total" => {
                        t.rtp_packets_lost += m.get_counter().get_value()
                    }
                    "camgraph_ladder_viewers" => {
                        let (Some(node), Some(Ok(step))) =
                            (label("node"), label("step").map(str::parse::<usize>))
                        else {
                            continue;
                        };
                        let steps = t.ladder.entry(node.to_string()).or_default();
                        if steps.len() <= step {
                            steps.resize(step + 1, 0.0);
                        }
                        steps[step] = m.get_gauge().get_value();
                    }
                    _ => {}
                }
            }
        }
        totals
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}

/// A metric family whose series can be removed.
trait Forget {
    fn forget(&self, label_values: &[&str]);
}

impl<T: prometheus::core::MetricVecBuilder> Forget for prometheus::core::MetricVec<T> {
    fn forget(&self, label_values: &[&str]) {
        let _ = self.remove_label_values(label_values);
    }
}

/// One camera's streaming totals (see `Metrics::camera_totals`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CameraTotals {
    pub frames_captured: f64,
    /// Frames handed to viewers (all viewers together).
    pub frames_sent: f64,
    pub bytes_sent: f64,
    /// Drops by reason, over all the camera's nodes.
    pub dropped: BTreeMap<String, f64>,
    pub latency_sum_seconds: f64,
    pub latency_count: f64,
    pub viewers: f64,
    /// Packets WebRTC peers reported lost.
    pub rtp_packets_lost: f64,
    /// Viewers on each step (index 0 the best), per adaptive node.
    pub ladder: BTreeMap<String, Vec<f64>>,
}

/// The metrics of one node.
#[derive(Clone)]
pub struct NodeMetrics {
    metrics: Arc<Metrics>,
    labels: [String; 3],
}

impl NodeMetrics {
    fn with<'a>(&'a self, extra: &'a [&'a str]) -> Vec<&'a str> {
        self.labels
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect()
    }

    pub fn frames_captured(&self) -> IntCounter {
        self.metrics
            .frames_captured
            .with_label_values(&self.with(&[]))
    }
    pub fn frames_encoded(&self) -> IntCounter {
        self.metrics
            .frames_encoded
            .with_label_values(&self.with(&[]))
    }
    pub fn frames_sent(&self) -> IntCounter {
        self.metrics.frames_sent.with_label_values(&self.with(&[]))
    }
    /// Drops for one reason, e.g. `behind` (a consumer was busy and the newest frame won) or
    /// `rate_limit` (thinned to a requested fps).
    pub fn frames_dropped(&self, reason: &str) -> IntCounter {
        self.metrics
            .frames_dropped
            .with_label_values(&self.with(&[reason]))
    }
    pub fn bytes_sent(&self) -> IntCounter {
        self.metrics.bytes_sent.with_label_values(&self.with(&[]))
    }
    pub fn viewers(&self, protocol: &str) -> IntGauge {
        self.metrics
            .viewers
            .with_label_values(&self.with(&[protocol]))
    }
    pub fn encode_seconds(&self) -> Histogram {
        self.metrics
            .encode_seconds
            .with_label_values(&self.with(&[]))
    }
    pub fn latency_seconds(&self) -> Histogram {
        self.metrics
            .latency_seconds
            .with_label_values(&self.with(&[]))
    }
    pub fn camera_up(&self) -> IntGauge {
        self.metrics.camera_up.with_label_values(&self.with(&[]))
    }
    /// Viewers on one step of an adaptive ladder.
    pub fn ladder_viewers(&self, step: usize) -> IntGauge {
        self.metrics
            .ladder_viewers
            .with_label_values(&self.with(&[&step.to_string()]))
    }
    pub fn camera_reconnects(&self) -> IntCounter {
        self.metrics.reconnects.with_label_values(&self.with(&[]))
    }
    pub fn rtp_packets_lost(&self) -> IntCounter {
        self.metrics.rtp_lost.with_label_values(&self.with(&[]))
    }
    pub fn encoder_settings(&self) -> IntGauge {
        self.metrics
            .encoder_settings
            .with_label_values(&self.with(&[]))
    }
}
