//! Every Prometheus metric camgraph exports, named in one place: the `families!` table below.
//! Registration, forgetting a stopped node's series and the per-camera totals of `/api/stats`
//! all follow from it, so adding a metric is one entry there (plus its accessor on
//! `NodeMetrics`). Nodes get a `NodeMetrics` with the `camera`, `node` and `type` labels already
//! applied and take their counters from it once, at start, so the frame path never looks a
//! metric up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::proto::Metric;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The labels of every node family's series, before the family's own.
const NODE_LABELS: &[&str] = &["camera", "node", "type"];

/// Buckets from 0.5 ms to 2 s: they resolve both a 1 ms encode and a stalled viewer.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.0,
];

/// What a family's series are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    /// A histogram with these bucket bounds.
    Histogram(&'static [f64]),
}

/// Whose series a family holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One series per node (labels `camera`, `node`, `type`, then the family's own); a stopped
    /// node's series are removed.
    Node,
    /// The process's own (reloads, build), labelled only by the family's own labels.
    Process,
}

/// One metric family: everything its registration needs.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub scope: Scope,
    /// The family's own labels (after the node labels for `Scope::Node`).
    pub extra: &'static [&'static str],
}

impl Family {
    /// All label names of the family's series, in order.
    pub fn labels(&self) -> Vec<&'static str> {
        let node: &[&'static str] = match self.scope {
            Scope::Node => NODE_LABELS,
            Scope::Process => &[],
        };
        node.iter().chain(self.extra).copied().collect()
    }
}

/// The Rust type of a registered family of each kind.
macro_rules! family_vec {
    (Counter) => {
        IntCounterVec
    };
    (Gauge) => {
        IntGaugeVec
    };
    (Histogram) => {
        HistogramVec
    };
}

/// Declares every family once. Each entry becomes a row of `FAMILIES` and a typed field of
/// `Families` registered from that row.
macro_rules! families {
    ($(
        $field:ident: $kind:ident $(($buckets:expr))?, $scope:ident [$($extra:literal),*],
            $name:literal, $help:literal;
    )*) => {
        /// Every family camgraph exports.
        pub const FAMILIES: &[Family] = &[$(Family {
            name: $name,
            help: $help,
            kind: Kind::$kind $(($buckets))?,
            scope: Scope::$scope,
            extra: &[$($extra),*],
        },)*];

        /// The registered families, one field per row of `FAMILIES`, in the same order.
        struct Families {
            $($field: family_vec!($kind),)*
        }

        impl Families {
            /// Registers every row of `FAMILIES` in `registry`.
            fn register(registry: &Registry) -> Self {
                let mut rows = FAMILIES.iter();
                // Struct fields are evaluated in the order written: the order of `FAMILIES`.
                Self {
                    $($field: Register::register(
                        // Infallible: the macro makes one field per row of FAMILIES.
                        rows.next().expect("a row per field"),
                        registry,
                    ),)*
                }
            }

            /// Each row with its registered family.
            fn each(&self) -> impl Iterator<Item = (&'static Family, &dyn Series)> + '_ {
                FAMILIES.iter().zip([$(&self.$field as &dyn Series),*])
            }
        }
    };
}

families! {
    frames_captured: Counter, Node[],
        "camgraph_frames_captured_total", "Frames captured by a camera.";
    frames_encoded: Counter, Node[],
        "camgraph_frames_encoded_total", "Frames encoded, per encoder node.";
    frames_decoded: Counter, Node[],
        "camgraph_frames_decoded_total", "Frames decoded, per decoder node (a camera's H.264 to pixels).";
    frames_sent: Counter, Node[],
        "camgraph_frames_sent_total", "Frames sent to viewers.";
    frames_dropped: Counter, Node["reason"],
        "camgraph_frames_dropped_total", "Frames not processed or not sent, by reason.";
    bytes_sent: Counter, Node[],
        "camgraph_bytes_sent_total", "Payload bytes sent to viewers.";
    viewers: Gauge, Node["protocol"],
        "camgraph_viewers", "Viewers connected, by protocol.";
    encode_seconds: Histogram(SECONDS_BUCKETS), Node[],
        "camgraph_encode_duration_seconds", "Time to encode one frame.";
    latency_seconds: Histogram(SECONDS_BUCKETS), Node[],
        "camgraph_capture_to_send_latency_seconds",
        "Time from capture to handing the frame to a viewer's connection.";
    camera_up: Gauge, Node[],
        "camgraph_camera_up", "1 while a camera delivers frames, 0 while it is down.";
    encoder_settings: Gauge, Node[],
        "camgraph_encoder_active_settings",
        "Distinct settings an encoder is currently producing (one encode per setting).";
    ladder_viewers: Gauge, Node["step"],
        "camgraph_ladder_viewers",
        "Viewers on each step of an adaptive ladder (step 0 is the best).";
    reconnects: Counter, Node[],
        "camgraph_camera_reconnects_total", "Times a camera came back after failing.";
    camera_errors: Counter, Node["reason"],
        "camgraph_camera_errors_total",
        "Times a camera's source failed, by reason (see CameraErrorReason).";
    rtp_lost: Counter, Node[],
        "camgraph_rtp_packets_lost_total",
        "RTP packets that WebRTC peers' receiver reports count as lost.";
    sink_state: Gauge, Node["state"],
        "camgraph_sink_state",
        "1 for the state a sink that publishes to a server is in, 0 for its other states.";
    sink_reconnects: Counter, Node[],
        "camgraph_sink_reconnects_total",
        "Times a sink that publishes to a server published again after losing it.";
    rtp_sent_packets: Counter, Node[],
        "camgraph_rtp_sent_packets_total",
        "RTP packets a node sent to its RTP target (RTCP not included).";
    rtp_sent_bytes: Counter, Node[],
        "camgraph_rtp_sent_bytes_total",
        "Bytes of RTP packets (headers included) a node sent to its RTP target.";
    rtp_send_errors: Counter, Node["reason"],
        "camgraph_rtp_send_errors_total",
        "RTP and RTCP packets a node could not send to its RTP target, by reason (see RtpSendFailure).";
    reloads: Counter, Process["result"],
        "camgraph_config_reloads_total", "Configuration reloads, by result (success, failure).";
    http_refused: Counter, Process["reason"],
        "camgraph_http_refused_total",
        "HTTP requests refused, by reason (see RefusedReason).";
    build_info: Gauge, Process["version"],
        "camgraph_build_info", "Always 1; labels give the build.";
}

/// A family type that can be made and registered from its row.
trait Register: Sized {
    fn register(family: &Family, registry: &Registry) -> Self;
}

fn registered<V: Collector + Clone + 'static>(
    vec: prometheus::Result<V>,
    registry: &Registry,
) -> V {
    // Infallible for the constant FAMILIES table (names and labels fixed at compile time; the
    // unit tests register it), never for input.
    let vec = vec.expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("unique metric");
    vec
}

