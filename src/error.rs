//! Error types of the library. Configuration problems live in `config` (they carry file positions);
//! these are the failures of building nodes and of serving requests.

use thiserror::Error;

/// A node could not be started.
#[derive(Debug, Error)]
#[error("node '{node}': {message}")]
pub struct BuildError {
    pub node: String,
    pub message: String,
}

impl BuildError {
    pub fn new(node: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            message: message.into(),
        }
    }
}

/// Why a node could not serve a request; the HTTP layer maps each kind to a status code.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// The caller asked for something that does not exist or is out of range (4xx).
    #[error("{0}")]
    BadRequest(String),
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The node is at a configured limit (503).
    #[error("{0}")]
    Busy(String),
    /// Nothing to give yet, e.g. no frame captured (503).
    #[error("{0}")]
    Unavailable(String),
}
