//! The sink actor: the camera's peers, one subscription to the H.264 encoder per variant some peer
//! is on (held while that peer exists), and per variant the packetizer that cuts each encoded
//! frame into RTP packets once for all its peers. Behind an `adaptive` node each peer's writer keeps
//! its ladder position, fed by its receiver reports (`feedback.rs`) and the frames lost upstream;
//! when it moves, the sink switches the writer to the new step's packets. Peers that fail,
//! disconnect, close or sit in `connecting` past the timeout are closed. Fed a camera's own H.264
//! (which no one can ask for a keyframe; behind an `adaptive` node, its top step), a peer joining
//! it or moving to it first gets the camera's frames since its last keyframe, squeezed into the
//! newest frame's time, instead of waiting up to a GOP for the camera's next IDR.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use actix::{
    fut, Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture,
    ResponseFuture, Running, SpawnHandle, StreamHandler, WrapFuture,
};
use futures_util::StreamExt;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit};

use super::api::{AddPeerCandidate, ClosePeer, OpenPeer, PeerAnswer, PeerEvent};
use super::connection::RtpPacketizer;
use super::feedback::{self, FeedbackTargets};
use super::peer::{
    self, PeerSetup, PeerState, PeerStateChanged, PeerStepChanged, RtpFrame, WriterCommand,
    WriterMetrics,
};
use super::WebRtcSinkConfig;
use crate::adapt::AdaptPolicy;
use crate::error::ServiceError;
use crate::fanout::Fanout;
use crate::frame::EncodedFrame;
use crate::metrics::{DropReason, NodeMetrics};
use crate::plugins::sinks::h264_rtp::{random_u64, RtpClock};
use crate::port::{missed, H264Feed, H264Variant};
use crate::stop::{stop_on, StopToken};

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
                dropped_behind: m.frames_dropped(DropReason::Behind),
                latency: m.latency_seconds(),
            },
            viewers: m.viewers("webrtc"),
            dropped_behind: m.frames_dropped(DropReason::Behind),
            rtp_lost: m.rtp_packets_lost(),
        }
    }
}

struct Peer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    payload_type: u8,
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
    packetizer: RtpPacketizer,
    packets: Fanout<RtpFrame>,
    /// The camera's frame number of the last frame packetized (for a feed that passes a
    /// camera's H.264 through: a joining peer gets the frames since the keyframe up to it).
    last_seq: Option<u64>,
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
    /// One RTP clock for every variant.
    clock: RtpClock,
    metrics: SinkMetrics,
    counts: Arc<SinkCounts>,
    stop: StopToken,
}

impl WebRtcSink {
    pub fn new(
        camera: String,
        config: WebRtcSinkConfig,
        feed: Arc<H264Feed>,
        metrics: SinkMetrics,
        counts: Arc<SinkCounts>,
        stop: StopToken,
    ) -> Self {
        Self {
            camera,
            config,
            feed,
            peers: HashMap::new(),
            pending: Vec::new(),
            streams: HashMap::new(),
            ssrc: random_u64() as u32,
            clock: RtpClock::default(),
            metrics,
            counts,
            stop,
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
            tracing::debug!(camera = %self.camera, ?variant, "WebRTC sink subscribes to a variant");
            let input = ctx.add_stream(frames.into_stream().map(move |item| (variant, item)));
            self.streams.insert(
                variant,
                VariantStream {
                    input,
                    // The sequence numbers are restamped per peer, the timestamps by the sink.
                    packetizer: RtpPacketizer::new(self.ssrc),
                    packets: Fanout::new(),
                    last_seq: None,
                },
            );
        }
        Ok(&self.streams[&variant])
    }