impl Register for IntCounterVec {
    fn register(f: &Family, registry: &Registry) -> Self {
        registered(
            IntCounterVec::new(Opts::new(f.name, f.help), &f.labels()),
            registry,
        )
    }
}

impl Register for IntGaugeVec {
    fn register(f: &Family, registry: &Registry) -> Self {
        registered(
            IntGaugeVec::new(Opts::new(f.name, f.help), &f.labels()),
            registry,
        )
    }
}

impl Register for HistogramVec {
    fn register(f: &Family, registry: &Registry) -> Self {
        let Kind::Histogram(buckets) = f.kind else {
            unreachable!("families! makes a HistogramVec only for Kind::Histogram");
        };
        let opts = HistogramOpts::new(f.name, f.help).buckets(buckets.to_vec());
        registered(HistogramVec::new(opts, &f.labels()), registry)
    }
}

/// A registered family seen whatever its kind: its series can be read and removed.
trait Series: Collector {
    fn remove(&self, label_values: &[&str]);
    /// Makes the series with these label values (tests use it to cover every family).
    #[cfg(test)]
    fn touch(&self, label_values: &[&str]);
}

impl<T: MetricVecBuilder> Series for MetricVec<T> {
    fn remove(&self, label_values: &[&str]) {
        let _ = self.remove_label_values(label_values);
    }
    #[cfg(test)]
    fn touch(&self, label_values: &[&str]) {
        self.with_label_values(label_values);
    }
}

/// The value of label `name` of series `m`.
fn label<'a>(m: &'a Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// Every series of a family.
fn series(family: &dyn Collector) -> impl Iterator<Item = Metric> {
    family
        .collect()
        .into_iter()
        .flat_map(|mut f| f.take_metric().into_iter())
}

/// Why a frame was not processed or not sent: the closed set of values of the `reason` label of
/// `camgraph_frames_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A consumer was busy and the newest frame won.
    Behind,
    /// Thinned to a requested frame rate.
    RateLimit,
    /// A snapshot could not be written.
    WriteFailed,
    /// The encoder failed on the frame.
    EncodeFailed,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 4] = [
        DropReason::Behind,
        DropReason::RateLimit,
        DropReason::WriteFailed,
        DropReason::EncodeFailed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Behind => "behind",
            DropReason::RateLimit => "rate_limit",
            DropReason::WriteFailed => "write_failed",
            DropReason::EncodeFailed => "encode_failed",
        }
    }
}

