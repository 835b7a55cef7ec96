//! The `camgraph` command as a service manager and a shell see it: SIGTERM and SIGINT shut it down
//! the same graceful way, promptly even with a viewer streaming; `--listen` does not make reloads
//! warn about server settings; `camgraph check` stops quietly when its reader goes away.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{test_camera_yaml, wait_for, Recorder, Server};

fn graph_yaml(fps: u32) -> String {
    format!("nodes:\n{}", test_camera_yaml("front", 320, 240, fps))
}

/// Starts camgraph with a viewer streaming, sends `signal`, and checks the shutdown.
fn shuts_down_gracefully_on(signal: &str) {
    let mut server = Server::start(&graph_yaml(30));
    let viewer = Recorder::start(&server, "/api/camera/stream/front", false);
    wait_for("the viewer's first frames", Duration::from_secs(10), || {
        server
            .metric("camgraph_frames_sent_total")
            .filter(|&n| n >= 3.0)
    });

    let (status, took) = server.signal_and_wait(signal, Duration::from_secs(20));
    println!("SIG{signal} with a viewer streaming: exited in {took:?}");
    assert!(status.success(), "SIG{signal}: exit status {status}");
    let line = format!("SIG{signal} received: shutting down");
    wait_for(
        &format!("'{line}' in the log"),
        Duration::from_secs(5),
        || server.log().contains(&line).then_some(()),
    );
    // The graceful stop does not wait on the viewer's endless body (it used to, for 30 s).
    assert!(
        took < Duration::from_secs(5),
        "SIG{signal} took {took:?} with a viewer connected"
    );
    let (seen, ended) = viewer.finish();
    assert!(!seen.is_empty());
    assert!(ended, "the viewer's stream did not end cleanly");
}

#[test]
fn sigterm_shuts_down_gracefully() {
    shuts_down_gracefully_on("TERM");
}

#[test]
fn sigint_shuts_down_gracefully() {
    shuts_down_gracefully_on("INT");
}

/// An open WebSocket is a connection the graph does not end; the HTTP server's graceful stop
/// closes it after its short timeout instead of waiting actix's default 30 s.
#[cfg(feature = "webrtc")]
#[test]
fn sigterm_with_a_websocket_open_exits_promptly() {
    use std::io::Write;
    let yaml = "nodes:\n  \
                front: { type: camera, source: test, width: 320, height: 240 }\n  \
                front_h264: { type: h264_encoder, inputs: [front] }\n  \
                front_rtc: { type: webrtc_sink, inputs: [front_h264] }\n";
    let mut server = Server::start(yaml);
    let host = server.base.trim_start_matches("http://").to_string();
    let mut socket = std::net::TcpStream::connect(&host).unwrap();
    write!(
        socket,
        "GET /api/webrtc/ws?camera=front HTTP/1.1\r\nHost: {host}\r\nOrigin: {}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.base
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(&socket).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");

    let (exit, took) = server.signal_and_wait("TERM", Duration::from_secs(40));
    println!("SIGTERM with a WebSocket open: exited in {took:?}");
    assert!(exit.success(), "exit status {exit}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} with a WebSocket open"
    );
}

#[test]
fn a_reload_under_listen_warns_only_when_the_server_settings_change() {
    // Server::start passes --listen 127.0.0.1:0; the file says nothing about `server:`.
    let server = Server::start(&graph_yaml(30));
    let reloads = |n: usize| {
        let server = &server;
        move || (server.log().matches("configuration reloaded").count() >= n).then_some(())
    };

    server.rewrite_config(&graph_yaml(15));
    wait_for("the first reload", Duration::from_secs(10), reloads(1));
    let log = server.log();
    assert!(
        !log.contains("restart camgraph"),
        "a reload that changed only a node warned about server settings:\n{log}"
    );

    // The warning still comes when the file's server settings do change.
    server.rewrite_config(&format!(
        "server: {{ cors_origins: [\"http://robot.local:5173\"] }}\n{}",
        graph_yaml(15)
    ));
    wait_for("the second reload", Duration::from_secs(10), reloads(2));
    assert!(
        server.log().contains("restart camgraph"),
        "{}",
        server.log()
    );
}

#[test]
fn check_stops_quietly_when_its_reader_goes_away() {
    // Far more errors than a pipe buffers, so camgraph is still writing when the reader leaves.
    let mut yaml = String::from("nodes:\n");
    for i in 0..5000 {
        yaml += &format!("  cam{i}: {{ type: camera, source: test, fps: 500 }}\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.yaml");
    std::fs::write(&file, yaml).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_camgraph"))
        .arg("check")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("'fps' must be 1..=120 (got 500)"), "{first}");
    drop(stdout); // `| head -1`
    let (stderr, status) = finish(&mut child);
    assert!(
        stderr.is_empty(),
        "camgraph check wrote to stderr on a closed pipe:\n{stderr}"
    );
    assert_eq!(status.code(), Some(1), "the file has errors");
}

#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    // A free port, so the test can reach camgraph without reading its stdout.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("graph.yaml");
    std::fs::write(&config, graph_yaml(30)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_camgraph"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed long before camgraph gets to print its "listening on" line (`camgraph | true`).
    drop(child.stdout.take());
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    wait_for("camgraph to answer", Duration::from_secs(30), || {
        camgraph::client::get(&healthz)
            .ok()
            .filter(|r| r.status == 200)
    });
    // Signals are caught before the server answers: this takes the graceful path, after the
    // "listening on" line was written (or failed to be).
    let kill = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (stderr, status) = finish(&mut child);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "exit status {status}\n{stderr}");
}

