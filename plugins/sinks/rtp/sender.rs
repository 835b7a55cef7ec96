//! The rtp_sink's actor, on its own thread: resolves the target (again, with backoff, while it does
//! not resolve or cannot be reached), then holds one subscription to the encoder's stream, cuts
//! each frame into RTP packets (`h264_rtp`) and sends them on a UDP socket connected to the
//! target; every second an
//! RTCP sender report (with the stream's CNAME) goes to the RTCP port, and keyframe requests (PLI,
//! FIR) coming back from there ask the encoder for an IDR. A connected UDP socket learns from ICMP
//! that nobody listens (ECONNREFUSED on a later send): that is counted, shown as `down` with the
//! reason while it lasts, and sending goes on, so the stream is there the moment a receiver is.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, AsyncContext, Context, StreamHandler};
use bytes::{Bytes, BytesMut};
use prometheus::{Histogram, IntCounter, IntGauge};
use rtc::rtcp::goodbye::Goodbye;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc::rtp::packetizer::Packetizer;
use rtc::shared::marshal::{Marshal, MarshalSize};
use serde_json::json;

use super::Target;
use crate::frame::EncodedFrame;
use crate::metrics::{DropReason, NodeMetrics, RtpSendFailure};
use crate::plugins::sinks::h264_rtp::{h264_packetizer, is_keyframe_request, random_u64, RtpClock};
use crate::port::H264Feed;
use crate::stop::{stop_on, StopToken};

/// How often a sender report goes out.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A refusal this recent still means nobody listens (ICMP answers are rate-limited, so they do not
/// come back for every packet).
const REFUSED_HOLD: Duration = Duration::from_secs(3);
/// Closest two keyframe requests from the receiver are passed on to the encoder.
const MIN_KEYFRAME_GAP: Duration = Duration::from_millis(300);
/// First and longest wait before resolving a target that did not resolve again.
const RESOLVE_RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));

/// What the sink is doing, for `/api/graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Resolving the target (the first time).
    Resolving,
    /// The target's name did not resolve; tried again with backoff.
    Unresolved,
    /// No socket could reach the target (no route to it); tried again with backoff.
    Unreachable,
    /// Sending.
    Sending,
    /// The encoder refused the subscription (the error says why).
    Failed,
}

/// The sink's state and counts, shared with its stats closure.
pub struct Status {
    target: String,
    inner: Mutex<Inner>,
    keyframe_requests: AtomicU64,
    sender_reports: AtomicU64,
}

struct Inner {
    state: State,
    /// The address the name resolved to.
    resolved: Option<SocketAddr>,
    error: Option<String>,
    /// When a send last came back refused.
    refused_at: Option<Instant>,
}

