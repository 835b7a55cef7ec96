//! The graph as operators change it while it runs: the configuration file (reloaded on change,
//! SIGHUP or `POST /api/graph/reload`) plus the cameras added through the API. Every change goes
//! through the `Supervisor` actor on the main arbiter, so nodes always start there.
//!
//! Cameras added through the API are not written to the file. They survive file reloads; if the
//! file comes to declare a node with the same id, the file wins and the API camera is removed.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use actix::{Actor, Context, Handler};
use serde::Serialize;
use serde_json::json;

use super::{Changes, Graph};
use crate::config::short::CameraShortForm;
use crate::config::{self, GraphSpec, NodeSpec, ServerConfig};
use crate::error::{BuildError, ServiceError};
use crate::messages::{AddCamera, Reload, RemoveCamera};
use crate::metrics::Metrics;
use crate::mjpeg::format_timestamp;
use crate::plugins::sources::SourceKind;
use crate::registry::Registry;

/// The outcome of the last reload, shown by `GET /api/graph`.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadStatus {
    pub ok: bool,
    pub at: String,
    pub trigger: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
}

struct ApiCamera {
    name: String,
    nodes: Vec<NodeSpec>,
}

pub struct LiveGraph {
    pub graph: Graph,
    registry: Registry,
    metrics: Arc<Metrics>,
    config_path: Option<PathBuf>,
    server: ServerConfig,
    file_nodes: Vec<NodeSpec>,
    api_cameras: Vec<ApiCamera>,
    last_reload: Option<ReloadStatus>,
}

/// Longest camera name accepted by the API (names become URL segments and metric labels).
const MAX_NAME_LEN: usize = 64;

impl LiveGraph {
    /// Starts `spec`, read from `config_path` (`None`: the embedded default, nothing to reload).
    pub fn start(
        spec: GraphSpec,
        config_path: Option<PathBuf>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        let graph = Graph::start(spec.clone(), metrics)?;
        Ok(LiveGraph {
            graph,
            registry: crate::plugins::registry(),
            metrics: metrics.clone(),
            config_path,
            server: spec.server,
            file_nodes: spec.nodes,
            api_cameras: Vec::new(),
            last_reload: None,
        })
    }

    fn merged(&self) -> Vec<NodeSpec> {
        let mut nodes = self.file_nodes.clone();
        for camera in &self.api_cameras {
            nodes.extend(camera.nodes.iter().cloned());
        }
        nodes
    }

    fn record(&mut self, trigger: &str, result: Result<Changes, String>) {
        self.metrics.reload(result.is_ok());
        let at = format_timestamp(SystemTime::now());
        self.last_reload = Some(match result {
            Ok(changes) => ReloadStatus {
                ok: true,
                at,
                trigger: trigger.into(),
                error: None,
                changes: Some(changes),
            },
            Err(error) => ReloadStatus {
                ok: false,
                at,
                trigger: trigger.into(),
                error: Some(error),
                changes: None,
            },
        });
    }

