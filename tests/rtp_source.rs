//! `rtp://` and SDP sources end to end: ffmpeg (Debian's, an independent sender) sends H.264 as
//! RTP to a loopback port and writes the SDP; a camera reading that SDP relays the stream with no
//! encoder in the chain, to aiortc over WHEP (passed through) and to an MJPEG viewer (decoded
//! only for it); an SDP with no video is a clear error. A multicast group works end to end in a
//! network namespace of the test's own (lo with multicast on and 224.0.0.0/4 routed over it),
//! so the namespace the other tests share keeps its routes. Run in a loopback-only namespace like
//! CI, as root: `unshare -n bash -c 'ip link set lo up && cargo test --test rtp_source'`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::media_server::free_udp_pair;
use common::{wait_for, Server};

/// ffmpeg sending a 640x360 30 fps test pattern as H.264 RTP; killed when dropped.
struct Sender(Child);

impl Sender {
    /// Starts sending to `host`:`port` and writing the SDP to `sdp`; waits for the file.
    fn start(host: &str, port: u16, sdp: &Path) -> Sender {
        let child = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-nostdin", "-re", "-f", "lavfi"])
            .args(["-i", "testsrc2=size=640x360:rate=30"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            // Baseline as browsers take it; SPS and PPS also in the SDP (global header).
            .args([
                "-profile:v",
                "baseline",
                "-flags:v",
                "+global_header",
                "-g",
                "30",
            ])
            .args(["-f", "rtp", "-payload_type", "96"])
            .arg(format!("rtp://{host}:{port}?ttl=1"))
            .arg("-sdp_file")
            .arg(sdp)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ffmpeg is installed (apt ffmpeg)");
        let sender = Sender(child);
        wait_for("ffmpeg's SDP file", Duration::from_secs(10), || {
            std::fs::read_to_string(sdp)
                .ok()
                .filter(|t| t.contains("m=video"))
                .map(|_| ())
        });
        sender
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_sdp_camera_is_relayed_to_webrtc_without_an_encoder_and_decoded_only_for_mjpeg() {
    let dir = tempfile::tempdir().unwrap();
    let sdp = dir.path().join("bot.sdp");
    let _sender = Sender::start("127.0.0.1", free_udp_pair(), &sdp);
    let server = Server::start(&format!(
        "cameras:\n  bot: {{ source: {} }}\n",
        sdp.display()
    ));
    relayed_to_webrtc_and_mjpeg(&server);
}

/// Camera `bot` of `server` plays in aiortc over WHEP (passed through, no H.264 encoder in the
/// graph) and to an MJPEG viewer, at the sender's 640x360.
fn relayed_to_webrtc_and_mjpeg(server: &Server) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(root.join("tests/aiortc_client.py"))
        .args([server.base.as_str(), "bot", "3"])
        .output()
        .expect("python3 with aiortc");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "aiortc: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    let peer: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON line");
    println!("aiortc on the RTP camera: {peer}");
    assert_eq!(
        (peer["width"].as_u64(), peer["height"].as_u64()),
        (Some(640), Some(360)),
        "{peer}"
    );
    assert!(peer["fps"].as_f64().unwrap() >= 20.0, "{peer}");

    // Nothing encodes H.264 for this camera: the chain has no encoder.
    let (_, graph) = server.get_json("/api/graph");
    let types: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(!types.contains(&"h264_encoder"), "{types:?}");
    let camera = server.node("bot");
    assert_eq!(camera["state"], "running", "{camera}");

    // An MJPEG viewer gets the pictures decoded for it.
    let mut parts = server.mjpeg("/api/camera/stream/bot");
    for _ in 0..5 {
        let part = parts.next_part().unwrap().expect("a part");
        let (_, w, h) = common::decode(&part.data);
        assert_eq!((w, h), (640, 360));
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Runs `ip ARGS` (iproute2), in the calling thread's network namespace.
fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {} failed", args.join(" "));
}

/// Whether this thread's network namespace has joined multicast `group` on some interface
/// (/proc/net/igmp lists groups as little-endian hex).
fn joined(group: std::net::Ipv4Addr) -> bool {
    let hex = format!("{:08X}", u32::from_le_bytes(group.octets()));
    std::fs::read_to_string("/proc/thread-self/net/igmp")
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim_start().starts_with(&hex))
}

#[test]
fn a_multicast_group_is_joined_and_relayed() {
    // A thread in a network namespace of its own: what it spawns (ffmpeg, camgraph, aiortc) and
    // the sockets it opens live there, and the other tests' namespace keeps its routes.
    let run = std::thread::spawn(|| {
        // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's network namespace.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            unshared,
            0,
            "unshare(CLONE_NEWNET) failed (needs root, as CI runs): {}",
            std::io::Error::last_os_error()
        );
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "set", "lo", "multicast", "on"]);
        ip(&["route", "add", "224.0.0.0/4", "dev", "lo"]);

        let group = std::net::Ipv4Addr::new(239, 255, 12, 34);
        let dir = tempfile::tempdir().unwrap();
        let sdp = dir.path().join("body.sdp");
        let _sender = Sender::start(&group.to_string(), free_udp_pair(), &sdp);
        let text = std::fs::read_to_string(&sdp).unwrap();
        assert!(text.contains(&format!("c=IN IP4 {group}")), "{text}");
        assert!(!joined(group), "nobody has joined {group} yet");
        let server = Server::start(&format!(
            "cameras:\n  bot: {{ source: {} }}\n",
            sdp.display()
        ));
        relayed_to_webrtc_and_mjpeg(&server);
        // The camera received it as a member of the group (the socket is open while watched).
        let mut parts = server.mjpeg("/api/camera/stream/bot");
        parts.next_part().unwrap().expect("a part");
        assert!(joined(group), "camgraph did not join {group}");
    });
    if let Err(panic) = run.join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn an_sdp_without_video_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sdp = dir.path().join("audio.sdp");
    std::fs::write(
        &sdp,
        "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\n",
    )
    .unwrap();
    let server = Server::start(&format!(
        "cameras:\n  bot: {{ source: {} }}\n",
        sdp.display()
    ));
    // Down with its error: a camera is down before its first try too, with no error yet.
    let camera = wait_for("the camera to be down", Duration::from_secs(10), || {
        Some(server.node("bot")).filter(|n| n["state"] == "down" && n["stats"]["error"].is_string())
    });
    let error = camera["stats"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("audio.sdp") && error.contains("no video section"),
        "{camera}"
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