impl Status {
    pub fn new(target: &str) -> Self {
        Self {
            target: target.to_string(),
            inner: Mutex::new(Inner {
                state: State::Resolving,
                resolved: None,
                error: None,
                refused_at: None,
            }),
            keyframe_requests: AtomicU64::new(0),
            sender_reports: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, state: State, resolved: Option<SocketAddr>, error: Option<String>) {
        let mut inner = self.lock();
        inner.state = state;
        inner.resolved = resolved;
        inner.error = error;
    }

    /// Notes a refusal; true if nobody was known to refuse just before (worth a log line).
    fn refused(&self) -> bool {
        let mut inner = self.lock();
        let news = inner.refused_at.is_none_or(|t| t.elapsed() > REFUSED_HOLD);
        inner.refused_at = Some(Instant::now());
        news
    }

    /// The node's statistics: `up` false (the node shows `down`) while the target does not
    /// resolve or nobody listens there, with the reason in `error`.
    pub fn describe(&self) -> serde_json::Value {
        let inner = self.lock();
        let refusing = inner
            .refused_at
            .is_some_and(|t| t.elapsed() <= REFUSED_HOLD);
        let (state, error) = match inner.state {
            State::Resolving => ("resolving", None),
            State::Unresolved => ("unresolved", inner.error.clone()),
            State::Unreachable => ("unreachable", inner.error.clone()),
            State::Failed => ("failed", inner.error.clone()),
            State::Sending if refusing => (
                "refused",
                Some(format!(
                    "nobody receives at {} (ICMP port unreachable); still sending",
                    inner
                        .resolved
                        .map_or(self.target.clone(), |a| a.to_string())
                )),
            ),
            State::Sending => ("sending", None),
        };
        json!({
            "target": self.target,
            "resolved": inner.resolved.map(|a| a.to_string()),
            "state": state,
            "up": state == "sending" || state == "resolving",
            "error": error,
            "keyframe_requests": self.keyframe_requests.load(Ordering::Relaxed),
            "sender_reports": self.sender_reports.load(Ordering::Relaxed),
        })
    }
}

/// The sink's counters, taken once at start.
#[derive(Clone)]
pub struct SendMetrics {
    frames: IntCounter,
    payload_bytes: IntCounter,
    packets: IntCounter,
    wire_bytes: IntCounter,
    refused: IntCounter,
    buffer_full: IntCounter,
    failed: IntCounter,
    dropped_behind: IntCounter,
    latency: Histogram,
    /// 1 while sending to a resolved target: the media server is this node's one viewer.
    viewers: IntGauge,
}

impl SendMetrics {
    pub fn new(m: &NodeMetrics) -> Self {
        Self {
            frames: m.frames_sent(),
            payload_bytes: m.bytes_sent(),
            packets: m.rtp_sent_packets(),
            wire_bytes: m.rtp_sent_bytes(),
            refused: m.rtp_send_errors(RtpSendFailure::Refused),
            buffer_full: m.rtp_send_errors(RtpSendFailure::BufferFull),
            failed: m.rtp_send_errors(RtpSendFailure::Failed),
            dropped_behind: m.frames_dropped(DropReason::Behind),
            latency: m.latency_seconds(),
            viewers: m.viewers("rtp"),
        }
    }
}

/// Everything the actor starts from.
pub struct Setup {
    pub camera: String,
    pub target: Target,
    pub rtcp_port: u16,
    pub payload_type: u8,
    pub ttl: u32,
    pub feed: Arc<H264Feed>,
    pub metrics: SendMetrics,
    pub status: Arc<Status>,
}

/// The two connected sockets: RTP to the target's port, RTCP to its RTCP port.
struct Sockets {
    rtp: UdpSocket,
    rtcp: Arc<tokio::net::UdpSocket>,
}

/// An RTCP datagram from the receiver.
struct RtcpIn(Bytes);

pub struct RtpSender {
    setup: Setup,
    sockets: Option<Sockets>,
    packetizer: Box<dyn Packetizer>,
    clock: RtpClock,
    ssrc: u32,
    /// Sent since the start, for sender reports (RFC 3550 counts wrap).
    packet_count: u32,
    octet_count: u32,
    retry: Duration,
    last_keyframe_request: Option<Instant>,
    stop: StopToken,
}

impl RtpSender {
    pub fn new(setup: Setup, stop: StopToken) -> Self {
        let ssrc = random_u64() as u32;
        Self {
            packetizer: h264_packetizer(ssrc, setup.payload_type),
            setup,
            sockets: None,
            clock: RtpClock::default(),
            ssrc,
            packet_count: 0,
            octet_count: 0,
            retry: RESOLVE_RETRY.0,
            last_keyframe_request: None,
            stop,
        }
    }

