//! The plugin API: what a node type implements (`NodeConfig`), what the graph hands it
//! (`BuildContext`) and gets back (`NodeHandle`), and what a running node offers to the HTTP face
//! (`Services`, looked up by capability type). Node ids follow one rule (`NodeId`).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use actix_web::web::ServiceConfig;
use serde::de::DeserializeOwned;

use crate::config::ApiSources;
use crate::error::BuildError;
use crate::fanout::Fanout;
use crate::frame::Frame;
use crate::metrics::NodeMetrics;
use crate::port::{H264Feed, JpegFeed, Port, Ports};
use crate::stop::Stopper;

/// A node type: its YAML settings, and how to check and start it.
pub trait NodeConfig: DeserializeOwned + Clone + Send + Sync + 'static {
    /// The YAML `type:` that selects this plugin.
    const TYPE: &'static str;
    fn ports(&self) -> Ports;
    /// Every problem in the settings, not just the first.
    fn validate(&self) -> Vec<FieldIssue>;
    /// Further problems of a node added through the API while camgraph runs, where a file's
    /// node would only be reported `down` (e.g. a device that does not exist), or that the API
    /// must not do at all (a source outside `server.api_sources`).
    fn validate_added(&self, _api_sources: &ApiSources) -> Vec<FieldIssue> {
        Vec::new()
    }
    /// Starts the node's actors.
    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError>;
    /// The HTTP routes of this node type, mounted once whatever the number of its nodes. A route
    /// finds the node it serves by capability (`http::face`).
    fn routes(_cfg: &mut ServiceConfig) {}
    /// Which of those routes change nothing though their method is POST, DELETE or PATCH (they
    /// only watch: opening or closing a viewer's session). A `view` token may call them; every
    /// other POST, DELETE or PATCH needs `control`, every GET, HEAD or OPTIONS `view`.
    const WATCH_ROUTES: &'static [WatchRoute] = &[];
}

/// A route that only watches though its method changes state (see `NodeConfig::WATCH_ROUTES`).
#[derive(Clone, Copy, Debug)]
pub struct WatchRoute {
    /// `POST`, `DELETE` or `PATCH`.
    pub method: &'static str,
    /// The path as the route is registered, e.g. `/api/webrtc/whep/{camera}`.
    pub path: &'static str,
}

/// Something a node offers to the HTTP face (a stream, a snapshot, a signalling endpoint),
/// defined next to the plugin that offers it and found by its type.
pub trait Capability: Clone + Send + Sync + 'static {
    /// How `/api/graph` and the cameras list name it: `mjpeg`, `snapshot`, `webrtc`, ...
    const NAME: &'static str;
}

/// A node's capabilities.
#[derive(Clone, Default)]
pub struct Services(Vec<(&'static str, Arc<dyn Any + Send + Sync>)>);

impl Services {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a capability.
    pub fn with<C: Capability>(mut self, capability: C) -> Self {
        self.0.push((C::NAME, Arc::new(capability)));
        self
    }

    /// The capability of type `C`, if the node has it.
    pub fn get<C: Capability>(&self) -> Option<C> {
        self.0
            .iter()
            .find_map(|(_, c)| c.downcast_ref::<C>())
            .cloned()
    }

    /// The names of the capabilities, in the order they were added.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|(name, _)| *name)
    }
}

/// Everything a node needs to start.
pub struct BuildContext {
    /// The node's id in the YAML file.
    pub id: String,
    /// The camera at the root of the node's chain (the node's own id for a camera).
    pub camera: Arc<str>,
    /// The outputs of the node's inputs, in the order the YAML lists them.
    pub inputs: Vec<Port>,
    /// Metrics labelled for this node.
    pub metrics: NodeMetrics,
    /// The IP the HTTP server listens on, for defaults that follow it (a loopback server offers
    /// WebRTC candidates on loopback only).
    pub listen: std::net::IpAddr,
}

impl BuildContext {
    fn wrong_input(&self, kind: &str) -> BuildError {
        BuildError::new(&self.id, format!("needs one input of kind '{kind}'"))
    }

    /// The single input of a node that takes one frames input.
    pub fn frames_input(&self) -> Result<Fanout<Frame>, BuildError> {
        match self.inputs.first() {
            Some(Port::Frames(f)) => Ok(f.clone()),
            _ => Err(self.wrong_input("frames")),
        }
    }

    /// The single input of a node that takes one H.264 input.
    pub fn h264_input(&self) -> Result<Arc<H264Feed>, BuildError> {
        match self.inputs.first() {
            Some(Port::H264(f)) => Ok(f.clone()),
            _ => Err(self.wrong_input("h264")),
        }
    }

    /// The single input of a node that takes one JPEG input.
    pub fn jpeg_input(&self) -> Result<Arc<JpegFeed>, BuildError> {
        match self.inputs.first() {
            Some(Port::Jpeg(f)) => Ok(f.clone()),
            _ => Err(self.wrong_input("jpeg")),
        }
    }
}

/// A live node's statistics for `GET /api/graph`.
pub type StatsFn = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A started node.
pub struct NodeHandle {
    pub output: Option<Port>,
    pub services: Services,
    pub stats: Option<StatsFn>,
    /// Stops the node: every actor of the node watches a token of it (`stop::stop_on`), and
    /// threads end with their actors. Firing it is the only way a node stops.
    pub stop: Stopper,
}

/// One problem in a node's settings: the field it is about and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldIssue {
    pub field: String,
    pub message: String,
}

impl FieldIssue {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Checks that `value` lies in `range`, in the wording every plugin uses.
pub fn check_range<T>(
    issues: &mut Vec<FieldIssue>,
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) where
    T: PartialOrd + fmt::Display + Copy,
{
    if !range.contains(&value) {
        issues.push(FieldIssue::new(
            field,
            format!(
                "'{field}' must be {}..={} (got {value})",
                range.start(),
                range.end()
            ),
        ));
    }
}

/// A node id (and so a camera name): 1 to 64 ASCII letters, digits, `_` and `-`, not starting
/// with `-`. Ids become URL path segments, file name prefixes and metric labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

/// Why a string is no node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadId {
    #[error("must be 1 to 64 characters (got {0})")]
    Length(usize),
    #[error("'{0}' may only hold letters, digits, '_' and '-' (and not start with '-')")]
    Characters(String),
}

impl NodeId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(id: &str) -> Result<NodeId, BadId> {
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return Err(BadId::Length(id.len()));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if !id.chars().all(allowed) || id.starts_with('-') {
            return Err(BadId::Characters(id.to_string()));
        }
        Ok(NodeId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Stream(u8);
    impl Capability for Stream {
        const NAME: &'static str = "stream";
    }
    #[derive(Clone)]
    struct Other;
    impl Capability for Other {
        const NAME: &'static str = "other";
    }

    #[test]
    fn capabilities_are_found_by_type_and_named() {
        let s = Services::new().with(Stream(7));
        assert_eq!(s.get::<Stream>().map(|c| c.0), Some(7));
        assert!(s.get::<Other>().is_none());
        assert_eq!(s.names().collect::<Vec<_>>(), ["stream"]);
    }

    #[test]
    fn one_rule_for_ids() {
        assert!(NodeId::parse("front_cam-2").is_ok());
        assert_eq!(NodeId::parse(""), Err(BadId::Length(0)));
        assert_eq!(NodeId::parse(&"x".repeat(65)), Err(BadId::Length(65)));
        for bad in ["a.b", "../x", "-a", "é", "a b"] {
            assert!(
                matches!(NodeId::parse(bad), Err(BadId::Characters(_))),
                "{bad}"
            );
        }
    }
}
