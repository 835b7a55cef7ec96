//! Parses and validates a configuration. Every problem is collected, each with its position, so
//! one run of `camgraph check` shows them all.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde_yaml::{Mapping, Value};

use super::locate::Locator;
use super::{ConfigError, ConfigErrors, GraphSpec, NodeSpec, ServerConfig};
use crate::node::NodeId;
use crate::port::{PortKind, Ports};
use crate::registry::{path_error, DynNode, ParseError, Registry};

/// The largest configuration accepted, in bytes: a graph of hundreds of cameras is far smaller,
/// and parsing stays well under a second.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The deepest nesting of flow collections (`[`, `{`) accepted. A graph needs 3 or 4 levels; the
/// YAML parser's cost grows with the square of the depth, so a deep file is refused before it.
pub const MAX_DEPTH: usize = 64;

/// Reads and parses `path`; errors name the path as given. A file over `MAX_FILE_BYTES` is refused
/// before it is read.
pub fn load_file(path: &Path, registry: &Registry) -> Result<GraphSpec, ConfigErrors> {
    use std::io::Read;
    let file = path.display().to_string();
    let whole_file = |message: String| {
        Err(ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            node: None,
            message,
        }]))
    };
    let too_large = || format!("the file is larger than {MAX_FILE_BYTES} bytes");
    let opened = std::fs::File::open(path).and_then(|f| Ok((f.metadata()?.len(), f)));
    let mut text = String::new();
    match opened {
        Ok((len, _)) if len > MAX_FILE_BYTES => return whole_file(too_large()),
        // Bounded by the read too: the file may grow between the check and the read.
        Ok((_, f)) => match f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text) {
            Ok(n) if n as u64 > MAX_FILE_BYTES => return whole_file(too_large()),
            Ok(_) => {}
            Err(err) => return whole_file(format!("cannot read the file: {err}")),
        },
        Err(err) => return whole_file(format!("cannot read the file: {err}")),
    }
    parse(&file, &text, registry)
}

