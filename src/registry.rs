//! Node types by their YAML `type`, their HTTP routes, and the short form of the `cameras:`
//! section. main.rs fills it from the plugins; the config loader asks it to parse each node's
//! settings into a type-erased `DynNode`, and the HTTP server mounts the routes it holds (and
//! asks it which state-changing routes only watch, to decide the role they need).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix_web::dev::ResourceDef;
use actix_web::http::Method;
use actix_web::web::ServiceConfig;

use crate::config::ApiSources;
use crate::error::BuildError;
use crate::node::{BuildContext, FieldIssue, NodeConfig, NodeHandle};
use crate::port::Ports;

/// A node's parsed settings, whatever its type.
pub trait DynNode: Send + Sync {
    fn ports(&self) -> Ports;
    fn validate(&self) -> Vec<FieldIssue>;
    fn validate_added(&self, api_sources: &ApiSources) -> Vec<FieldIssue>;
    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError>;
}

impl<T: NodeConfig> DynNode for T {
    fn ports(&self) -> Ports {
        NodeConfig::ports(self)
    }
    fn validate(&self) -> Vec<FieldIssue> {
        NodeConfig::validate(self)
    }
    fn validate_added(&self, api_sources: &ApiSources) -> Vec<FieldIssue> {
        NodeConfig::validate_added(self, api_sources)
    }
    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        NodeConfig::build(self, cx)
    }
}

/// Why settings did not deserialize: the path of the field (empty for the whole entry) and
/// serde's message.
#[derive(Debug, Clone)]
pub struct ParseError {
    pub path: String,
    pub message: String,
}

/// The `cameras:` short form: one entry stands for a camera and its usual chain. What "usual"
/// means is product policy, so the plugins define it.
pub trait ShortForm: Send + Sync {
    /// The node entries (id, settings with `type` and `inputs`) that camera `name` stands for.
    fn expand(
        &self,
        name: &str,
        entry: serde_yaml::Value,
    ) -> Result<Vec<(String, serde_yaml::Mapping)>, ParseError>;
    /// The node entries camera `name` stands for whatever its settings: its chain, so that the
    /// nodes wired to it are checked even when its own settings did not parse.
    fn chain(&self, name: &str) -> Vec<(String, serde_yaml::Mapping)>;
    /// The entry a `POST /api/camera/cameras/{name}?source=...` request describes, or what is
    /// wrong with its query.
    fn entry_from_query(
        &self,
        query: &HashMap<String, String>,
    ) -> Result<serde_yaml::Value, String>;
}

type ParseFn = fn(serde_yaml::Value) -> Result<Arc<dyn DynNode>, ParseError>;

#[derive(Default)]
pub struct Registry {
    types: BTreeMap<&'static str, ParseFn>,
    routes: Vec<fn(&mut ServiceConfig)>,
    /// Every type's `WATCH_ROUTES`, ready to match.
    watch_routes: Vec<(Method, ResourceDef)>,
    short_form: Option<Box<dyn ShortForm>>,
}

impl Registry {
    /// Adds a node type, and its routes if it has any.
    pub fn register<T: NodeConfig>(&mut self) {
        self.types.insert(T::TYPE, parse_as::<T>);
        self.routes.push(T::routes);
        for route in T::WATCH_ROUTES {
            let method = Method::from_bytes(route.method.as_bytes())
                .unwrap_or_else(|_| panic!("{}: bad method in WATCH_ROUTES", T::TYPE));
            self.watch_routes
                .push((method, ResourceDef::new(route.path)));
        }
    }

    /// Sets the short form of the `cameras:` section.
    pub fn set_short_form(&mut self, short_form: impl ShortForm + 'static) {
        self.short_form = Some(Box::new(short_form));
    }

    /// Parses settings for `type_name`; `None` if no plugin has that type.
    pub fn parse(
        &self,
        type_name: &str,
        settings: serde_yaml::Value,
    ) -> Option<Result<Arc<dyn DynNode>, ParseError>> {
        self.types.get(type_name).map(|parse| parse(settings))
    }

    pub fn type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.keys().copied()
    }

    /// The short form, if the plugins define one.
    pub fn short_form(&self) -> Option<&dyn ShortForm> {
        self.short_form.as_deref()
    }

    /// Whether a request to `path` with `method` is one a node type declared as only watching.
    pub fn watches(&self, method: &Method, path: &str) -> bool {
        self.watch_routes
            .iter()
            .any(|(m, def)| m == method && def.is_match(path))
    }

    /// Mounts every node type's routes.
    pub fn mount(&self, cfg: &mut ServiceConfig) {
        for routes in &self.routes {
            routes(cfg);
        }
    }
}

fn parse_as<T: NodeConfig>(settings: serde_yaml::Value) -> Result<Arc<dyn DynNode>, ParseError> {
    match serde_path_to_error::deserialize::<_, T>(settings) {
        Ok(config) => Ok(Arc::new(config)),
        Err(err) => Err(path_error(err)),
    }
}

/// A `serde_path_to_error` failure as a `ParseError` (`.` is the entry itself).
pub fn path_error(err: serde_path_to_error::Error<serde_yaml::Error>) -> ParseError {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    ParseError {
        path,
        message: err.into_inner().to_string(),
    }
}
