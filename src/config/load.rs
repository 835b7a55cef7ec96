//! Parses and validates a configuration. Every problem is collected, each with its position, so
//! one run of `camgraph check` shows them all.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::locate::Locator;
use super::{ConfigError, ConfigErrors, GraphSpec, NodeSpec, ServerConfig};
use crate::node::PortKind;
use crate::registry::Registry;

/// Reads and parses `path`; errors name the path as given.
pub fn load_file(path: &Path, registry: &Registry) -> Result<GraphSpec, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text, registry),
        Err(err) => Err(ConfigErrors(vec![ConfigError {
            file,
            line: 0,
            column: 0,
            node: None,
            message: format!("cannot read the file: {err}"),
        }])),
    }
}

/// Longest node id; ids become URL path segments and metric labels.
const MAX_ID_LEN: usize = 64;

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !id.starts_with('-')
}

struct Collector<'a> {
    file: &'a str,
    locator: Locator<'a>,
    errors: Vec<ConfigError>,
}

impl Collector<'_> {
    fn push(&mut self, at: Option<(usize, usize)>, node: Option<&str>, message: impl Into<String>) {
        let (line, column) = at.unwrap_or((1, 1));
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            node: node.map(str::to_string),
            message: message.into(),
        });
    }

    fn node(&mut self, id: &str, field: Option<&str>, message: impl Into<String>) {
        let at = match field {
            Some(f) => self.locator.field(id, f),
            None => self.locator.node(id),
        };
        self.push(at, Some(id), message);
    }
}

/// serde says `unknown field `x``; we quote like the rest of our messages.
fn tidy(message: &str) -> String {
    message.replace('`', "'")
}

/// Parses `text` (named `file` in errors) into a validated spec.
pub fn parse(file: &str, text: &str, registry: &Registry) -> Result<GraphSpec, ConfigErrors> {
    let mut c = Collector {
        file,
        locator: Locator::new(text),
        errors: Vec::new(),
    };
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(err) => {
            let mut at = err.location().map(|l| (l.line(), l.column()));
            let mut message = err.to_string();
            // The position is already in front of the message.
            if let Some(l) = err.location() {
                message = message.replacen(
                    &format!(" at line {} column {}", l.line(), l.column()),
                    "",
                    1,
                );
            }
            if let Some(key) = message
                .split("duplicate entry with key \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                at = c.locator.second_key(key).or(at);
                message = format!("'{key}' is declared twice: node ids and keys must be unique");
            }
            c.push(at, None, format!("invalid YAML: {message}"));
            return Err(ConfigErrors(c.errors));
        }
    };
    let Value::Mapping(root) = root else {
        c.push(
            None,
            None,
            "the file must be a mapping with 'nodes:' (and optionally 'server:')",
        );
        return Err(ConfigErrors(c.errors));
    };

    let mut server = ServerConfig::default();
    let mut nodes_value = None;
    for (key, value) in root {
        match key.as_str() {
            Some("server") => match serde_path_to_error::deserialize::<_, ServerConfig>(value) {
                Ok(s) => server = s,
                Err(err) => {
                    let field = err.path().to_string();
                    let msg = tidy(&err.into_inner().to_string());
                    let at = c.locator.section_field("server", &field);
                    c.push(at, None, format!("server.{field}: {msg}"));
                }
            },
            Some("nodes") => nodes_value = Some(value),
            other => {
                let name = other.map_or_else(|| format!("{key:?}"), str::to_string);
                let at = c.locator.top_key(&name);
                c.push(
                    at,
                    None,
                    format!("unknown top-level key '{name}' (expected 'server' or 'nodes')"),
                );
            }
        }
    }

    let nodes = match nodes_value {
        Some(Value::Mapping(m)) if !m.is_empty() => parse_nodes(&mut c, m, registry),
        Some(Value::Mapping(_)) | Some(Value::Null) => {
            let at = c.locator.top_key("nodes");
            c.push(at, None, "'nodes' is empty: declare at least one camera");
            Vec::new()
        }
        Some(_) => {
            let at = c.locator.top_key("nodes");
            c.push(
                at,
                None,
                "'nodes' must be a mapping of node id to node settings",
            );
            Vec::new()
        }
        None => {
            c.push(None, None, "missing 'nodes:' (the nodes of the graph)");
            Vec::new()
        }
    };
    check_edges(&mut c, &nodes);

    if c.errors.is_empty() {
        Ok(GraphSpec { server, nodes })
    } else {
        c.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(c.errors))
    }
}

