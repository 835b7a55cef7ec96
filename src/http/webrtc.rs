//! WebRTC signalling, both ways, for the cameras that have a `webrtc_sink`:
//!
//! - `GET /api/webrtc/ws[?camera=NAME]`: the guide's WebSocket protocol, one session actor per
//!   socket. `{"type":"offer","sdp"}` -> `{"type":"answer","sdp"}` (the answer already holds the
//!   server's candidates); `{"type":"ice-candidate","candidate":{...}}` both ways; anything else
//!   gets `{"type":"error","error"}` and the socket stays open; closing the socket closes the peer.
//! - WHEP (RFC 9725): `POST /api/webrtc/whep/{camera}` with an `application/sdp` offer -> `201`,
//!   the answer and the session's `Location`; `DELETE` that location ends it; `OPTIONS` answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, StreamHandler, WrapFuture};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{ApiError, AppState};
use crate::graph::WebRtcService;
use crate::messages::{AddPeerCandidate, ClosePeer, OpenPeer, PeerEvent};

type State = web::Data<AppState>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webrtc", web::get().to(page))
        .route("/api/webrtc/ws", web::get().to(ws_open))
        .route("/api/webrtc/whep/{camera}", web::post().to(whep_offer))
        .route(
            "/api/webrtc/whep/{camera}",
            web::method(actix_web::http::Method::OPTIONS).to(whep_options),
        )
        .route(
            "/api/webrtc/whep/{camera}/{session}",
            web::delete().to(whep_delete),
        )
        .route(
            "/api/webrtc/whep/{camera}/{session}",
            web::method(actix_web::http::Method::PATCH).to(whep_patch),
        );
}

const PAGE_HTML: &str = include_str!("../../web/webrtc.html");

/// The minimal WebRTC player (`/webrtc?camera=NAME&signalling=ws|whep`), MJPEG as its fallback.
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE_HTML)
}

/// The camera (named, or the default one) and its WebRTC service; or the `webrtc_sink` node of
/// that id (a camera's second sink).
fn service(state: &AppState, name: Option<&str>) -> Result<(String, WebRtcService), ApiError> {
    let live = state.live.read().expect("graph lock");
    let graph = &live.graph;
    if let Some(id) = name {
        if let (Some(camera), Some(service)) = (graph.camera_of(id), graph.webrtc(id)) {
            return Ok((camera, service));
        }
    }
    let camera = graph.resolve_camera(name).ok_or_else(|| {
        let known = graph.cameras().join(", ");
        match name {
            Some(n) => ApiError::not_found(format!("unknown camera '{n}' (cameras: {known})")),
            None => ApiError::not_found("no camera is configured"),
        }
    })?;
    let service = graph.webrtc(&camera).ok_or_else(|| {
        ApiError::not_found(format!(
            "camera '{camera}' has no webrtc_sink (add an h264_encoder and a webrtc_sink)"
        ))
    })?;
    Ok((camera, service))
}

async fn whep_offer(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (camera, service) = service(&state, Some(&path))?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/sdp") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("WHEP offers are 'application/sdp' (got '{content_type}')"),
        ));
    }
    let sdp = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the SDP offer is not UTF-8"))?;
    let answer = service
        .open
        .send(OpenPeer {
            sdp,
            signalling: "whep",
            events: None,
        })
        .await??;
    let location = format!("/api/webrtc/whep/{camera}/{}", answer.session);
    Ok(HttpResponse::Created()
        .content_type("application/sdp")
        .insert_header((header::LOCATION, location))
        .insert_header(("Access-Control-Expose-Headers", "Location"))
        .body(answer.sdp))
}

async fn whep_options(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    service(&state, Some(&path))?;
    Ok(HttpResponse::NoContent()
        .insert_header((header::ALLOW, "OPTIONS, POST"))
        .insert_header(("Accept-Post", "application/sdp"))
        .finish())
}

async fn whep_delete(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (camera, session) = path.into_inner();
    let (_, service) = service(&state, Some(&camera))?;
    service.close.send(ClosePeer { session }).await??;
    Ok(HttpResponse::Ok().json(json!({"status": "closed"})))
}

async fn whep_patch() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE over WHEP is not supported: the answer already holds every server candidate",
    ))
}

async fn ws_open(
    state: State,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let (camera, service) = service(&state, query.get("camera").map(String::as_str))?;
    ws::start(
        WsSession {
            camera,
            service,
            session: None,
            last_seen: Instant::now(),
        },
        &req,
        stream,
    )
}

/// How often the server pings, and how long a silent client is kept.
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// One signalling socket and the peer it opened, if any.
struct WsSession {
    camera: String,
    service: WebRtcService,
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
        });
        let camera = self.camera.clone();
        ctx.wait(open.into_actor(self).map(move |result, act, ctx| {
            match result {
                Ok(Ok(answer)) => {
                    act.session = Some(answer.session.clone());
                    Self::send_json(
                        ctx,
                        json!({"type": "answer", "sdp": answer.sdp, "camera": camera, "session": answer.session}),
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
