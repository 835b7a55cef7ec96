//! The running graph: starts the nodes of a `GraphSpec` in dependency order, wires each node's
//! inputs to the outputs of the nodes it names, and answers which camera offers which service.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Recipient;
use serde_json::json;

use crate::config::GraphSpec;
use crate::error::BuildError;
use crate::messages::{OpenStream, SetCapture, TakeSnapshot};
use crate::metrics::Metrics;
use crate::node::{BuildContext, NodeHandle, Port, Service};

struct RunningNode {
    id: String,
    type_name: String,
    camera: Arc<str>,
    inputs: Vec<String>,
    handle: NodeHandle,
}

/// The MJPEG service of one camera.
#[derive(Clone)]
pub struct MjpegService {
    pub stream: Recipient<OpenStream>,
    pub snapshot: Recipient<TakeSnapshot>,
}

pub struct Graph {
    spec: GraphSpec,
    /// In start order: every node after its inputs.
    nodes: Vec<RunningNode>,
}

impl Graph {
    /// Starts every node. On failure, the nodes already started are stopped again.
    pub fn start(spec: GraphSpec, metrics: &Arc<Metrics>) -> Result<Graph, BuildError> {
        let mut graph = Graph {
            spec: spec.clone(),
            nodes: Vec::new(),
        };
        let mut outputs: HashMap<String, Port> = HashMap::new();
        let mut cameras: HashMap<String, Arc<str>> = HashMap::new();
        let mut pending: Vec<_> = spec.nodes.iter().collect();
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|n| n.inputs.iter().all(|i| outputs.contains_key(i)));
            // Validation rejects cycles and dangling inputs, so some node is always ready.
            let Some(pos) = ready else {
                let node = &pending[0].id;
                graph.stop();
                return Err(BuildError::new(node, "inputs cannot be satisfied"));
            };
            let node = pending.remove(pos);
            let camera: Arc<str> = match node.inputs.first() {
                Some(input) => cameras[input].clone(),
                None => Arc::from(node.id.as_str()),
            };
            let cx = BuildContext {
                id: node.id.clone(),
                camera: camera.clone(),
                inputs: node.inputs.iter().map(|i| outputs[i].clone()).collect(),
                metrics: metrics.node(&camera, &node.id, &node.type_name),
            };
            let handle = match node.config.build(cx) {
                Ok(h) => h,
                Err(err) => {
                    graph.stop();
                    return Err(err);
                }
            };
            if let Some(out) = &handle.output {
                outputs.insert(node.id.clone(), out.clone());
            }
            cameras.insert(node.id.clone(), camera.clone());
            tracing::info!(node = %node.id, r#type = %node.type_name, camera = %camera, "node started");
            graph.nodes.push(RunningNode {
                id: node.id.clone(),
                type_name: node.type_name.clone(),
                camera,
                inputs: node.inputs.clone(),
                handle,
            });
        }
        Ok(graph)
    }

    pub fn spec(&self) -> &GraphSpec {
        &self.spec
    }

    /// Camera names (source nodes), in file order.
    pub fn cameras(&self) -> Vec<String> {
        self.spec
            .nodes
            .iter()
            .filter(|n| n.inputs.is_empty())
            .map(|n| n.id.clone())
            .collect()
    }

    /// `name`, or the first camera of the file when `None`; `None` if there is no such camera.
    pub fn resolve_camera(&self, name: Option<&str>) -> Option<String> {
        let cameras = self.cameras();
        match name {
            Some(n) => cameras.into_iter().find(|c| c == n),
            None => cameras.into_iter().next(),
        }
    }

    fn services<'a>(&'a self, camera: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.nodes
            .iter()
            .filter(move |n| &*n.camera == camera)
            .flat_map(|n| n.handle.services.iter())
    }

    pub fn capture(&self, camera: &str) -> Option<Recipient<SetCapture>> {
        self.services(camera).find_map(|s| match s {
            Service::Capture(r) => Some(r.clone()),
            _ => None,
        })
    }

    pub fn mjpeg(&self, camera: &str) -> Option<MjpegService> {
        self.services(camera).find_map(|s| match s {
            Service::Mjpeg { stream, snapshot } => Some(MjpegService {
                stream: stream.clone(),
                snapshot: snapshot.clone(),
            }),
            _ => None,
        })
    }

    /// Nodes, edges and each node's live statistics, for `GET /api/graph`.
    pub fn describe(&self) -> serde_json::Value {
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "id": n.id,
                    "type": n.type_name,
                    "camera": &*n.camera,
                    "inputs": n.inputs,
                    "state": "running",
                    "stats": n.handle.stats.as_ref().map(|s| s()),
                })
            })
            .collect();
        let edges: Vec<_> = self
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(move |i| json!({"from": i, "to": n.id})))
            .collect();
        json!({ "cameras": self.cameras(), "nodes": nodes, "edges": edges })
    }

    /// Stops every node, consumers first.
    pub fn stop(&mut self) {
        while let Some(node) = self.nodes.pop() {
            (node.handle.stop)();
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        self.stop();
    }
}
