//! The YAML file: its model (`GraphSpec`, the `server:` section in `server.rs`), loading with every error at once and each error placed at
//! `file:line:col` (`load`), and finding those positions in the text (`locate`).

mod load;
mod locate;
mod server;

use std::fmt;
use std::sync::Arc;

use crate::registry::DynNode;

pub use load::{load_file, parse, MAX_DEPTH, MAX_FILE_BYTES};
pub use server::{
    over_max_cameras, ApiSources, Auth, Role, SecretError, ServerConfig, TlsConfig, TokenConfig,
    TokenSource,
};

/// A whole, validated configuration.
#[derive(Clone)]
pub struct GraphSpec {
    pub server: ServerConfig,
    /// In file order; the first camera is the default camera of the HTTP API.
    pub nodes: Vec<NodeSpec>,
}

/// One node as the file declares it.
#[derive(Clone)]
pub struct NodeSpec {
    pub id: String,
    pub type_name: String,
    pub inputs: Vec<String>,
    /// The node's YAML as written, to tell whether a reload changed it.
    pub raw: serde_yaml::Value,
    pub config: Arc<dyn DynNode>,
}

/// One configuration problem, placed in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The node it is about, if any.
    pub node: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        }
        if let Some(node) = &self.node {
            write!(f, "node '{node}': ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
