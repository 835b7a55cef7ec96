//! Finds where a node or one of its fields is written, so that errors found after parsing (unknown
//! type, bad value, missing input) still point at `line:col`. serde_yaml reports positions only for
//! syntax errors, so this reads the text: block style (`key:` on its own line) and flow style
//! (`{ key: value }`) both work.

use std::cell::OnceCell;
use std::collections::HashMap;

/// Positions are 1-based `(line, column)`.
pub struct Locator<'a> {
    lines: Vec<&'a str>,
    /// For `nodes:` then `cameras:`: each key written at the start of a line of the section, and
    /// the first line it is on. Built once, on the first lookup: a file with thousands of bad
    /// nodes is not searched again per error.
    sections: OnceCell<[HashMap<&'a str, usize>; 2]>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The column (0-based) where `key` is written as a mapping key in `line`, if it is.
fn key_column(line: &str, key: &str) -> Option<usize> {
    let code = line.split(" #").next().unwrap_or(line);
    for quote in ["", "\"", "'"] {
        let needle = format!("{quote}{key}{quote}");
        // An empty key is written only quoted; an empty needle would match everywhere.
        if needle.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(pos) = code[from..].find(&needle) {
            let start = from + pos;
            let end = start + needle.len();
            let before = code[..start].trim_end();
            let before_ok = before.is_empty() || before.ends_with(['{', ',', '-']);
            let after = code[end..].trim_start();
            if before_ok && after.starts_with(':') {
                return Some(start);
            }
            from = end;
        }
    }
    None
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            lines: text.lines().collect(),
            sections: OnceCell::new(),
        }
    }

    /// A top-level key such as `nodes` or `server`.
    pub fn top_key(&self, key: &str) -> Option<(usize, usize)> {
        self.lines
            .iter()
            .position(|l| indent(l) == 0 && key_column(l, key) == Some(0))
            .map(|i| (i + 1, 1))
    }

    /// The line index of the node's key under `nodes:`.
    /// The line index of a node's key under `nodes:` (or of a short-form camera under `cameras:`).
    fn node_line(&self, id: &str) -> Option<usize> {
        let sections = self
            .sections
            .get_or_init(|| ["nodes", "cameras"].map(|section| self.keys_under(section)));
        sections.iter().find_map(|keys| keys.get(id).copied())
    }

    /// Each key written at the start of a line under the top-level `section`, with its first line.
    fn keys_under(&self, section: &str) -> HashMap<&'a str, usize> {
        let mut keys = HashMap::new();
        let Some((section_line, _)) = self.top_key(section) else {
            return keys;
        };
        // `section_line` is 1-based: it indexes the line after the section key.
        for (i, line) in self.lines.iter().copied().enumerate().skip(section_line) {
            let lead = line.trim_start();
            if lead.is_empty() || lead.starts_with('#') {
                continue;
            }
            if indent(line) == 0 {
                break;
            }
            let Some((key, _)) = lead.split_once(':') else {
                continue;
            };
            let key = key.trim_end();
            let key = ["\"", "'"]
                .iter()
                .find_map(|q| key.strip_prefix(q)?.strip_suffix(q))
                .unwrap_or(key);
            keys.entry(key).or_insert(i);
        }
        keys
    }

    /// The second place `key` is written as a key at the start of a line (a duplicate).
    pub fn second_key(&self, key: &str) -> Option<(usize, usize)> {
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| key_column(l, key) == Some(indent(l)))
            .nth(1)
            .map(|(i, l)| (i + 1, indent(l) + 1))
    }

    /// The node's key.
    pub fn node(&self, id: &str) -> Option<(usize, usize)> {
        let i = self.node_line(id)?;
        Some((i + 1, indent(self.lines[i]) + 1))
    }

    /// A field of a node, else the node itself.
    pub fn field(&self, id: &str, field: &str) -> Option<(usize, usize)> {
        let start = self.node_line(id)?;
        let node_indent = indent(self.lines[start]);
        let own_key_end = key_column(self.lines[start], id).map_or(0, |c| c + id.len());
        for (offset, line) in self.lines[start..].iter().enumerate() {
            if offset > 0 && !line.trim().is_empty() && indent(line) <= node_indent {
                break;
            }
            let searched = if offset == 0 {
                &line[own_key_end..]
            } else {
                line
            };
            if let Some(col) = key_column(searched, field) {
                let col = if offset == 0 { col + own_key_end } else { col };
                return Some((start + offset + 1, col + 1));
            }
        }
        self.node(id)
    }

    /// A field of a top-level section such as `server`.
    pub fn section_field(&self, section: &str, field: &str) -> Option<(usize, usize)> {
        let (line, _) = self.top_key(section)?;
        for (offset, text) in self.lines[line - 1..].iter().enumerate() {
            if offset > 0 && !text.trim().is_empty() && indent(text) == 0 {
                break;
            }
            let searched = if offset == 0 {
                &text[section.len() + 1..]
            } else {
                text
            };
            if let Some(col) = key_column(searched, field) {
                let col = if offset == 0 {
                    col + section.len() + 1
                } else {
                    col
                };
                return Some((line + offset, col + 1));
            }
        }
        Some((line, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
server: { listen: 127.0.0.1:8080 }
nodes:
  # a comment
  front:
    type: camera
    width: 640
  front_jpeg: { type: jpeg_encoder, inputs: [front], quality: 120 }
";

    #[test]
    fn finds_block_and_flow_fields() {
        let l = Locator::new(TEXT);
        assert_eq!(l.node("front"), Some((4, 3)));
        assert_eq!(l.field("front", "width"), Some((6, 5)));
        assert_eq!(l.field("front_jpeg", "quality"), Some((7, 54)));
        assert_eq!(l.field("front_jpeg", "inputs"), Some((7, 37)));
        assert_eq!(l.section_field("server", "listen"), Some((1, 11)));
    }

    #[test]
    fn an_empty_key_is_never_found_and_the_search_ends() {
        // Found by tests/fuzz.rs: `server: x` asked for the field "" and the search for an empty
        // needle never moved on (the loader spun forever).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let l = Locator::new("server: x\nnodes:\n  a: { b: 1 }\n");
            let _ = tx.send((key_column("server: x", ""), l.field("a", "")));
        });
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("key_column(\"\") did not return within 5 s");
        assert_eq!(found, (None, Some((3, 3))));
    }

    #[test]
    fn a_missing_field_falls_back_to_the_node() {
        let l = Locator::new(TEXT);
        assert_eq!(l.field("front", "fps"), Some((4, 3)));
        assert_eq!(l.node("nope"), None);
    }
}
