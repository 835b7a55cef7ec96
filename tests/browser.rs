//! End to end in a real browser: headless Chromium (driven by tests/browser/viewer.mjs through
//! playwright-core) opens the viewer page, reads the frame number painted by the test pattern back
//! from a canvas, and checks that it advances at the camera rate, that the page's `Stop` button
//! freezes it and that `Start` makes it advance again. Screenshots land in tests/artifacts/browser.
//! A bare `<img>` of the stream is read back the same way in both wire forms (tests/browser/mjpeg-img.mjs).
//! Needs node, /usr/bin/chromium and `npm ci --prefix tests/browser`; a missing piece fails the test.

mod common;

use std::path::Path;

use common::{test_camera_yaml, Server};

#[test]
fn the_viewer_page_plays_the_stream_and_its_stop_and_start_buttons_work() {
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/browser");
    let server = Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 640, 360, 30)
    ));
    let (url, out) = (server.url("/"), out_dir.display().to_string());
    let summary: serde_json::Value = common::run_browser_script(
        &server,
        "viewer.mjs",
        &[&url, &out, "--camera", "front", "--fps", "30"],
    );
    assert_eq!(summary["ok"], true, "{summary}");
}

/// A bare `<img>` of the stream shows frames advancing at the camera rate both in the form an image
/// request gets by its `Accept` header (advance headers) and in the classic form (`?advance=0`).
#[test]
fn an_img_of_the_stream_plays_in_both_wire_forms() {
    let server = Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 640, 360, 30)
    ));
    let summary = common::run_browser_script(
        &server,
        "mjpeg-img.mjs",
        &[
            &server.url("/"),
            "--camera",
            "front",
            "--fps",
            "30",
            "--ms",
            "2000",
        ],
    );
    assert_eq!(summary["ok"], true, "{summary}");
    for form in ["advance", "classic"] {
        assert!(
            summary["forms"][form]["frames"].as_u64().unwrap_or(0) >= 20,
            "{form}: {summary}"
        );
    }
}
