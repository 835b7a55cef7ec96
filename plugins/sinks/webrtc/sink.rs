//! The sink actor: the camera's peers, one subscription to the H.264 encoder per variant some peer
//! is on (held while that peer exists), and per variant the packetizer that cuts each encoded
//! frame into RTP packets once for all its peers. Behind an `adaptive` node each peer's writer keeps
//! its ladder position, fed by its receiver reports (`feedback.rs`) and the frames lost upstream;
//! when it moves, the sink switches the writer to the new step's packets. Peers that fail, disconnect, close or sit in
//! `connecting` past the timeout are closed.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::{
    fut, Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message,
    ResponseActFuture, ResponseFuture, SpawnHandle, StreamHandler, WrapFuture,
};
use futures_util::StreamExt;
use prometheus::{IntCounter, IntGauge};
use rtc::rtp::packetizer::{new_packetizer, Packetizer};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit};

use super::api::{AddPeerCandidate, ClosePeer, OpenPeer, PeerAnswer, PeerEvent};
use super::feedback::{self, FeedbackTargets};
use super::peer::{self, PeerSetup, RtpFrame, WriterCommand, WriterMetrics, H264_CLOCK_RATE};
use super::WebRtcSinkConfig;
use crate::adapt::AdaptPolicy;
use crate::error::ServiceError;
use crate::fanout::Fanout;
use crate::frame::EncodedFrame;
use crate::metrics::NodeMetrics;
use crate::node::Shutdown;
use crate::port::{H264Feed, H264Variant};

/// RTP payload size limit, as webrtc-rs uses for its own tracks.
const RTP_MTU: usize = 1200;
/// How often peers stuck in `connecting` are looked for.
const TIMEOUT_CHECK: Duration = Duration::from_millis(500);

/// Where a peer's connection went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    Connected,
    /// Failed, disconnected or closed: the peer is removed.
    Gone(&'static str),
}

/// From a peer's connection (webrtc-rs driver thread) to the sink.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerStateChanged {
    pub session: String,
    pub state: PeerState,
}

/// A peer's ladder position moved (from its receiver reports): switch it to `variant`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerStepChanged {
    pub session: String,
    pub variant: H264Variant,
}

/// Which of the encoder's streams: `None` is its configured one.
type VariantKey = Option<H264Variant>;

/// Live numbers for `GET /api/graph` and tests.
#[derive(Default)]
pub struct SinkCounts {
    pub peers: AtomicUsize,
    pub connected: AtomicUsize,
    pub packetized: AtomicU64,
    pub closed: AtomicU64,
    /// PLI/FIR received from peers (each may have asked the encoder for an IDR).
    pub keyframe_requests: Arc<AtomicU64>,
    /// Peers moved to another step of their ladder.
    pub switches: AtomicU64,
    /// Each peer's current variant by session (`null`: the encoder's configured one).
    pub variants: std::sync::Mutex<std::collections::BTreeMap<String, Option<String>>>,
}

#[derive(Clone)]
pub struct SinkMetrics {
    pub writer: WriterMetrics,
    pub viewers: IntGauge,
    pub dropped_behind: IntCounter,
    pub rtp_lost: IntCounter,
}

impl SinkMetrics {
    pub fn new(m: &NodeMetrics) -> Self {
        Self {
            writer: WriterMetrics {
                sent: m.frames_sent(),
                bytes: m.bytes_sent(),
                dropped_behind: m.frames_dropped("behind"),
                latency: m.latency_seconds(),
            },
            viewers: m.viewers("webrtc"),
            dropped_behind: m.frames_dropped("behind"),
            rtp_lost: m.rtp_packets_lost(),
        }
    }
}

struct Peer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    payload_type: u8,
    created: Instant,
    connected: bool,
    /// The variant whose packets the peer gets.
    variant: VariantKey,
    /// Its ladder position, until connected (then its writer keeps it).
    policy: Option<Box<dyn AdaptPolicy<H264Variant>>>,
    /// Commands to its writer, once connected.
    writer: Option<mpsc::UnboundedSender<WriterCommand>>,
    /// The packet writer and the RTCP feedback watcher, once connected.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    signalling: Option<tokio::sync::mpsc::UnboundedSender<PeerEvent>>,
}

/// One variant's frames from the encoder, packetized once for the peers on it.
struct VariantStream {
    input: SpawnHandle,
    packetizer: Box<dyn Packetizer>,
    packets: Fanout<RtpFrame>,
}

