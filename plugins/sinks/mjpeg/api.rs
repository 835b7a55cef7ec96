//! The mjpeg_sink's HTTP face: the guide's stream (`GET /api/camera/stream[/{name}]`, with
//! `?quality=`, `?fps=`, `?width=` and `?height=` per viewer, and its wire form: `?advance=` or
//! the `Accept` header, `form`), the same pictures over a WebSocket
//! (`GET /api/camera/ws[/{name}]`, `ws.rs`) and the snapshot (`GET /api/camera/snapshot[/{name}]`)
//! routes, the messages they send the sink, and the capabilities by which a route finds the sink
//! of a camera (or a sink named by its node id).

use std::sync::Arc;

use actix::{Message, Recipient};
use actix_web::{web, HttpRequest, HttpResponse};
use std::time::Duration;

use actix_web::http::StatusCode;
use bytes::Bytes;
use futures_util::stream::LocalBoxStream;
use futures_util::StreamExt;

use crate::error::ServiceError;
use crate::frame::EncodedFrame;
use crate::http::face::{direct, endless_body, no_cache, param, ApiError, Live, Query};
use crate::mjpeg;
use crate::node::Capability;

use super::viewer::{mjpeg_body, write_mjpeg, ViewerFrames, Wanted};

/// The body of an HTTP streaming response.
pub type ByteStream = LocalBoxStream<'static, Result<Bytes, std::io::Error>>;

/// Opens the frames of one viewer, for its multipart body or its WebSocket.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<ViewerFrames, ServiceError>")]
pub struct OpenStream(pub Wanted);

/// The latest JPEG of a camera, waiting briefly for one if capture was idle.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<Arc<EncodedFrame>, ServiceError>")]
pub struct TakeSnapshot;

/// MJPEG streams of a camera.
#[derive(Clone)]
pub struct MjpegStreams {
    pub open: Recipient<OpenStream>,
    /// A multipart viewer that takes no part for this long is cut off (`write_timeout_ms`).
    pub write_timeout: Duration,
}

impl Capability for MjpegStreams {
    const NAME: &'static str = "mjpeg";
}

/// The latest picture of a camera, as a JPEG.
#[derive(Clone)]
pub struct Snapshots(pub Recipient<TakeSnapshot>);

impl Capability for Snapshots {
    const NAME: &'static str = "snapshot";
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/camera/stream", web::get().to(stream_default))
        .route("/api/camera/stream/{name}", web::get().to(stream_named))
        .route("/api/camera/ws", web::get().to(super::ws::open_default))
        .route(
            "/api/camera/ws/{name}",
            web::get().to(super::ws::open_named),
        )
        .route("/api/camera/snapshot", web::get().to(snapshot_default))
        .route("/api/camera/snapshot/{name}", web::get().to(snapshot_named));
}

fn no_sink(camera: &str) -> String {
    format!("camera '{camera}' has no mjpeg_sink")
}

/// The query parameters a viewer may give, checked: an unknown one or a value out of range is
/// the caller's mistake, never silently ignored.
pub(super) fn wanted(query: &Query, allowed_extra: &[&str]) -> Result<Wanted, ApiError> {
    const KNOWN: [&str; 4] = ["quality", "fps", "width", "height"];
    if let Some(unknown) = query
        .keys()
        .find(|k| !KNOWN.contains(&k.as_str()) && !allowed_extra.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{unknown}' (a stream takes quality, fps, width and height)"
        )));
    }
    let width = param::<u32>(query, "width", 16..=7680)?;
    let height = param::<u32>(query, "height", 16..=4320)?;
    Ok(Wanted {
        quality: param::<u8>(query, "quality", 10..=100)?,
        fps: param::<f64>(query, "fps", 1.0..=60.0)?,
        size: (width.is_some() || height.is_some())
            .then(|| (width.unwrap_or(u32::MAX), height.unwrap_or(u32::MAX))),
    })
}

/// The wire form a stream request gets: `?advance=1` the advance-headers form, `?advance=0` the
/// classic one; without it, the advance form for an image request (an `Accept` header naming an
/// `image/` type, as browsers send for `<img>`) and the classic form for anyone else (ffmpeg and
/// curl send `*/*`), since only browsers wait for the next boundary and only tools need
/// `Content-Length`.
fn form(query: &Query, request: &HttpRequest) -> Result<mjpeg::Form, ApiError> {
    let advance = match param::<u8>(query, "advance", 0..=1)? {
        Some(a) => a == 1,
        None => request
            .headers()
            .get_all(actix_web::http::header::ACCEPT)
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("image/")),
    };
    Ok(if advance {
        mjpeg::Form::Advance
    } else {
        mjpeg::Form::Classic
    })
}

/// How long a stream that asked for a size waits for the first frame (it names the size given).
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(3);

async fn stream(
    req: HttpRequest,
    live: Live,
    name: Option<&str>,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    // `t`: the cache buster pages add to restart an <img>; `token`: for the security layer.
    let wanted = wanted(&query, &["t", "token", "advance"])?;
    let form = form(&query, &req)?;
    let (
        camera,
        MjpegStreams {
            open,
            write_timeout,
        },
    ) = live.find(name, no_sink)?;
    let mut frames = open.send(OpenStream(wanted)).await??;
    let mut ok = HttpResponse::Ok();
    let response = no_cache(&mut ok).content_type(mjpeg::CONTENT_TYPE);
    // A size asked for is answered with the size given, known from the first frame.
    let first = match wanted.size {
        None => None,
        Some(_) => match tokio::time::timeout(FIRST_FRAME_WAIT, frames.next()).await {
            Ok(Some(frame)) => {
                response.insert_header(("X-Frame-Size", format!("{}x{}", frame.width, frame.height)));
                Some(frame)
            }
            Ok(None) => return Err(ApiError::not_found(format!("camera '{camera}' went away"))),
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "no frame from camera '{camera}' within {} ms to size the stream (is capture stopped?)",
                        FIRST_FRAME_WAIT.as_millis()
                    ),
                ))
            }
        },
    };
    // On a plain TCP connection each part goes out in one write from the shared JPEG bytes
    // (`direct`), which also cuts off a client that takes nothing for the timeout; otherwise
    // (TLS, HTTP/1.0) actix writes the pieces and `endless_body` watches for the stall.
    let body: ByteStream = match direct(&req, write_timeout) {
        Some(socket) => socket
            .body(move |writer| write_mjpeg(frames, first, form, writer))
            .boxed_local(),
        None => mjpeg_body(frames, first, form).boxed_local(),
    };
    // Also one of the server's viewers (server.max_viewers).
    Ok(response.streaming(endless_body(&req, body, write_timeout)?))
}

async fn stream_default(
    req: HttpRequest,
    live: Live,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    stream(req, live, None, query).await
}

async fn stream_named(
    req: HttpRequest,
    live: Live,
    path: web::Path<String>,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    stream(req, live, Some(&path), query).await
}

async fn snapshot(live: Live, name: Option<&str>) -> Result<HttpResponse, ApiError> {
    let (_, Snapshots(take)) = live.find(name, no_sink)?;
    let frame = take.send(TakeSnapshot).await??;
    Ok(no_cache(&mut HttpResponse::Ok())
        .content_type("image/jpeg")
        .insert_header(("X-Timestamp", mjpeg::format_timestamp(frame.captured_at)))
        .body(frame.data.clone()))
}

async fn snapshot_default(live: Live) -> Result<HttpResponse, ApiError> {
    snapshot(live, None).await
}

async fn snapshot_named(live: Live, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    snapshot(live, Some(&path)).await
}
