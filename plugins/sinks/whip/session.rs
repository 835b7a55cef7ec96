//! The whip_sink's life: connect (a sendonly offer with the camera's H.264 track, gathered in
//! full, POSTed to the server), publish (the shared encode's frames, a keyframe first and on every
//! PLI/FIR), and when the connection is lost or refused, say why and connect again after a
//! backoff (or the server's `Retry-After`). One attempt is one peer connection; the session the
//! server created is DELETEd when the attempt ends, also when the node stops.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription,
};

use super::http::{self, Created};
use crate::fanout::Fanout;
use crate::plugins::sinks::h264_rtp::{random_u64, RtpClock};
use crate::plugins::sinks::webrtc::connection::{self, camera_track, RtpPacketizer};
use crate::plugins::sinks::webrtc::feedback::{self, FeedbackTargets};
use crate::plugins::sinks::webrtc::peer::{write_loop, WriterCommand, WriterMetrics};
use crate::plugins::sinks::webrtc::{IceConfig, IceServer};
use crate::plugins::sources::Backoff;
use crate::port::H264Feed;
use crate::stop::StopToken;

/// The first wait after a failure; it doubles up to `MAX_WAIT`.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between attempts, and the wait after a refusal that will not pass by itself
/// (a 4xx, an answer that is no WHIP answer).
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Where a whip_sink is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Making an offer, waiting for the server's answer or for the connection.
    Connecting,
    /// Connected: frames go out.
    Publishing,
    /// The last attempt failed (the error says why); the next one is waiting for its time.
    Down,
}

impl State {
    pub const ALL: [State; 3] = [State::Connecting, State::Publishing, State::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Publishing => "publishing",
            State::Down => "down",
        }
    }
}

/// What `/api/graph` shows of the sink.
pub struct Status {
    pub state: State,
    /// Why the last attempt failed; kept while connecting again, cleared once publishing.
    pub error: Option<String>,
    /// Sessions the server created.
    pub sessions: u64,
    /// The STUN/TURN servers in use (configured, then announced by the server), URLs only.
    pub ice_servers: Vec<String>,
}

impl Status {
    pub fn new() -> Self {
        Self {
            state: State::Connecting,
            error: None,
            sessions: 0,
            ice_servers: Vec::new(),
        }
    }

    /// The node's statistics: `up` is false unless publishing, so the graph shows it `down`.
    pub fn describe(&self) -> serde_json::Value {
        json!({
            "up": self.state == State::Publishing,
            "state": self.state.as_str(),
            "error": self.error,
            "sessions": self.sessions,
            "ice_servers": self.ice_servers,
        })
    }
}

/// The counters the sink keeps.
#[derive(Clone)]
pub struct WhipMetrics {
    pub writer: WriterMetrics,
    /// One gauge per `State::ALL`, 1 for the current state.
    pub states: Vec<IntGauge>,
    pub reconnects: IntCounter,
    /// 1 while publishing: the server is the camera's one viewer over WHIP.
    pub viewers: IntGauge,
    pub rtp_lost: IntCounter,
    pub keyframe_requests: Arc<AtomicU64>,
}

/// Everything the loop needs.
pub struct Setup {
    pub camera: String,
    pub url: String,
    pub token: Option<String>,
    pub ice: IceConfig,
    pub connect_timeout: Duration,
    pub feed: Arc<H264Feed>,
    pub metrics: WhipMetrics,
    pub status: Arc<Mutex<Status>>,
    pub stop: StopToken,
}

impl Setup {
    fn set(&self, state: State, error: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.state = state;
        if error.is_some() || state == State::Publishing {
            status.error = error;
        }
        for (s, gauge) in State::ALL.iter().zip(&self.metrics.states) {
            gauge.set(i64::from(*s == state));
        }
        self.metrics
            .viewers
            .set(i64::from(state == State::Publishing));
    }

    fn note_servers(&self, learned: &[IceServer]) {
        let urls = self
            .ice
            .servers
            .iter()
            .chain(learned)
            .flat_map(|s| s.urls.iter().cloned())
            .collect();
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ice_servers = urls;
    }
}

