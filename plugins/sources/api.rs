//! The camera's HTTP face: the guide's `POST /api/camera/start` and `/api/camera/stop` (the
//! default camera, or `?camera=NAME`), the message they send the camera, and the capability by
//! which they find it.

use actix::{Message, Recipient};
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::http::face::{ApiError, Live, Query};
use crate::node::Capability;

/// Turns a camera's capture on or off.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct SetCapture {
    pub on: bool,
}

/// Capture on/off of a camera.
#[derive(Clone)]
pub struct CaptureSwitch(pub Recipient<SetCapture>);

impl Capability for CaptureSwitch {
    const NAME: &'static str = "capture";
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/camera/start", web::post().to(start))
        .route("/api/camera/stop", web::post().to(stop));
}

async fn set_capture(live: Live, query: Query, on: bool) -> Result<HttpResponse, ApiError> {
    let name = live.camera_named(query.get("camera").map(String::as_str))?;
    let (_, CaptureSwitch(capture)) = live.find(Some(&name), |camera| {
        format!("camera '{camera}' cannot be started or stopped")
    })?;
    capture.send(SetCapture { on }).await?;
    // The guide's client checks these exact answers.
    let status = if on { "started" } else { "stopped" };
    Ok(HttpResponse::Ok().json(json!({ "status": status })))
}

async fn start(live: Live, query: Query) -> Result<HttpResponse, ApiError> {
    set_capture(live, query, true).await
}

async fn stop(live: Live, query: Query) -> Result<HttpResponse, ApiError> {
    set_capture(live, query, false).await
}
