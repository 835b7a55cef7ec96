//! The running graph: starts the nodes of a `GraphSpec` in dependency order, wires each node's
//! inputs to the outputs of the nodes it names, and applies a new spec as a diff: removed nodes
//! stop, added ones start, changed ones (and every node fed by them) restart, and the rest is never
//! touched. `live` adds the configuration file and the cameras added through the API on top.

pub mod live;
pub mod view;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{GraphSpec, NodeSpec};
use crate::error::BuildError;
use crate::metrics::Metrics;
use crate::node::{BuildContext, Services, StatsFn};
use crate::port::Port;
use crate::stop::{Stopper, Stopping};
pub use view::{GraphView, Lookup, NodeView};

struct RunningNode {
    spec: NodeSpec,
    camera: Arc<str>,
    started_at: SystemTime,
    output: Option<Port>,
    services: Services,
    stats: Option<Arc<StatsFn>>,
    stop: Stopper,
}

/// What applying a spec did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    /// Nodes that failed to start, with why.
    pub failed: Vec<NodeFailure>,
}

/// A node that did not start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeFailure {
    pub node: String,
    pub error: String,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.restarted.is_empty()
    }
}

pub struct Graph {
    metrics: Arc<Metrics>,
    /// The HTTP server's listen IP, handed to every node it builds.
    listen: std::net::IpAddr,
    /// In file order, as last applied.
    spec: Vec<NodeSpec>,
    /// In start order: every node after its inputs.
    nodes: Vec<RunningNode>,
    /// Why each node of `spec` that is not running did not start.
    failures: HashMap<String, String>,
}

/// Whether two declarations of a node are the same.
fn same(a: &NodeSpec, b: &NodeSpec) -> bool {
    a.type_name == b.type_name && a.inputs == b.inputs && a.raw == b.raw
}

impl Graph {
    pub fn new(metrics: Arc<Metrics>, listen: std::net::IpAddr) -> Graph {
        Graph {
            metrics,
            listen,
            spec: Vec::new(),
            nodes: Vec::new(),
            failures: HashMap::new(),
        }
    }

    /// A graph running `spec`; fails (stopping what it started) if any node fails to start.
    pub fn start(
        spec: GraphSpec,
        metrics: &Arc<Metrics>,
        listen: std::net::IpAddr,
    ) -> Result<Graph, BuildError> {
        let mut graph = Graph::new(metrics.clone(), listen);
        let changes = graph.apply(spec.nodes);
        match changes.failed.first() {
            None => Ok(graph),
            Some(failure) => {
                graph.stop();
                Err(BuildError::new(&failure.node, &failure.error))
            }
        }
    }

    /// Moves the running graph to `nodes` (already validated as a whole) touching only what differs.
    pub fn apply(&mut self, nodes: Vec<NodeSpec>) -> Changes {
        let new: HashMap<&str, &NodeSpec> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        let mut changes = Changes::default();
        // Stop: removed and changed nodes, and everything downstream of them.
        let mut stopping: HashSet<String> = HashSet::new();
        for running in &self.nodes {
            let upstream_stops = running.spec.inputs.iter().any(|i| stopping.contains(i));
            match new.get(running.spec.id.as_str()) {
                None => {
                    changes.removed.push(running.spec.id.clone());
                    stopping.insert(running.spec.id.clone());
                }
                Some(n) if !same(n, &running.spec) || upstream_stops => {
                    changes.restarted.push(running.spec.id.clone());
                    stopping.insert(running.spec.id.clone());
                }
                Some(_) => {}
            }
        }
        let mut kept = Vec::new();
        for running in std::mem::take(&mut self.nodes).into_iter().rev() {
            if stopping.contains(&running.spec.id) {
                running.stop.fire();
                self.metrics.forget_node(&running.spec.id);
                tracing::info!(node = %running.spec.id, "node stopped");
            } else {
                kept.push(running);
            }
        }
        kept.reverse();
        self.nodes = kept;

        // Start: everything in the new spec that is not running, inputs first.
        let mut pending: Vec<&NodeSpec> = nodes
            .iter()
            .filter(|n| !self.nodes.iter().any(|r| r.spec.id == n.id))
            .collect();
        let mut failed: HashSet<String> = HashSet::new();
        while !pending.is_empty() {
            let ready = pending.iter().position(|n| {
                n.inputs
                    .iter()
                    .all(|i| self.output(i).is_some() || failed.contains(i))
            });
            let Some(pos) = ready else {
                // Validation rejects cycles and dangling inputs; this only guards against a bug.
                for n in pending.drain(..) {
                    changes.failed.push(NodeFailure {
                        node: n.id.clone(),
                        error: "inputs cannot be satisfied".into(),
                    });
                }
                break;
            };
            let node = pending.remove(pos);
            if let Some(bad) = node.inputs.iter().find(|i| failed.contains(*i)) {
                changes.failed.push(NodeFailure {
                    node: node.id.clone(),
                    error: format!("input '{bad}' did not start"),
                });
                failed.insert(node.id.clone());
                continue;
            }
            match self.start_node(node) {
                Ok(()) => {
                    if !changes.restarted.contains(&node.id) {
                        changes.added.push(node.id.clone());
                    }
                }
                Err(err) => {
                    tracing::error!("{err}");
                    changes.failed.push(NodeFailure {
                        node: err.node,
                        error: err.message,
                    });
                    failed.insert(node.id.clone());
                }
            }
        }
        self.failures = changes
            .failed
            .iter()
            .map(|f| (f.node.clone(), f.error.clone()))
            .collect();
        self.spec = nodes;
        changes
    }