    /// For a stream that passes a camera's H.264 through (no keyframe on request): its frames
    /// since the last keyframe up to the last one packetized for the peers of `variant`,
    /// packetized for a peer joining it (or moving to it on a ladder), which then starts at once
    /// instead of waiting up to a GOP. Kept by the camera, whose capture thread skips none; this
    /// actor may have. Read on this actor's thread together with the peer's subscription to the
    /// packets, so the peer gets every frame after them.
    fn since_keyframe(&mut self, variant: VariantKey) -> Vec<Arc<RtpFrame>> {
        let last_seq = self.streams.get(&variant).and_then(|s| s.last_seq);
        let (true, Some(last_seq)) = (self.feed.passes_through(variant), last_seq) else {
            return Vec::new();
        };
        let mut packetizer = RtpPacketizer::new(self.ssrc);
        let mut out = Vec::new();
        for frame in self.feed.since_keyframe(variant) {
            if frame.seq > last_seq {
                break;
            }
            let timestamp = self.clock.timestamp(frame.captured_at);
            let Ok(rtp) = packetizer.packetize(&frame, timestamp, false) else {
                return Vec::new();
            };
            out.push(Arc::new(rtp));
        }
        out
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
                tracing::debug!(camera = %self.camera, ?variant, "WebRTC sink lets go of a variant");
                ctx.cancel_future(stream.input);
            }
            keep
        });
        if self.streams.is_empty() {
            self.clock.reset();
        }
        self.counts.peers.store(self.peers.len(), Ordering::Relaxed);
        *self
            .counts
            .variants
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self
            .peers
            .iter()
            .map(|(session, p)| (session.clone(), p.variant.map(|v| v.to_string())))
            .collect();
    }

    fn close_peer(&mut self, session: &str, reason: &str, ctx: &mut Context<Self>) -> bool {
        let Some(pc) = self.remove_peer(session, reason, ctx) else {
            return false;
        };
        actix::spawn(async move {
            let _ = pc.close().await;
        });
        true
    }

    /// Forgets a peer and tells its signalling; returns its connection, still to be closed.
    fn remove_peer(
        &mut self,
        session: &str,
        reason: &str,
        ctx: &mut Context<Self>,
    ) -> Option<Arc<dyn PeerConnection>> {
        let peer = self.peers.remove(session)?;
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
        self.follow_demand(ctx);
        Some(peer.pc)
    }
}

impl Actor for WebRtcSink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
    }

    /// Closes the peers, and stops once their connections are closed (this actor's thread ends
    /// with it, so the closing must be done by then).
    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        let sessions: Vec<String> = self.peers.keys().cloned().collect();
        if sessions.is_empty() {
            return Running::Stop;
        }
        let closing: Vec<_> = sessions
            .iter()
            .filter_map(|session| self.remove_peer(session, "node stopped", ctx))
            .collect();
        let closed = futures_util::future::join_all(closing.into_iter().map(|pc| async move {
            let _ = pc.close().await;
        }));
        ctx.spawn(closed.into_actor(self).map(|_, _, ctx| ctx.stop()));
        Running::Continue
    }
}

