//! Parses and validates a configuration. Every problem is collected, each with its position, so
//! one run of `camgraph check` shows them all.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::locate::Locator;
use super::{ConfigError, ConfigErrors, GraphSpec, NodeSpec, ServerConfig};
use crate::node::NodeId;
use crate::port::{PortKind, Ports};
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

struct Collector<'a> {
    file: &'a str,
    locator: Locator<'a>,
    errors: Vec<ConfigError>,
    /// Node id -> the short-form camera it was expanded from, for positions.
    written_as: HashMap<String, String>,
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
        let written = self.written_as.get(id).map_or(id, String::as_str);
        let at = match field {
            Some(f) => self.locator.field(written, f),
            None => self.locator.node(written),
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
        written_as: HashMap::new(),
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
    // Node entries in file order, from `nodes:` and expanded from `cameras:`.
    let mut entries: Vec<(Value, Value)> = Vec::new();
    let mut has_nodes = false;
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
            Some("nodes") => {
                has_nodes = true;
                match value {
                    Value::Mapping(m) => entries.extend(m),
                    Value::Null => {}
                    _ => {
                        let at = c.locator.top_key("nodes");
                        c.push(
                            at,
                            None,
                            "'nodes' must be a mapping of node id to node settings",
                        );
                    }
                }
            }
            Some("cameras") => {
                has_nodes = true;
                match value {
                    Value::Mapping(m) => entries.extend(expand_cameras(&mut c, m, registry)),
                    Value::Null => {}
                    _ => {
                        let at = c.locator.top_key("cameras");
                        c.push(
                            at,
                            None,
                            "'cameras' must be a mapping of camera name to camera settings",
                        );
                    }
                }
            }
            other => {
                let name = other.map_or_else(|| format!("{key:?}"), str::to_string);
                let at = c.locator.top_key(&name);
                c.push(
                    at,
                    None,
                    format!(
                        "unknown top-level key '{name}' (expected 'server', 'nodes' or 'cameras')"
                    ),
                );
            }
        }
    }

    let nodes = if entries.is_empty() && c.errors.is_empty() {
        let at = c.locator.top_key("nodes").or(c.locator.top_key("cameras"));
        if has_nodes {
            c.push(
                at,
                None,
                "no nodes: declare at least one camera under 'nodes:' or 'cameras:'",
            );
        } else {
            c.push(
                None,
                None,
                "missing 'nodes:' or 'cameras:' (the nodes of the graph)",
            );
        }
        Vec::new()
    } else {
        parse_nodes(&mut c, entries, registry)
    };
    check_edges(&mut c, &nodes);

    if c.errors.is_empty() {
        Ok(GraphSpec { server, nodes })
    } else {
        c.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(c.errors))
    }
}

/// Expands short-form cameras into node entries; remembers where each node was written.
fn expand_cameras(c: &mut Collector, cameras: Mapping, registry: &Registry) -> Vec<(Value, Value)> {
    let mut entries = Vec::new();
    let Some(short_form) = registry.short_form() else {
        c.push(
            c.locator.top_key("cameras"),
            None,
            "this build has no short form for 'cameras:': declare the nodes under 'nodes:'",
        );
        return entries;
    };
    for (key, value) in cameras {
        let Some(name) = key.as_str().map(str::to_string) else {
            c.push(
                c.locator.top_key("cameras"),
                None,
                format!("camera names must be strings (got {key:?})"),
            );
            continue;
        };
        match short_form.expand(&name, value) {
            Ok(nodes) => {
                for (id, settings) in nodes {
                    c.written_as.insert(id.clone(), name.clone());
                    entries.push((Value::String(id), Value::Mapping(settings)));
                }
            }
            Err(err) => {
                let path = err.path;
                let message = tidy(&err.message);
                let field = message
                    .strip_prefix("unknown field '")
                    .and_then(|r| r.split('\'').next())
                    .map(str::to_string)
                    .or_else(|| (!path.is_empty()).then(|| path.clone()));
                let at = match field.as_deref() {
                    Some(f) => c.locator.field(&name, f),
                    None => c.locator.node(&name),
                };
                let field = field.filter(|_| !message.starts_with("unknown field"));
                let message = match field {
                    Some(f) => format!("camera '{name}': '{f}': {message}"),
                    None => format!("camera '{name}': {message}"),
                };
                c.push(at, None, message);
            }
        }
    }
    entries
}

