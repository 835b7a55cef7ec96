//! RTSP cameras end to end, against an RTSP server camgraph did not write: GStreamer's
//! gst-rtsp-server (tests/rtsp_server.py, Debian's python3-gi, gir1.2-gst-rtsp-server-1.0 and
//! gstreamer1.0-plugins-{base,good,ugly}) serving a 640x360 30 fps x264 test pattern on loopback.
//! camgraph passes the camera's H.264 to headless Chromium (tests/browser/rtsp.mjs, over WHEP and
//! the WebSocket signalling) with no encoder in the chain, the frame number and capture time the
//! server paints into its frames (`--marks`) read back in order in the pages, with the
//! glass-to-glass latency printed; the server stopped for 5 s leaves the
//! camera `down`, and the same peers get pictures again when it returns; an aiortc peer sees the
//! "no signal" picture meanwhile (by its colour). An `adaptive` node over the camera keeps its
//! stream as the top step and decodes and encodes a lower step only while an aiortc peer sits on
//! it. A JPEG stream (`--codec jpeg`) gives a camera set
//! to `codec: mjpeg` its JPEGs. Bad sources (a closed port, a server that sends garbage, a wrong
//! path, the wrong codec) are clear errors in `/api/graph`. Run in a
//! loopback-only namespace like CI: `unshare -n bash -c 'ip link set lo up && cargo test --test rtsp'`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{wait_for, Server};

const W: u32 = 640;
const H: u32 = 360;

/// GStreamer's RTSP server on loopback, killed when dropped.
struct RtspServer {
    child: Child,
    port: u16,
}

impl RtspServer {
    /// Starts it on `port` (0: a free one) with `extra` arguments; waits until it listens.
    fn start(port: u16, extra: &[&str]) -> RtspServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rtsp_server.py");
        // Debian's python, which has the GStreamer bindings (python3-gi).
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run /usr/bin/python3 tests/rtsp_server.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("PORT ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(port)) => port,
            other => {
                let _ = child.kill();
                panic!(
                    "the RTSP server did not start ({other:?}; needs python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-ugly)"
                )
            }
        };
        RtspServer { child, port }
    }

    fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every metric sample whose line starts with `prefix` (0 if none).