/// Where flow collections first nest deeper than `max` (1-based line and column), skipping quoted
/// scalars and comments. Linear in the text. A quote counts only where a scalar can start, and
/// ends with its line at the latest: nothing can hide brackets from the count that the YAML parser
/// would then nest (a multi-line quoted scalar full of brackets is counted, which only errs on the
/// safe side).
fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    // The last character that was not a space on this line ('\n' at its start).
    let mut significant = '\n';
    let mut previous = '\n';
    for ch in text.chars() {
        column += 1;
        if ch == '\n' {
            (line, column, comment, quote, significant, previous) =
                (line + 1, 0, false, None, '\n', '\n');
            continue;
        }
        match quote {
            _ if comment => {}
            Some(_) if escaped => escaped = false,
            Some('"') if ch == '\\' => escaped = true,
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None => match ch {
                '"' | '\'' if matches!(significant, '\n' | '[' | '{' | ',' | ':' | '-' | '?') => {
                    quote = Some(ch)
                }
                '#' if previous.is_whitespace() || previous == '\n' => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > max {
                        return Some((line, column));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        if !ch.is_whitespace() {
            significant = ch;
        }
        previous = ch;
    }
    None
}

struct Collector<'a> {
    file: &'a str,
    locator: Locator<'a>,
    errors: Vec<ConfigError>,
    /// Node id -> the short-form camera it was expanded from, for positions.
    written_as: HashMap<String, String>,
    /// Nodes of short-form cameras whose settings did not parse (already reported): still nodes.
    unparsed: HashSet<String>,
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

/// serde says `unknown field `x`` and `expected u32`; we quote like the rest of our messages and
/// name what to write, not Rust's type.
fn tidy(message: &str) -> String {
    let message = message.replace('`', "'");
    let Some((before, expected)) = message.rsplit_once(", expected ") else {
        return message;
    };
    let plain = match expected {
        "u8" => "a whole number 0..=255",
        "u16" => "a whole number 0..=65535",
        "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list",
        "a map" => "a mapping",
        "socket address" => "an address such as 127.0.0.1:8080",
        "path string" => "a path",
        other if other.starts_with("struct ") => "a mapping",
        _ => return message,
    };
    format!("{before}, expected {plain}")
}

/// The field named by serde's (tidied) "unknown field 'x', expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field '")?;
    rest.split('\'').next().map(str::to_string)
}

/// Deserializes `settings` with `parse`, collecting every field's error instead of the first:
/// after an error the field it is about is taken out and the rest parsed again (so a missing
/// required field is reported once, as what was wrong with it). Gives the settings if what was
/// left parsed, and the errors in the order found.
fn parse_all<T>(
    mut settings: Value,
    parse: impl Fn(Value) -> Result<T, ParseError>,
) -> (Option<T>, Vec<ParseError>) {
    let mut errors = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    loop {
        let err = match parse(settings.clone()) {
            Ok(parsed) => return (Some(parsed), errors),
            Err(err) => err,
        };
        let message = tidy(&err.message);
        let missing = message
            .strip_prefix("missing field '")
            .and_then(|r| r.split('\'').next());
        if missing.is_some_and(|f| removed.iter().any(|r| r == f)) {
            return (None, errors);
        }
        // The top-level key the error is in: the path's first step, else the unknown field.
        let key = err
            .path
            .split(['.', '['])
            .next()
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .or_else(|| unknown_field(&message));
        errors.push(err);
        let taken_out = key.filter(|k| {
            settings
                .as_mapping_mut()
                .is_some_and(|m| m.remove(k.as_str()).is_some())
        });
        match taken_out {
            Some(key) => removed.push(key),
            None => return (None, errors),
        }
    }
}

/// Parses `text` (named `file` in errors) into a validated spec.
pub fn parse(file: &str, text: &str, registry: &Registry) -> Result<GraphSpec, ConfigErrors> {
    let mut c = Collector {
        file,
        locator: Locator::new(text),
        errors: Vec::new(),
        written_as: HashMap::new(),
        unparsed: HashSet::new(),
    };
    if text.len() as u64 > MAX_FILE_BYTES {
        c.push(
            None,
            None,
            format!("the file is larger than {MAX_FILE_BYTES} bytes"),
        );
        return Err(ConfigErrors(c.errors));
    }
    if let Some(at) = too_deep(text, MAX_DEPTH) {
        c.push(
            Some(at),
            None,
            format!("nesting deeper than {MAX_DEPTH} levels of '[' or '{{'"),
        );
        return Err(ConfigErrors(c.errors));
    }
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
    let root = match root {
        Value::Mapping(root) => root,
        Value::Null => {
            c.push(
                None,
                None,
                "the file is empty: declare the graph under 'nodes:' or 'cameras:'",
            );
            return Err(ConfigErrors(c.errors));
        }
        _ => {
            c.push(
                None,
                None,
                "the file must be a mapping with 'nodes:' or 'cameras:' (and optionally 'server:')",
            );
            return Err(ConfigErrors(c.errors));
        }
    };

    let mut server = ServerConfig::default();
    // Node entries in file order, from `nodes:` and expanded from `cameras:`.
    let mut entries: Vec<(Value, Value)> = Vec::new();
    let mut has_nodes = false;
    for (key, value) in root {
        match key.as_str() {
            Some("server") => {
                let (parsed, errors) = parse_all(value, |v| {
                    serde_path_to_error::deserialize::<_, ServerConfig>(v).map_err(path_error)
                });
                server = parsed.unwrap_or_default();
                for err in errors {
                    let msg = tidy(&err.message);
                    let (field, text) = match unknown_field(&msg) {
                        Some(unknown) => (unknown, format!("server: {msg}")),
                        None if err.path.is_empty() => (String::new(), format!("server: {msg}")),
                        None => (err.path.clone(), format!("server.{}: {msg}", err.path)),
                    };
                    let at = c.locator.section_field("server", &field);
                    c.push(at, None, text);
                }
            }
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
    let cameras = nodes.iter().filter(|n| n.inputs.is_empty());
    if let Some((n, over)) = cameras.enumerate().nth(server.max_cameras) {
        if let Some(why) = super::server::over_max_cameras(&over.id, n + 1, server.max_cameras) {
            c.node(&over.id.clone(), None, why);
        }
    }

    if c.errors.is_empty() {
        // Without errors every node's settings parsed.
        let nodes = nodes
            .into_iter()
            .filter_map(|n| {
                Some(NodeSpec {
                    config: n.config?,
                    id: n.id,
                    type_name: n.type_name,
                    inputs: n.inputs,
                    raw: n.raw,
                })
            })
            .collect();
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
        let (nodes, errors) = parse_all(value, |v| short_form.expand(&name, v));
        for err in errors {
            let message = tidy(&err.message);
            let field = unknown_field(&message)
                .or_else(|| (!err.path.is_empty()).then(|| err.path.clone()));
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
        // A camera whose settings did not parse still declares its chain, for the wiring checks.
        let parsed = nodes.is_some();
        for (id, settings) in nodes.unwrap_or_else(|| short_form.chain(&name)) {
            c.written_as.insert(id.clone(), name.clone());
            if !parsed {
                c.unparsed.insert(id.clone());
            }
            entries.push((Value::String(id), Value::Mapping(settings)));
        }
    }
    entries
}

/// A node as parsed. `config` is `None` when its type or settings did not parse (that is already
/// reported): it is still a node of the file, so inputs naming it are not "missing", but what it
/// takes and gives is unknown and its wiring is not judged.
struct Parsed {
    id: String,
    type_name: String,
    inputs: Vec<String>,
    raw: Value,
    config: Option<Arc<dyn DynNode>>,
}

fn parse_nodes(c: &mut Collector, nodes: Vec<(Value, Value)>, registry: &Registry) -> Vec<Parsed> {
    let types = registry.type_names().collect::<Vec<_>>().join(", ");
    let mut parsed: Vec<Parsed> = Vec::new();
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
        let mut node = Parsed {
            id,
            type_name: String::new(),
            inputs: Vec::new(),
            raw: raw.clone(),
            config: None,
        };
        let id = node.id.clone();
        let Value::Mapping(mut settings) = raw else {
            c.node(&id, None, "must be a mapping with a 'type'");
            parsed.push(node);
            continue;
        };
        // Unknown inputs leave the node's wiring unknown; its settings are still checked.
        let mut wiring_known = true;
        match settings.remove("inputs") {
            None => {}
            Some(Value::String(s)) => node.inputs = vec![s],
            Some(Value::Sequence(seq)) if seq.iter().all(Value::is_string) => {
                node.inputs = seq
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            }
            Some(_) => {
                c.node(
                    &id,
                    Some("inputs"),
                    "'inputs' must be a node id or a list of node ids",
                );
                wiring_known = false;
            }
        }
        match settings.remove("type") {
            Some(Value::String(t)) if !t.is_empty() => node.type_name = t,
            // An empty name would leave the node out of the graph without a word.
            Some(Value::String(_)) => c.node(
                &id,
                Some("type"),
                format!("'type' is empty: name one of: {types}"),
            ),
            Some(_) => c.node(
                &id,
                Some("type"),
                format!("'type' must be a string, one of: {types}"),
            ),
            None => c.node(&id, None, format!("missing 'type' (one of: {types})")),
        }
        if node.type_name.is_empty() || c.unparsed.contains(&id) {
            parsed.push(node);
            continue;
        }
        if !registry.type_names().any(|t| t == node.type_name) {
            c.node(
                &id,
                Some("type"),
                format!("unknown type '{}' (one of: {types})", node.type_name),
            );
            parsed.push(node);
            continue;
        }
        let (config, errors) = parse_all(Value::Mapping(settings), |v| {
            registry.parse(&node.type_name, v).unwrap_or_else(|| {
                Err(ParseError {
                    path: String::new(),
                    message: format!("unknown type '{}'", node.type_name),
                })
            })
        });
        for err in errors {
            let message = tidy(&err.message);
            let field = unknown_field(&message).or_else(|| {
                let top = err.path.split(['.', '[']).next()?;
                (!top.is_empty()).then(|| top.to_string())
            });
            let message = match (&field, err.path.is_empty()) {
                (Some(_), false) if !message.starts_with("unknown field") => {
                    format!("'{}': {message}", err.path)
                }
                _ => message,
            };
            c.node(&id, field.as_deref(), message);
        }
        if let Some(config) = &config {
            for issue in config.validate() {
                c.node(&id, Some(&issue.field), issue.message);
            }
        }
        node.config = config.filter(|_| wiring_known);
        parsed.push(node);
    }
    parsed
}

/// What a node gives to the nodes it feeds.
#[derive(PartialEq)]
enum Gives {
    Kind(PortKind),
    /// A sink.
    Nothing,
    /// Not known: its settings did not parse, or a controller's own input is missing or in a
    /// cycle. Each of those is reported on its own, so the nodes it feeds say nothing more.
    Unknown,
}

/// What `node` gives, following controllers (`Ports::Through`) back to what feeds them.
fn gives(node: &Parsed, by_id: &HashMap<&str, &Parsed>) -> Gives {
    let mut current = node;
    for _ in 0..=by_id.len() {
        let Some(config) = &current.config else {
            return Gives::Unknown;
        };
        match config.ports() {
            Ports::Through(_) => match current.inputs.first().and_then(|i| by_id.get(i.as_str())) {
                Some(input) => current = input,
                None => return Gives::Unknown,
            },
            ports => return ports.output(None).map_or(Gives::Nothing, Gives::Kind),
        }
    }
    Gives::Unknown
}

/// "jpeg", or "jpeg or h264".
fn kinds_text(kinds: &[PortKind]) -> String {
    let names: Vec<String> = kinds.iter().map(PortKind::to_string).collect();
    names.join(" or ")
}

/// Inputs that exist and fit, and no cycle.
fn check_edges(c: &mut Collector, nodes: &[Parsed]) {
    let by_id: HashMap<&str, &Parsed> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for node in nodes {
        let Some(config) = &node.config else {
            // What it takes is unknown; whether its inputs exist is not.
            for input in &node.inputs {
                if !by_id.contains_key(input.as_str()) {
                    c.node(
                        &node.id,
                        Some("inputs"),
                        format!("input '{input}' is not a node in this file"),
                    );
                }
            }
            continue;
        };
        let ports = config.ports();
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
                    Gives::Unknown => {}
                    Gives::Kind(out) if kinds.contains(&out) => {}
                    out => {
                        let gives = match out {
                            Gives::Kind(k) => k.to_string(),
                            _ => "nothing".to_string(),
                        };
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
