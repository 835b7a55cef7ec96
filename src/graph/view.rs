//! The running graph as readers see it: an immutable snapshot that the graph's owner publishes
//! after every change and HTTP handlers load without a lock (`Published`). It answers the
//! questions a request asks: which cameras there are, which node serves a capability for a
//! camera (or a node named directly), and the description behind `GET /api/graph`.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde_json::json;

use super::live::ReloadStatus;
use crate::mjpeg::format_timestamp;
use crate::node::{Capability, Services, StatsFn};

/// One node of the spec, running or not.
pub struct NodeView {
    pub id: String,
    pub type_name: String,
    pub inputs: Vec<String>,
    /// The camera at the root of its chain; `None` if it is not running.
    pub camera: Option<Arc<str>>,
    pub started_at: Option<SystemTime>,
    /// Why it did not start, if it did not.
    pub error: Option<String>,
    pub stats: Option<Arc<StatsFn>>,
    pub services: Services,
}

/// The whole graph at one moment.
#[derive(Default)]
pub struct GraphView {
    /// In file order, then the cameras added through the API.
    pub nodes: Vec<NodeView>,
    pub config_file: Option<String>,
    pub api_cameras: Vec<String>,
    pub last_reload: Option<ReloadStatus>,
}

/// What `/api/graph` shows instead of the error of a node of a camera added through the API.
pub const HIDDEN_ERROR: &str = "the source failed; the server's log says why";

/// Replaces a node's `error` statistic by `HIDDEN_ERROR`. Whoever may add a camera through the
/// API may point it at any address the server can reach: the exact error (refused, timed out,
/// HTTP 404, not MJPEG) would make the server a port scanner for them (SSRF). The log keeps it.
fn hide_error(stats: &mut Option<serde_json::Value>) {
    if let Some(error) = stats.as_mut().and_then(|s| s.get_mut("error")) {
        if !error.is_null() {
            *error = json!(HIDDEN_ERROR);
        }
    }
}

/// Where the current view is published: written by the graph's owner, read by everyone else.
pub type Published = Arc<ArcSwap<GraphView>>;

/// Why a request's name found nothing to serve it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lookup {
    #[error("no camera is configured")]
    NoCamera,
    #[error("unknown camera '{name}' (cameras: {known})")]
    UnknownCamera { name: String, known: String },
    /// The camera exists but none of its nodes offers the capability.
    #[error("camera '{camera}' offers no {capability}")]
    Missing {
        camera: String,
        capability: &'static str,
    },
}

impl GraphView {
    /// Camera names (source nodes), in order.
    pub fn cameras(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.inputs.is_empty())
            .map(|n| n.id.clone())
            .collect()
    }

    /// `name`, or the first camera when `None`.
    pub fn camera(&self, name: Option<&str>) -> Result<String, Lookup> {
        let cameras = self.cameras();
        let found = match name {
            Some(n) => cameras.iter().find(|c| *c == n).cloned(),
            None => cameras.first().cloned(),
        };
        found.ok_or_else(|| match name {
            Some(n) => Lookup::UnknownCamera {
                name: n.to_string(),
                known: cameras.join(", "),
            },
            None => Lookup::NoCamera,
        })
    }

    /// The capability `C` for a request naming `name`: the node of that id if it has `C` (a
    /// camera's second sink, reached by its own id), else the first node of camera `name` (or of
    /// the default camera) that has it. Gives the camera and the capability.
    pub fn find<C: Capability>(&self, name: Option<&str>) -> Result<(String, C), Lookup> {
        if let Some(id) = name {
            let node = self.nodes.iter().find(|n| n.id == id);
            if let Some((camera, c)) =
                node.and_then(|n| Some((n.camera.clone()?, n.services.get::<C>()?)))
            {
                return Ok((camera.to_string(), c));
            }
        }
        let camera = self.camera(name)?;
        self.nodes
            .iter()
            .filter(|n| n.camera.as_deref() == Some(camera.as_str()))
            .find_map(|n| n.services.get::<C>())
            .map(|c| (camera.clone(), c))
            .ok_or(Lookup::Missing {
                camera,
                capability: C::NAME,
            })
    }

    /// What the nodes of `camera` offer (`mjpeg`, `snapshot`, `webrtc`, ...), each name once.
    pub fn offers(&self, camera: &str) -> Vec<&'static str> {
        let mut names = Vec::new();
        for n in self
            .nodes
            .iter()
            .filter(|n| n.camera.as_deref() == Some(camera))
        {
            for name in n.services.names() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Nodes, edges, each node's state and live statistics, what each camera offers, and the
    /// last reload: `GET /api/graph`.
    pub fn describe(&self) -> serde_json::Value {
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| {
                let mut stats = n.stats.as_ref().map(|s| s());
                if n.camera
                    .as_deref()
                    .is_some_and(|c| self.api_cameras.iter().any(|a| a == c))
                {
                    hide_error(&mut stats);
                }
                let state = match (&n.camera, &stats) {
                    (None, _) => "failed",
                    (Some(_), Some(s)) if s.get("up") == Some(&json!(false)) => "down",
                    _ => "running",
                };
                json!({
                    "id": n.id,
                    "type": n.type_name,
                    "camera": n.camera.as_deref(),
                    "inputs": n.inputs,
                    "state": state,
                    "error": n.error,
                    "offers": n.services.names().collect::<Vec<_>>(),
                    "started_at": n.started_at.map(format_timestamp),
                    "stats": stats,
                })
            })
            .collect();
        let edges: Vec<_> = self
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(move |i| json!({"from": i, "to": n.id})))
            .collect();
        let offers: serde_json::Map<_, _> = self
            .cameras()
            .into_iter()
            .map(|c| {
                let offers = json!(self.offers(&c));
                (c, offers)
            })
            .collect();
        json!({
            "cameras": self.cameras(),
            "offers": offers,
            "nodes": nodes,
            "edges": edges,
            "config_file": self.config_file,
            "api_cameras": self.api_cameras,
            "last_reload": self.last_reload,
        })
    }
}