fn metric_sum(server: &Server, prefix: &str) -> f64 {
    let text = camgraph::client::get(&server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// tests/aiortc_client.py over WHEP to `camera` in `mode` (its stdin piped for commands), and the
/// JSON lines it prints (echoed as `aiortc LABEL`).
fn aiortc(
    server: &Server,
    camera: &str,
    mode: &[&str],
    label: &str,
) -> (Child, mpsc::Receiver<serde_json::Value>) {
    let mut child = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc_client.py"))
        .args([server.base.as_str(), camera])
        .args(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with aiortc");
    let lines = json_lines(child.stdout.take().unwrap(), format!("aiortc {label}"));
    (child, lines)
}

/// The JSON lines a child prints (each line echoed with `label`), as they come.
fn json_lines(stdout: ChildStdout, label: String) -> mpsc::Receiver<serde_json::Value> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{label}: {line}");
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    lines
}

#[test]
fn chromium_plays_an_rtsp_camera_without_reencoding_and_again_after_the_server_restarts() {
    // The camera paints its frame number and capture time into every frame: the peers read them
    // back, which shows the camera's own pictures pass in order and gives glass-to-glass latency.
    let mut rtsp = RtspServer::start(0, &["--marks"]);
    let port = rtsp.port;
    // The short form: a camera that encodes gets camera -> adaptive -> webrtc_sink, no encoder
    // (the adaptive node's top step is the camera's own stream).
    let server = Server::start(&format!(
        "cameras:\n  gate: {{ source: \"{}\" }}\n",
        rtsp.url()
    ));
    let (_, graph) = server.get_json("/api/graph");
    let ids: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "gate",
            "gate_decode",
            "gate_jpeg",
            "gate_mjpeg",
            "gate_rtc_adaptive",
            "gate_rtc"
        ],
        "{graph}"
    );

    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser`"
    );
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/rtsp");
    let mut node_js = Command::new("node")
        .arg(browser_dir.join("rtsp.mjs"))
        .arg(&server.base)
        .arg(&out_dir)
        .args(["--camera", "gate", "--width", &W.to_string()])
        .args(["--height", &H.to_string()])
        .args(["--marks", "2"])
        .current_dir(&browser_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node (install Node.js)");
    let lines = json_lines(node_js.stdout.take().unwrap(), "rtsp.mjs".into());
    // The next message but the announcement that measuring starts (for the benchmark).
    let next = |what: &str| loop {
        let msg = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("rtsp.mjs said nothing ({what})\n{}", server.log()));
        if msg["phase"] != "measuring" {
            break msg;
        }
    };
    let playing = next("playing");
    assert_eq!(playing["phase"], "playing", "{playing}\n{}", server.log());
    // rtsp.mjs checked the marks (readable, the frame number advancing); the latency is a figure
    // (the benchmark's, tests/browser/rtsp-bench.py), not a bound.
    for peer in playing["peers"].as_array().unwrap() {
        assert!(
            peer["paintedReadable"].as_u64().unwrap_or(0) >= 10,
            "{peer}"
        );
        println!(
            "{}: glass to glass p50 {} ms, p90 {} ms over {} frames",
            peer["signalling"].as_str().unwrap_or_default(),
            peer["latencyP50Ms"],
            peer["latencyP90Ms"],
            peer["paintedReadable"]
        );
    }

    // No encoder between the camera and the peers: nothing was encoded or decoded for this
    // camera (its MJPEG chain idles without viewers), yet the sink sent frames.
    let encoded = || metric_sum(&server, "camgraph_frames_encoded_total{camera=\"gate\"");
    let decoded = || metric_sum(&server, "camgraph_frames_decoded_total{camera=\"gate\"");
    assert_eq!((encoded(), decoded()), (0.0, 0.0));
    let sent = server
        .metric("camgraph_frames_sent_total{camera=\"gate\",node=\"gate_rtc\"")
        .unwrap_or(0.0);
    assert!(sent > 30.0, "frames sent {sent}");

    // The server goes away for 5 s: the camera is down meanwhile, with the reason.
    let stopped = Instant::now();
    drop(rtsp);
    let down = wait_for("the camera to be down", Duration::from_secs(10), || {
        let n = server.node("gate");
        (n["state"] == "down").then_some(n)
    });
    println!("while the server was away: {down}");
    let error = down["stats"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("rtsp://127.0.0.1:{port}/cam")),
        "{down}"
    );
    std::thread::sleep(Duration::from_secs(5).saturating_sub(stopped.elapsed()));
    assert_eq!(server.node("gate")["state"], "down");
    rtsp = RtspServer::start(port, &["--marks"]);
    node_js
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"back\n")
        .unwrap();
    let captured = || {
        server
            .metric("camgraph_frames_captured_total{camera=\"gate\"")
            .unwrap_or(0.0)
    };
    let (before, back) = (captured(), Instant::now());
    wait_for(
        "frames from the camera again",
        Duration::from_secs(10),
        || (captured() > before).then_some(()),
    );
    println!(
        "frames captured again {} ms after the server returned",
        back.elapsed().as_millis()
    );
    let summary = next("summary");
    let status = node_js.wait().unwrap();
    assert!(
        status.success() && summary["ok"] == true,
        "{summary}\n{}",
        server.log()
    );
    // The peers' first frame after the return may be the "no signal" picture the camera sends
    // while it is down; the camera's own picture is told apart by its colours.
    for peer in summary["peers"].as_array().unwrap() {
        let ms = peer["cameraAfterMs"].as_u64().unwrap();
        assert!(
            ms < 3000,
            "the camera's picture {ms} ms after the server returned: {peer}"
        );
        assert_eq!(peer["size"], format!("{W}x{H}"), "{peer}");
    }
    let camera = server.node("gate");
    assert_eq!(camera["state"], "running", "{camera}");
    assert!(
        camera["stats"]["reconnects"].as_u64().unwrap() >= 1,
        "{camera}"
    );
    assert_eq!((encoded(), decoded()), (0.0, 0.0));
    assert!(!server.log().contains("panicked"), "{}", server.log());
    drop(rtsp);
}

/// Established TCP connections (IPv4) whose remote end is local `port`: clients of a server there.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let remote_port = fields
                .get(2)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// A loopback TCP server that answers every connection with junk, as a wrong port might.
fn garbage_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let junk: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 13) as u8).collect();
                while conn.write_all(&junk).is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    });
    port
}

#[test]
fn bad_rtsp_sources_are_clear_errors_and_never_show_the_password() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let junk = garbage_server();
    // This one asks for a user name and password (basic authentication).
    let rtsp = RtspServer::start(0, &["--user", "viewer", "--password", "hunter2"]);
    let port = rtsp.port;
    let yaml = format!(
        "nodes:\n  \
         refused: {{ type: camera, source: \"rtsp://admin:hunter2@127.0.0.1:{closed}/cam\" }}\n  \
         garbage: {{ type: camera, source: \"rtsp://127.0.0.1:{junk}/cam\" }}\n  \
         wrong_path: {{ type: camera, source: \"rtsp://viewer:hunter2@127.0.0.1:{port}/nope\" }}\n  \
         wrong_password: {{ type: camera, source: \"rtsp://viewer:hunter3@127.0.0.1:{port}/cam\" }}\n  \
         in_url: {{ type: camera, source: \"rtsp://viewer:hunter2@127.0.0.1:{port}/cam\" }}\n  \
         in_settings: {{ type: camera, source: \"{}\", username: viewer, password: hunter2 }}\n",
        rtsp.url()
    );
    // An adaptive ladder over a camera's own H.264 is an H.264 ladder (its top step the camera's
    // stream): one of JPEG qualities is refused by the graph check, naming the node and the kinds.
    let refused = Server::try_start(&format!(
        "nodes:\n  \
         cam: {{ type: camera, source: \"rtsp://127.0.0.1:{closed}/x\" }}\n  \
         ladder: {{ type: adaptive, inputs: [cam], ladder: [{{ quality: 50 }}] }}\n"
    ))
    .err()
    .expect("a JPEG ladder on a camera's own H.264 was accepted");
    assert!(
        refused.contains("node 'ladder': input 'cam' (camera) gives h264, but adaptive takes jpeg"),
        "{refused}"
    );

    let server = Server::start(&yaml);
    let error_of = |id: &str| {
        wait_for(&format!("{id} to be down"), Duration::from_secs(15), || {
            let n = server.node(id);
            let error = n["stats"]["error"].as_str()?.to_string();
            (n["state"] == "down").then_some(error)
        })
    };
    let refused = error_of("refused");
    println!("refused: {refused}");
    assert!(
        refused.starts_with(&format!("rtsp://127.0.0.1:{closed}/cam: DESCRIBE failed: "))
            && refused.to_lowercase().contains("refused"),
        "{refused}"
    );
    let garbage = error_of("garbage");
    println!("garbage: {garbage}");
    assert!(
        garbage.starts_with(&format!("rtsp://127.0.0.1:{junk}/cam: DESCRIBE failed: ")),
        "{garbage}"
    );
    let wrong_path = error_of("wrong_path");
    println!("wrong path: {wrong_path}");
    assert!(wrong_path.contains("404"), "{wrong_path}");
    let wrong_password = error_of("wrong_password");
    println!("wrong password: {wrong_password}");
    assert!(
        wrong_password.contains("401") && !wrong_password.contains("hunter3"),
        "{wrong_password}"
    );
    // The right password, in the URL or in the settings: the camera answers (DESCRIBE), it is up.
    for id in ["in_url", "in_settings"] {
        wait_for(&format!("{id} to be up"), Duration::from_secs(15), || {
            (server.node(id)["state"] == "running").then_some(())
        });
    }

    // Up and idle, they hold no connection to the camera (their DESCRIBE's is closed until
    // frames are wanted); only the failing cameras' short retries come and go.
    wait_for(
        "no connection held to the camera while idle",
        Duration::from_secs(10),
        || (connections_to(port) == 0).then_some(()),
    );

    // Through the API: accepted (server.api_sources allows rtsp:// by default), given the short
    // form's chain, and down with the reason kept to the log.
    let (status, body) = server.post_json(&format!(
        "/api/camera/cameras/added?source=rtsp://u:hunter2@127.0.0.1:{closed}/x"
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.node("added_rtc_adaptive")["inputs"][0], "added");
    assert_eq!(server.node("added_rtc")["inputs"][0], "added_rtc_adaptive");
    let (status, body) = server.post_json("/api/camera/cameras/bad?source=rtsp://");
    assert_eq!(status, 400, "{body}");

    let log = server.log();
    let (_, graph) = server.get_json("/api/graph");
    for password in ["hunter2", "hunter3"] {
        assert!(
            !log.contains(password),
            "a password reached the log:\n{log}"
        );
        assert!(!graph.to_string().contains(password), "{graph}");
    }
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn mjpeg_viewers_and_snapshots_of_an_rtsp_camera_decode_only_while_watched() {
    let rtsp = RtspServer::start(0, &[]);
    let server = Server::start(&format!(
        "cameras:\n  gate: {{ source: \"{}\", webrtc: false }}\n",
        rtsp.url()
    ));
    let decoded = || metric_sum(&server, "camgraph_frames_decoded_total{camera=\"gate\"");
    let decoding = || server.node("gate_decode")["stats"]["decoding"] == true;
    assert!(!decoding(), "nobody watches: no decode");
    // Up (it answered a DESCRIBE) and idle: that connection is closed, and the snapshot's session
    // asks again, which gst-rtsp-server answers with a 503 if it comes right after the close (then
    // the camera retries; the snapshot is its picture, not "no signal").
    wait_for("the camera to be up", Duration::from_secs(15), || {
        (server.node("gate")["stats"]["up"] == true).then_some(())
    });

    // A snapshot: a JPEG at the camera's size, decoded from its H.264.
    let snapshot = camgraph::client::get(&server.url("/api/camera/snapshot/gate")).unwrap();
    assert_eq!(snapshot.status, 200);
    let (_, w, h) = common::decode(&snapshot.bytes().unwrap());
    assert_eq!(
        (w, h),
        (W, H),
        "not the camera's picture:\n{}",
        server.log()
    );

    // An MJPEG viewer: pictures of the camera's size, at about its rate.
    let mut parts = server.mjpeg("/api/camera/stream/gate");
    let started = Instant::now();
    for _ in 0..30 {
        let part = parts.next_part().unwrap().expect("a part");
        let (_, w, h) = common::decode(&part.data);
        assert_eq!((w, h), (W, H));
    }
    println!("30 MJPEG frames in {} ms", started.elapsed().as_millis());
    assert!(decoding());
    assert!(decoded() >= 30.0, "decoded {}", decoded());

    // The last viewer leaves: decoding stops, and the count stays where it is.
    drop(parts);
    wait_for("decoding to stop", Duration::from_secs(10), || {
        (!decoding()).then_some(())
    });
    let stopped_at = decoded();
    let camera = wait_for(
        "the camera to lose its consumer",
        Duration::from_secs(10),
        || {
            let n = server.node("gate");
            (n["stats"]["consumers"] == 0).then_some(n)
        },
    );
    println!("after the viewer left: {camera}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(decoded(), stopped_at, "decoding went on without viewers");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn rtp_over_udp_delivers_the_same_pictures() {
    let rtsp = RtspServer::start(0, &[]);
    let server = Server::start(&format!(
        "cameras:\n  yard: {{ source: \"{}\", transport: udp, webrtc: false }}\n",
        rtsp.url()
    ));
    let mut parts = server.mjpeg("/api/camera/stream/yard");
    for _ in 0..10 {
        let part = parts.next_part().unwrap().expect("a part");
        assert_eq!(common::decode(&part.data).1, W);
    }
    let log = server.log();
    assert!(
        log.contains("RTSP session playing") && log.contains("transport=udp"),
        "{log}"
    );
    let camera = server.node("yard");
    assert_eq!(camera["state"], "running", "{camera}");
    assert!(
        camera["stats"]["captured"].as_u64().unwrap() >= 10,
        "{camera}"
    );
}

/// Runs tests/browser/rtsp.mjs to its end (no restart) and gives its summary.
fn watch_in_chromium(server: &Server, camera: &str, peers: usize) -> serde_json::Value {
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/rtsp");
    let (w, h, n, out) = (
        W.to_string(),
        H.to_string(),
        peers.to_string(),
        out_dir.display().to_string(),
    );
    let args = [
        server.base.as_str(),
        &out,
        "--camera",
        camera,
        "--width",
        &w,
        "--height",
        &h,
        "--peers",
        &n,
        "--measure",
        "1000",
        "--restart",
        "0",
    ];
    common::run_browser_script(server, "rtsp.mjs", &args)
}

#[test]
fn a_peer_joining_a_running_camera_starts_at_once_not_at_its_next_keyframe() {
    // A 10 s GOP: a peer that waited for the camera's next IDR would see nothing for seconds
    // (and the page would give up on WebRTC after 5 s).
    let rtsp = RtspServer::start(0, &["--gop", "300"]);
    let server = Server::start(&format!(
        "nodes:\n  \
         gate: {{ type: camera, source: \"{}\" }}\n  \
         gate_rtc: {{ type: webrtc_sink, inputs: [gate] }}\n",
        rtsp.url()
    ));
    // The first peer starts the camera's session (which begins with an IDR); the second and
    // third join it mid-GOP and get the frames since that IDR at once.
    let summary = watch_in_chromium(&server, "gate", 3);
    for peer in summary["peers"].as_array().unwrap() {
        let ms = peer["firstFrameMs"].as_u64().unwrap();
        assert!(ms < 3000, "first frame after {ms} ms: {peer}");
        assert!(peer["decodedFps"].as_f64().unwrap() >= 20.0, "{peer}");
        assert_eq!(peer["framesDropped"], 0, "{peer}");
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Issue 14 with issue 13: a camera that already encodes feeds `rtp_sink` directly, so a media
/// server gets the camera's own H.264 with nothing decoded or encoded on the robot.
#[test]
fn an_rtsp_camera_passes_its_h264_to_rtp_sink() {
    let rtsp = RtspServer::start(0, &[]);
    let port = common::media_server::free_udp_pair();
    let dir = tempfile::tempdir().unwrap();
    let sdp_file = dir.path().join("yard.sdp");
    let server = Server::start(&format!(
        "nodes:\n  yard: {{ type: camera, source: \"{}\" }}\n  \
         yard_rtp: {{ type: rtp_sink, inputs: [yard], target: '127.0.0.1:{port}', sdp_file: '{}' }}\n",
        rtsp.url(),
        sdp_file.display()
    ));
    wait_for("the SDP file", Duration::from_secs(10), || {
        sdp_file.exists().then_some(())
    });
    let probed = common::ffprobe_sdp(&sdp_file);
    let stream = &probed["streams"][0];
    assert_eq!(stream["codec_name"], "h264", "{probed}");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(W as u64), Some(H as u64))
    );
    assert!(
        server
            .metric("camgraph_rtp_sent_packets_total{")
            .unwrap_or(0.0)
            > 0.0,
        "{}",
        server.log()
    );
    for family in [
        "camgraph_frames_encoded_total{",
        "camgraph_frames_decoded_total{",
    ] {
        assert_eq!(
            server.metric(family),
            None,
            "{family} exists: nothing should encode or decode"
        );
    }
}

/// A camera whose RTSP stream is JPEG (RFC 2435) and says so (`codec: mjpeg`) gives its JPEGs as
/// pictures, passed on untouched like an HTTP MJPEG camera's; the same stream taken for H.264
/// (the default) leaves that camera down, saying what it is set to and what the stream offers.
#[test]
fn an_mjpeg_rtsp_camera_gives_its_own_jpegs_and_a_codec_mismatch_is_a_clear_error() {
    let rtsp = RtspServer::start(0, &["--codec", "jpeg"]);
    let server = Server::start(&format!(
        "cameras:\n  \
         dock: {{ source: \"{url}\", codec: mjpeg, webrtc: false }}\n  \
         wrong: {{ source: \"{url}\", webrtc: false }}\n",
        url = rtsp.url()
    ));
    // Pictures, as an HTTP MJPEG camera's: camera -> jpeg_encoder, no decoder.
    assert_eq!(server.node("dock_jpeg")["inputs"][0], "dock");

    let snapshot = camgraph::client::get(&server.url("/api/camera/snapshot/dock")).unwrap();
    assert_eq!(snapshot.status, 200);
    let (_, w, h) = common::decode(&snapshot.bytes().unwrap());
    assert_eq!((w, h), (W, H));
    let mut parts = server.mjpeg("/api/camera/stream/dock");
    for _ in 0..30 {
        let part = parts.next_part().unwrap().expect("a part");
        let (_, w, h) = common::decode(&part.data);
        assert_eq!((w, h), (W, H));
    }
    let camera = server.node("dock");
    assert_eq!(camera["state"], "running", "{camera}");
    assert!(
        camera["stats"]["captured"].as_u64().unwrap() >= 30,
        "{camera}"
    );
    // The camera's JPEGs went out as they came: nothing encoded nor decoded.
    for family in [
        "camgraph_frames_encoded_total",
        "camgraph_frames_decoded_total",
    ] {
        let n = metric_sum(&server, &format!("{family}{{camera=\"dock\""));
        assert_eq!(n, 0.0, "{family}");
    }

    let wrong = wait_for(
        "the h264 camera to be down",
        Duration::from_secs(15),
        || {
            let n = server.node("wrong");
            let error = n["stats"]["error"].as_str()?.to_string();
            (n["state"] == "down").then_some(error)
        },
    );
    println!("a JPEG stream taken for H.264: {wrong}");
    assert_eq!(
        wrong,
        format!(
            "{}: the camera is set to H.264 (codec: h264) but the stream offers video/jpeg; \
             for its JPEG set 'codec: mjpeg'",
            rtsp.url()
        )
    );

    // Through the API too: `codec=mjpeg` gives the added camera the pictures' chain.
    let (status, body) = server.post_json(&format!(
        "/api/camera/cameras/added?source={}&codec=mjpeg&webrtc=false",
        rtsp.url()
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.node("added_jpeg")["inputs"][0], "added");
    let snapshot = camgraph::client::get(&server.url("/api/camera/snapshot/added")).unwrap();
    assert_eq!(snapshot.status, 200);
    assert_eq!(common::decode(&snapshot.bytes().unwrap()).1, W);
    let (status, body) = server.post_json(&format!(
        "/api/camera/cameras/other?source={}&codec=h265",
        rtsp.url()
    ));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("'codec' must be h264 or mjpeg (got 'h265')"),
        "{body}"
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// A WebRTC peer (aiortc over WHEP) watching tests/aiortc_client.py's `watch` lines: frames
/// decoded so far, the last one's size, and the share of its pixels with the "no signal"
/// background. Killed when dropped.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Watcher {
    fn start(server: &Server, camera: &str, seconds: u32) -> Watcher {
        let (child, lines) = aiortc(server, camera, &["watch", &seconds.to_string()], "watching");
        Watcher { child, lines }
    }

    /// The first report within `within` that `wanted` accepts.
    fn until(
        &self,
        what: &str,
        within: Duration,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("the peer did not report {what} within {within:?}"),
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_peer_of_an_h264_camera_sees_no_signal_while_it_is_down_then_the_camera_again() {
    let mut rtsp = RtspServer::start(0, &[]);
    let port = rtsp.port;
    let server = Server::start(&format!(
        "nodes:\n  \
         gate: {{ type: camera, source: \"{}\" }}\n  \
         gate_rtc: {{ type: webrtc_sink, inputs: [gate] }}\n",
        rtsp.url()
    ));
    let peer = Watcher::start(&server, "gate", 90);
    let size = |l: &serde_json::Value| l["width"] == W && l["height"] == H;
    let frames = |l: &serde_json::Value| l["frames"].as_u64().unwrap_or(0);
    let share = |l: &serde_json::Value| l["no_signal"].as_f64().unwrap_or(-1.0);
    let camera = |l: &serde_json::Value| size(l) && share(l) < 0.2;
    let no_signal = |l: &serde_json::Value| size(l) && share(l) > 0.8;
    let live = peer.until("the camera's pictures", Duration::from_secs(30), camera);
    println!("the camera: {live}");

    drop(rtsp);
    let down = wait_for("the camera to be down", Duration::from_secs(10), || {
        let n = server.node("gate");
        (n["state"] == "down").then_some(n)
    });
    println!("down: {down}");
    // The peer keeps decoding: pictures that are the no-signal picture, at the camera's size,
    // more and more of them while the camera stays down.
    let first = peer.until("the no-signal picture", Duration::from_secs(10), no_signal);
    let later = peer.until("more no-signal pictures", Duration::from_secs(10), |l| {
        no_signal(l) && frames(l) >= frames(&first) + 4
    });
    println!("while down: {first} then {later}");
    assert_eq!(server.node("gate")["state"], "down");

    rtsp = RtspServer::start(port, &[]);
    let back = peer.until(
        "the camera's pictures again",
        Duration::from_secs(20),
        |l| camera(l) && frames(l) > frames(&later),
    );
    println!("back: {back}");
    let camera = server.node("gate");
    assert_eq!(camera["state"], "running", "{camera}");
    // Nothing encoded the camera's own stream; only its no-signal picture was, inside the camera.
    assert_eq!(
        metric_sum(&server, "camgraph_frames_encoded_total{camera=\"gate\""),
        0.0
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
    drop(rtsp);
}

/// An aiortc peer over WHEP (tests/aiortc_client.py `steps`): tells each picture size it shows
/// and claims losses in its receiver reports on command.
struct StepsPeer {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl StepsPeer {
    fn start(server: &Server, camera: &str, name: &'static str) -> StepsPeer {
        let (child, lines) = aiortc(server, camera, &["steps"], name);
        StepsPeer { name, child, lines }
    }

    fn tell(&mut self, command: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next picture size it shows, and the stream time it missed before it (ms).
    fn size(&self, what: &str, server: &Server) -> ((u64, u64), Option<u64>) {
        let msg = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{}: no picture of {what}\n{}", self.name, server.log()));
        let size = (
            msg["width"].as_u64().unwrap(),
            msg["height"].as_u64().unwrap(),
        );
        (size, msg["gap_ms"].as_u64())
    }

    /// Ends its session; checks that it showed no other size meanwhile and ended well.
    fn quit(mut self) {
        self.tell("quit");
        let summary = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the peer's summary");
        assert!(summary.get("width").is_none(), "{}: {summary}", self.name);
        assert!(self.child.wait().unwrap().success(), "{summary}");
        assert_eq!(summary["delete_status"], 200, "{summary}");
    }
}

/// Issue 13 item 4: `adaptive` over a camera that passes its own H.264 through. aiortc peers
/// start on the top step, the camera's stream untouched: its size, nothing decoded or encoded.
/// One peer's receiver reports then claim half the packets lost: it moves to the lower step,
/// which the node's decoder and encoder make (half size) while it is there, while the other keeps
/// the top; reports clean again, it moves back to the top and both stop. Then the same alone
/// (the camera's stream is started anew for it going up). The camera's GOP is 10 s: each move is
/// made at once at a keyframe of the step moved to (the encoder's on request; going up, the
/// camera's frames since its keyframe), not at the camera's next keyframe.
#[test]
fn adaptive_passes_the_camera_through_on_top_and_transcodes_a_lower_step_only_while_a_peer_is_on_it(
) {
    let rtsp = RtspServer::start(0, &["--gop", "300"]);
    let server = Server::start(&format!(
        "nodes:\n  \
         gate: {{ type: camera, source: \"{}\" }}\n  \
         gate_adaptive: {{ type: adaptive, inputs: [gate], ladder: [{{ bitrate_kbps: 300, scale: 2 }}], \
         hold_down_s: 0.5, hold_up_s: 1 }}\n  \
         gate_rtc: {{ type: webrtc_sink, inputs: [gate_adaptive] }}\n",
        rtsp.url()
    ));
    let adaptive = || server.node("gate_adaptive")["stats"].clone();
    let encoded = || {
        metric_sum(
            &server,
            "camgraph_frames_encoded_total{camera=\"gate\",node=\"gate_adaptive\"",
        )
    };
    let decoded = || {
        metric_sum(
            &server,
            "camgraph_frames_decoded_total{camera=\"gate\",node=\"gate_adaptive\"",
        )
    };
    let sent = || {
        server
            .metric("camgraph_frames_sent_total{camera=\"gate\",node=\"gate_rtc\"")
            .unwrap_or(0.0)
    };
    // Sent frames go on: at least `n` more after now.
    let frames_flow = |n: f64| {
        let from = sent();
        wait_for("frames to the peers", Duration::from_secs(10), || {
            (sent() >= from + n).then_some(())
        });
    };
    let full = (u64::from(W), u64::from(H));
    let half = (u64::from(W / 2), u64::from(H / 2));
    let idle = || {
        wait_for(
            "the decoder and the encoder to stop",
            Duration::from_secs(10),
            || {
                let s = adaptive();
                (s["decoder"]["decoding"] == false && s["encoder"]["listeners"] == 0).then_some(s)
            },
        )
    };
    // Down and back up; checks the decoder and encoder run only while it is below.
    let round_trip = |moving: &mut StepsPeer, others: i64| {
        moving.tell("lose 0.5");
        let began = Instant::now();
        let (size, gap) = moving.size("the lower step", &server);
        assert_eq!(size, half);
        println!(
            "on the lower step {} ms after the losses began; {gap:?} ms of stream missed",
            began.elapsed().as_millis()
        );
        assert!(gap.is_some_and(|ms| ms < 3000), "{gap:?}");
        moving.tell("lose 0");
        let stats = adaptive();
        assert_eq!(stats["decoder"]["decoding"], true, "{stats}");
        assert_eq!(stats["encoder"]["variants"], serde_json::json!(["300k/2"]));
        assert_eq!(stats["viewers_per_step"], serde_json::json!([others, 1]));
        assert!(encoded() > 0.0 && decoded() > 0.0);

        let ended = Instant::now();
        let (size, gap) = moving.size("the top step again", &server);
        assert_eq!(size, full);
        println!(
            "back on top {} ms after the losses ended; {gap:?} ms of stream missed",
            ended.elapsed().as_millis()
        );
        assert!(gap.is_some_and(|ms| ms < 3000), "{gap:?}");
        let stats = idle();
        assert_eq!(
            stats["viewers_per_step"],
            serde_json::json!([others + 1, 0])
        );
        let (encoded_then, decoded_then) = (encoded(), decoded());
        frames_flow(30.0);
        assert_eq!(
            (encoded(), decoded()),
            (encoded_then, decoded_then),
            "nothing decoded or encoded while every peer is on top"
        );
    };

    // The top step: the camera's own stream, nothing decoded or encoded.
    let mut moving = StepsPeer::start(&server, "gate", "moving");
    let staying = StepsPeer::start(&server, "gate", "staying");
    assert_eq!(moving.size("the top step", &server).0, full);
    assert_eq!(staying.size("the top step", &server).0, full);
    frames_flow(30.0);
    let stats = adaptive();
    assert_eq!(stats["ladder"], serde_json::json!(["camera", "300k/2"]));
    assert_eq!(stats["viewers_per_step"], serde_json::json!([2, 0]));
    assert_eq!(stats["decoder"]["decoding"], false, "{stats}");
    assert_eq!((encoded(), decoded()), (0.0, 0.0));

    // With a peer staying on top (its stream of the camera goes on), then alone.
    round_trip(&mut moving, 1);
    staying.quit();
    round_trip(&mut moving, 0);
    moving.quit();
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
