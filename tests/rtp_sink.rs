//! `rtp_sink` end to end with the real binary: ffprobe, an independent client, opens the SDP the
//! sink writes and serves and finds the H.264 stream in it; targets that do not resolve or where
//! nobody listens show `down` with the reason in `/api/graph` while the camera's MJPEG viewer
//! goes on untouched, and a receiver that comes later gets the stream.

mod common;

use std::time::Duration;

use camgraph::client;
use common::media_server::free_udp_pair;
use common::{promtool_check, wait_for, Recorder, Server};

fn yaml(sinks: &str) -> String {
    format!(
        "nodes:\n  \
         front: {{ type: camera, source: test, width: 640, height: 360, fps: 30 }}\n  \
         front_jpeg: {{ type: jpeg_encoder, inputs: [front] }}\n  \
         front_mjpeg: {{ type: mjpeg_sink, inputs: [front_jpeg] }}\n  \
         front_h264: {{ type: h264_encoder, inputs: [front] }}\n{sinks}  \
         plain: {{ type: camera, source: test, width: 320, height: 240, fps: 10 }}\n"
    )
}

#[test]
fn ffprobe_plays_the_sdp_the_sink_writes_and_serves() {
    let port = free_udp_pair();
    let dir = tempfile::tempdir().unwrap();
    let sdp_file = dir.path().join("front.sdp");
    let server = Server::start(&yaml(&format!(
        "  front_rtp: {{ type: rtp_sink, inputs: [front_h264], target: '127.0.0.1:{port}', sdp_file: '{}' }}\n",
        sdp_file.display()
    )));

    // The SDP at its URL (by camera, by node id, for the default camera) and in the file.
    let r = client::get(&server.url("/api/camera/sdp/front")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let sdp = r.text().unwrap();
    assert!(
        sdp.contains(&format!("m=video {port} RTP/AVP 96\r\n")),
        "{sdp}"
    );
    assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"), "{sdp}");
    for path in ["/api/camera/sdp/front_rtp", "/api/camera/sdp"] {
        assert_eq!(
            client::get(&server.url(path)).unwrap().text().unwrap(),
            sdp,
            "{path}"
        );
    }
    assert_eq!(std::fs::read_to_string(&sdp_file).unwrap(), sdp);
    let (status, body) = server.get_json("/api/camera/sdp/plain");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("has no rtp_sink"),
        "{body}"
    );

    // ffprobe listens where the SDP says and finds the stream (it waits for an IDR to know the
    // size: the encoder sends one every 2 s, and SPS/PPS come with it).
    let probed = common::ffprobe_sdp(&sdp_file);
    let stream = &probed["streams"][0];
    assert_eq!(stream["codec_name"], "h264", "{probed}");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(640), Some(360))
    );

    let packets = server
        .metric("camgraph_rtp_sent_packets_total{camera=\"front\",node=\"front_rtp\"")
        .unwrap_or(0.0);
    assert!(packets > 0.0, "packets counted");
    assert!(
        server
            .metric("camgraph_rtp_sent_bytes_total{")
            .unwrap_or(0.0)
            > packets * 12.0
    );
    let rtp = server.node("front_rtp");
    assert_eq!(
        rtp["stats"]["resolved"],
        format!("127.0.0.1:{port}"),
        "{rtp}"
    );
    assert!(
        rtp["stats"]["sender_reports"].as_u64().unwrap() >= 1,
        "{rtp}"
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn bad_targets_show_down_with_the_reason_and_leave_the_other_viewers_alone() {
    let port = free_udp_pair();
    let server = Server::start(&yaml(&format!(
        "  nowhere: {{ type: rtp_sink, inputs: [front_h264], target: 'nosuch.invalid:5004' }}\n  \
         nobody: {{ type: rtp_sink, inputs: [front_h264], target: '127.0.0.1:{port}' }}\n"
    )));
    let viewer = Recorder::start(&server, "/api/camera/stream/front", false);

    let nowhere = wait_for(
        "the unresolvable target to show",
        Duration::from_secs(10),
        || {
            let n = server.node("nowhere");
            (n["stats"]["state"] == "unresolved").then_some(n)
        },
    );
    assert_eq!(nowhere["state"], "down", "{nowhere}");
    assert!(
        nowhere["stats"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot resolve 'nosuch.invalid'"),
        "{nowhere}"
    );
    let nobody = wait_for(
        "the refusing target to show",
        Duration::from_secs(10),
        || {
            let n = server.node("nobody");
            (n["stats"]["state"] == "refused").then_some(n)
        },
    );
    assert_eq!(nobody["state"], "down", "{nobody}");
    let error = nobody["stats"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("nobody receives at 127.0.0.1:{port}")),
        "{nobody}"
    );
    let refused =
        "camgraph_rtp_send_errors_total{camera=\"front\",node=\"nobody\",reason=\"refused\"";
    assert!(
        server.metric(refused).unwrap_or(0.0) > 0.0,
        "refusals counted"
    );
    let exposition = client::get(&server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    for family in [
        "camgraph_rtp_sent_packets_total{",
        "camgraph_rtp_sent_bytes_total{",
        "camgraph_rtp_send_errors_total{",
    ] {
        assert!(exposition.contains(family), "no {family} in:\n{exposition}");
    }
    promtool_check(&exposition).unwrap_or_else(|said| panic!("{said}"));

    // The MJPEG viewer went on all along: every frame decoded, numbers advancing.
    std::thread::sleep(Duration::from_secs(1));
    let (seen, ended) = viewer.finish();
    assert!(!ended, "the MJPEG stream ended");
    let numbers: Vec<u32> = seen.iter().map(|s| s.0.expect("marks readable")).collect();
    assert!(numbers.len() >= 20, "{} frames", numbers.len());
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "{numbers:?}");

    // A receiver that comes later gets the stream, and the sink shows it sending again.
    let receiver = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = receiver.recv(&mut buf).expect("RTP once someone listens");
    assert!(
        n > 12 && buf[1] & 0x7f == 96,
        "an RTP packet of payload type 96"
    );
    wait_for("the sink to show sending", Duration::from_secs(10), || {
        let n = server.node("nobody");
        (n["state"] == "running" && n["stats"]["state"] == "sending").then_some(())
    });
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn the_encoder_runs_for_the_sink_only_while_it_is_configured_and_bye_ends_the_stream() {
    let port = free_udp_pair();
    let receiver = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let rtcp = std::net::UdpSocket::bind(("127.0.0.1", port + 1)).unwrap();
    let sink = format!(
        "  front_rtp: {{ type: rtp_sink, inputs: [front_h264], target: '127.0.0.1:{port}' }}\n"
    );
    let server = Server::start(&yaml(&sink));
    receiver
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 2048];
    receiver
        .recv(&mut buf)
        .expect("RTP while the sink is configured");
    assert_eq!(server.node("front_h264")["stats"]["listeners"], 1);

    // Without the sink (nobody else watches), the encoder idles and the stream ends with a BYE.
    server.rewrite_config(&yaml(""));
    wait_for("the encoder to idle", Duration::from_secs(10), || {
        (server.node("front_h264")["stats"]["listeners"] == 0).then_some(())
    });
    rtcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let bye = wait_for("an RTCP BYE", Duration::from_secs(5), || {
        let n = rtcp.recv(&mut buf).ok()?;
        // Sender reports come before it; a BYE is packet type 203.
        (n >= 8 && buf[1] == 203).then_some(n)
    });
    assert!(bye >= 8);
    let (status, _) = server.get_json("/api/camera/sdp/front");
    assert_eq!(status, 404, "the SDP went with the sink");
}