/// How an attempt ended.
enum Ended {
    /// The node stops.
    Stopped,
    /// The server announced ICE servers this attempt did not use: try again with them at once.
    Again,
    /// Failed or lost; `published`: it had been publishing.
    Failed {
        error: String,
        retry_after: Option<Duration>,
        transient: bool,
        published: bool,
    },
}

impl Ended {
    fn failed(error: impl Into<String>) -> Self {
        Ended::Failed {
            error: error.into(),
            retry_after: None,
            transient: true,
            published: false,
        }
    }
}

/// Runs until the node stops: connects, publishes, and connects again whenever that ends.
pub async fn run(setup: Setup) {
    let mut backoff = Backoff::between(random_u64(), FIRST_WAIT, MAX_WAIT);
    // STUN/TURN servers the server announced (RFC 9725 4.6), used from then on.
    let mut learned: Vec<IceServer> = Vec::new();
    let mut before = Before::default();
    setup.note_servers(&learned);
    loop {
        setup.set(State::Connecting, None);
        let ended = attempt(&setup, &mut learned, before).await;
        before.reoffered = false;
        let wait = match ended {
            Ended::Stopped => return,
            Ended::Again => {
                setup.note_servers(&learned);
                before.reoffered = true;
                continue;
            }
            Ended::Failed {
                error,
                retry_after,
                transient,
                published,
            } => {
                tracing::warn!(camera = %setup.camera, "whip_sink: {error}");
                setup.set(State::Down, Some(error));
                before.failed = true;
                if published {
                    backoff.reset();
                }
                let wait = backoff.next_wait();
                match (retry_after, transient) {
                    (Some(after), _) => after,
                    (None, true) => wait,
                    (None, false) => MAX_WAIT,
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = setup.stop.clone().fired() => return,
        }
    }
}

/// Runs `work` unless the node stops first (`None` then).
async fn unless_stopped<T>(
    stop: &StopToken,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        value = work => Some(value),
        () = stop.clone().fired() => None,
    }
}

/// Tells the attempt what its connection does; runs on webrtc-rs's driver thread.
struct Events {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
}

/// What the attempts before this one did.
#[derive(Clone, Copy, Default)]
struct Before {
    /// One failed: publishing again counts as a reconnect.
    failed: bool,
    /// The last one was deleted to offer again with announced ICE servers: this one does not,
    /// whatever the server announces (a server announcing new ones every time must not loop).
    reoffered: bool,
}

/// Adds the ICE servers a server announced to `learned`; true if any is new (by its URLs, not
/// configured and not learned before). Known ones take the announced credentials (TURN
/// credentials are often made per session).
fn learn(
    configured: &[IceServer],
    learned: &mut Vec<IceServer>,
    announced: Vec<IceServer>,
) -> bool {
    let mut new = false;
    for server in announced {
        if configured.iter().any(|c| c.urls == server.urls) {
            continue;
        }
        match learned.iter_mut().find(|l| l.urls == server.urls) {
            Some(known) => *known = server,
            None => {
                learned.push(server);
                new = true;
            }
        }
    }
    new
}

/// One connection: from the offer to its end. The server's session, if one was created, is
/// deleted on the way out.
async fn attempt(s: &Setup, learned: &mut Vec<IceServer>, before: Before) -> Ended {
    let (gathered_tx, mut gathered) = watch::channel(false);
    let (state_tx, mut states) = watch::channel(RTCPeerConnectionState::New);
    let events = Arc::new(Events {
        gathered: gathered_tx,
        state: state_tx,
    });
    let pc = match connection::build(&s.ice, learned, events).await {
        Ok(pc) => pc,
        Err(e) => return Ended::failed(format!("WebRTC connection setup failed: {e}")),
    };
    let mut session = None;
    let ended = connect_and_publish(
        s,
        &pc,
        learned,
        before,
        (&mut gathered, &mut states),
        &mut session,
    )
    .await;
    let _ = pc.close().await;
    if let Some(created) = session {
        if let Err(e) = http::delete(&created.location, s.token.as_deref()).await {
            tracing::info!(camera = %s.camera, "whip_sink: the session's {e}");
        }
    }
    ended
}

/// The offer, the POST, the answer, the connection, then publishing until it is lost or the node
/// stops. `session` is set as soon as the server created one, for `attempt` to delete.
async fn connect_and_publish(
    s: &Setup,
    pc: &Arc<dyn PeerConnection>,
    learned: &mut Vec<IceServer>,
    before: Before,
    (gathered, states): (
        &mut watch::Receiver<bool>,
        &mut watch::Receiver<RTCPeerConnectionState>,
    ),
    session: &mut Option<Created>,
) -> Ended {
    let setup_failed =
        |what: &str, e: webrtc::error::Error| Ended::failed(format!("WebRTC {what} failed: {e}"));
    let ssrc = random_u64() as u32;
    let track = camera_track(&s.camera, ssrc);
    let transceiver = match pc
        .add_transceiver_from_track(
            track.clone() as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(t) => t,
        Err(e) => return setup_failed("add_transceiver", e),
    };
    let offer = match pc.create_offer(None).await {
        Ok(o) => o,
        Err(e) => return setup_failed("create_offer", e),
    };
    if let Err(e) = pc.set_local_description(offer).await {
        return setup_failed("set_local_description", e);
    }
    if unless_stopped(&s.stop, connection::wait_gathered(gathered))
        .await
        .is_none()
    {
        return Ended::Stopped;
    }
    let Some(offer) = connection::local_sdp(pc).await else {
        return Ended::failed("WebRTC made no offer");
    };
    // Dropped if the node stops meanwhile: the request's thread deletes a late session itself.
    let created =
        match unless_stopped(&s.stop, http::post_offer(&s.url, s.token.as_deref(), offer)).await {
            None => return Ended::Stopped,
            Some(Err(refused)) => {
                return Ended::Failed {
                    error: refused.error,
                    retry_after: refused.retry_after,
                    transient: refused.transient,
                    published: false,
                }
            }
            Some(Ok(created)) => created,
        };
    let answer = created.answer.clone();
    let announced = created.ice_servers.clone();
    s.status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .sessions += 1;
    *session = Some(created);
    if learn(&s.ice.servers, learned, announced) && !before.reoffered {
        // The offer was gathered without them (non-trickle): offer again with them.
        tracing::info!(
            camera = %s.camera,
            "whip_sink: the server announced ICE servers; offering again with them"
        );
        return Ended::Again;
    }
    let not_usable = |e: String| Ended::Failed {
        error: format!("the WHIP server's answer cannot be used: {e}"),
        retry_after: None,
        transient: false,
        published: false,
    };
    let answer = match RTCSessionDescription::answer(answer) {
        Ok(a) => a,
        Err(e) => return not_usable(e.to_string()),
    };
    if let Err(e) = pc.set_remote_description(answer).await {
        return not_usable(e.to_string());
    }
    let payload_type = match transceiver.sender().await {
        Ok(Some(sender)) => match sender.get_parameters().await {
            Ok(p) => p.rtp_parameters.codecs.first().map(|c| c.payload_type),
            Err(e) => return setup_failed("get_parameters", e),
        },
        Ok(None) => None,
        Err(e) => return setup_failed("sender", e),
    };
    let Some(payload_type) = payload_type else {
        return not_usable(
            "it accepts no H.264 Constrained Baseline (packetization-mode=1)".into(),
        );
    };
    let connected = async {
        tokio::time::timeout(
            s.connect_timeout,
            states.wait_for(|state| {
                matches!(
                    state,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await
        .map(|state| state.map(|s| *s).unwrap_or(RTCPeerConnectionState::Closed))
    };
    match unless_stopped(&s.stop, connected).await {
        None => return Ended::Stopped,
        Some(Ok(RTCPeerConnectionState::Connected)) => {}
        Some(Ok(state)) => {
            return Ended::failed(format!(
                "no media connection to the WHIP server (ICE/DTLS {state})"
            ))
        }
        Some(Err(_)) => {
            return Ended::failed(format!(
                "no media connection to the WHIP server within {} s (ICE/DTLS)",
                s.connect_timeout.as_secs_f64()
            ))
        }
    }
    if before.failed {
        s.metrics.reconnects.inc();
    }
    s.set(State::Publishing, None);
    tracing::info!(camera = %s.camera, "whip_sink: publishing");
    let tasks = start_sending(s, &track, payload_type, ssrc);
    let lost = states.wait_for(|state| {
        matches!(
            state,
            RTCPeerConnectionState::Failed
                | RTCPeerConnectionState::Disconnected
                | RTCPeerConnectionState::Closed
        )
    });
    let ended = match unless_stopped(&s.stop, lost).await {
        None => Ended::Stopped,
        Some(state) => {
            let state = state.map(|s| *s).unwrap_or(RTCPeerConnectionState::Closed);
            Ended::Failed {
                error: format!("the media connection to the WHIP server was lost ({state})"),
                retry_after: None,
                transient: true,
                published: true,
            }
        }
    };
    for task in tasks {
        task.abort();
    }
    ended
}

/// The three tasks of a connected attempt: packetizing the shared encode, writing it to the
/// track (a keyframe first), and turning the server's PLI/FIR into keyframe requests.
fn start_sending(
    s: &Setup,
    track: &Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    payload_type: u8,
    ssrc: u32,
) -> Vec<tokio::task::JoinHandle<()>> {
    let packets = Fanout::new();
    let writer_packets = packets.subscribe();
    let feed = s.feed.clone();
    let dropped = s.metrics.writer.dropped_behind.clone();
    let camera = s.camera.clone();
    let packetize = async move {
        let mut frames = match feed.subscribe(None) {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(camera = %camera, "whip_sink: the encoder refused a stream: {e}");
                return;
            }
        };
        let (mut packetizer, mut clock) = (RtpPacketizer::new(ssrc), RtpClock::default());
        while let Some((frame, skipped)) = frames.next().await {
            if skipped > 0 {
                dropped.inc_by(skipped);
            }
            let timestamp = clock.timestamp(frame.captured_at);
            match packetizer.packetize(&frame, timestamp, skipped > 0) {
                Ok(rtp) => packets.publish(Arc::new(rtp)),
                Err(e) => tracing::warn!(camera = %camera, "RTP packetizing failed: {e}"),
            }
        }
    };
    let (writer, commands) = mpsc::unbounded_channel();
    let targets = FeedbackTargets {
        ssrc,
        writer: Box::new(move |f| {
            let _ = writer.send(WriterCommand::Feedback(f));
        }),
        keyframe_requests: s.metrics.keyframe_requests.clone(),
        lost: s.metrics.rtp_lost.clone(),
    };
    vec![
        actix::spawn(packetize),
        actix::spawn(write_loop(
            track.clone(),
            payload_type,
            (None, writer_packets, Vec::new()),
            commands,
            s.feed.clone(),
            s.metrics.writer.clone(),
            None,
        )),
        actix::spawn(feedback::watch(track.clone(), targets)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str, credential: &str) -> IceServer {
        IceServer {
            urls: vec![url.into()],
            username: Some("u".into()),
            credential: Some(credential.into()),
        }
    }

    #[test]
    fn announced_servers_are_new_once_and_keep_their_latest_credentials() {
        let configured = [server("stun:mine", "")];
        let mut learned = Vec::new();
        assert!(learn(
            &configured,
            &mut learned,
            vec![server("turn:t", "a")]
        ));
        assert!(
            !learn(
                &configured,
                &mut learned,
                vec![server("turn:t", "b"), server("stun:mine", "x")]
            ),
            "fresh credentials for a known server are no reason to offer again"
        );
        assert_eq!(learned, [server("turn:t", "b")]);
        assert!(learn(
            &configured,
            &mut learned,
            vec![server("stun:other", "")]
        ));
        assert_eq!(learned.len(), 2);
    }
}