/// What `child` wrote on stderr, and how it ended.
fn finish(child: &mut std::process::Child) -> (String, std::process::ExitStatus) {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (stderr, child.wait().unwrap())
}

/// The shutdown bound with a crowd: 20 MJPEG viewers and an aiortc WebRTC peer. The viewers see
/// their streams end cleanly and the peer is closed by the server (not left to time out).
#[cfg(feature = "webrtc")]
#[test]
fn sigterm_with_twenty_viewers_and_a_webrtc_peer_exits_within_the_bound() {
    let yaml = "nodes:\n  \
                front: { type: camera, source: test, width: 640, height: 360, fps: 30 }\n  \
                front_jpeg: { type: jpeg_encoder, inputs: [front] }\n  \
                front_mjpeg: { type: mjpeg_sink, inputs: [front_jpeg] }\n  \
                front_h264: { type: h264_encoder, inputs: [front] }\n  \
                front_rtc: { type: webrtc_sink, inputs: [front_h264] }\n";
    let mut server = Server::start(yaml);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut peer = Command::new("python3")
        .arg(root.join("tests/aiortc_client.py"))
        .args([server.base.as_str(), "front", "until-closed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    let mut peer_out = BufReader::new(peer.stdout.take().unwrap());
    let mut first = String::new();
    peer_out.read_line(&mut first).unwrap();
    assert!(
        first.contains("first_frame"),
        "the aiortc peer got no frame: {first}\n{}",
        server.log()
    );
    let viewers: Vec<_> = (0..20)
        .map(|_| Recorder::start(&server, "/api/camera/stream/front", false))
        .collect();
    wait_for(
        "20 MJPEG viewers with frames",
        Duration::from_secs(15),
        || {
            let viewers =
                server.metric("camgraph_viewers{camera=\"front\",node=\"front_mjpeg\"")?;
            let sent = server
                .metric("camgraph_frames_sent_total{camera=\"front\",node=\"front_mjpeg\"")?;
            (viewers >= 20.0 && sent >= 60.0).then_some(())
        },
    );

    let (status, took) = server.signal_and_wait("TERM", Duration::from_secs(40));
    println!("SIGTERM with 20 MJPEG viewers and a WebRTC peer: exited in {took:?}");
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?}");
    for (i, viewer) in viewers.into_iter().enumerate() {
        let (seen, ended) = viewer.finish();
        assert!(!seen.is_empty(), "viewer {i} saw nothing");
        assert!(ended, "viewer {i}'s stream did not end cleanly");
    }
    let mut last = String::new();
    peer_out.read_to_string(&mut last).unwrap();
    let peer_status = peer.wait().unwrap();
    let mut peer_err = String::new();
    let _ = peer.stderr.take().unwrap().read_to_string(&mut peer_err);
    assert!(peer_status.success(), "aiortc peer: {last}\n{peer_err}");
    let result: serde_json::Value = serde_json::from_str(last.trim()).expect("JSON line");
    println!("the WebRTC peer: {result}");
    assert_eq!(
        result["end"], "closed",
        "the server did not close the peer: {result}"
    );
}