fn parse_nodes(
    c: &mut Collector,
    nodes: Vec<(Value, Value)>,
    registry: &Registry,
) -> Vec<NodeSpec> {
    let types = registry.type_names().collect::<Vec<_>>().join(", ");
    let mut specs: Vec<NodeSpec> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (key, raw) in nodes {
        let Some(id) = key.as_str().map(str::to_string) else {
            c.push(
                None,
                None,
                format!("node ids must be strings (got {key:?})"),
            );
            continue;
        };
        if NodeId::parse(&id).is_err() {
            c.node(
                &id,
                None,
                format!(
                    "invalid node id: use 1 to {} letters, digits, '_' or '-'",
                    NodeId::MAX_LEN
                ),
            );
            continue;
        }
        if !seen.insert(id.clone()) {
            let by = c.written_as.get(&id).map_or(String::new(), |cam| {
                format!(" (camera '{cam}' under 'cameras:' declares it)")
            });
            let at = c
                .locator
                .node(&id)
                .or_else(|| c.locator.node(c.written_as.get(&id).unwrap_or(&id)));
            c.push(
                at,
                Some(&id),
                format!("node id '{id}' is declared twice{by}"),
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

/// What `node` gives, following controllers (`Ports::Through`) back to what feeds them; `None`
/// for a sink, a missing input or a cycle (each reported on its own).
fn gives(node: &NodeSpec, by_id: &HashMap<&str, &NodeSpec>) -> Option<PortKind> {
    let mut current = node;
    for _ in 0..=by_id.len() {
        match current.config.ports() {
            Ports::Through(_) => current = by_id.get(current.inputs.first()?.as_str())?,
            ports => return ports.output(None),
        }
    }
    None
}

/// "jpeg", or "jpeg or h264".
fn kinds_text(kinds: &[PortKind]) -> String {
    let names: Vec<String> = kinds.iter().map(PortKind::to_string).collect();
    names.join(" or ")
}

/// Inputs that exist and fit, and no cycle.
fn check_edges(c: &mut Collector, nodes: &[NodeSpec]) {
    let by_id: HashMap<&str, &NodeSpec> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for node in nodes {
        let ports = node.config.ports();
        let accepts = ports.accepts();
        match (accepts, node.inputs.as_slice()) {
            ([], []) => {}
            ([], _) => c.node(
                &node.id,
                Some("inputs"),
                format!("{} takes no inputs", node.type_name),
            ),
            (kinds, []) => c.node(
                &node.id,
                None,
                format!(
                    "missing 'inputs': a {} needs one {} input",
                    node.type_name,
                    kinds_text(kinds)
                ),
            ),
            (kinds, [input]) => match by_id.get(input.as_str()) {
                None => c.node(
                    &node.id,
                    Some("inputs"),
                    format!("input '{input}' is not a node in this file"),
                ),
                Some(upstream) => match gives(upstream, &by_id) {
                    Some(out) if kinds.contains(&out) => {}
                    out => {
                        let gives = out.map_or("nothing".to_string(), |k: PortKind| k.to_string());
                        c.node(
                            &node.id,
                            Some("inputs"),
                            format!(
                                "input '{input}' ({}) gives {gives}, but {} takes {}",
                                upstream.type_name,
                                node.type_name,
                                kinds_text(kinds)
                            ),
                        )
                    }
                },
            },
            (_, many) => c.node(
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