impl StreamHandler<(VariantKey, (Arc<EncodedFrame>, u64))> for WebRtcSink {
    fn handle(
        &mut self,
        (variant, (frame, skipped)): (VariantKey, (Arc<EncodedFrame>, u64)),
        _: &mut Self::Context,
    ) {
        // Frames this actor was too busy to take (a newcomer's DTLS handshake runs on its
        // arbiter). A camera's own H.264 cannot be asked for a keyframe, so they are taken back
        // from the camera and sent with this one: the chain stays whole for every peer. The first
        // frame of a new stream of the camera's own H.264 comes with the frames since the
        // camera's keyframe, squeezed into its time: a peer that moved to it from another step of
        // a ladder starts at once.
        let last_seq = self.streams.get(&variant).and_then(|s| s.last_seq);
        let through = self.feed.passes_through(variant);
        let (recovered, squeeze) = match (skipped, last_seq) {
            (1.., Some(last)) if through => (
                missed(self.feed.since_keyframe(variant), last, frame.seq, skipped),
                false,
            ),
            (_, None) if through && !frame.keyframe => {
                (self.feed.gop_before(variant, frame.seq), true)
            }
            _ => (None, false),
        };
        let gap = skipped > 0 && recovered.is_none();
        if gap {
            // Every peer on this variant misses those frames: the pictures after them cannot be
            // decoded until a keyframe.
            self.metrics.dropped_behind.inc_by(skipped);
            self.feed.request_keyframe(variant);
        }
        let frames: Vec<Arc<EncodedFrame>> = recovered
            .unwrap_or_default()
            .into_iter()
            .chain([frame.clone()])
            .collect();
        let count = frames.len();
        let timestamps: Vec<u32> = if squeeze {
            let end = self.clock.timestamp(frame.captured_at);
            (0..count).map(|i| peer::squeezed(end, count, i)).collect()
        } else {
            frames
                .iter()
                .map(|f| self.clock.timestamp(f.captured_at))
                .collect()
        };
        let Some(stream) = self.streams.get_mut(&variant) else {
            return;
        };
        let mut packets = Vec::new();
        for (f, timestamp) in frames.iter().zip(timestamps) {
            match stream.packetizer.packets(&f.data, timestamp) {
                Ok(p) => packets.extend(p),
                Err(e) => {
                    tracing::warn!(camera = %self.camera, "RTP packetizing failed: {e}");
                    return;
                }
            }
        }
        stream.last_seq = Some(frame.seq);
        self.counts.packetized.fetch_add(1, Ordering::Relaxed);
        let rtp = Arc::new(RtpFrame {
            packets,
            keyframe: frames.iter().any(|f| f.keyframe),
            captured_at: frame.captured_at,
            bytes: frames.iter().map(|f| f.data.len() as u64).sum(),
            // Only the encoder's falling behind (`frame.behind`) counts against the peers' ladder
            // positions. This actor's own skips are a scheduling hiccup shared by every peer of the
            // variant (a newcomer's DTLS handshake runs on this arbiter): counted as loss, one such
            // hiccup could move every peer of the variant down at once, the likely reason the
            // direct peer of the adaptation test moved when the slow one joined under load. They
            // still force a keyframe (`after_gap`) and count as dropped.
            behind: frame.behind,
            after_gap: gap,
        });
        stream.packets.publish(rtp);
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
            sink: ctx.address().recipient(),
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
                        connected: false,
                        variant,
                        policy,
                        writer: None,
                        tasks: Vec::new(),
                        signalling: msg.events,
                    },
                );
                act.follow_demand(ctx);
                // A peer still connecting by then is closed.
                let timeout = Duration::from_millis(act.config.connect_timeout_ms);
                let stale = session.clone();
                ctx.run_later(timeout, move |act, ctx| {
                    if act.peers.get(&stale).is_some_and(|p| !p.connected) {
                        act.close_peer(&stale, "connecting timed out", ctx);
                    }
                });
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
                // Subscribed together with the frames so far since the camera's last keyframe, on
                // this thread: the writer gets every frame after them.
                let Some(packets) = self.streams.get(&variant).map(|s| s.packets.subscribe())
                else {
                    self.close_peer(&msg.session, "its stream is gone", ctx);
                    return;
                };
                let start = self.since_keyframe(variant);
                // Infallible: the session was found above and nothing between removes a peer.
                let peer = self.peers.get_mut(&msg.session).expect("looked up above");
                let (writer, commands) = mpsc::unbounded_channel();
                let ladder = peer.policy.take().map(|policy| peer::Ladder {
                    policy,
                    sink: ctx.address().recipient(),
                    session: msg.session.clone(),
                });
                peer.tasks.push(actix::spawn(peer::write_loop(
                    peer.track.clone(),
                    peer.payload_type,
                    (variant, packets, start),
                    commands,
                    self.feed.clone(),
                    self.metrics.writer.clone(),
                    ladder,
                )));
                let to_writer = writer.clone();
                let targets = FeedbackTargets {
                    ssrc: self.ssrc,
                    writer: Box::new(move |f| {
                        let _ = to_writer.send(WriterCommand::Feedback(f));
                    }),
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
        // With the camera's frames since its keyframe when `to` passes them through.
        let start = self.since_keyframe(to);
        // Infallible: the session was found above and nothing between removes a peer.
        let peer = self.peers.get_mut(&msg.session).expect("looked up above");
        if let Some(writer) = &peer.writer {
            let _ = writer.send(WriterCommand::Switch(to, packets, start));
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::frame::Codec;

    fn frame(seq: u64, keyframe: bool) -> Arc<EncodedFrame> {
        Arc::new(EncodedFrame {
            camera: "cam".into(),
            seq,
            captured_at: SystemTime::now(),
            codec: Codec::H264,
            keyframe,
            width: 16,
            height: 16,
            data: bytes::Bytes::new(),
            behind: 0,
        })
    }

    #[test]
    fn skipped_frames_are_taken_back_from_the_camera_when_the_chain_can_be_mended() {
        let gop: Vec<_> = (10..20).map(|seq| frame(seq, seq == 10)).collect();
        let seqs = |m: Option<Vec<Arc<EncodedFrame>>>| {
            m.map(|v| v.iter().map(|f| f.seq).collect::<Vec<_>>())
        };
        // Sent 12, skipped 13 and 14, now 15: both are kept.
        assert_eq!(seqs(missed(gop.clone(), 12, 15, 2)), Some(vec![13, 14]));
        // Sent 8, skipped 9..=11, now 12: 9 is gone but 10 is a keyframe, the chain restarts.
        assert_eq!(seqs(missed(gop.clone(), 8, 12, 3)), Some(vec![10, 11]));
        // Sent 5, skipped 6..=11 of an older GOP: 6..=9 are gone, 10 restarts: mended.
        assert_eq!(seqs(missed(gop.clone(), 5, 12, 6)), Some(vec![10, 11]));
        // No frames kept (the GOP grew over its cap): not mended.
        assert_eq!(seqs(missed(Vec::new(), 12, 15, 2)), None);
        // Kept frames that start after a hole with no keyframe: not mended.
        let holed: Vec<_> = gop.into_iter().filter(|f| f.seq != 13).collect();
        assert_eq!(seqs(missed(holed, 12, 15, 2)), None);
    }
}
