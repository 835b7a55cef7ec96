//! The mjpeg_sink's HTTP face: the guide's stream (`GET /api/camera/stream[/{name}]`, with
//! `?quality=` and `?fps=` per viewer) and snapshot (`GET /api/camera/snapshot[/{name}]`)
//! routes, the messages they send the sink, and the capabilities by which a route finds the sink
//! of a camera (or a sink named by its node id).

use std::sync::Arc;

use actix::{Message, Recipient};
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::error::ServiceError;
use crate::frame::EncodedFrame;
use crate::http::face::{no_cache, param, ApiError, Live, Query};
use crate::mjpeg;
use crate::node::Capability;

/// The body of an HTTP streaming response.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Opens an MJPEG stream for one viewer.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<ByteStream, ServiceError>")]
pub struct OpenStream {
    /// JPEG quality; `None` is the encoder's configured quality.
    pub quality: Option<u8>,
    /// Frames per second for this viewer; `None` is every frame.
    pub fps: Option<f64>,
}

/// The latest JPEG of a camera, waiting briefly for one if capture was idle.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<Arc<EncodedFrame>, ServiceError>")]
pub struct TakeSnapshot;

/// MJPEG streams of a camera.
#[derive(Clone)]
pub struct MjpegStreams(pub Recipient<OpenStream>);

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
        .route("/api/camera/snapshot", web::get().to(snapshot_default))
        .route("/api/camera/snapshot/{name}", web::get().to(snapshot_named));
}

fn no_sink(camera: &str) -> String {
    format!("camera '{camera}' has no mjpeg_sink")
}

async fn stream(live: Live, name: Option<&str>, query: Query) -> Result<HttpResponse, ApiError> {
    let quality = param::<u8>(&query, "quality", 10..=100)?;
    let fps = param::<f64>(&query, "fps", 1.0..=60.0)?;
    let (_, MjpegStreams(open)) = live.find(name, no_sink)?;
    let body = open.send(OpenStream { quality, fps }).await??;
    Ok(no_cache(&mut HttpResponse::Ok())
        .content_type(mjpeg::CONTENT_TYPE)
        .streaming(body))
}

async fn stream_default(live: Live, query: Query) -> Result<HttpResponse, ApiError> {
    stream(live, None, query).await
}

async fn stream_named(
    live: Live,
    path: web::Path<String>,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    stream(live, Some(&path), query).await
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
