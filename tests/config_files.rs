//! Golden tests for configuration errors (configs/invalid/NAME.yaml must produce exactly
//! NAME.expected) and `camgraph check` on every file in configs/.

use std::path::{Path, PathBuf};
use std::process::Command;

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_invalid_fixture_gives_exactly_its_expected_errors() {
    std::env::set_current_dir(root()).unwrap();
    let registry = camgraph::plugins::registry();
    let fixtures = yaml_files(Path::new("configs/invalid"));
    assert!(fixtures.len() >= 10, "fixtures: {fixtures:?}");
    for file in fixtures {
        let expected = std::fs::read_to_string(file.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", file.display()));
        let errors = camgraph::config::load_file(&file, &registry)
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", file.display()));
        assert_eq!(
            errors.to_string(),
            expected.trim_end(),
            "fixture {}",
            file.display()
        );
    }
}

#[test]
fn camgraph_check_accepts_every_shipped_config_and_rejects_every_fixture() {
    let check = |files: &[PathBuf]| {
        Command::new(env!("CARGO_BIN_EXE_camgraph"))
            .current_dir(root())
            .arg("check")
            .args(files)
            .output()
            .unwrap()
    };
    let good: Vec<PathBuf> = [
        yaml_files(&root().join("configs")),
        yaml_files(&root().join("configs/examples")),
    ]
    .concat()
    .into_iter()
    .map(|p| p.strip_prefix(root()).unwrap().to_path_buf())
    .collect();
    assert!(good.len() >= 3);
    let out = check(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "camgraph check failed on shipped configs:\n{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with("nodes)")).count(),
        good.len(),
        "{stdout}"
    );

    for file in yaml_files(&root().join("configs/invalid")) {
        let relative = file.strip_prefix(root()).unwrap().to_path_buf();
        let out = check(std::slice::from_ref(&relative));
        assert_eq!(out.status.code(), Some(1), "{}", relative.display());
        let expected = std::fs::read_to_string(file.with_extension("expected")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "{}",
            relative.display()
        );
    }
}

#[test]
fn the_embedded_default_is_configs_default_yaml() {
    let on_disk = std::fs::read_to_string(root().join("configs/default.yaml")).unwrap();
    assert_eq!(camgraph::DEFAULT_CONFIG, on_disk);
    let registry = camgraph::plugins::registry();
    let spec = camgraph::config::parse("default", camgraph::DEFAULT_CONFIG, &registry).unwrap();
    assert_eq!(spec.server.listen.to_string(), "127.0.0.1:8080");
    let camera = spec.nodes.iter().find(|n| n.type_name == "camera").unwrap();
    assert_eq!(camera.raw["width"], 1280);
    assert_eq!(camera.raw["fps"], 30);
    // The whole guide: MJPEG and, for its WebRTC client and WHEP, the H.264 chain.
    let types: Vec<&str> = spec.nodes.iter().map(|n| n.type_name.as_str()).collect();
    for needed in ["mjpeg_sink", "h264_encoder", "adaptive", "webrtc_sink"] {
        assert!(types.contains(&needed), "{needed} missing from {types:?}");
    }
}

#[test]
fn a_missing_file_names_the_file() {
    let registry = camgraph::plugins::registry();
    let err = camgraph::config::load_file(Path::new("/no/such.yaml"), &registry)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .starts_with("/no/such.yaml: cannot read the file:"),
        "{err}"
    );
}

/// The two hostile files of the reload probe: 100,000 nested `[` (200 KB) and 8,000 bad nodes.
fn hostile_files() -> (String, String) {
    let deep = format!("nodes: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let mut bad = String::from("nodes:\n");
    for i in 0..8000 {
        bad.push_str(&format!("  n{i}: {{ type: nosuch_{i}, bad: 1 }}\n"));
    }
    (deep, bad)
}

#[test]
fn a_deeply_nested_file_is_rejected_at_the_depth_it_passes() {
    let registry = camgraph::plugins::registry();
    let (deep, _) = hostile_files();
    let err = camgraph::config::parse("deep.yaml", &deep, &registry)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err.trim(),
        "deep.yaml:1:72: nesting deeper than 64 levels of '[' or '{'"
    );
    // Brackets in quoted scalars and comments are not nesting.
    let quoted = format!(
        "nodes: {{}}  # {}\nserver: {{ hosts: ['{}', \"{}\"] }}\n",
        "[".repeat(100),
        "[".repeat(100),
        "{".repeat(100)
    );
    let err = camgraph::config::parse("q.yaml", &quoted, &registry)
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("nesting"), "{err}");
}

#[test]
fn a_file_of_8000_bad_nodes_names_each_one_at_its_line() {
    let registry = camgraph::plugins::registry();
    let (_, bad) = hostile_files();
    let err = camgraph::config::parse("bad.yaml", &bad, &registry)
        .err()
        .unwrap();
    assert!(err.0.len() >= 8000, "{}", err.0.len());
    let last = err
        .0
        .iter()
        .rfind(|e| e.node.as_deref() == Some("n7999"))
        .unwrap();
    assert_eq!(
        (last.line, last.column),
        (8001, 12),
        "its type field: {last}"
    );
}

#[test]
fn a_file_larger_than_the_bound_is_refused_before_it_is_read() {
    let registry = camgraph::plugins::registry();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(camgraph::config::MAX_FILE_BYTES + 1).unwrap();
    let err = camgraph::config::load_file(&path, &registry)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("larger than 4194304 bytes"), "{err}");
}