    /// Re-reads the file and applies what changed. An invalid file changes nothing.
    pub fn reload(&mut self, trigger: &str) -> Result<Changes, ServiceError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ServiceError::Conflict(
                "camgraph runs its embedded default configuration: there is no file to reload (start it with --config FILE)".into(),
            ));
        };
        let spec = match config::load_file(&path, &self.registry) {
            Ok(spec) => spec,
            Err(errors) => {
                let text = errors.to_string();
                tracing::error!(
                    trigger,
                    "configuration not reloaded, nothing changed:\n{text}"
                );
                self.record(trigger, Err(text.clone()));
                return Err(ServiceError::BadRequest(text));
            }
        };
        if spec.server != self.server {
            tracing::warn!(
                "server settings changed in {}: restart camgraph to apply them",
                path.display()
            );
        }
        let file_ids: Vec<&str> = spec.nodes.iter().map(|n| n.id.as_str()).collect();
        self.api_cameras.retain(|c| {
            let clash = c.nodes.iter().any(|n| file_ids.contains(&n.id.as_str()));
            if clash {
                tracing::warn!(camera = %c.name, "the file now declares this camera's ids: the API camera is replaced");
            }
            !clash
        });
        self.file_nodes = spec.nodes;
        let changes = self.graph.apply(self.merged());
        tracing::info!(trigger, ?changes, "configuration reloaded");
        self.record(trigger, Ok(changes.clone()));
        Ok(changes)
    }

    /// Adds a camera with the usual chain (`name`, `name_jpeg`, `name_mjpeg`).
    pub fn add_camera(&mut self, name: &str, camera: CameraShortForm) -> Result<(), ServiceError> {
        let bad = |m: String| Err(ServiceError::BadRequest(m));
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return bad(format!(
                "camera name must be 1 to {MAX_NAME_LEN} characters (got {})",
                name.len()
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || name.starts_with('-')
        {
            return bad(format!(
                "camera name '{name}' may only hold letters, digits, '_' and '-'"
            ));
        }
        if camera.source.trim().is_empty() {
            return bad("missing 'source' (test, a device index or /dev/videoN, an http:// MJPEG URL, a file or folder)".into());
        }
        if let SourceKind::Device(index) = SourceKind::parse(&camera.source) {
            if !std::path::Path::new(&format!("/dev/video{index}")).exists() {
                return bad(format!("no such device /dev/video{index}"));
            }
        }
        let nodes = self.expand(name, &camera)?;
        let existing: Vec<String> = self.merged().into_iter().map(|n| n.id).collect();
        if let Some(taken) = nodes.iter().find(|n| existing.contains(&n.id)) {
            return Err(ServiceError::Conflict(if taken.id == name {
                format!("camera '{name}' already exists")
            } else {
                format!(
                    "camera '{name}' needs node id '{}', which is taken",
                    taken.id
                )
            }));
        }
        self.api_cameras.push(ApiCamera {
            name: name.to_string(),
            nodes,
        });
        let changes = self.graph.apply(self.merged());
        if let Some(failure) = changes.failed.first() {
            let message = format!(
                "camera '{name}' did not start: node '{}': {}",
                failure.node, failure.error
            );
            self.api_cameras.retain(|c| c.name != name);
            self.graph.apply(self.merged());
            return Err(ServiceError::BadRequest(message));
        }
        tracing::info!(camera = name, source = %camera.source, "camera added through the API");
        Ok(())
    }

    /// Parses and validates a short-form camera through the same path as the file.
    fn expand(&self, name: &str, camera: &CameraShortForm) -> Result<Vec<NodeSpec>, ServiceError> {
        let entry = serde_yaml::to_string(&json!({ "cameras": { name: camera } }))
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        match config::parse("request", &entry, &self.registry) {
            Ok(spec) => Ok(spec.nodes),
            Err(errors) => {
                let messages: Vec<String> = errors
                    .0
                    .iter()
                    .map(|e| match &e.node {
                        Some(node) => format!("node '{node}': {}", e.message),
                        None => e.message.clone(),
                    })
                    .collect();
                Err(ServiceError::BadRequest(messages.join("; ")))
            }
        }
    }

    /// Removes a camera added through the API.
    pub fn remove_camera(&mut self, name: &str) -> Result<(), ServiceError> {
        if !self.api_cameras.iter().any(|c| c.name == name) {
            return Err(if self.graph.cameras().iter().any(|c| c == name) {
                ServiceError::Conflict(format!(
                    "camera '{name}' is declared in the configuration file: remove it there (the file is reloaded on change)"
                ))
            } else {
                ServiceError::NotFound(format!("unknown camera '{name}'"))
            });
        }
        self.api_cameras.retain(|c| c.name != name);
        self.graph.apply(self.merged());
        tracing::info!(camera = name, "camera removed through the API");
        Ok(())
    }

    pub fn describe(&self) -> serde_json::Value {
        let mut d = self.graph.describe();
        d["config_file"] = json!(self.config_path.as_ref().map(|p| p.display().to_string()));
        d["api_cameras"] = json!(self.api_cameras.iter().map(|c| &c.name).collect::<Vec<_>>());
        d["last_reload"] = json!(self.last_reload);
        d
    }
}

/// Applies changes to the live graph on the main arbiter.
pub struct Supervisor {
    live: Arc<RwLock<LiveGraph>>,
}

impl Supervisor {
    pub fn new(live: Arc<RwLock<LiveGraph>>) -> Self {
        Self { live }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<Reload> for Supervisor {
    type Result = Result<Changes, ServiceError>;
    fn handle(&mut self, msg: Reload, _: &mut Self::Context) -> Self::Result {
        self.live.write().expect("graph lock").reload(msg.trigger)
    }
}

impl Handler<AddCamera> for Supervisor {
    type Result = Result<(), ServiceError>;
    fn handle(&mut self, msg: AddCamera, _: &mut Self::Context) -> Self::Result {
        self.live
            .write()
            .expect("graph lock")
            .add_camera(&msg.name, msg.camera)
    }
}

impl Handler<RemoveCamera> for Supervisor {
    type Result = Result<(), ServiceError>;
    fn handle(&mut self, msg: RemoveCamera, _: &mut Self::Context) -> Self::Result {
        self.live
            .write()
            .expect("graph lock")
            .remove_camera(&msg.name)
    }
}
