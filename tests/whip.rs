//! `whip_sink` against a WHIP endpoint camgraph did not write: tests/whip_server.py, an RFC 9725
//! server (POST/201/Location/ETag/DELETE) on Python's asyncio whose receiving peer is aiortc. The
//! frames aiortc decodes carry the test camera's painted frame numbers, read back here with the
//! crate's own `read_marks`. Publishing with a token and the server's ICE servers; the server
//! going away for 5 s and coming back; the DELETE on reload; targets that are no WHIP server.
//! Needs `pip install aiortc`; run on loopback only (`unshare -n`, as CI does).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for, Recorder, Server};
use serde_json::Value;

const W: u32 = 320;
const H: u32 = 240;
const FPS: u32 = 15;

/// A frame aiortc decoded: its session and painted frame number (`None` if unreadable).
#[derive(Clone, Debug)]
struct Decoded {
    session: String,
    /// Its number in the session, from 1.
    n: u64,
    /// An IDR.
    key: bool,
    width: u64,
    height: u64,
    painted: Option<u32>,
}

/// The Python WHIP server, its events as they arrive.
struct WhipServer {
    child: Child,
    port: u16,
    /// Every event but frames, in order.
    events: Arc<Mutex<Vec<Value>>>,
    frames: Arc<Mutex<Vec<Decoded>>>,
}

impl WhipServer {
    fn start(args: &[&str]) -> WhipServer {
        Self::start_on(0, args.iter().map(|a| a.to_string()).collect())
    }

    fn start_on(port: u16, args: Vec<String>) -> WhipServer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(root.join("tests/whip_server.py"))
            .args(["--port", &port.to_string()])
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ev, fr) = (events.clone(), frames.clone());
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                match event["event"].as_str() {
                    Some("listening") => {
                        let _ = tx.send(event["port"].as_u64().unwrap() as u16);
                    }
                    Some("frame") => fr.lock().unwrap().push(decoded(&event)),
                    _ => ev.lock().unwrap().push(event),
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the WHIP server did not start (pip install aiortc)");
        WhipServer {
            child,
            port,
            events,
            frames,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }

    fn frames(&self) -> Vec<Decoded> {
        self.frames.lock().unwrap().clone()
    }

    /// Waits until `n` frames of one session decoded with readable painted numbers; gives them.
    fn wait_frames(&self, n: usize, within: Duration) -> Vec<Decoded> {
        wait_for(&format!("{n} decoded frames"), within, || {
            let frames = self.frames();
            let last = frames.last()?.session.clone();
            let session: Vec<_> = frames
                .into_iter()
                .filter(|f| f.session == last && f.painted.is_some())
                .collect();
            (session.len() >= n).then_some(session)
        })
    }
}

impl Drop for WhipServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A frame event: the painted number read from the band of top rows the server sent.
fn decoded(event: &Value) -> Decoded {
    let hex = event["band"].as_str().unwrap().as_bytes();
    let band: Vec<u8> = hex
        .chunks(2)
        .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
        .collect();
    let width = event["width"].as_u64().unwrap();
    let rows = band.len() as u32 / (width as u32 * 3);
    Decoded {
        session: event["session"].as_str().unwrap().to_string(),
        n: event["n"].as_u64().unwrap(),
        key: event["key"] == true,
        width,
        height: event["height"].as_u64().unwrap(),
        painted: camgraph::plugins::sources::testsrc::read_marks(&band, width as u32, rows)
            .map(|m| m.seq),
    }
}

/// Painted numbers go forward: over `frames`, they advance by at least `min_advance`, and
/// never step back.
fn assert_advancing(frames: &[Decoded], min_advance: u32) {
    let numbers: Vec<u32> = frames.iter().filter_map(|f| f.painted).collect();
    let backwards = numbers.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(backwards, 0, "painted numbers went back: {numbers:?}");
    let advance = numbers.last().unwrap() - numbers.first().unwrap();
    assert!(advance >= min_advance, "painted numbers: {numbers:?}");
}