/// Why a camera's source failed: the closed set of values of the `reason` label of
/// `camgraph_camera_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraErrorReason {
    /// The source offered more data than camgraph accepts at once (an MJPEG part or a file over
    /// its limit): refused before it is read.
    TooLarge,
    /// Any other failure (unreachable, ended, not a JPEG, ...).
    Failed,
}

impl CameraErrorReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraErrorReason::TooLarge => "too_large",
            CameraErrorReason::Failed => "failed",
        }
    }
}

/// Why an RTP or RTCP packet was not sent: the closed set of values of the `reason` label of
/// `camgraph_rtp_send_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpSendFailure {
    /// Nobody listens at the target: an earlier packet came back as ICMP port unreachable.
    Refused,
    /// The socket's send buffer was full.
    BufferFull,
    /// Any other error (no route, network down, ...).
    Failed,
}

impl RtpSendFailure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RtpSendFailure::Refused => "refused",
            RtpSendFailure::BufferFull => "buffer_full",
            RtpSendFailure::Failed => "failed",
        }
    }
}

/// Why an HTTP request was refused (by the gate, or a limit of the server): the closed set of values of the
/// `reason` label of `camgraph_http_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedReason {
    /// No token, or one that is not configured (401).
    Unauthenticated,
    /// A `view` token on a `control` route (403).
    Role,
    /// A state-changing request or WebSocket upgrade from an origin that is not allowed (403).
    Origin,
    /// A `Host` header that does not name this server (DNS rebinding) (400).
    Host,
    /// A form or plain-text body sent to a state-changing route (415).
    ContentType,
    /// An endless stream beyond `server.max_viewers`, all cameras together (503).
    Viewers,
}

impl RefusedReason {
    /// Every reason.
    pub const ALL: [RefusedReason; 6] = [
        RefusedReason::Unauthenticated,
        RefusedReason::Role,
        RefusedReason::Origin,
        RefusedReason::Host,
        RefusedReason::ContentType,
        RefusedReason::Viewers,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedReason::Unauthenticated => "unauthenticated",
            RefusedReason::Role => "role",
            RefusedReason::Origin => "origin",
            RefusedReason::Host => "host",
            RefusedReason::ContentType => "content_type",
            RefusedReason::Viewers => "viewers",
        }
    }
}

