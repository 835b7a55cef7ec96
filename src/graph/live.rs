//! The graph as operators change it while it runs: the configuration file (reloaded on change,
//! SIGHUP or `POST /api/graph/reload`) plus the cameras added through the API. One actor, the
//! `Supervisor` on the main arbiter, owns it: every change is a message to it (so nodes always
//! start there), and after each change it publishes an immutable `GraphView` that readers load
//! without a lock.
//!
//! Cameras added through the API are not written to the file. They survive file reloads; if the
//! file comes to declare a node with the same id, the file wins and the API camera is removed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use serde::Serialize;

use super::view::{GraphView, Published};
use super::{Changes, Graph};
use crate::config::{self, over_max_cameras, GraphSpec, NodeSpec, ServerConfig};
use crate::error::{BuildError, ServiceError};
use crate::metrics::Metrics;
use crate::mjpeg::format_timestamp;
use crate::node::NodeId;
use crate::registry::Registry;
use crate::stop::Stopping;

/// Re-reads the configuration file and applies the difference.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<Changes, ServiceError>")]
pub struct Reload {
    /// What asked for it, for logs and `GET /api/graph`: `file`, `SIGHUP`, `api`.
    pub trigger: &'static str,
}

/// Adds a camera at run time, written as a `cameras:` entry of the file would be.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct AddCamera {
    pub name: String,
    /// The entry's settings (`source`, `width`, ...), as the registry's short form reads them.
    pub entry: serde_yaml::Value,
}

/// Removes a camera added at run time, and its chain.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct RemoveCamera {
    pub name: String,
}

/// Stops every node: the process is ending.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct StopGraph;

/// Completes once the nodes stopped by `StopGraph` have stopped (their cleanup done), or after
/// `within`; false if some had not by then.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "bool")]
pub struct AwaitStopped {
    pub within: std::time::Duration,
}

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

/// Reads again what the running HTTP server takes from `server:` (its tokens and certificate);
/// called by every reload before the graph changes: an error fails the reload, nothing changes.
pub type ServerReload = Box<dyn Fn(&ServerConfig) -> Result<(), String> + Send>;

pub struct LiveGraph {
    graph: Graph,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    config_path: Option<PathBuf>,
    server: ServerConfig,
    server_reload: ServerReload,
    file_nodes: Vec<NodeSpec>,
    api_cameras: Vec<ApiCamera>,
    last_reload: Option<ReloadStatus>,
}