fn graph_yaml(sinks: &[(&str, String)]) -> String {
    let mut yaml = format!(
        "nodes:\n  \
         front: {{ type: camera, source: test, width: {W}, height: {H}, fps: {FPS} }}\n  \
         front_jpeg: {{ type: jpeg_encoder, inputs: [front] }}\n  \
         front_mjpeg: {{ type: mjpeg_sink, inputs: [front_jpeg] }}\n  \
         front_h264: {{ type: h264_encoder, inputs: [front], bitrate_kbps: 1000, keyframe_interval: 600 }}\n"
    );
    for (id, settings) in sinks {
        yaml.push_str(&format!(
            "  {id}: {{ type: whip_sink, inputs: [front_h264], {settings} }}\n"
        ));
    }
    yaml
}

fn sink_state(server: &Server, id: &str) -> String {
    server.node(id)["stats"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn whip_sink_publishes_with_its_token_and_the_servers_ice_servers() {
    let token = "whip-secret-0123456789abcdef";
    let media = WhipServer::start(&[
        "--token",
        token,
        "--link",
        "<stun:127.0.0.1:3478>; rel=\"ice-server\"",
        "--pli-at",
        "40",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("whip.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let server = Server::start(&graph_yaml(&[(
        "front_whip",
        format!(
            "url: \"{}\", token_file: \"{}\"",
            media.url("/whip/cam"),
            token_file.display()
        ),
    )]));
    let t0 = Instant::now();
    let frames = media.wait_frames(30, Duration::from_secs(30));
    println!(
        "first 30 frames decoded by aiortc {} ms after start",
        t0.elapsed().as_millis()
    );
    assert!(frames
        .iter()
        .all(|f| (f.width, f.height) == (W as u64, H as u64)));
    assert_advancing(&frames, 20);

    // The token went as a bearer token; the first session announced a STUN server, so the
    // sink deleted it and offered again with that server.
    let posts = media.events("post");
    assert!(posts.len() >= 2, "{posts:?}");
    assert!(posts
        .iter()
        .all(|p| p["authorization"] == format!("Bearer {token}")));
    let first = format!("/whip/cam/{}", posts[0]["session"].as_str().unwrap());
    let deletes = media.events("delete");
    assert!(
        deletes
            .iter()
            .any(|d| d["path"] == first && d["status"] == 200),
        "the first session was not deleted: {deletes:?}"
    );
    let whip = server.node("front_whip");
    assert_eq!(whip["state"], "running", "{whip}");
    assert_eq!(whip["stats"]["state"], "publishing", "{whip}");
    assert_eq!(whip["stats"]["error"], Value::Null, "{whip}");
    assert_eq!(
        whip["stats"]["ice_servers"],
        serde_json::json!(["stun:127.0.0.1:3478"])
    );
    assert!(whip["stats"]["sent"].as_u64().unwrap() >= 30, "{whip}");
    assert_eq!(
        server.metric("camgraph_sink_state{camera=\"front\",node=\"front_whip\",state=\"publishing\",type=\"whip_sink\"}"),
        Some(1.0)
    );

    // The receiver's PLI at its 40th frame brings a keyframe (periodic ones are 40 s apart).
    let pli = wait_for("the receiver's PLI", Duration::from_secs(10), || {
        media.events("pli").into_iter().last()
    });
    let session = pli["session"].as_str().unwrap().to_string();
    let at = pli["n"].as_u64().unwrap();
    let key_after = wait_for("a keyframe after the PLI", Duration::from_secs(5), || {
        let frames = media.frames();
        let after: Vec<_> = frames
            .iter()
            .filter(|f| f.session == session && f.n > at)
            .collect();
        (after.len() >= 15).then(|| after.iter().find(|f| f.key).map(|f| f.n))
    });
    let keys_before: Vec<u64> = media
        .frames()
        .iter()
        .filter(|f| f.session == session && f.key && f.n > at.saturating_sub(15) && f.n <= at)
        .map(|f| f.n)
        .collect();
    println!(
        "PLI at frame {at}: keyframe at {key_after:?}; keyframes in the 15 before: {keys_before:?}"
    );
    assert!(keys_before.is_empty(), "{keys_before:?}");
    assert!(key_after.is_some_and(|n| n <= at + 15), "{key_after:?}");
    let requests = server.node("front_whip")["stats"]["keyframe_requests"].as_u64();
    assert!(requests >= Some(1), "{requests:?}");
    assert!(!server.log().contains(token), "the token was logged");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn publishing_resumes_after_the_server_is_gone_for_5_s() {
    let media = WhipServer::start(&[]);
    let server = Server::start(&graph_yaml(&[(
        "front_whip",
        format!("url: \"{}\"", media.url("/whip/cam")),
    )]));
    let before = media.wait_frames(15, Duration::from_secs(30));
    assert_advancing(&before, 10);
    let last_before = before.last().unwrap().painted.unwrap();

    let (gone, port) = (Instant::now(), media.port);
    // Killed and waited for: its port is free again.
    drop(media);
    let mut states = Vec::new();
    while gone.elapsed() < Duration::from_secs(5) {
        states.push(sink_state(&server, "front_whip"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let media = media_back(&server, port, &mut states);
    let after = media.wait_frames(15, Duration::from_secs(45));
    println!(
        "publishing again {} ms after the server went away (it was gone 5 s)",
        gone.elapsed().as_millis()
    );
    assert_advancing(&after, 10);
    assert!(after[0].painted.unwrap() > last_before);
    states.push(sink_state(&server, "front_whip"));
    states.dedup();
    println!("sink states meanwhile: {states:?}");
    assert!(
        states.iter().any(|s| s == "down" || s == "connecting"),
        "{states:?}"
    );
    assert_eq!(states.last().map(String::as_str), Some("publishing"));
    let reconnects = server.metric(
        "camgraph_sink_reconnects_total{camera=\"front\",node=\"front_whip\",type=\"whip_sink\"}",
    );
    assert!(reconnects >= Some(1.0), "{reconnects:?}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Restarts the WHIP server on its old port, recording the sink's states until it publishes.
fn media_back(server: &Server, port: u16, states: &mut Vec<String>) -> WhipServer {
    let media = WhipServer::start_on(port, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline && media.frames().is_empty() {
        states.push(sink_state(server, "front_whip"));
        std::thread::sleep(Duration::from_millis(100));
    }
    media
}

#[test]
fn the_sinks_delete_arrives_on_reload() {
    let media = WhipServer::start(&[]);
    let with_sink = graph_yaml(&[("front_whip", format!("url: \"{}\"", media.url("/whip/cam")))]);
    let server = Server::start(&with_sink);
    media.wait_frames(10, Duration::from_secs(30));
    let session = format!(
        "/whip/cam/{}",
        media.events("post")[0]["session"].as_str().unwrap()
    );
    assert!(media.events("delete").is_empty());
    let mut viewer = server.mjpeg("/api/camera/stream/front");
    server.rewrite_config(&graph_yaml(&[]));
    let delete = wait_for("the sink's DELETE", Duration::from_secs(10), || {
        media.events("delete").into_iter().next()
    });
    assert_eq!(delete["path"], session.as_str(), "{delete}");
    assert_eq!(delete["status"], 200, "{delete}");
    let (_, graph) = server.get_json("/api/graph");
    assert!(
        !graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "front_whip"),
        "{graph}"
    );
    // The camera's MJPEG viewer goes on.
    for _ in 0..5 {
        viewer.next_part().unwrap().unwrap();
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn bad_targets_are_down_with_a_clear_error_and_leave_the_camera_alone() {
    let media = WhipServer::start(&[]);
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_port = nobody.local_addr().unwrap().port();
    drop(nobody);
    let cases = [
        (
            "unresolvable",
            "http://no-such-host.invalid:8889/cam/whip".to_string(),
            "cannot reach the WHIP server",
        ),
        (
            "refused",
            format!("http://127.0.0.1:{refused_port}/cam/whip"),
            "cannot reach the WHIP server",
        ),
        (
            "not_found",
            media.url("/notfound"),
            "refused the offer (404): no such stream",
        ),
        (
            "html",
            media.url("/html"),
            "answered 200 with an HTML page, not an SDP answer",
        ),
    ];
    let mut sinks: Vec<(&str, String)> = cases
        .iter()
        .map(|(id, url, _)| (*id, format!("url: \"{url}\"")))
        .collect();
    let server = Server::start(&graph_yaml(&sinks));
    let viewer = Recorder::start(&server, "/api/camera/stream/front", false);
    let t0 = Instant::now();
    for (id, url, error) in &cases {
        let down = wait_for(
            &format!("{id} to be down with its error"),
            Duration::from_secs(20),
            || {
                let n = server.node(id);
                (n["stats"]["state"] == "down").then_some(n)
            },
        );
        let said = down["stats"]["error"].as_str().unwrap_or("");
        println!("{id}: {said}");
        assert!(said.contains(error), "{id}: {down}");
        // Only the server's origin: a WHIP URL's path may hold a stream key.
        assert!(!said.contains(url.as_str()), "{id}: {said}");
        assert_eq!(down["state"], "down", "{id}: {down}");
    }
    // A token that cannot be read fails that node alone (added by a reload here; in the file at
    // start it stops camgraph from starting, as server.auth's do), saying where it looked.
    sinks.push((
        "no_token",
        format!(
            "url: \"{}\", token_file: /no/such/whip.token",
            media.url("/whip/cam")
        ),
    ));
    server.rewrite_config(&graph_yaml(&sinks));
    let failed = wait_for(
        "the node without its token to fail",
        Duration::from_secs(10),
        || {
            let (_, graph) = server.get_json("/api/graph");
            graph["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["id"] == "no_token" && n["state"] == "failed")
                .cloned()
        },
    );
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("the WHIP token: cannot read token_file /no/such/whip.token"),
        "{failed}"
    );
    // Still down a while later, not flapping into a panic, and the camera streams all along.
    std::thread::sleep(Duration::from_secs(2));
    for (id, _, _) in &cases {
        assert_ne!(sink_state(&server, id), "publishing");
    }
    let (seen, ended) = viewer.finish();
    let seconds = t0.elapsed().as_secs_f64();
    assert!(!ended, "the MJPEG viewer's stream ended");
    assert!(
        seen.len() as f64 >= seconds * FPS as f64 * 0.6,
        "{} frames in {seconds:.1} s",
        seen.len()
    );
    assert!(
        seen.iter().all(|s| s.0.is_some()),
        "the camera sent a no-signal picture"
    );
    assert!(media.events("post").is_empty());
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn the_sinks_delete_arrives_when_camgraph_is_stopped() {
    let media = WhipServer::start(&[]);
    let mut server = Server::start(&graph_yaml(&[(
        "front_whip",
        format!("url: \"{}\"", media.url("/whip/cam")),
    )]));
    media.wait_frames(10, Duration::from_secs(30));
    let session = format!(
        "/whip/cam/{}",
        media.events("post")[0]["session"].as_str().unwrap()
    );
    let (status, took) = server.signal_and_wait("TERM", Duration::from_secs(10));
    println!("exit after SIGTERM in {} ms", took.as_millis());
    assert!(status.success(), "{status:?}");
    let delete = wait_for("the sink's DELETE", Duration::from_secs(5), || {
        media.events("delete").into_iter().next()
    });
    assert_eq!(delete["path"], session.as_str(), "{delete}");
}