fn parse_nodes(c: &mut Collector, nodes: Mapping, registry: &Registry) -> Vec<NodeSpec> {
    let types = registry.type_names().collect::<Vec<_>>().join(", ");
    let mut specs = Vec::new();
    for (key, raw) in nodes {
        let Some(id) = key.as_str().map(str::to_string) else {
            c.push(
                None,
                None,
                format!("node ids must be strings (got {key:?})"),
            );
            continue;
        };
        if !valid_id(&id) {
            c.node(
                &id,
                None,
                format!("invalid node id: use 1 to {MAX_ID_LEN} letters, digits, '_' or '-'"),
            );
            continue;
        }
        let Value::Mapping(mut settings) = raw.clone() else {
            c.node(&id, None, "must be a mapping with a 'type'");
            continue;
        };
        let inputs = match settings.remove("inputs") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Sequence(seq)) if seq.iter().all(Value::is_string) => seq
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                c.node(
                    &id,
                    Some("inputs"),
                    "'inputs' must be a node id or a list of node ids",
                );
                continue;
            }
        };
        let type_name = match settings.remove("type") {
            Some(Value::String(t)) => t,
            Some(_) => {
                c.node(
                    &id,
                    Some("type"),
                    format!("'type' must be a string, one of: {types}"),
                );
                continue;
            }
            None => {
                c.node(&id, None, format!("missing 'type' (one of: {types})"));
                continue;
            }
        };
        let config = match registry.parse(&type_name, Value::Mapping(settings)) {
            None => {
                c.node(
                    &id,
                    Some("type"),
                    format!("unknown type '{type_name}' (one of: {types})"),
                );
                continue;
            }
            Some(Err(err)) => {
                let message = tidy(&err.message);
                let field = if let Some(rest) = message.strip_prefix("unknown field '") {
                    rest.split('\'').next().map(str::to_string)
                } else if err.path.is_empty() {
                    None
                } else {
                    err.path.split(['.', '[']).next().map(str::to_string)
                };
                let message = match (&field, err.path.is_empty()) {
                    (Some(_), false) if !message.starts_with("unknown field") => {
                        format!("'{}': {message}", err.path)
                    }
                    _ => message,
                };
                c.node(&id, field.as_deref(), message);
                continue;
            }
            Some(Ok(config)) => config,
        };
        for issue in config.validate() {
            c.node(&id, Some(&issue.field), issue.message);
        }
        specs.push(NodeSpec {
            id,
            type_name,
            inputs,
            raw,
            config,
        });
    }
    specs
}

/// Inputs that exist and fit, and no cycle.
fn check_edges(c: &mut Collector, nodes: &[NodeSpec]) {
    let by_id: HashMap<&str, &NodeSpec> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for node in nodes {
        let ports = node.config.ports();
        match (ports.input, node.inputs.as_slice()) {
            (None, []) => {}
            (None, _) => c.node(
                &node.id,
                Some("inputs"),
                format!("{} takes no inputs", node.type_name),
            ),
            (Some(kind), []) => c.node(
                &node.id,
                None,
                format!(
                    "missing 'inputs': a {} needs one {kind} input",
                    node.type_name
                ),
            ),
            (Some(kind), [input]) => match by_id.get(input.as_str()) {
                None => c.node(
                    &node.id,
                    Some("inputs"),
                    format!("input '{input}' is not a node in this file"),
                ),
                Some(upstream) => match upstream.config.ports().output {
                    Some(out) if out == kind => {}
                    out => {
                        let gives = out.map_or("nothing".to_string(), |k: PortKind| k.to_string());
                        c.node(
                            &node.id,
                            Some("inputs"),
                            format!(
                                "input '{input}' ({}) gives {gives}, but {} takes {kind}",
                                upstream.type_name, node.type_name
                            ),
                        )
                    }
                },
            },
            (Some(_), many) => c.node(
                &node.id,
                Some("inputs"),
                format!("{} takes one input (got {})", node.type_name, many.len()),
            ),
        }
    }
    // A cycle: follow inputs from each node; every node has at most one input.
    let mut reported = HashSet::new();
    for node in nodes {
        let mut path = vec![node.id.as_str()];
        let mut current = node;
        while let Some(next) = current.inputs.first().and_then(|i| by_id.get(i.as_str())) {
            if let Some(pos) = path.iter().position(|id| *id == next.id) {
                let mut cycle: Vec<&str> = path[pos..].to_vec();
                cycle.sort_unstable();
                if reported.insert(cycle.join(",")) {
                    let mut shown: Vec<&str> = path[pos..].iter().rev().copied().collect();
                    shown.push(shown[0]);
                    c.node(
                        path[pos],
                        Some("inputs"),
                        format!("inputs form a cycle: {}", shown.join(" -> ")),
                    );
                }
                break;
            }
            path.push(next.id.as_str());
            current = next;
        }
    }
}