    /// Resolves the target and opens the sockets, then subscribes to the encoder; on failure
    /// tries again later.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        let Setup { target, camera, .. } = &self.setup;
        let sockets = resolve(target)
            .map_err(|e| (State::Unresolved, e))
            .and_then(|addr| {
                open(addr, self.setup.rtcp_port, self.setup.ttl)
                    .map(|s| (addr, s))
                    .map_err(|e| (State::Unreachable, format!("cannot send to {addr}: {e}")))
            });
        let (addr, sockets) = match sockets {
            Ok(ok) => ok,
            Err((state, error)) => {
                tracing::warn!(camera = %camera, target = %self.setup.status.target, retry_ms = self.retry.as_millis() as u64, "rtp_sink: {error}");
                self.setup.status.set(state, None, Some(error));
                ctx.run_later(self.retry, |act, ctx| act.connect(ctx));
                self.retry = (self.retry * 2).min(RESOLVE_RETRY.1);
                return;
            }
        };
        let frames = match self.setup.feed.subscribe(None) {
            Ok(frames) => frames,
            Err(e) => {
                // The encoder refused one more variant: the graph is misbuilt, not the network.
                tracing::warn!(camera = %camera, "rtp_sink: the encoder refused: {e}");
                self.setup
                    .status
                    .set(State::Failed, Some(addr), Some(e.to_string()));
                return;
            }
        };
        tracing::info!(camera = %camera, target = %addr, "rtp_sink sending");
        ctx.add_stream(frames.into_stream());
        self.setup.feed.request_keyframe(None);
        let rtcp = sockets.rtcp.clone();
        ctx.add_stream(futures_util::stream::unfold(rtcp, |socket| async move {
            let mut buf = vec![0u8; 1500];
            loop {
                match socket.recv(&mut buf).await {
                    Ok(n) => {
                        buf.truncate(n);
                        return Some((RtcpIn(buf.into()), socket));
                    }
                    // The ICMP answer to a report sent where nobody listens: go on listening.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                    Err(e) => {
                        tracing::warn!("rtp_sink stops reading RTCP: {e}");
                        return None;
                    }
                }
            }
        }));
        ctx.run_interval(REPORT_INTERVAL, |act, _| act.report());
        self.sockets = Some(sockets);
        self.setup.metrics.viewers.set(1);
        self.setup.status.set(State::Sending, Some(addr), None);
    }

    /// Sends one datagram, counting what became of it.
    fn send_rtp(&mut self, packet: &[u8], payload: usize) {
        let Some(sockets) = &self.sockets else {
            return;
        };
        let (refused, sent) = send_datagram(&sockets.rtp, packet);
        if let Some(e) = refused {
            self.failed(&e);
        }
        match sent {
            Ok(n) => {
                let m = &self.setup.metrics;
                m.packets.inc();
                m.wire_bytes.inc_by(n as u64);
                self.packet_count = self.packet_count.wrapping_add(1);
                self.octet_count = self.octet_count.wrapping_add(payload as u32);
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Counts a packet not sent, and logs when nobody listens any more.
    fn failed(&self, e: &std::io::Error) {
        let m = &self.setup.metrics;
        match e.kind() {
            ErrorKind::ConnectionRefused => {
                m.refused.inc();
                if self.setup.status.refused() {
                    tracing::warn!(camera = %self.setup.camera, target = %self.setup.status.target, "rtp_sink: nobody receives at the target (ICMP port unreachable); still sending");
                }
            }
            ErrorKind::WouldBlock => m.buffer_full.inc(),
            _ => {
                m.failed.inc();
                tracing::debug!(camera = %self.setup.camera, "rtp_sink send failed: {e}");
            }
        }
    }

    /// Sends an RTCP packet to the RTCP port.
    fn send_rtcp(&self, packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
        let Some(sockets) = &self.sockets else {
            return false;
        };
        let Ok(data) = rtc::rtcp::packet::marshal(packets) else {
            return false;
        };
        match sockets.rtcp.try_send(&data) {
            Ok(_) => true,
            Err(e) => {
                // RTCP refused is no news: a receiver may take RTP only.
                if e.kind() != ErrorKind::ConnectionRefused {
                    self.failed(&e);
                }
                false
            }
        }
    }

    fn cname(&self) -> Box<dyn rtc::rtcp::Packet> {
        Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: self.ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::from(format!("camgraph-{}", self.setup.camera)),
                }],
            }],
        })
    }

    /// A sender report and the CNAME, once the first frame set the RTP clock.
    fn report(&mut self) {
        let now = SystemTime::now();
        let Some(rtp_time) = self.clock.peek(now) else {
            return;
        };
        let report = SenderReport {
            ssrc: self.ssrc,
            ntp_time: ntp_time(now),
            rtp_time,
            packet_count: self.packet_count,
            octet_count: self.octet_count,
            ..Default::default()
        };
        if self.send_rtcp(&[Box::new(report), self.cname()]) {
            self.setup
                .status
                .sender_reports
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends `packet` on a connected socket. A socket reports the ICMP refusal of an earlier packet
/// on the next send, instead of sending it: that refusal is given apart, and the packet is sent
/// once more, so that the first packet after a receiver appears is not lost.
fn send_datagram(
    socket: &UdpSocket,
    packet: &[u8],
) -> (Option<std::io::Error>, std::io::Result<usize>) {
    match socket.send(packet) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => (Some(e), socket.send(packet)),
        sent => (None, sent),
    }
}

/// The target's first address; the error words what failed.
fn resolve(target: &Target) -> Result<SocketAddr, String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot resolve '{}': {e}", target.host);
    (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| cannot(&e))?
        .next()
        .ok_or_else(|| cannot(&"no address"))
}