impl LiveGraph {
    /// Starts `spec`, read from `config_path` (`None`: the embedded default, nothing to reload).
    pub fn start(
        spec: GraphSpec,
        config_path: Option<PathBuf>,
        registry: Arc<Registry>,
        metrics: &Arc<Metrics>,
        listen: std::net::IpAddr,
        server_reload: ServerReload,
    ) -> Result<Self, BuildError> {
        let graph = Graph::start(spec.clone(), metrics, listen)?;
        Ok(LiveGraph {
            graph,
            registry,
            metrics: metrics.clone(),
            config_path,
            server: spec.server,
            server_reload,
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
        let file_ids: Vec<&str> = spec.nodes.iter().map(|n| n.id.as_str()).collect();
        // The API's cameras that stay, then the file's, must fit within server.max_cameras.
        let kept = self
            .api_cameras
            .iter()
            .filter(|c| !c.nodes.iter().any(|n| file_ids.contains(&n.id.as_str())))
            .flat_map(|c| c.nodes.iter());
        let roots = kept.chain(&spec.nodes).filter(|n| n.inputs.is_empty());
        if let Some((n, over)) = roots.enumerate().nth(self.server.max_cameras) {
            if let Some(text) = over_max_cameras(&over.id, n + 1, self.server.max_cameras) {
                let text = format!("{text} (with the cameras added through the API)");
                tracing::error!(
                    trigger,
                    "configuration not reloaded, nothing changed: {text}"
                );
                self.record(trigger, Err(text.clone()));
                return Err(ServiceError::BadRequest(text));
            }
        }
        if let Err(text) = (self.server_reload)(&spec.server) {
            tracing::error!(
                trigger,
                "configuration not reloaded, nothing changed: {text}"
            );
            self.record(trigger, Err(text.clone()));
            return Err(ServiceError::BadRequest(text));
        }
        self.note_server_changes(spec.server, &path);
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

    /// Keeps the `server:` settings a reload applied (tokens, certificate files); the others
    /// (listen, TLS on or off, limits, ...) wait for a restart, and the log says so.
    fn note_server_changes(&mut self, new: ServerConfig, path: &std::path::Path) {
        let mut kept = self.server.clone();
        kept.auth = new.auth.clone();
        if kept.tls.is_some() && new.tls.is_some() {
            kept.tls = new.tls.clone();
        }
        if kept != new {
            tracing::warn!(
                "server settings other than the tokens and the certificate changed in {}: \
                 restart camgraph to apply them",
                path.display()
            );
        }
        self.server = kept;
    }

    /// Adds a camera written as a `cameras:` entry (the registry's short form expands it).
    pub fn add_camera(&mut self, name: &str, entry: serde_yaml::Value) -> Result<(), ServiceError> {
        NodeId::parse(name).map_err(|e| ServiceError::BadRequest(format!("camera name {e}")))?;
        let nodes = self.expand(name, entry)?;
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
        let cameras = self.merged().iter().filter(|n| n.inputs.is_empty()).count();
        if let Some(why) = over_max_cameras(name, cameras + 1, self.server.max_cameras) {
            return Err(ServiceError::Conflict(why));
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
        tracing::info!(camera = name, "camera added through the API");
        Ok(())
    }

    /// Parses and validates a camera entry through the same path as the file, after the checks a
    /// node added at run time must pass first (so that a refused source tells nothing about the
    /// files it names).
    fn expand(&self, name: &str, entry: serde_yaml::Value) -> Result<Vec<NodeSpec>, ServiceError> {
        self.check_added(name, &entry)?;
        let mut cameras = serde_yaml::Mapping::new();
        cameras.insert(name.into(), entry);
        let mut file = serde_yaml::Mapping::new();
        file.insert("cameras".into(), serde_yaml::Value::Mapping(cameras));
        let text =
            serde_yaml::to_string(&file).map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        match config::parse("request", &text, &self.registry) {
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

    /// `NodeConfig::validate_added` of each node a camera entry stands for, before the file's
    /// checks. Entries that do not even parse are left to the full parse to report.
    fn check_added(&self, name: &str, entry: &serde_yaml::Value) -> Result<(), ServiceError> {
        let Some(Ok(nodes)) = self
            .registry
            .short_form()
            .map(|s| s.expand(name, entry.clone()))
        else {
            return Ok(());
        };
        let mut problems = Vec::new();
        for (id, mut settings) in nodes {
            settings.remove("inputs");
            let Some(serde_yaml::Value::String(type_name)) = settings.remove("type") else {
                continue;
            };
            if let Some(Ok(config)) = self
                .registry
                .parse(&type_name, serde_yaml::Value::Mapping(settings))
            {
                problems.extend(
                    config
                        .validate_added(&self.server.api_sources)
                        .into_iter()
                        .map(|i| format!("node '{id}': {}", i.message)),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::BadRequest(problems.join("; ")))
        }
    }

    /// Removes a camera added through the API.
    pub fn remove_camera(&mut self, name: &str) -> Result<(), ServiceError> {
        if !self.api_cameras.iter().any(|c| c.name == name) {
            return Err(
                if self
                    .file_nodes
                    .iter()
                    .any(|n| n.id == name && n.inputs.is_empty())
                {
                    ServiceError::Conflict(format!(
                    "camera '{name}' is declared in the configuration file: remove it there (the file is reloaded on change)"
                ))
                } else {
                    ServiceError::NotFound(format!("unknown camera '{name}'"))
                },
            );
        }
        self.api_cameras.retain(|c| c.name != name);
        self.graph.apply(self.merged());
        tracing::info!(camera = name, "camera removed through the API");
        Ok(())
    }

    /// The graph as it is now, for readers.
    pub fn view(&self) -> GraphView {
        GraphView {
            nodes: self.graph.view(),
            config_file: self.config_path.as_ref().map(|p| p.display().to_string()),
            api_cameras: self.api_cameras.iter().map(|c| c.name.clone()).collect(),
            last_reload: self.last_reload.clone(),
        }
    }
}

/// The one owner of the live graph: applies every change on the main arbiter and publishes the
/// view after it.
pub struct Supervisor {
    live: LiveGraph,
    published: Published,
    /// The nodes `StopGraph` stopped, for `AwaitStopped`.
    stopping: Stopping,
}

impl Supervisor {
    /// Takes `live` over and publishes its first view to `published`.
    pub fn new(live: LiveGraph, published: Published) -> Self {
        let owner = Self {
            live,
            published,
            stopping: Stopping::default(),
        };
        owner.publish();
        owner
    }

    fn publish(&self) {
        self.published.store(Arc::new(self.live.view()));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<Reload> for Supervisor {
    type Result = Result<Changes, ServiceError>;
    fn handle(&mut self, msg: Reload, _: &mut Self::Context) -> Self::Result {
        let result = self.live.reload(msg.trigger);
        self.publish();
        result
    }
}

impl Handler<AddCamera> for Supervisor {
    type Result = Result<(), ServiceError>;
    fn handle(&mut self, msg: AddCamera, _: &mut Self::Context) -> Self::Result {
        let result = self.live.add_camera(&msg.name, msg.entry);
        self.publish();
        result
    }
}

impl Handler<RemoveCamera> for Supervisor {
    type Result = Result<(), ServiceError>;
    fn handle(&mut self, msg: RemoveCamera, _: &mut Self::Context) -> Self::Result {
        let result = self.live.remove_camera(&msg.name);
        self.publish();
        result
    }
}

impl Handler<StopGraph> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: StopGraph, _: &mut Self::Context) {
        let stopped = self.live.graph.stop();
        self.stopping.0.extend(stopped.0);
        self.publish();
    }
}

impl Handler<AwaitStopped> for Supervisor {
    type Result = ResponseFuture<bool>;
    fn handle(&mut self, msg: AwaitStopped, _: &mut Self::Context) -> Self::Result {
        let stopping = std::mem::take(&mut self.stopping);
        Box::pin(stopping.wait(msg.within))
    }
}
