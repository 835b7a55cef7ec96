//! The guide's WebSocket signalling, one session actor per socket: `{"type":"offer","sdp"}` ->
//! `{"type":"answer","sdp"}` (the answer already holds the server's candidates);
//! `{"type":"ice-candidate","candidate":{...}}` both ways; anything else gets
//! `{"type":"error","error"}` and the socket stays open; closing the socket closes the peer.
//! A frame over 64 KiB closes the socket (`http::face::websocket`).

use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, StreamHandler, WrapFuture};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::api::{
    peers, AddPeerCandidate, ClosePeer, OpenPeer, PeerEvent, WantedVariant, WebRtcPeers,
};
use crate::http::face::{websocket, Live, Query};

/// `GET /api/webrtc/ws[?camera=NAME][&bitrate=KBPS][&scale=1|2|4]`: upgrades to a signalling
/// session for that camera; its peers get the variant asked for.
pub(super) async fn open(
    live: Live,
    req: HttpRequest,
    query: Query,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let wanted = WantedVariant::from_query(&query)?;
    let (camera, service) = peers(&live, query.get("camera").map(String::as_str))?;
    let session = WsSession {
        camera,
        service,
        wanted,
        session: None,
        last_seen: Instant::now(),
    };
    websocket(session, &req, stream, MAX_FRAME_BYTES)
}

/// The largest frame a client may send: an SDP offer is a few KiB. A frame that declares more
/// closes the socket before any of it is held.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// How often the server pings, and how long a silent client is kept.
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// One signalling socket and the peer it opened, if any.
struct WsSession {
    camera: String,
    service: WebRtcPeers,
    wanted: WantedVariant,
    session: Option<String>,
    last_seen: Instant,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ClientMessage {
    Offer {
        sdp: String,
    },
    IceCandidate {
        candidate: Option<serde_json::Value>,
    },
}

impl WsSession {
    fn send_json(ctx: &mut ws::WebsocketContext<Self>, value: serde_json::Value) {
        ctx.text(value.to_string());
    }

    fn error(ctx: &mut ws::WebsocketContext<Self>, message: impl Into<String>) {
        Self::send_json(ctx, json!({"type": "error", "error": message.into()}));
    }

    fn close_peer(&mut self) {
        if let Some(session) = self.session.take() {
            self.service.close.do_send(ClosePeer { session });
        }
    }

    fn offer(&mut self, sdp: String, ctx: &mut ws::WebsocketContext<Self>) {
        // A new offer on the same socket replaces the peer.
        self.close_peer();
        let (tx, rx) = mpsc::unbounded_channel();
        let open = self.service.open.send(OpenPeer {
            sdp,
            signalling: "ws",
            events: Some(tx),
            wanted: self.wanted,
        });
        let camera = self.camera.clone();
        ctx.wait(open.into_actor(self).map(move |result, act, ctx| {
            match result {
                Ok(Ok(answer)) => {
                    act.session = Some(answer.session.clone());
                    Self::send_json(
                        ctx,
                        json!({"type": "answer", "sdp": answer.sdp, "camera": camera, "session": answer.session, "variant": answer.variant}),
                    );
                    // Events only after the answer: a client must not get a candidate before it.
                    ctx.add_stream(tokio_stream(rx));
                }
                Ok(Err(e)) => Self::error(ctx, e.to_string()),
                Err(e) => Self::error(ctx, format!("camera '{camera}' is not streaming: {e}")),
            }
        }));
    }

    fn candidate(&mut self, candidate: serde_json::Value, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(session) = self.session.clone() else {
            return Self::error(ctx, "ice-candidate before any answer: send an offer first");
        };
        let add = self
            .service
            .candidate
            .send(AddPeerCandidate { session, candidate });
        ctx.spawn(add.into_actor(self).map(|result, _, ctx| match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => Self::error(ctx, e.to_string()),
            Err(e) => Self::error(ctx, e.to_string()),
        }));
    }
}

/// An unbounded receiver as a stream (tokio-stream is not a dependency).
fn tokio_stream(
    rx: mpsc::UnboundedReceiver<PeerEvent>,
) -> impl futures_util::Stream<Item = PeerEvent> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_seen.elapsed() > SILENCE_LIMIT {
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.close_peer();
    }
}

impl StreamHandler<PeerEvent> for WsSession {
    fn handle(&mut self, event: PeerEvent, ctx: &mut Self::Context) {
        match event {
            PeerEvent::Candidate(candidate) => Self::send_json(
                ctx,
                json!({"type": "ice-candidate", "candidate": candidate}),
            ),
            PeerEvent::Closed(reason) => {
                self.session = None;
                Self::send_json(ctx, json!({"type": "closed", "reason": reason}))
            }
        }
    }

    /// The peer's events ended (a new offer replaced it); the socket stays.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("WebSocket protocol error: {e}");
                ctx.stop();
                return;
            }
        };
        match msg {
            ws::Message::Text(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Err(e) => Self::error(ctx, format!("not JSON: {e}")),
                Ok(value) => match serde_json::from_value::<ClientMessage>(value.clone()) {
                    Ok(ClientMessage::Offer { sdp }) => self.offer(sdp, ctx),
                    Ok(ClientMessage::IceCandidate { candidate: None }) => {}
                    Ok(ClientMessage::IceCandidate { candidate: Some(c) }) => {
                        self.candidate(c, ctx)
                    }
                    Err(e) => {
                        let kind = value.get("type").and_then(|t| t.as_str());
                        match kind {
                            Some("offer" | "ice-candidate") => {
                                Self::error(ctx, format!("bad '{}' message: {e}", kind.unwrap_or("")))
                            }
                            Some(other) => Self::error(
                                ctx,
                                format!("unknown message type '{other}' (expected 'offer' or 'ice-candidate')"),
                            ),
                            None => Self::error(ctx, "a message needs a 'type'"),
                        }
                    }
                },
            },
            ws::Message::Binary(_) => {
                Self::error(ctx, "binary messages are not understood; send JSON text")
            }
            ws::Message::Ping(p) => ctx.pong(&p),
            ws::Message::Pong(_) => {}
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            ws::Message::Continuation(_) | ws::Message::Nop => {}
        }
    }
}