    fn output(&self, id: &str) -> Option<Port> {
        self.nodes
            .iter()
            .find(|n| n.spec.id == id)
            .and_then(|n| n.output.clone())
    }

    fn start_node(&mut self, node: &NodeSpec) -> Result<(), BuildError> {
        let camera: Arc<str> = match node.inputs.first() {
            Some(input) => self
                .nodes
                .iter()
                .find(|n| &n.spec.id == input)
                .map(|n| n.camera.clone())
                .ok_or_else(|| {
                    BuildError::new(&node.id, format!("input '{input}' is not running"))
                })?,
            None => Arc::from(node.id.as_str()),
        };
        let mut inputs = Vec::new();
        for input in &node.inputs {
            inputs.push(self.output(input).ok_or_else(|| {
                BuildError::new(&node.id, format!("input '{input}' has no output"))
            })?);
        }
        let cx = BuildContext {
            id: node.id.clone(),
            camera: camera.clone(),
            inputs,
            metrics: self.metrics.node(&camera, &node.id, &node.type_name),
            listen: self.listen,
        };
        // A plugin that panics while starting fails its node, not the graph or the server.
        let built = std::panic::catch_unwind(AssertUnwindSafe(|| node.config.build(cx))).map_err(
            |panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown cause".into());
                BuildError::new(&node.id, format!("panicked while starting: {why}"))
            },
        )?;
        let handle = built?;
        tracing::info!(node = %node.id, r#type = %node.type_name, camera = %camera, "node started");
        self.nodes.push(RunningNode {
            spec: node.clone(),
            camera,
            started_at: SystemTime::now(),
            output: handle.output,
            services: handle.services,
            stats: handle.stats.map(Arc::new),
            stop: handle.stop,
        });
        Ok(())
    }

    /// What runs now, as an immutable view for readers.
    pub fn view(&self) -> Vec<NodeView> {
        self.spec
            .iter()
            .map(|spec| {
                let running = self.nodes.iter().find(|n| n.spec.id == spec.id);
                NodeView {
                    id: spec.id.clone(),
                    type_name: spec.type_name.clone(),
                    inputs: spec.inputs.clone(),
                    camera: running.map(|n| n.camera.clone()),
                    started_at: running.map(|n| n.started_at),
                    error: self.failures.get(&spec.id).cloned(),
                    stats: running.and_then(|n| n.stats.clone()),
                    services: running.map(|n| n.services.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Stops every node, consumers first; gives their stoppers, to wait until they have stopped.
    pub fn stop(&mut self) -> Stopping {
        let mut stopping = Stopping::default();
        while let Some(node) = self.nodes.pop() {
            node.stop.fire();
            stopping.0.push(node.stop);
        }
        stopping
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        self.stop();
    }
}
