//! One WebRTC peer: its connection (webrtc-rs 0.21), built from the remote offer and answered
//! non-trickle (the answer waits for ICE gathering, so it carries the server's candidates), and
//! the task that writes the camera's shared RTP packets to it.
//!
//! webrtc 0.21 binds a local track to one connection, so "one track per camera" is one shared
//! packetized stream (`RtpFrame`: the encoder's frame cut into RTP packets once) written to a
//! light per-peer track; each peer only restamps the negotiated payload type.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::{Message, Recipient};
use rtc::rtp;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};

use super::api::PeerEvent;
use super::connection::{self, camera_track};
use super::feedback::Feedback;
use super::IceConfig;
use crate::adapt::AdaptPolicy;
use crate::error::ServiceError;
use crate::fanout::Subscriber;
use crate::plugins::sinks::h264_rtp::random_u64;
use crate::port::{H264Feed, H264Variant};

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

/// One encoded frame, cut into RTP packets once for every peer.
pub struct RtpFrame {
    pub packets: Vec<rtp::Packet>,
    pub keyframe: bool,
    pub captured_at: SystemTime,
    pub bytes: u64,
    /// Camera frames the encoder skipped before this one because it was busy: lost for every
    /// peer of the variant, and counted against their ladder positions.
    pub behind: u64,
    /// Encoded frames before this one were never packetized (the sink was busy): unless this is a
    /// keyframe, peers cannot decode it.
    pub after_gap: bool,
}

/// Tells the sink what its connection does; runs on webrtc-rs's driver thread.
struct Events {
    session: String,
    sink: Recipient<PeerStateChanged>,
    gathered: watch::Sender<bool>,
    signalling: Option<mpsc::UnboundedSender<PeerEvent>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        // Also in the answer; sent again for clients that trickle.
        if let (Some(tx), Ok(init)) = (&self.signalling, event.candidate.to_json()) {
            if let Ok(json) = serde_json::to_value(init) {
                let _ = tx.send(PeerEvent::Candidate(json));
            }
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let state = match state {
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Failed => PeerState::Gone("failed"),
            RTCPeerConnectionState::Disconnected => PeerState::Gone("disconnected"),
            RTCPeerConnectionState::Closed => PeerState::Gone("closed"),
            _ => return,
        };
        self.sink.do_send(PeerStateChanged {
            session: self.session.clone(),
            state,
        });
    }
}

/// What a new peer needs besides the offer.
pub struct PeerSetup {
    pub session: String,
    pub camera: String,
    pub ssrc: u32,
    pub ice: IceConfig,
    /// Where the connection's state changes go (the sink).
    pub sink: Recipient<PeerStateChanged>,
    pub signalling: Option<mpsc::UnboundedSender<PeerEvent>>,
}

/// A negotiated connection, not yet sending.
pub struct Negotiated {
    pub pc: Arc<dyn PeerConnection>,
    pub track: Arc<TrackLocalStaticRTP>,
    pub payload_type: u8,
    pub answer: String,
}

/// Checks the offer before any connection is built: SDP that parses, with a video section.
pub fn check_offer(sdp: &str) -> Result<RTCSessionDescription, ServiceError> {
    let offer = RTCSessionDescription::offer(sdp.to_string())
        .map_err(|e| ServiceError::BadRequest(format!("malformed SDP offer: {e}")))?;
    let parsed = offer
        .unmarshal()
        .map_err(|e| ServiceError::BadRequest(format!("malformed SDP offer: {e}")))?;
    if !parsed
        .media_descriptions
        .iter()
        .any(|m| m.media_name.media == "video")
    {
        return Err(ServiceError::BadRequest(
            "the SDP offer has no video section (m=video): nothing to receive the camera on".into(),
        ));
    }
    Ok(offer)
}

/// Builds the connection, answers the offer and waits for ICE gathering.
pub async fn negotiate(
    setup: PeerSetup,
    offer: RTCSessionDescription,
) -> Result<Negotiated, ServiceError> {
    let (gathered_tx, mut gathered) = watch::channel(false);
    let events = Arc::new(Events {
        session: setup.session.clone(),
        sink: setup.sink.clone(),
        gathered: gathered_tx,
        signalling: setup.signalling.clone(),
    });
    let pc = connection::build(&setup.ice, &[], events)
        .await
        .map_err(|e| ServiceError::Unavailable(format!("WebRTC connection setup failed: {e}")))?;
    let result = answer(&pc, &setup, offer, &mut gathered).await;
    if result.is_err() {
        let _ = pc.close().await;
    }
    result
}

