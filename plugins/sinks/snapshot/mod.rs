//! The `snapshot_sink` node: saves a camera's JPEGs to a folder, every `interval_s` seconds and on
//! `POST /api/camera/snapshot/{camera}`. Files are named by camera and capture time
//! (`front-20261124T153000.123Z.jpg`), written to a temporary file and renamed (never a half
//! file), and pruned to `max_files` / `max_bytes` per camera. A folder that cannot be written is
//! logged, counted (`camgraph_frames_dropped_total{reason="write_failed"}`) and tried again next
//! time; the stream is never held up. It runs on its own thread, and between saves it lets go of
//! the encoder, so an idle camera stays idle.
//!
//! ```yaml
//! front_snapshots: { type: snapshot_sink, inputs: [front_jpeg], folder: /var/lib/camgraph/snapshots, interval_s: 60 }
//! ```

pub mod api;
mod files;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture};
use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::json;

use crate::error::{BuildError, ServiceError};
use crate::frame::EncodedFrame;
use crate::metrics::DropReason;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, Services};
use crate::port::{JpegFeed, PortKind, Ports};
use crate::stop::{start_on_own_thread, stop_on, StopToken, Stopper};
use api::{DiskSnapshots, SaveSnapshot, SavedSnapshot};

/// Settings of a `snapshot_sink` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSinkConfig {
    /// Folder for the pictures; created if missing. Required.
    pub folder: PathBuf,
    /// Seconds between automatic pictures; 0 saves only on request. Default 0.
    #[serde(default)]
    pub interval_s: f64,
    /// Most pictures of this camera kept; the oldest go first. Default 100.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// Most bytes of pictures of this camera kept. Default 104857600 (100 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_max_files() -> usize {
    100
}
fn default_max_bytes() -> u64 {
    100 << 20
}

/// How long a save waits for the camera to deliver a frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(3);

impl NodeConfig for SnapshotSinkConfig {
    const TYPE: &'static str = "snapshot_sink";

    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::Jpeg, None)
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        if self.folder.as_os_str().is_empty() {
            issues.push(FieldIssue::new("folder", "'folder' must not be empty"));
        }
        if self.interval_s != 0.0 {
            check_range(&mut issues, "interval_s", self.interval_s, 0.1..=86_400.0);
        }
        check_range(&mut issues, "max_files", self.max_files, 1..=1_000_000);
        check_range(&mut issues, "max_bytes", self.max_bytes, 1..=u64::MAX);
        issues
    }

    fn routes(cfg: &mut actix_web::web::ServiceConfig) {
        api::routes(cfg);
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let status = Arc::new(Mutex::new(Status::default()));
        let saved = cx.metrics.frames_sent();
        let failed = cx.metrics.frames_dropped(DropReason::WriteFailed);
        let stop = Stopper::new();
        let sink = SnapshotSink {
            camera: cx.camera.to_string(),
            feed: cx.jpeg_input()?,
            config: self.clone(),
            status: status.clone(),
            saved: saved.clone(),
            failed: failed.clone(),
            stop: stop.token(),
        };
        let addr = start_on_own_thread(move |_| sink);
        Ok(NodeHandle {
            output: None,
            services: Services::new().with(DiskSnapshots(addr.clone().recipient())),
            stats: Some(Box::new(move || {
                let s = status.lock().unwrap_or_else(PoisonError::into_inner);
                json!({ "saved": saved.get(), "failed": failed.get(), "last_file": s.last_file, "error": s.error })
            })),
            stop,
        })
    }
}

#[derive(Default)]
struct Status {
    last_file: Option<String>,
    error: Option<String>,
}

struct SnapshotSink {
    camera: String,
    feed: Arc<JpegFeed>,
    config: SnapshotSinkConfig,
    status: Arc<Mutex<Status>>,
    saved: IntCounter,
    failed: IntCounter,
    stop: StopToken,
}

impl SnapshotSink {
    /// Waits for the camera's next frame (the subscription wakes an idle camera).
    fn next_frame(
        &self,
    ) -> impl std::future::Future<Output = Result<Arc<EncodedFrame>, ServiceError>> + 'static {
        let subscribed = self.feed.subscribe(None);
        let camera = self.camera.clone();
        async move {
            let mut frames = subscribed?;
            match tokio::time::timeout(FRAME_TIMEOUT, frames.next()).await {
                Ok(Some((frame, _))) => Ok(frame),
                _ => Err(ServiceError::Unavailable(format!(
                    "no frame from camera '{camera}' within {} s (is capture stopped?)",
                    FRAME_TIMEOUT.as_secs()
                ))),
            }
        }
    }

    fn save(&self, frame: &EncodedFrame) -> Result<SavedSnapshot, ServiceError> {
        let result = files::save(
            &self.config.folder,
            &self.camera,
            frame,
            self.config.max_files,
            self.config.max_bytes,
        );
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(saved) => {
                self.saved.inc();
                if status.error.take().is_some() {
                    tracing::info!(camera = %self.camera, "snapshots are written again");
                }
                status.last_file = Some(saved.file.clone());
                Ok(saved)
            }
            Err(error) => {
                let error = error.to_string();
                self.failed.inc();
                if status.error.as_deref() != Some(error.as_str()) {
                    tracing::error!(camera = %self.camera, "snapshot not saved: {error}");
                }
                status.error = Some(error.clone());
                Err(ServiceError::Unavailable(format!(
                    "snapshot not saved: {error}"
                )))
            }
        }
    }
}

impl Actor for SnapshotSink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
        if self.config.interval_s > 0.0 {
            ctx.run_interval(
                Duration::from_secs_f64(self.config.interval_s),
                |act, ctx| {
                    let wait = act.next_frame().into_actor(act).map(|frame, act, _| {
                        let _ = frame.and_then(|f| act.save(&f));
                    });
                    ctx.spawn(wait);
                },
            );
        }
    }
}

impl Handler<SaveSnapshot> for SnapshotSink {
    type Result = ResponseActFuture<Self, Result<SavedSnapshot, ServiceError>>;

    fn handle(&mut self, _: SaveSnapshot, _: &mut Self::Context) -> Self::Result {
        Box::pin(
            self.next_frame()
                .into_actor(self)
                .map(|frame, act, _| act.save(&*frame?)),
        )
    }
}