/// UDP sockets connected to `addr` and to its RTCP port, non-blocking, with the multicast TTL.
fn open(addr: SocketAddr, rtcp_port: u16, ttl: u32) -> std::io::Result<Sockets> {
    let socket = |to: SocketAddr| -> std::io::Result<UdpSocket> {
        let any: IpAddr = match to {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let s = UdpSocket::bind((any, 0))?;
        match to.ip() {
            IpAddr::V4(ip) if ip.is_multicast() => s.set_multicast_ttl_v4(ttl)?,
            IpAddr::V6(ip) if ip.is_multicast() => {
                socket2::SockRef::from(&s).set_multicast_hops_v6(ttl)?
            }
            _ => {}
        }
        s.connect(to)?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let rtcp = socket(SocketAddr::new(addr.ip(), rtcp_port))?;
    Ok(Sockets {
        rtp: socket(addr)?,
        rtcp: Arc::new(tokio::net::UdpSocket::from_std(rtcp)?),
    })
}

/// `at` as a 64-bit NTP timestamp (seconds since 1900 and their fraction).
fn ntp_time(at: SystemTime) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    ((since.as_secs() + UNIX_TO_NTP) << 32) | fraction
}

impl Actor for RtpSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
        self.connect(ctx);
    }

    /// Says goodbye (RTCP BYE), so a receiver knows the stream ended rather than stalled.
    fn stopped(&mut self, _: &mut Self::Context) {
        let bye = Goodbye {
            sources: vec![self.ssrc],
            reason: Bytes::from_static(b"stopped"),
        };
        self.send_rtcp(&[Box::new(bye)]);
        self.setup.metrics.viewers.set(0);
    }
}

impl StreamHandler<(Arc<EncodedFrame>, u64)> for RtpSender {
    fn handle(&mut self, (frame, skipped): (Arc<EncodedFrame>, u64), _: &mut Self::Context) {
        if skipped > 0 {
            // The frames after the lost ones cannot be decoded until a keyframe.
            self.setup.metrics.dropped_behind.inc_by(skipped);
            self.setup.feed.request_keyframe(None);
        }
        let timestamp = self.clock.timestamp(frame.captured_at);
        let packets = match self.packetizer.packetize(Instant::now(), &frame.data, 0) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(camera = %self.setup.camera, "RTP packetizing failed: {e}");
                return;
            }
        };
        let mut buf = BytesMut::new();
        for mut packet in packets {
            packet.header.timestamp = timestamp;
            buf.resize(packet.marshal_size(), 0);
            let Ok(n) = packet.marshal_to(&mut buf) else {
                continue;
            };
            self.send_rtp(&buf[..n], packet.payload.len());
        }
        let m = &self.setup.metrics;
        m.frames.inc();
        m.payload_bytes.inc_by(frame.data.len() as u64);
        if let Ok(age) = SystemTime::now().duration_since(frame.captured_at) {
            m.latency.observe(age.as_secs_f64());
        }
    }

    /// The encoder stopped: the graph stops this node too.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl StreamHandler<RtcpIn> for RtpSender {
    fn handle(&mut self, RtcpIn(mut data): RtcpIn, _: &mut Self::Context) {
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut data) else {
            return;
        };
        if !packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
            return;
        }
        let status = &self.setup.status;
        status.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        if self
            .last_keyframe_request
            .is_none_or(|t| t.elapsed() >= MIN_KEYFRAME_GAP)
        {
            self.last_keyframe_request = Some(Instant::now());
            self.setup.feed.request_keyframe(None);
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_packet_after_a_refusal_is_sent_not_lost() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = receiver.local_addr().unwrap().port();
        drop(receiver);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(("127.0.0.1", port)).unwrap();
        // Nobody listens: on loopback the ICMP answer is back before `send` returns, and the
        // socket holds the refusal for its next send.
        assert!(socket.send(b"before").is_ok());
        let receiver = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (refused, sent) = send_datagram(&socket, b"after");
        assert_eq!(
            refused.map(|e| e.kind()),
            Some(ErrorKind::ConnectionRefused)
        );
        assert_eq!(sent.unwrap(), 5);
        let mut buf = [0u8; 16];
        let n = receiver
            .recv(&mut buf)
            .expect("the packet after the refusal");
        assert_eq!(&buf[..n], b"after");
    }

    #[test]
    fn ntp_time_counts_from_1900_in_fractions_of_2_to_the_32() {
        let at = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(ntp_time(at), ((2_208_988_801u64) << 32) | (1u64 << 31));
    }
}
