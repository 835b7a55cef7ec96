//! Routes. The guide's paths under `/api/camera`, plus `/api/graph`, `/metrics`, `/healthz` and the
//! viewer page at `/`.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{ApiError, AppState};
use crate::graph::MjpegService;
use crate::messages::{OpenStream, SetCapture, TakeSnapshot};
use crate::mjpeg;

type State = web::Data<AppState>;
type Query = web::Query<HashMap<String, String>>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route(
            "/healthz",
            web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
        )
        .route("/metrics", web::get().to(metrics))
        .route("/api/graph", web::get().to(graph))
        .route("/api/camera/cameras", web::get().to(cameras))
        .route("/api/camera/start", web::post().to(start))
        .route("/api/camera/stop", web::post().to(stop))
        .route("/api/camera/stream", web::get().to(stream_default))
        .route("/api/camera/stream/{name}", web::get().to(stream_named))
        .route("/api/camera/snapshot", web::get().to(snapshot_default))
        .route("/api/camera/snapshot/{name}", web::get().to(snapshot_named))
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

const INDEX_HTML: &str = include_str!("../../web/index.html");

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX_HTML)
}

async fn metrics(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

async fn graph(state: State) -> HttpResponse {
    let graph = state.graph.read().expect("graph lock");
    HttpResponse::Ok().json(graph.describe())
}

async fn cameras(state: State) -> HttpResponse {
    let graph = state.graph.read().expect("graph lock");
    HttpResponse::Ok().json(json!({ "cameras": graph.cameras() }))
}

/// The camera a request names, or the default one; 404 naming the cameras there are.
fn camera(state: &AppState, name: Option<&str>) -> Result<String, ApiError> {
    let graph = state.graph.read().expect("graph lock");
    graph.resolve_camera(name).ok_or_else(|| {
        let known = graph.cameras().join(", ");
        match name {
            Some(n) => ApiError::not_found(format!("unknown camera '{n}' (cameras: {known})")),
            None => ApiError::not_found("no camera is configured"),
        }
    })
}

async fn set_capture(state: State, query: Query, on: bool) -> Result<HttpResponse, ApiError> {
    let name = camera(&state, query.get("camera").map(String::as_str))?;
    let capture = state.graph.read().expect("graph lock").capture(&name);
    let capture = capture.ok_or_else(|| {
        ApiError::not_found(format!("camera '{name}' cannot be started or stopped"))
    })?;
    capture.send(SetCapture { on }).await?;
    let status = if on { "started" } else { "stopped" };
    Ok(HttpResponse::Ok().json(json!({ "status": status })))
}

async fn start(state: State, query: Query) -> Result<HttpResponse, ApiError> {
    set_capture(state, query, true).await
}

async fn stop(state: State, query: Query) -> Result<HttpResponse, ApiError> {
    set_capture(state, query, false).await
}

fn mjpeg_service(state: &AppState, name: Option<&str>) -> Result<(String, MjpegService), ApiError> {
    let name = camera(state, name)?;
    let service = state.graph.read().expect("graph lock").mjpeg(&name);
    let service =
        service.ok_or_else(|| ApiError::not_found(format!("camera '{name}' has no mjpeg_sink")))?;
    Ok((name, service))
}

/// Parses an optional numeric query parameter within a range.
fn param<T>(
    query: &Query,
    name: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = query.get(name) else {
        return Ok(None);
    };
    match raw.parse::<T>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(ApiError::bad_request(format!(
            "'{name}' must be a number {}..={} (got '{raw}')",
            range.start(),
            range.end()
        ))),
    }
}

/// Headers that keep browsers and proxies from caching live pictures.
fn no_cache(r: &mut actix_web::HttpResponseBuilder) -> &mut actix_web::HttpResponseBuilder {
    r.insert_header((header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"))
        .insert_header((header::PRAGMA, "no-cache"))
        .insert_header((header::EXPIRES, "0"))
}

async fn stream(state: State, name: Option<&str>, query: Query) -> Result<HttpResponse, ApiError> {
    let quality = param::<u8>(&query, "quality", 10..=100)?;
    let fps = param::<f64>(&query, "fps", 1.0..=60.0)?;
    let (_, service) = mjpeg_service(&state, name)?;
    let body = service.stream.send(OpenStream { quality, fps }).await??;
    Ok(no_cache(&mut HttpResponse::Ok())
        .content_type(mjpeg::CONTENT_TYPE)
        .streaming(body))
}

async fn stream_default(state: State, query: Query) -> Result<HttpResponse, ApiError> {
    stream(state, None, query).await
}

async fn stream_named(
    state: State,
    path: web::Path<String>,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    stream(state, Some(&path), query).await
}

async fn snapshot(state: State, name: Option<&str>) -> Result<HttpResponse, ApiError> {
    let (_, service) = mjpeg_service(&state, name)?;
    let frame = service.snapshot.send(TakeSnapshot).await??;
    Ok(no_cache(&mut HttpResponse::Ok())
        .content_type("image/jpeg")
        .insert_header(("X-Timestamp", mjpeg::format_timestamp(frame.captured_at)))
        .body(frame.data.clone()))
}

async fn snapshot_default(state: State) -> Result<HttpResponse, ApiError> {
    snapshot(state, None).await
}

async fn snapshot_named(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    snapshot(state, Some(&path)).await
}