/// The registry and every metric family.
pub struct Metrics {
    registry: Registry,
    families: Families,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let families = Families::register(&registry);
        // Both results exist from the start, so dashboards show 0 rather than nothing.
        for result in ["success", "failure"] {
            families.reloads.with_label_values(&[result]);
        }
        for reason in RefusedReason::ALL {
            families.http_refused.with_label_values(&[reason.as_str()]);
        }
        families
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Arc::new(Metrics { registry, families })
    }

    /// Counts a configuration reload.
    pub fn reload(&self, ok: bool) {
        self.families
            .reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// Counts an HTTP request refused before its handler.
    pub fn refused(&self, reason: RefusedReason) {
        self.families
            .http_refused
            .with_label_values(&[reason.as_str()])
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
        for (family, vec) in self.families.each() {
            if family.scope != Scope::Node {
                continue;
            }
            let names = family.labels();
            for m in series(vec).filter(|m| label(m, "node") == Some(node)) {
                let values: Vec<&str> = names
                    .iter()
                    .map(|n| label(&m, n).unwrap_or_default())
                    .collect();
                vec.remove(&values);
            }
        }
    }

    /// Per-camera totals of the streaming metrics, for `GET /api/stats`: the same numbers as
    /// `/metrics`, summed over each camera's nodes.
    pub fn camera_totals(&self) -> BTreeMap<String, CameraTotals> {
        let f = &self.families;
        let mut totals: BTreeMap<String, CameraTotals> = BTreeMap::new();
        let mut add = |family: &dyn Collector, add: &mut dyn FnMut(&mut CameraTotals, &Metric)| {
            for m in series(family) {
                if let Some(camera) = label(&m, "camera") {
                    add(totals.entry(camera.to_string()).or_default(), &m);
                }
            }
        };
        // Frames and bytes count as streamed when a node that serves viewers (one with a viewers
        // gauge) sent them, not when a node passed them on or saved them.
        let serving: BTreeSet<String> = series(&f.viewers)
            .filter_map(|m| label(&m, "node").map(str::to_string))
            .collect();
        let streamed = |m: &Metric| label(m, "node").is_some_and(|n| serving.contains(n));
        add(&f.frames_captured, &mut |t, m| {
            t.frames_captured += m.get_counter().get_value()
        });
        add(&f.frames_sent, &mut |t, m| {
            if streamed(m) {
                t.frames_sent += m.get_counter().get_value()
            }
        });
        add(&f.bytes_sent, &mut |t, m| {
            if streamed(m) {
                t.bytes_sent += m.get_counter().get_value()
            }
        });
        add(&f.viewers, &mut |t, m| {
            t.viewers += m.get_gauge().get_value()
        });
        add(&f.frames_dropped, &mut |t, m| {
            let reason = label(m, "reason").unwrap_or("unknown").to_string();
            *t.dropped.entry(reason).or_default() += m.get_counter().get_value();
        });
        add(&f.latency_seconds, &mut |t, m| {
            t.latency_sum_seconds += m.get_histogram().get_sample_sum();
            t.latency_count += m.get_histogram().get_sample_count() as f64;
        });
        add(&f.rtp_lost, &mut |t, m| {
            t.rtp_packets_lost += m.get_counter().get_value()
        });
        add(&f.ladder_viewers, &mut |t, m| {
            let (Some(node), Some(Ok(step))) =
                (label(m, "node"), label(m, "step").map(str::parse::<usize>))
            else {
                return;
            };
            let steps = t.ladder.entry(node.to_string()).or_default();
            if steps.len() <= step {
                steps.resize(step + 1, 0.0);
            }
            steps[step] = m.get_gauge().get_value();
        });
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
    /// The metrics of a part of this node that is a node type of its own (an `adaptive` node's
    /// decoder and encoder): the same camera and node, labelled with the part's type. They leave
    /// `/metrics` with the node.
    pub fn part(&self, type_name: &str) -> NodeMetrics {
        let [camera, node, _] = &self.labels;
        self.metrics.node(camera, node, type_name)
    }

    fn with<'a>(&'a self, extra: &'a [&'a str]) -> Vec<&'a str> {
        self.labels
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect()
    }

    pub fn frames_captured(&self) -> IntCounter {
        self.metrics
            .families
            .frames_captured
            .with_label_values(&self.with(&[]))
    }
    pub fn frames_encoded(&self) -> IntCounter {
        self.metrics
            .families
            .frames_encoded
            .with_label_values(&self.with(&[]))
    }
    pub fn frames_decoded(&self) -> IntCounter {
        self.metrics
            .families
            .frames_decoded
            .with_label_values(&self.with(&[]))
    }
    pub fn frames_sent(&self) -> IntCounter {
        self.metrics
            .families
            .frames_sent
            .with_label_values(&self.with(&[]))
    }
    /// Drops for one reason.
    pub fn frames_dropped(&self, reason: DropReason) -> IntCounter {
        self.metrics
            .families
            .frames_dropped
            .with_label_values(&self.with(&[reason.as_str()]))
    }
    pub fn bytes_sent(&self) -> IntCounter {
        self.metrics
            .families
            .bytes_sent
            .with_label_values(&self.with(&[]))
    }
    /// Viewers connected over `protocol`. Taking this gauge marks the node as one that serves
    /// viewers: its frames and bytes sent count as streamed in `Metrics::camera_totals`.
    pub fn viewers(&self, protocol: &str) -> IntGauge {
        self.metrics
            .families
            .viewers
            .with_label_values(&self.with(&[protocol]))
    }
    pub fn encode_seconds(&self) -> Histogram {
        self.metrics
            .families
            .encode_seconds
            .with_label_values(&self.with(&[]))
    }
    pub fn latency_seconds(&self) -> Histogram {
        self.metrics
            .families
            .latency_seconds
            .with_label_values(&self.with(&[]))
    }
    pub fn camera_up(&self) -> IntGauge {
        self.metrics
            .families
            .camera_up
            .with_label_values(&self.with(&[]))
    }
    /// Viewers on one step of an adaptive ladder.
    pub fn ladder_viewers(&self, step: usize) -> IntGauge {
        self.metrics
            .families
            .ladder_viewers
            .with_label_values(&self.with(&[&step.to_string()]))
    }
    pub fn camera_reconnects(&self) -> IntCounter {
        self.metrics
            .families
            .reconnects
            .with_label_values(&self.with(&[]))
    }
    /// Failures of a camera's source for one reason.
    pub fn camera_errors(&self, reason: CameraErrorReason) -> IntCounter {
        self.metrics
            .families
            .camera_errors
            .with_label_values(&self.with(&[reason.as_str()]))
    }
    pub fn rtp_packets_lost(&self) -> IntCounter {
        self.metrics
            .families
            .rtp_lost
            .with_label_values(&self.with(&[]))
    }
    /// Whether a sink that publishes to a server is in `state` (1) or not (0).
    pub fn sink_state(&self, state: &str) -> IntGauge {
        self.metrics
            .families
            .sink_state
            .with_label_values(&self.with(&[state]))
    }
    pub fn sink_reconnects(&self) -> IntCounter {
        self.metrics
            .families
            .sink_reconnects
            .with_label_values(&self.with(&[]))
    }
    /// RTP packets a node sent to its RTP target.
    pub fn rtp_sent_packets(&self) -> IntCounter {
        self.metrics
            .families
            .rtp_sent_packets
            .with_label_values(&self.with(&[]))
    }
    /// Bytes of RTP packets a node sent to its RTP target.
    pub fn rtp_sent_bytes(&self) -> IntCounter {
        self.metrics
            .families
            .rtp_sent_bytes
            .with_label_values(&self.with(&[]))
    }
    /// Packets a node could not send to its RTP target, for one reason.
    pub fn rtp_send_errors(&self, reason: RtpSendFailure) -> IntCounter {
        self.metrics
            .families
            .rtp_send_errors
            .with_label_values(&self.with(&[reason.as_str()]))
    }
    pub fn encoder_settings(&self) -> IntGauge {
        self.metrics
            .families
            .encoder_settings
            .with_label_values(&self.with(&[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_unique_prefixed_and_counters_end_in_total() {
        let mut seen = BTreeSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(f.name.starts_with("camgraph_"), "{}", f.name);
            assert_eq!(
                f.name.ends_with("_total"),
                f.kind == Kind::Counter,
                "{}: `_total` on counters only",
                f.name
            );
        }
        let registered: BTreeSet<String> = Metrics::new()
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let listed: BTreeSet<String> = FAMILIES
            .iter()
            .filter(|f| f.scope == Scope::Process)
            .map(|f| f.name.to_string())
            .collect();
        assert!(
            registered.is_superset(&listed),
            "process families are there from the start: {registered:?}"
        );
    }

    #[test]
    fn forgetting_a_node_removes_its_series_of_every_family() {
        let metrics = Metrics::new();
        let node_families = || {
            metrics
                .families
                .each()
                .filter(|(f, _)| f.scope == Scope::Node)
        };
        for (family, vec) in node_families() {
            for node in ["gone", "kept"] {
                let mut values = vec!["cam", node, "some_type"];
                values.extend(family.extra.iter().map(|_| "x"));
                vec.touch(&values);
            }
        }
        metrics.forget_node("gone");
        for (family, vec) in node_families() {
            let nodes: Vec<String> = series(vec)
                .filter_map(|m| label(&m, "node").map(str::to_string))
                .collect();
            assert_eq!(nodes, ["kept"], "{}", family.name);
        }
        assert!(!metrics.render().contains("node=\"gone\""));
        assert!(metrics.render().contains("camgraph_config_reloads_total"));
    }

    #[test]
    fn camera_totals_count_as_streamed_only_what_nodes_with_viewers_sent() {
        let metrics = Metrics::new();
        let relay = metrics.node("front", "front_relay", "relay");
        let server = metrics.node("front", "front_server", "server");
        let camera = metrics.node("front", "front", "source");
        camera.frames_captured().inc_by(10);
        relay.frames_sent().inc_by(9);
        relay.frames_dropped(DropReason::RateLimit).inc_by(1);
        server.viewers("http").set(2);
        server.frames_sent().inc_by(7);
        server.bytes_sent().inc_by(700);
        server.frames_dropped(DropReason::Behind).inc_by(2);
        server.latency_seconds().observe(0.5);
        server.ladder_viewers(2).set(1);
        let totals = metrics.camera_totals();
        let front = &totals["front"];
        assert_eq!(front.frames_captured, 10.0);
        assert_eq!(
            front.frames_sent, 7.0,
            "the relay's frames are not streamed"
        );
        assert_eq!(front.bytes_sent, 700.0);
        assert_eq!(front.viewers, 2.0);
        assert_eq!(
            front.dropped,
            BTreeMap::from([("behind".into(), 2.0), ("rate_limit".into(), 1.0)])
        );
        assert_eq!((front.latency_sum_seconds, front.latency_count), (0.5, 1.0));
        assert_eq!(front.ladder["front_server"], [0.0, 0.0, 1.0]);
    }

    #[test]
    fn drop_reasons_are_the_contracts_closed_set() {
        let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            ["behind", "rate_limit", "write_failed", "encode_failed"]
        );
    }
}
