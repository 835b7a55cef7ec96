//! End to end in a real browser: headless Chromium (driven by tests/browser/viewer.mjs through
//! playwright-core) opens the viewer page, reads the frame number painted by the test pattern back
//! from a canvas, and checks that it advances at the camera rate, that the page's `stop` button
//! freezes it and that `start` makes it advance again. Screenshots land in tests/artifacts/browser.
//! Needs node, /usr/bin/chromium and `npm ci --prefix tests/browser`; a missing piece fails the test.

mod common;

use std::path::Path;
use std::process::Command;

use common::{test_camera_yaml, Server};

#[test]
fn the_viewer_page_plays_the_stream_and_its_stop_and_start_buttons_work() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` (CI installs it)"
    );
    let out_dir = root.join("tests/artifacts/browser");
    let server = Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 640, 360, 30)
    ));
    let output = Command::new("node")
        .arg(browser_dir.join("viewer.mjs"))
        .arg(server.url("/"))
        .arg(&out_dir)
        .args(["--camera", "front", "--fps", "30"])
        .current_dir(&browser_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (install Node.js): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "viewer.mjs failed ({}); screenshots in {}\nstdout:\n{stdout}\nstderr:\n{stderr}\ncamgraph log:\n{}",
        output.status,
        out_dir.display(),
        server.log()
    );
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary on stdout:\n{stdout}"));
    assert_eq!(summary["ok"], true, "{summary}");
}
