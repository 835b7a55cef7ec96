//! The viewer as an operator's console, end to end in headless Chromium (tests/browser/console.mjs
//! through playwright-core): a grid of 16 cameras in two tabs, the stream manager (WebRTC and
//! MJPEG in place, per-viewer resolution, fps, bitrate), and the operator's views (add/remove,
//! reload errors, a server restart under the page, signing in with a token). Screenshots land in tests/artifacts/console.
//! Needs node, /usr/bin/chromium and `npm ci --prefix tests/browser`.

mod common;

use std::path::Path;

use common::Server;

fn out_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/artifacts/console")
        .display()
        .to_string()
}

fn run(server: &Server, mode: &str, extra: &[&str]) -> serde_json::Value {
    let (url, out) = (server.url(""), out_dir());
    let mut args = vec![mode, &url, &out];
    args.extend_from_slice(extra);
    let summary: serde_json::Value = common::run_browser_script(server, "console.mjs", &args);
    assert_eq!(summary["ok"], true, "{summary}");
    summary
}

#[test]
fn sixteen_cameras_move_in_two_tabs_and_stop_freezes_only_one() {
    let mut yaml = String::from("cameras:\n");
    for i in 1..=16 {
        yaml.push_str(&format!(
            "  cam{i:02}: {{ source: test, width: 320, height: 240, fps: 12, webrtc: false }}\n"
        ));
    }
    let server = Server::start(&yaml);
    let summary = run(&server, "grid", &[]);
    println!(
        "16 cameras: all live {} ms after opening; Stop froze one in {} ms; second tab listed them in {} ms",
        summary["firstLiveMs"], summary["freezeMs"], summary["secondListMs"]
    );
}

#[test]
fn a_viewer_switches_webrtc_and_mjpeg_and_picks_its_own_size_fps_and_bitrate() {
    let server =
        Server::start("cameras:\n  front: { source: test, width: 1280, height: 720, fps: 30 }\n");
    let summary = run(&server, "streams", &[]);
    println!("streams: {summary}");
}

#[test]
fn the_operator_adds_removes_sees_reload_errors_and_the_page_heals_after_a_restart() {
    let server = Server::start(
        "cameras:\n  front: { source: test, width: 640, height: 360, fps: 15, webrtc: false }\n",
    );
    let pid = server.pid().to_string();
    let listen = server.base.trim_start_matches("http://").to_string();
    let config = server.config.display().to_string();
    let summary = run(
        &server,
        "operator",
        &[
            "--pid",
            &pid,
            "--bin",
            env!("CARGO_BIN_EXE_camgraph"),
            "--config",
            &config,
            "--listen",
            &listen,
        ],
    );
    println!(
        "operator: tiles live {} ms after the server came back",
        summary["recoverMs"]
    );
}

#[test]
fn a_browser_without_a_token_gets_a_sign_in_form_and_then_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let token = "view-token-for-the-console-0123";
    let token_file = dir.path().join("view.token");
    std::fs::write(&token_file, token).unwrap();
    let server = Server::start(&format!(
        "server: {{ auth: {{ tokens: [ {{ name: laptop, token_file: {}, role: view }} ] }} }}\n\
         cameras:\n  front: {{ source: test, width: 640, height: 360, fps: 15, webrtc: false }}\n",
        token_file.display()
    ));
    let summary = run(&server, "signin", &["--token", token]);
    println!(
        "sign-in: the console was live {} ms after Sign in",
        summary["liveMs"]
    );
}