async fn answer(
    pc: &Arc<dyn PeerConnection>,
    setup: &PeerSetup,
    offer: RTCSessionDescription,
    gathered: &mut watch::Receiver<bool>,
) -> Result<Negotiated, ServiceError> {
    let internal = |what: &str, e: webrtc::error::Error| {
        ServiceError::Unavailable(format!("WebRTC {what} failed: {e}"))
    };
    let track = camera_track(&setup.camera, setup.ssrc);
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(|e| internal("add_track", e))?;
    pc.set_remote_description(offer)
        .await
        .map_err(|e| ServiceError::BadRequest(format!("the offer cannot be used: {e}")))?;
    let answer = pc.create_answer(None).await.map_err(|e| {
        ServiceError::BadRequest(format!(
            "cannot answer the offer (does it accept H.264 Constrained Baseline?): {e}"
        ))
    })?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| internal("set_local_description", e))?;
    connection::wait_gathered(gathered).await;
    let answer = connection::local_sdp(pc)
        .await
        .ok_or_else(|| ServiceError::Unavailable("no local description".into()))?;
    let payload_type = sender
        .get_parameters()
        .await
        .map_err(|e| internal("get_parameters", e))?
        .rtp_parameters
        .codecs
        .first()
        .map(|c| c.payload_type)
        .ok_or_else(|| {
            ServiceError::BadRequest(
                "the offer accepts no H.264 Constrained Baseline (packetization-mode=1)".into(),
            )
        })?;
    Ok(Negotiated {
        pc: pc.clone(),
        track,
        payload_type,
        answer,
    })
}

/// Counters a writer updates.
#[derive(Clone)]
pub struct WriterMetrics {
    pub sent: prometheus::IntCounter,
    pub bytes: prometheus::IntCounter,
    pub dropped_behind: prometheus::IntCounter,
    pub latency: prometheus::Histogram,
}

/// What a peer's writer is told while it runs.
pub enum WriterCommand {
    /// What the peer's RTCP said: a keyframe request or a receiver report.
    Feedback(Feedback),
    /// Go on with another variant's packets (the peer moved on its ladder), after the camera's
    /// frames since its keyframe when that variant passes them through (else empty: it waits for
    /// the variant's next keyframe).
    Switch(
        Option<H264Variant>,
        Subscriber<RtpFrame>,
        Vec<Arc<RtpFrame>>,
    ),
    /// The move could not be made (the encoder has no room for another variant).
    Refused,
}

/// A peer's position on an `adaptive` node's ladder, and where its moves go.
pub struct Ladder {
    pub policy: Box<dyn AdaptPolicy<H264Variant>>,
    /// Where the peer's moves go (the sink).
    pub sink: Recipient<PeerStepChanged>,
    pub session: String,
}

impl Ladder {
    /// Of `total` packets meant for the peer, `lost` did not reach it; tells the sink if it moves.
    fn observe(&mut self, lost: u64, total: u64) {
        if let Some(variant) = self.policy.observe(Instant::now(), lost, total) {
            self.sink.do_send(PeerStepChanged {
                session: self.session.clone(),
                variant,
            });
        }
    }
}

/// The RTP time of frame `i` of `count` frames squeezed into the time of the last (`end`): one
/// tick apart, in order, so a receiver decodes them all and shows the newest now rather than
/// playing them out late.
pub fn squeezed(end: u32, count: usize, i: usize) -> u32 {
    end.wrapping_sub((count - 1 - i) as u32)
}

/// Writes a camera's frames since its keyframe (`gop`, which cannot be asked for a keyframe) at
/// once, squeezed into the last one's time, or, if that would not come after the last frame the
/// peer got (`after`: it moves up from a step made of the same camera frames), just after that
/// one. Returns the time of the last one written; `None` when there is nothing to write.
async fn write_gop(
    track: &TrackLocalStaticRTP,
    payload_type: u8,
    gop: &[Arc<RtpFrame>],
    sequence: &mut u16,
    after: Option<u32>,
) -> Option<u32> {
    let end = gop.last()?.packets.first()?.header.timestamp;
    let count = gop.len();
    let mut first = squeezed(end, count, 0);
    if let Some(last) = after.filter(|last| first.wrapping_sub(*last) as i32 <= 0) {
        first = last.wrapping_add(1);
    }
    for (i, frame) in gop.iter().enumerate() {
        for packet in &frame.packets {
            let mut packet = packet.clone();
            packet.header.payload_type = payload_type;
            packet.header.sequence_number = *sequence;
            packet.header.timestamp = first.wrapping_add(i as u32);
            *sequence = sequence.wrapping_add(1);
            let _ = track.write_rtp(packet).await;
        }
    }
    Some(first.wrapping_add(count as u32 - 1))
}

