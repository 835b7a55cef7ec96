//! The webrtc_sink's HTTP face, both ways of signalling for the cameras that have one:
//!
//! - `GET /api/webrtc/ws[?camera=NAME]`: the guide's WebSocket protocol (`ws.rs`).
//!
//! Both take `?bitrate=KBPS` (100..=50000) and `?scale=1|2|4` (width and height divided by it):
//! the peer gets that variant and stays on it instead of following an `adaptive` ladder; the
//! part not given is the encoder's own (or the ladder's top step; over a camera's own H.264, the
//! ladder's first encoded step). The variant given is in the
//! answer (`"variant"` in the WS answer, `X-Variant` for WHEP).
//! - WHEP (draft-ietf-wish-whep; the POST/201/Location/DELETE shape of WHIP, RFC 9725):
//!   `POST /api/webrtc/whep/{camera}` with an `application/sdp` offer -> `201`, the answer and
//!   the session's `Location` and an `ETag`; `DELETE` that location ends it; `OPTIONS` answers
//!   (MediaMTX asks it before pulling with `source: whep://...`).
//! - `GET /webrtc`: the minimal WebRTC player page.
//!
//! Also the messages both send the sink, and the capability by which they find it.

use std::collections::HashMap;

use actix::{Message, Recipient};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::ws;
use crate::error::ServiceError;
use crate::http::face::{param, read_body, ApiError, Live, Query};
use crate::node::{Capability, WatchRoute};
use crate::port::{H264Variant, SCALES};

/// Opens a WebRTC peer for a camera: the remote offer in, the complete answer out (non-trickle:
/// the server's ICE candidates are already in it).
#[derive(Message, Debug)]
#[rtype(result = "Result<PeerAnswer, ServiceError>")]
pub struct OpenPeer {
    /// The remote SDP offer.
    pub sdp: String,
    /// `ws` or `whep`, for logs.
    pub signalling: &'static str,
    /// Where the peer reports later events (WS signalling); `None` for WHEP.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<PeerEvent>>,
    /// What the viewer asked for; nothing: the ladder's choice (or the encoder's setting).
    pub wanted: WantedVariant,
}

/// A viewer's choice of bitrate and size for its peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WantedVariant {
    pub bitrate_kbps: Option<u32>,
    pub scale: Option<u8>,
}

impl WantedVariant {
    /// From `?bitrate=` and `?scale=`; a value out of range is the caller's mistake.
    pub fn from_query(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let bitrate_kbps = param::<u32>(query, "bitrate", H264Variant::BITRATE_KBPS)?;
        let scale = param::<u8>(query, "scale", 1..=4)?;
        if let Some(s) = scale.filter(|s| !SCALES.contains(s)) {
            return Err(ApiError::bad_request(format!(
                "'scale' must be 1, 2 or 4 (got '{s}')"
            )));
        }
        Ok(Self {
            bitrate_kbps,
            scale,
        })
    }

    /// The variant to hold the peer on, completing the choice from `default`; `None`: no choice.
    pub fn variant(&self, default: Option<H264Variant>) -> Option<H264Variant> {
        if *self == Self::default() {
            return None;
        }
        let base = default.unwrap_or(H264Variant {
            bitrate_kbps: 2000,
            scale: 1,
        });
        Some(H264Variant {
            bitrate_kbps: self.bitrate_kbps.unwrap_or(base.bitrate_kbps),
            scale: self.scale.unwrap_or(base.scale),
        })
    }
}

/// The answer to an [`OpenPeer`].
#[derive(Clone, Debug)]
pub struct PeerAnswer {
    /// The session id, for candidates and closing.
    pub session: String,
    pub sdp: String,
    /// The variant the peer starts on (`None`: the encoder's setting), e.g. `1000k/2`.
    pub variant: Option<String>,
}

/// Something a peer tells its signalling channel after the answer.
#[derive(Clone, Debug)]
pub enum PeerEvent {
    /// A local ICE candidate gathered late (JSON as `RTCIceCandidateInit`).
    Candidate(serde_json::Value),
    /// The peer was closed by the server (failed, disconnected, timed out, node stopped).
    Closed(String),
}

