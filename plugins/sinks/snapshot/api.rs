//! The snapshot_sink's HTTP face: `POST /api/camera/snapshot[/{name}]` saves the camera's next
//! picture to the sink's folder and answers with the file written; the message it sends the
//! sink, and the capability by which the route finds it.

use actix::{Message, Recipient};
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::ServiceError;
use crate::http::face::{ApiError, Live};
use crate::node::Capability;

/// Saves a snapshot to disk now.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<SavedSnapshot, ServiceError>")]
pub struct SaveSnapshot;

/// A picture a snapshot sink wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SavedSnapshot {
    /// File name within the sink's folder.
    pub file: String,
    pub bytes: u64,
}

/// Saving pictures of a camera to disk.
#[derive(Clone)]
pub struct DiskSnapshots(pub Recipient<SaveSnapshot>);

impl Capability for DiskSnapshots {
    const NAME: &'static str = "disk_snapshot";
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/camera/snapshot", web::post().to(save_default))
        .route("/api/camera/snapshot/{name}", web::post().to(save_named));
}

async fn save(live: Live, name: Option<&str>) -> Result<HttpResponse, ApiError> {
    let (camera, DiskSnapshots(save)) =
        live.find(name, |c| format!("camera '{c}' has no snapshot_sink"))?;
    let saved = save.send(SaveSnapshot).await??;
    Ok(HttpResponse::Ok().json(
        json!({ "status": "saved", "camera": camera, "file": saved.file, "bytes": saved.bytes }),
    ))
}

async fn save_default(live: Live) -> Result<HttpResponse, ApiError> {
    save(live, None).await
}

async fn save_named(live: Live, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    save(live, Some(&path)).await
}