/// Writes the shared packets of the peer's variant to it until the peer ends. Starts at a
/// keyframe; after falling behind (a frame skipped) or switching variant it waits for the next
/// keyframe and asks for one, so the others never wait for it (switching to a camera's own
/// stream, which cannot be asked, it starts from the camera's frames since its keyframe).
/// Sequence numbers are the peer's own: the packets it skips or the variants it switches between
/// leave no gap for the receiver to take as loss. Behind an `adaptive` node it keeps the peer's
/// ladder position, fed by the receiver's reports and by the frames lost before they could be
/// sent (an overloaded encoder, this writer behind), counted in packets.
pub async fn write_loop(
    track: Arc<TrackLocalStaticRTP>,
    payload_type: u8,
    (mut variant, frames, start): (
        Option<H264Variant>,
        Subscriber<RtpFrame>,
        Vec<Arc<RtpFrame>>,
    ),
    mut commands: mpsc::UnboundedReceiver<WriterCommand>,
    feed: Arc<H264Feed>,
    metrics: WriterMetrics,
    mut ladder: Option<Ladder>,
) {
    let mut frames = Some(frames);
    let mut sequence = random_u64() as u16;
    // The RTP time of the last frame written: after a switch, the new variant's stream may still
    // hand out a frame no newer than it, which the receiver would merge or drop.
    let mut last_timestamp: Option<u32> = None;
    let mut need_keyframe = true;
    let mut asked = Instant::now();
    if let Some(end) = write_gop(&track, payload_type, &start, &mut sequence, None).await {
        need_keyframe = false;
        last_timestamp = Some(end);
    }
    feed.request_keyframe(variant);
    loop {
        let (frame, skipped) = tokio::select! {
            command = commands.recv() => {
                match command {
                    None => return,
                    Some(WriterCommand::Feedback(Feedback::Keyframe)) => feed.request_keyframe(variant),
                    Some(WriterCommand::Feedback(Feedback::Loss { lost, sent })) => {
                        if let Some(l) = ladder.as_mut() {
                            l.observe(lost, sent);
                        }
                    }
                    Some(WriterCommand::Refused) => {
                        if let Some(l) = ladder.as_mut() {
                            l.policy.refused();
                        }
                    }
                    Some(WriterCommand::Switch(to, next, start)) => {
                        tracing::debug!(variant = ?to, gop = start.len(), "WebRTC writer switches");
                        (variant, frames) = (to, Some(next));
                        let written = write_gop(
                            &track, payload_type, &start, &mut sequence, last_timestamp,
                        );
                        match written.await {
                            Some(end) => {
                                need_keyframe = false;
                                last_timestamp = Some(end);
                            }
                            None => {
                                need_keyframe = true;
                                asked = Instant::now();
                                feed.request_keyframe(variant);
                            }
                        }
                    }
                }
                continue;
            }
            next = async {
                match frames.as_mut() {
                    Some(f) => f.next().await,
                    None => std::future::pending().await,
                }
            } => match next {
                Some(next) => next,
                // The variant's stream ended; a switch follows (or the peer closes).
                None => {
                    frames = None;
                    continue;
                }
            },
        };
        let missed = skipped + frame.behind;
        if let (Some(l), true) = (ladder.as_mut(), missed > 0) {
            // Never sent: lost, and not in any receiver report.
            let packets = missed * frame.packets.len() as u64;
            l.observe(packets, packets);
        }
        if skipped > 0 || frame.after_gap {
            metrics.dropped_behind.inc_by(skipped);
            if !need_keyframe {
                need_keyframe = true;
                asked = Instant::now();
                feed.request_keyframe(variant);
            }
        }
        if need_keyframe && !frame.keyframe {
            if asked.elapsed() > Duration::from_millis(500) {
                asked = Instant::now();
                feed.request_keyframe(variant);
            }
            continue;
        }
        let timestamp = frame.packets.first().map(|p| p.header.timestamp);
        if let (Some(last), Some(ts)) = (last_timestamp, timestamp) {
            if ts.wrapping_sub(last) as i32 <= 0 {
                need_keyframe = true;
                continue;
            }
        }
        let mut ok = true;
        for packet in &frame.packets {
            let mut packet = packet.clone();
            packet.header.payload_type = payload_type;
            packet.header.sequence_number = sequence;
            sequence = sequence.wrapping_add(1);
            if track.write_rtp(packet).await.is_err() {
                ok = false;
                break;
            }
        }
        if !ok {
            // Not bound yet or closed: the sink ends this task with the peer.
            need_keyframe = true;
            continue;
        }
        if need_keyframe {
            tracing::debug!(variant = ?variant, "WebRTC writer starts at a keyframe");
        }
        need_keyframe = false;
        last_timestamp = timestamp.or(last_timestamp);
        metrics.sent.inc();
        metrics.bytes.inc_by(frame.bytes);
        if let Ok(age) = SystemTime::now().duration_since(frame.captured_at) {
            metrics.latency.observe(age.as_secs_f64());
        }
    }
}
