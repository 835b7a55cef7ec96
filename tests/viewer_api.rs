//! The API additions the viewer page uses, over loopback: a stream's `width`/`height` (the nearest
//! size the encoder makes at or below, named in `X-Frame-Size`) for one viewer while another keeps
//! the full size; unknown or impossible stream and WebRTC parameters get a 400 that says why.

mod common;

use camgraph::client;
use common::{decode, test_camera_yaml, Server};

#[test]
fn a_viewer_asks_for_a_size_and_another_keeps_the_full_one() {
    let server = Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 1280, 720, 15)
    ));
    let mut full = server.mjpeg("/api/camera/stream/front");
    let r = client::get(&server.url("/api/camera/stream/front?width=640&height=360")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-frame-size"), Some("640x360"));
    let mut small = camgraph::mjpeg::PartReader::new(r.into_body(), camgraph::mjpeg::BOUNDARY);
    for _ in 0..3 {
        let (_, w, h) = decode(&small.next_part().unwrap().unwrap().data);
        assert_eq!((w, h), (640, 360));
        let (_, w, h) = decode(&full.next_part().unwrap().unwrap().data);
        assert_eq!((w, h), (1280, 720), "the other viewer is untouched");
    }
    // Only a width: the largest size within it (1/2 is 640 wide), said in the header.
    let r = client::get(&server.url("/api/camera/stream/front?width=400")).unwrap();
    assert_eq!(r.header("x-frame-size"), Some("320x180"));
    drop(r);
}

#[test]
fn unknown_or_impossible_values_get_a_400_that_says_why() {
    let server =
        Server::start("cameras:\n  front: { source: test, width: 320, height: 240, fps: 10 }\n");
    for (path, message) in [
        (
            "/api/camera/stream/front?widht=640",
            "unknown parameter 'widht'",
        ),
        (
            "/api/camera/stream/front?width=8",
            "'width' must be a number 16..=7680 (got '8')",
        ),
        (
            "/api/camera/stream/front?height=x",
            "'height' must be a number 16..=4320 (got 'x')",
        ),
        (
            "/api/camera/ws/front?quality=101",
            "'quality' must be a number 10..=100 (got '101')",
        ),
        (
            "/api/webrtc/ws?camera=front&scale=3",
            "'scale' must be 1, 2 or 4 (got '3')",
        ),
        (
            "/api/webrtc/ws?camera=front&bitrate=50",
            "'bitrate' must be a number 100..=50000 (got '50')",
        ),
    ] {
        let (status, body) = server.get_json(path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains(message),
            "{path}: {body}"
        );
    }
}
