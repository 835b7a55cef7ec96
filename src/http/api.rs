//! Routes. The guide's paths under `/api/camera`, plus `/api/graph`, `/metrics`, `/healthz` and the
//! viewer page at `/`.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{stats, ApiError, AppState};
use crate::config::short::CameraShortForm;
use crate::graph::MjpegService;
use crate::messages::{
    AddCamera, OpenStream, Reload, RemoveCamera, SaveSnapshot, SetCapture, TakeSnapshot,
};
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
        .route("/api/stats", web::get().to(stats_all))
        .route("/api/stats/{name}", web::get().to(stats_named))
        .route("/api/graph/reload", web::post().to(reload))
        .route("/api/camera/cameras/{name}", web::post().to(add_camera))
        .route(
            "/api/camera/cameras/{name}",
            web::delete().to(remove_camera),
        )
        .route("/api/camera/cameras", web::get().to(cameras))
        .route("/api/camera/start", web::post().to(start))
        .route("/api/camera/stop", web::post().to(stop))
        .route("/api/camera/stream", web::get().to(stream_default))
        .route("/api/camera/stream/{name}", web::get().to(stream_named))
        .route("/api/camera/snapshot", web::get().to(snapshot_default))
        .route("/api/camera/snapshot/{name}", web::get().to(snapshot_named))
        .route(
            "/api/camera/snapshot",
            web::post().to(save_snapshot_default),
        )
        .route(
            "/api/camera/snapshot/{name}",
            web::post().to(save_snapshot_named),
        )
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
    let description = state.live.read().expect("graph lock").describe();
    HttpResponse::Ok().json(description)
}

async fn reload(state: State) -> Result<HttpResponse, ApiError> {
    let changes = state.supervisor.send(Reload { trigger: "api" }).await??;
    Ok(HttpResponse::Ok().json(json!({ "status": "reloaded", "changes": changes })))
}

async fn add_camera(
    state: State,
    path: web::Path<String>,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let source = query
        .get("source")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("missing query parameter 'source' (test, a device index or /dev/videoN, an http:// MJPEG URL, a file or folder)"))?;
    let camera = CameraShortForm {
        source,
        width: param(&query, "width", 16..=7680)?,
        height: param(&query, "height", 16..=4320)?,
        fps: param(&query, "fps", 1..=120)?,
        quality: param(&query, "quality", 1..=100)?,
        ..Default::default()
    };
    state
        .supervisor
        .send(AddCamera {
            name: name.clone(),
            camera,
        })
        .await??;
    Ok(HttpResponse::Ok().json(json!({ "status": "added", "name": name })))
}

async fn remove_camera(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    state
        .supervisor
        .send(RemoveCamera { name: name.clone() })
        .await??;
    Ok(HttpResponse::Ok().json(json!({ "status": "removed", "name": name })))
}

async fn cameras(state: State) -> HttpResponse {
    let live = state.live.read().expect("graph lock");
    let graph = &live.graph;
    HttpResponse::Ok().json(json!({ "cameras": graph.cameras() }))
}

/// The camera a request names, or the default one; 404 naming the cameras there are.
fn camera(state: &AppState, name: Option<&str>) -> Result<String, ApiError> {
    let live = state.live.read().expect("graph lock");
    let graph = &live.graph;
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
    let capture = state.live.read().expect("graph lock").graph.capture(&name);
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

/// The MJPEG sink of a camera (named, or the default one), or the `mjpeg_sink` node of that id
/// (so a camera's second sink, e.g. behind a frame_dropper, can be reached too).
fn mjpeg_service(state: &AppState, name: Option<&str>) -> Result<(String, MjpegService), ApiError> {
    if let Some(id) = name {
        let live = state.live.read().expect("graph lock");
        let graph = &live.graph;
        if let (Some(camera), Some(service)) = (graph.camera_of(id), graph.mjpeg(id)) {
            return Ok((camera, service));
        }
    }
    let name = camera(state, name)?;
    let service = state.live.read().expect("graph lock").graph.mjpeg(&name);
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

async fn save_snapshot(state: State, name: Option<&str>) -> Result<HttpResponse, ApiError> {
    let name = camera(&state, name)?;
    let saver = state
        .live
        .read()
        .expect("graph lock")
        .graph
        .snapshot_saver(&name);
    let saver = saver
        .ok_or_else(|| ApiError::not_found(format!("camera '{name}' has no snapshot_sink")))?;
    let saved = saver.send(SaveSnapshot).await??;
    Ok(HttpResponse::Ok().json(
        json!({ "status": "saved", "camera": name, "file": saved.file, "bytes": saved.bytes }),
    ))
}

async fn save_snapshot_default(state: State) -> Result<HttpResponse, ApiError> {
    save_snapshot(state, None).await
}

async fn save_snapshot_named(
    state: State,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    save_snapshot(state, Some(&path)).await
}

async fn stats_all(state: State) -> HttpResponse {
    let cameras = state.live.read().expect("graph lock").graph.cameras();
    HttpResponse::Ok()
        .json(json!({ "cameras": stats::all(&state.stats, &state.metrics, &cameras) }))
}

async fn stats_named(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = camera(&state, Some(&path))?;
    let mut all = stats::all(&state.stats, &state.metrics, std::slice::from_ref(&name));
    Ok(HttpResponse::Ok().json(all.remove(&name)))
}
