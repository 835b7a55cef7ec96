//! camgraph -> Janus -> a WebRTC viewer that talks only to Janus: a test camera -> h264_encoder ->
//! rtp_sink sends RTP to Janus's streaming plugin (Debian's `janus`, started here with a config
//! written to a temporary folder: the HTTP transport on a free port, the streaming plugin with one
//! `type = "rtp"` mountpoint, nothing else); aiortc (tests/janus_viewer.py) watches the mountpoint
//! through Janus's HTTP API and decodes pictures whose painted frame numbers advance, read with
//! camgraph's own reader. camgraph's own WebRTC sink has no peer meanwhile.
//!
//! Janus's ICE (libnice) gathers no candidate on loopback alone, so the viewer sits in a network
//! namespace of its own joined by a veth pair (10.77.0.1 here, 10.77.0.2 there; Janus gathers on
//! the first end only). camgraph and Janus talk over 127.0.0.1. That needs root (CI runs the
//! tests as root, in a loopback-only namespace; run by hand, run it in one too, `unshare -n`, or
//! the pair is made in the machine's own namespace while the test runs): without root the test
//! says why and skips. Needs `janus` (apt) and aiortc (pip); a missing one fails the test.

mod common;

use std::time::Duration;

use camgraph::plugins::sources::testsrc::read_marks;
use common::media_server::{cannot_build_network, free_tcp_port, free_udp_pair, Janus, ViewerNet};
use common::{wait_for, Server};

/// The rtp_sink's statistics in /api/graph.
fn rtp_stats(server: &Server) -> serde_json::Value {
    let (_, graph) = server.get_json("/api/graph");
    graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "front_rtp")
        .map(|n| n["stats"].clone())
        .unwrap_or_default()
}

#[test]
fn a_viewer_of_janus_decodes_the_camera_that_rtp_sink_sends() {
    if let Some(why) = cannot_build_network() {
        println!("SKIPPED: {why}");
        return;
    }
    let net = ViewerNet::create().unwrap_or_else(|e| panic!("the viewer's network: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let (http_port, rtp_port) = (free_tcp_port(), free_udp_pair());
    let janus = Janus::start(dir.path(), http_port, rtp_port, &net.link)
        .unwrap_or_else(|e| panic!("Janus: {e}"));

    // camgraph offers WebRTC of its own too, so that its peers count is there to stay at 0.
    let server = Server::start(&format!(
        "nodes:\n  \
         front: {{ type: camera, source: test, width: 640, height: 360, fps: 30 }}\n  \
         front_h264: {{ type: h264_encoder, inputs: [front] }}\n  \
         front_rtc: {{ type: webrtc_sink, inputs: [front_h264] }}\n  \
         front_rtp: {{ type: rtp_sink, inputs: [front_h264], target: '127.0.0.1:{rtp_port}' }}\n"
    ));

    // Janus learns where to send its keyframe requests from the sink's sender reports.
    wait_for("a sender report", Duration::from_secs(10), || {
        (rtp_stats(&server)["sender_reports"].as_u64() >= Some(1)).then_some(())
    });
    let frames_dir = tempfile::tempdir().unwrap();
    let mut viewer = net
        .viewer(&janus.url, 4.0, Some(frames_dir.path()))
        .spawn()
        .expect("python3");
    // While the viewer watches through Janus, camgraph has no WebRTC peer of its own.
    let webrtc_viewers = "camgraph_viewers{camera=\"front\",node=\"front_rtc\",protocol=\"webrtc\"";
    let mut checks = 0;
    while viewer.try_wait().unwrap().is_none() {
        assert_eq!(
            server.metric(webrtc_viewers),
            Some(0.0),
            "a WebRTC peer of camgraph"
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = viewer.wait_with_output().unwrap();
    assert!(
        checks > 10,
        "checked {checks} times while the viewer watched"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the viewer failed: {}\n{stdout}\n--- janus\n{}\n--- camgraph\n{}",
        String::from_utf8_lossy(&out.stderr),
        janus.log(),
        server.log()
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    println!("viewer through Janus: {summary}");
    assert_eq!(
        (summary["width"].as_u64(), summary["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(summary["fps"].as_f64().unwrap() >= 15.0, "{summary}");

    // The pictures it decoded carry the camera's frame numbers, advancing.
    let numbers: Vec<u32> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let rgb = std::fs::read(f.as_str().unwrap()).unwrap();
            read_marks(&rgb, 640, 360)
                .unwrap_or_else(|| panic!("no frame number in {f}"))
                .seq
        })
        .collect();
    assert!(numbers.len() >= 5, "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "{numbers:?}");
    assert!(
        numbers[numbers.len() - 1] - numbers[0] >= 60,
        "over 3 s: {numbers:?}"
    );

    assert_eq!(server.metric(webrtc_viewers), Some(0.0));
    let (_, rtc) = server.get_json("/api/graph");
    let rtc_node = rtc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "front_rtc")
        .unwrap()
        .clone();
    assert_eq!(rtc_node["stats"]["closed"], 0, "no peer ever: {rtc_node}");
    assert!(server.metric("camgraph_rtp_sent_packets_total{").unwrap() > 0.0);
    // Janus asked for keyframes (RTCP PLI when its viewer started) and the sink heard them.
    let rtp = rtp_stats(&server);
    println!("rtp_sink: {rtp}");
    assert!(rtp["keyframe_requests"].as_u64() >= Some(1), "{rtp}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
