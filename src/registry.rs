//! Node types by their YAML `type`. `plugins::registry()` fills it; the config loader asks it to
//! parse each node's settings into a type-erased `DynNode`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::BuildError;
use crate::node::{BuildContext, FieldIssue, NodeConfig, NodeHandle, Ports};

/// A node's parsed settings, whatever its type.
pub trait DynNode: Send + Sync {
    fn ports(&self) -> Ports;
    fn validate(&self) -> Vec<FieldIssue>;
    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError>;
}

impl<T: NodeConfig> DynNode for T {
    fn ports(&self) -> Ports {
        NodeConfig::ports(self)
    }
    fn validate(&self) -> Vec<FieldIssue> {
        NodeConfig::validate(self)
    }
    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        NodeConfig::build(self, cx)
    }
}

/// Why a node's settings did not deserialize: the path of the field (empty for the node itself)
/// and serde's message.
#[derive(Debug, Clone)]
pub struct ParseError {
    pub path: String,
    pub message: String,
}

type ParseFn = fn(serde_yaml::Value) -> Result<Arc<dyn DynNode>, ParseError>;

#[derive(Default)]
pub struct Registry {
    types: BTreeMap<&'static str, ParseFn>,
}

impl Registry {
    pub fn register<T: NodeConfig>(&mut self) {
        self.types.insert(T::TYPE, parse_as::<T>);
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
}

fn parse_as<T: NodeConfig>(settings: serde_yaml::Value) -> Result<Arc<dyn DynNode>, ParseError> {
    match serde_path_to_error::deserialize::<_, T>(settings) {
        Ok(config) => Ok(Arc::new(config)),
        Err(err) => {
            let path = err.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err(ParseError {
                path,
                message: err.into_inner().to_string(),
            })
        }
    }
}