pub struct WebRtcSink {
    camera: String,
    config: WebRtcSinkConfig,
    feed: Arc<H264Feed>,
    peers: HashMap<String, Peer>,
    /// The variants of offers being answered; they count against `max_peers`.
    pending: Vec<VariantKey>,
    streams: HashMap<VariantKey, VariantStream>,
    ssrc: u32,
    /// RTP time origin: the first frame's capture time and its RTP timestamp.
    origin: Option<(SystemTime, u32)>,
    metrics: SinkMetrics,
    counts: Arc<SinkCounts>,
}

/// A random number from the standard library's per-process random hasher keys.
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

impl WebRtcSink {
    pub fn new(
        camera: String,
        config: WebRtcSinkConfig,
        feed: Arc<H264Feed>,
        metrics: SinkMetrics,
        counts: Arc<SinkCounts>,
    ) -> Self {
        Self {
            camera,
            config,
            feed,
            peers: HashMap::new(),
            pending: Vec::new(),
            streams: HashMap::new(),
            ssrc: random_u64() as u32,
            origin: None,
            metrics,
            counts,
        }
    }

    /// The packets of `variant`, subscribing to the encoder's stream of it if no peer is on it yet.
    fn stream(
        &mut self,
        variant: VariantKey,
        ctx: &mut Context<Self>,
    ) -> Result<&VariantStream, ServiceError> {
        if !self.streams.contains_key(&variant) {
            let frames = self.feed.subscribe(variant)?;
            let input = ctx.add_stream(frames.into_stream().map(move |item| (variant, item)));
            let payloader = peer::h264_codec()
                .payloader()
                .expect("webrtc-rs packetizes H.264");
            // The sequence numbers are restamped per peer, and the timestamps by the sink.
            let packetizer = new_packetizer(
                Instant::now(),
                RTP_MTU,
                0,
                self.ssrc,
                payloader,
                Box::new(rtc::rtp::sequence::new_random_sequencer()),
                H264_CLOCK_RATE,
            );
            self.streams.insert(
                variant,
                VariantStream {
                    input,
                    packetizer: Box::new(packetizer),
                    packets: Fanout::new(),
                },
            );
        }
        Ok(&self.streams[&variant])
    }

    /// Lets go of the streams no peer (connected or being answered) is on.
    fn follow_demand(&mut self, ctx: &mut Context<Self>) {
        let wanted: HashSet<VariantKey> = self
            .peers
            .values()
            .map(|p| p.variant)
            .chain(self.pending.iter().copied())
            .collect();
        self.streams.retain(|variant, stream| {
            let keep = wanted.contains(variant);
            if !keep {
                ctx.cancel_future(stream.input);
            }
            keep
        });
        if self.streams.is_empty() {
            self.origin = None;
        }
        self.counts.peers.store(self.peers.len(), Ordering::Relaxed);
        *self.counts.variants.lock().expect("variants lock") = self
            .peers
            .iter()
            .map(|(session, p)| (session.clone(), p.variant.map(|v| v.to_string())))
            .collect();
    }

    fn close_peer(&mut self, session: &str, reason: &str, ctx: &mut Context<Self>) -> bool {
        let Some(peer) = self.peers.remove(session) else {
            return false;
        };
        tracing::info!(camera = %self.camera, session, reason, "WebRTC peer closed");
        for task in peer.tasks {
            task.abort();
        }
        if peer.connected {
            self.metrics.viewers.dec();
            self.counts.connected.fetch_sub(1, Ordering::Relaxed);
        }
        self.counts.closed.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = &peer.signalling {
            let _ = tx.send(PeerEvent::Closed(reason.to_string()));
        }
        let pc = peer.pc;
        actix::spawn(async move {
            let _ = pc.close().await;
        });
        self.follow_demand(ctx);
        true
    }

    fn close_stale(&mut self, ctx: &mut Context<Self>) {
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let stale: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.connected && p.created.elapsed() > timeout)
            .map(|(s, _)| s.clone())
            .collect();
        for session in stale {
            self.close_peer(&session, "connecting timed out", ctx);
        }
    }
}

impl Actor for WebRtcSink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TIMEOUT_CHECK, |act, ctx| act.close_stale(ctx));
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let sessions: Vec<String> = self.peers.keys().cloned().collect();
        for session in sessions {
            self.close_peer(&session, "node stopped", ctx);
        }
    }
}