/// A remote ICE candidate for an open peer (`RTCIceCandidateInit` as JSON).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct AddPeerCandidate {
    pub session: String,
    pub candidate: serde_json::Value,
}

/// Closes a peer (WS closed, WHEP DELETE).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct ClosePeer {
    pub session: String,
}

/// WebRTC peers of a camera (WS signalling and WHEP).
#[derive(Clone)]
pub struct WebRtcPeers {
    pub open: Recipient<OpenPeer>,
    pub candidate: Recipient<AddPeerCandidate>,
    pub close: Recipient<ClosePeer>,
}

impl Capability for WebRtcPeers {
    const NAME: &'static str = "webrtc";
}

/// Opening, closing and trickling a WHEP session only watches: a `view` token may do it.
pub const WATCH_ROUTES: &[WatchRoute] = &[
    WatchRoute {
        method: "POST",
        path: WHEP,
    },
    WatchRoute {
        method: "DELETE",
        path: WHEP_SESSION,
    },
    WatchRoute {
        method: "PATCH",
        path: WHEP_SESSION,
    },
];

/// The largest SDP offer taken: Chromium's are a few KiB.
const MAX_OFFER_BYTES: usize = 64 * 1024;

const WHEP: &str = "/api/webrtc/whep/{camera}";
const WHEP_SESSION: &str = "/api/webrtc/whep/{camera}/{session}";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webrtc", web::get().to(page))
        .route("/api/webrtc/ws", web::get().to(ws::open))
        .route(WHEP, web::post().to(whep_offer))
        .route(WHEP, web::method(Method::OPTIONS).to(whep_options))
        .route(WHEP_SESSION, web::delete().to(whep_delete))
        .route(WHEP_SESSION, web::method(Method::PATCH).to(whep_patch));
}

const PAGE_HTML: &str = include_str!("../../../web/webrtc.html");

/// The minimal WebRTC player (`/webrtc?camera=NAME&signalling=ws|whep`), MJPEG as its fallback.
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE_HTML)
}

/// The camera (named, or the default one) and its peers; or the `webrtc_sink` node of that id
/// (a camera's second sink).
pub(super) fn peers(live: &Live, name: Option<&str>) -> Result<(String, WebRtcPeers), ApiError> {
    live.find(name, |camera| {
        format!("camera '{camera}' has no webrtc_sink (add an h264_encoder and a webrtc_sink)")
    })
}

async fn whep_offer(
    live: Live,
    req: HttpRequest,
    path: web::Path<String>,
    query: Query,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let wanted = WantedVariant::from_query(&query)?;
    let (camera, service) = peers(&live, Some(&path))?;
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
    let body = read_body(&req, body, MAX_OFFER_BYTES).await?;
    let sdp = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the SDP offer is not UTF-8"))?;
    let answer = service
        .open
        .send(OpenPeer {
            sdp,
            signalling: "whep",
            events: None,
            wanted,
        })
        .await??;
    let location = format!("/api/webrtc/whep/{camera}/{}", answer.session);
    let mut response = HttpResponse::Created();
    if let Some(variant) = &answer.variant {
        response.insert_header(("X-Variant", variant.as_str()));
    }
    // The ETag names the session's ICE state (RFC 9725 4.3.1); MediaMTX's WHEP client refuses
    // an answer without one.
    Ok(response
        .content_type("application/sdp")
        .insert_header((header::LOCATION, location))
        .insert_header((header::ETAG, format!("\"{}\"", answer.session)))
        .body(answer.sdp))
}

async fn whep_options(live: Live, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    peers(&live, Some(&path))?;
    Ok(HttpResponse::NoContent()
        .insert_header((header::ALLOW, "OPTIONS, POST"))
        .insert_header(("Accept-Post", "application/sdp"))
        .finish())
}

async fn whep_delete(
    live: Live,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (camera, session) = path.into_inner();
    let (_, service) = peers(&live, Some(&camera))?;
    service.close.send(ClosePeer { session }).await??;
    Ok(HttpResponse::Ok().json(json!({"status": "closed"})))
}

async fn whep_patch() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE over WHEP is not supported: the answer already holds every server candidate",
    ))
}
