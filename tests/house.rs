//! The house rules that keep camgraph's core independent of its plugins, checked on the source
//! tree, and a plugin that panics while starting, which must fail only its own node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use camgraph::app::App;
use camgraph::client;
use camgraph::error::BuildError;
use camgraph::graph::live::Reload;
use camgraph::node::{BuildContext, FieldIssue, NodeConfig, NodeHandle};
use camgraph::port::{PortKind, Ports};

fn files_under(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, ext, out);
        } else if ext
            .iter()
            .any(|e| path.extension().is_some_and(|x| x == *e))
        {
            out.push(path);
        }
    }
}

/// The code of a file before its unit tests (`#[cfg(test)]`), without `//` comments.
fn code_outside_tests(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

#[test]
fn the_core_names_no_plugin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    files_under(&root.join("src"), &["rs"], &mut files);
    let mut found = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap();
        if rel == Path::new("src/main.rs") || rel.starts_with("src/bin") {
            continue; // they compose the core with the plugins
        }
        for (line, code) in code_outside_tests(file) {
            // lib.rs compiles plugins/ into the crate; nothing else may reach into it.
            if rel == Path::new("src/lib.rs") && code.trim() == "pub mod plugins;" {
                continue;
            }
            if code.contains("plugins") {
                found.push(format!("{}:{line}: {}", rel.display(), code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core must not name the plugins (main.rs hands it the registry):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_core_and_the_page_spell_no_plugin_type() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `camera` is also the core's word for a source (the metric label, the API's `?camera=`).
    let types: Vec<&str> = camgraph::plugins::registry()
        .type_names()
        .filter(|t| *t != "camera")
        .collect();
    assert!(types.contains(&"mjpeg_sink"), "{types:?}");
    let mut files = Vec::new();
    files_under(&root.join("src"), &["rs"], &mut files);
    files_under(&root.join("web"), &["html", "js", "mjs", "css"], &mut files);
    let mut found = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap();
        for (line, code) in code_outside_tests(file) {
            let spelled =
                |t: &&str| code.contains(&format!("\"{t}\"")) || code.contains(&format!("'{t}'"));
            if types.iter().any(spelled) {
                found.push(format!("{}:{line}: {}", rel.display(), code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "ask what a node offers (capabilities, /api/graph 'offers') instead of matching its type:\n{}",
        found.join("\n")
    );
}

/// A node type whose `build()` panics, as a buggy plugin might.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PanicsOnStart {}

impl NodeConfig for PanicsOnStart {
    const TYPE: &'static str = "panics_on_start";
    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::Frames, None)
    }
    fn validate(&self) -> Vec<FieldIssue> {
        Vec::new()
    }
    fn build(&self, _: BuildContext) -> Result<NodeHandle, BuildError> {
        panic!("this plugin is broken")
    }
}

const GOOD: &str = "\
cameras:
  front: { source: test, width: 320, height: 240, fps: 10, webrtc: false }
";

fn get(base: &str, path: &str) -> (u16, String) {
    let r = client::get(&format!("{base}{path}")).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status;
    if r.header("content-type")
        .is_some_and(|t| t.starts_with("multipart/"))
    {
        return (status, String::new()); // an endless stream: its status is the answer
    }
    (status, r.text().unwrap_or_default())
}

#[test]
fn a_plugin_that_panics_while_starting_fails_its_node_not_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("graph.yaml");
    std::fs::write(&config, GOOD).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = config.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let mut registry = camgraph::plugins::registry();
            registry.register::<PanicsOnStart>();
            let registry = Arc::new(registry);
            let spec = camgraph::config::load_file(&path, &registry).unwrap();
            let mut server = spec.server.clone();
            server.listen = "127.0.0.1:0".parse().unwrap();
            let app = App::start(spec, Some(path), registry, &server).unwrap();
            let base = format!("http://{}", app.addr);
            tx.send((base, app.supervisor.clone(), app.handle()))
                .unwrap();
            let _ = app.run().await;
        });
    });
    let (base, supervisor, server) = rx.recv_timeout(Duration::from_secs(30)).unwrap();

    // The file gains a node whose plugin panics in build(); the reload reports it as failed.
    std::fs::write(
        &config,
        format!("{GOOD}nodes:\n  broken: {{ type: panics_on_start, inputs: [front] }}\n"),
    )
    .unwrap();
    let (status, body) = {
        let r = client::request("POST", &format!("{base}/api/graph/reload"), &[], None).unwrap();
        (r.status, r.text().unwrap())
    };
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let failed = &reply["changes"]["failed"][0];
    assert_eq!(failed["node"], "broken", "{reply}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("panicked while starting: this plugin is broken"),
        "{reply}"
    );

    // The graph says so, and every route still answers.
    let (status, graph) = get(&base, "/api/graph");
    assert_eq!(status, 200);
    let graph: serde_json::Value = serde_json::from_str(&graph).unwrap();
    let broken = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "broken")
        .expect("the broken node is listed")
        .clone();
    assert_eq!(broken["state"], "failed", "{broken}");
    assert!(broken["error"]
        .as_str()
        .unwrap()
        .contains("this plugin is broken"));
    let deadline = Instant::now() + Duration::from_secs(10);
    for (path, want) in [
        ("/healthz", 200),
        ("/", 200),
        ("/metrics", 200),
        ("/api/graph", 200),
        ("/api/stats", 200),
        ("/api/stats/front", 200),
        ("/api/camera/cameras", 200),
        ("/api/camera/snapshot/front", 200),
        ("/api/camera/stream/front", 200),
        ("/webrtc", 200),
        ("/api/webrtc/ws?camera=front", 404), // no webrtc_sink in this graph: a clear 404
        ("/no/such/route", 404),
    ] {
        assert!(Instant::now() < deadline, "the server got slow");
        let (status, body) = get(&base, path);
        assert_eq!(status, want, "{path}: {body}");
    }
    let r = client::request("POST", &format!("{base}/api/camera/stop"), &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text().unwrap(), r#"{"status":"stopped"}"#);

    // The owner is alive too: a good file applies, and the failed node is gone.
    std::fs::write(&config, GOOD).unwrap();
    let reloaded = actix_web::rt::System::new()
        .block_on(async move { supervisor.send(Reload { trigger: "api" }).await });
    assert!(reloaded.unwrap().is_ok());
    let (_, graph) = get(&base, "/api/graph");
    assert!(!graph.contains("broken"), "{graph}");
    actix_web::rt::System::new().block_on(server.stop(false));
}