impl StreamHandler<(VariantKey, (Arc<EncodedFrame>, u64))> for WebRtcSink {
    fn handle(
        &mut self,
        (variant, (frame, skipped)): (VariantKey, (Arc<EncodedFrame>, u64)),
        _: &mut Self::Context,
    ) {
        if skipped > 0 {
            // Every peer on this variant misses those frames: the pictures after them cannot be
            // decoded until a keyframe.
            self.metrics.dropped_behind.inc_by(skipped);
            self.feed.request_keyframe(variant);
        }
        // One RTP clock for every variant: a peer switching between them sees time go on. Integer
        // ticks, wrapping as RTP time does (a float cast would stick at u32::MAX after 13 hours).
        let (origin, base) = *self
            .origin
            .get_or_insert((frame.captured_at, random_u64() as u32));
        let elapsed = frame.captured_at.duration_since(origin).unwrap_or_default();
        let ticks = elapsed.as_nanos() * u128::from(H264_CLOCK_RATE) / 1_000_000_000;
        let timestamp = base.wrapping_add(ticks as u32);
        let Some(stream) = self.streams.get_mut(&variant) else {
            return;
        };
        let mut packets = match stream.packetizer.packetize(Instant::now(), &frame.data, 0) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(camera = %self.camera, "RTP packetizing failed: {e}");
                return;
            }
        };
        for p in &mut packets {
            p.header.timestamp = timestamp;
        }
        self.counts.packetized.fetch_add(1, Ordering::Relaxed);
        stream.packets.publish(Arc::new(RtpFrame {
            packets,
            keyframe: frame.keyframe,
            captured_at: frame.captured_at,
            bytes: frame.data.len() as u64,
            behind: frame.behind + skipped,
            after_gap: skipped > 0,
        }));
    }

    /// A variant's stream ended (the encoder stopped: the graph stops this node too).
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<OpenPeer> for WebRtcSink {
    type Result = ResponseActFuture<Self, Result<PeerAnswer, ServiceError>>;

    fn handle(&mut self, msg: OpenPeer, ctx: &mut Self::Context) -> Self::Result {
        if self.peers.len() + self.pending.len() >= self.config.max_peers {
            return Box::pin(fut::ready(Err(ServiceError::Busy(format!(
                "camera '{}' has its maximum of {} WebRTC peers",
                self.camera, self.config.max_peers
            )))));
        }
        let offer = match peer::check_offer(&msg.sdp) {
            Ok(offer) => offer,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let session = format!("{:016x}{:016x}", random_u64(), random_u64());
        let setup = PeerSetup {
            session: session.clone(),
            camera: self.camera.clone(),
            ssrc: self.ssrc,
            ice: self.config.ice.clone(),
            sink: ctx.address(),
            signalling: msg.events.clone(),
        };
        // A viewer's own choice holds it on that variant; else, behind an `adaptive` node, the
        // peer starts on the top step and moves with its reports.
        let (policy, variant) = match msg.wanted.variant(self.feed.default_variant()) {
            Some(chosen) => (None, Some(chosen)),
            None => {
                let policy = self.feed.policy();
                let variant = policy.as_ref().map(|p| p.initial());
                (policy, variant)
            }
        };
        // Warm the encoder up while the answer is made; a refusal (too many variants) is the
        // client's answer.
        if let Err(e) = self.stream(variant, ctx) {
            return Box::pin(fut::ready(Err(e)));
        }
        self.pending.push(variant);
        let signalling = msg.signalling;
        Box::pin(peer::negotiate(setup, offer).into_actor(self).map(
            move |result, act, ctx| {
                if let Some(i) = act.pending.iter().position(|v| *v == variant) {
                    act.pending.swap_remove(i);
                }
                let negotiated = match result {
                    Ok(n) => n,
                    Err(e) => {
                        act.follow_demand(ctx);
                        return Err(e);
                    }
                };
                tracing::info!(camera = %act.camera, session, signalling, "WebRTC peer answered");
                act.peers.insert(
                    session.clone(),
                    Peer {
                        pc: negotiated.pc,
                        track: negotiated.track,
                        payload_type: negotiated.payload_type,
                        created: Instant::now(),
                        connected: false,
                        variant,
                        policy,
                        writer: None,
                        tasks: Vec::new(),
                        signalling: msg.events,
                    },
                );
                act.follow_demand(ctx);
                Ok(PeerAnswer {
                    session,
                    sdp: negotiated.answer,
                    variant: variant.map(|v| v.to_string()),
                })
            },
        ))
    }
}

impl Handler<PeerStateChanged> for WebRtcSink {
    type Result = ();

    fn handle(&mut self, msg: PeerStateChanged, ctx: &mut Self::Context) {
        match msg.state {
            PeerState::Connected => {
                let Some(peer) = self.peers.get_mut(&msg.session) else {
                    return;
                };
                if peer.connected {
                    return;
                }
                peer.connected = true;
                self.metrics.viewers.inc();
                self.counts.connected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(camera = %self.camera, session = %msg.session, "WebRTC peer connected");
                let variant = peer.variant;
                let Some(packets) = self.streams.get(&variant).map(|s| s.packets.subscribe())
                else {
                    self.close_peer(&msg.session, "its stream is gone", ctx);
                    return;
                };
                let peer = self.peers.get_mut(&msg.session).expect("looked up above");
                let (writer, commands) = mpsc::unbounded_channel();
                let ladder = peer.policy.take().map(|policy| peer::Ladder {
                    policy,
                    sink: ctx.address(),
                    session: msg.session.clone(),
                });
                peer.tasks.push(actix::spawn(peer::write_loop(
                    peer.track.clone(),
                    peer.payload_type,
                    (variant, packets),
                    commands,
                    self.feed.clone(),
                    self.metrics.writer.clone(),
                    ladder,
                )));
                let targets = FeedbackTargets {
                    ssrc: self.ssrc,
                    writer: writer.clone(),
                    keyframe_requests: self.counts.keyframe_requests.clone(),
                    lost: self.metrics.rtp_lost.clone(),
                };
                peer.tasks
                    .push(actix::spawn(feedback::watch(peer.track.clone(), targets)));
                peer.writer = Some(writer);
            }
            PeerState::Gone(reason) => {
                self.close_peer(&msg.session, reason, ctx);
            }
        }
    }
}

impl Handler<PeerStepChanged> for WebRtcSink {
    type Result = ();

    fn handle(&mut self, msg: PeerStepChanged, ctx: &mut Self::Context) {
        let Some(peer) = self.peers.get(&msg.session) else {
            return;
        };
        let (from, to) = (peer.variant, Some(msg.variant));
        let packets = match self.stream(to, ctx) {
            Ok(stream) => stream.packets.subscribe(),
            Err(e) => {
                tracing::warn!(camera = %self.camera, session = %msg.session, "WebRTC peer stays on its step: {e}");
                if let Some(writer) = self.peers.get(&msg.session).and_then(|p| p.writer.as_ref()) {
                    let _ = writer.send(WriterCommand::Refused);
                }
                return;
            }
        };
        let peer = self.peers.get_mut(&msg.session).expect("looked up above");
        if let Some(writer) = &peer.writer {
            let _ = writer.send(WriterCommand::Switch(to, packets));
        }
        peer.variant = to;
        self.counts.switches.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            camera = %self.camera,
            session = %msg.session,
            from = %from.map_or("default".into(), |v| v.to_string()),
            to = %msg.variant,
            "WebRTC peer moved on its ladder"
        );
        self.follow_demand(ctx);
    }
}

