//! The core's routes: the cameras list and adding/removing cameras (the guide's
//! `/api/camera/cameras`), `/api/graph` and its reload, `/api/stats`, `/metrics`, `/healthz` and
//! the viewer page at `/`. Streams, snapshots, capture and signalling are the plugins' routes.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::face::{Live, Query};
use super::{stats, ApiError, AppState};
use crate::graph::live::{AddCamera, Reload, RemoveCamera};

type State = web::Data<AppState>;

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
        .route("/api/camera/cameras", web::get().to(cameras));
}

pub(super) async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
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

async fn graph(live: Live) -> HttpResponse {
    HttpResponse::Ok().json(live.describe())
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
    let short_form = state.registry.short_form().ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::NOT_IMPLEMENTED,
            "this build has no short form for cameras: add them to the configuration file",
        )
    })?;
    let entry = short_form
        .entry_from_query(&query)
        .map_err(ApiError::bad_request)?;
    state
        .supervisor
        .send(AddCamera {
            name: name.clone(),
            entry,
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

/// The guide's cameras list (what each camera offers is in `/api/graph`).
async fn cameras(live: Live) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "cameras": live.cameras() }))
}

async fn stats_all(state: State, live: Live) -> HttpResponse {
    let cameras = live.cameras();
    HttpResponse::Ok()
        .json(json!({ "cameras": stats::all(&state.stats, &state.metrics, &cameras) }))
}

async fn stats_named(
    state: State,
    live: Live,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = live.camera_named(Some(&path))?;
    let mut all = stats::all(&state.stats, &state.metrics, std::slice::from_ref(&name));
    Ok(HttpResponse::Ok().json(all.remove(&name)))
}