impl Handler<AddPeerCandidate> for WebRtcSink {
    type Result = ResponseFuture<Result<(), ServiceError>>;

    fn handle(&mut self, msg: AddPeerCandidate, _: &mut Self::Context) -> Self::Result {
        let pc = self.peers.get(&msg.session).map(|p| p.pc.clone());
        Box::pin(async move {
            let pc = pc.ok_or_else(|| {
                ServiceError::NotFound(format!("no WebRTC session '{}'", msg.session))
            })?;
            let init: RTCIceCandidateInit = serde_json::from_value(msg.candidate)
                .map_err(|e| ServiceError::BadRequest(format!("bad ICE candidate: {e}")))?;
            pc.add_ice_candidate(init)
                .await
                .map_err(|e| ServiceError::BadRequest(format!("ICE candidate refused: {e}")))
        })
    }
}

impl Handler<ClosePeer> for WebRtcSink {
    type Result = Result<(), ServiceError>;

    fn handle(&mut self, msg: ClosePeer, ctx: &mut Self::Context) -> Self::Result {
        if self.close_peer(&msg.session, "closed by the client", ctx) {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!(
                "no WebRTC session '{}' on camera '{}'",
                msg.session, self.camera
            )))
        }
    }
}

impl Handler<Shutdown> for WebRtcSink {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
