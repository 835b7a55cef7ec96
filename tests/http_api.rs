//! End to end over loopback: the real binary, a real HTTP client, real JPEG decoding.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use camgraph::client;
use camgraph::plugins::sources::testsrc::{captured_unix_ms, read_marks};
use common::{decode, test_camera_yaml, Server};

fn one_camera(fps: u32) -> Server {
    Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 640, 360, fps)
    ))
}

/// Reads parts for `seconds` and returns (painted frame number, X-Timestamp, JPEG length) of each.
fn read_for(server: &Server, path: &str, seconds: f64) -> Vec<(u32, SystemTime, usize)> {
    let mut parts = server.mjpeg(path);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut seen = Vec::new();
    while Instant::now() < until {
        let part = parts
            .next_part()
            .expect("read part")
            .expect("stream goes on");
        assert_eq!(part.content_type.as_deref(), Some("image/jpeg"));
        let (rgb, w, h) = decode(&part.data);
        assert_eq!((w, h), (640, 360));
        let marks = read_marks(&rgb, w, h).expect("frame number readable");
        let ts = part.timestamp.expect("X-Timestamp");
        seen.push((marks.seq, ts, part.data.len()));
        // The painted capture time and X-Timestamp are the same instant.
        let ts_ms = ts.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(captured_unix_ms(marks, SystemTime::now()), ts_ms);
    }
    seen
}

#[test]
fn the_stream_carries_decodable_frames_whose_number_advances_at_the_camera_fps() {
    let server = one_camera(30);
    let seen = read_for(&server, "/api/camera/stream/front", 3.0);
    let numbers: Vec<u32> = seen.iter().map(|s| s.0).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] > w[0]),
        "frame numbers must increase: {numbers:?}"
    );
    let span = seen
        .last()
        .unwrap()
        .1
        .duration_since(seen[0].1)
        .unwrap()
        .as_secs_f64();
    let fps = (seen.len() - 1) as f64 / span;
    assert!(
        (27.0..=31.0).contains(&fps),
        "{fps:.1} fps from {} frames",
        seen.len()
    );
    // The default camera is the first one: /api/camera/stream serves it too.
    let default = read_for(&server, "/api/camera/stream", 0.5);
    assert!(default.len() >= 10);
}

#[test]
fn a_cameras_second_sink_is_reached_by_its_node_id() {
    // front has two MJPEG sinks: the full rate, and one behind a 10 fps dropper.
    let server = Server::start(&format!(
        "nodes:\n{}  \
         front_10fps: {{ type: frame_dropper, inputs: [front], target_fps: 10 }}\n  \
         front_10fps_jpeg: {{ type: jpeg_encoder, inputs: [front_10fps] }}\n  \
         front_10fps_mjpeg: {{ type: mjpeg_sink, inputs: [front_10fps_jpeg] }}\n",
        test_camera_yaml("front", 640, 360, 30)
    ));
    let rate = |v: &[(u32, SystemTime, usize)]| {
        let span = v.last().unwrap().1.duration_since(v[0].1).unwrap();
        (v.len() - 1) as f64 / span.as_secs_f64()
    };
    let by_camera = rate(&read_for(&server, "/api/camera/stream/front", 2.0));
    let by_sink = rate(&read_for(
        &server,
        "/api/camera/stream/front_10fps_mjpeg",
        2.0,
    ));
    assert!(
        by_camera >= 27.0,
        "the camera's first sink: {by_camera:.1} fps"
    );
    assert!(
        (9.0..=10.6).contains(&by_sink),
        "the sink behind the dropper: {by_sink:.1} fps"
    );
    let snapshot = client::get(&server.url("/api/camera/snapshot/front_10fps_mjpeg")).unwrap();
    assert_eq!(snapshot.status, 200);
    assert_eq!(decode(&snapshot.bytes().unwrap()).1, 640);
    // Any other node id is no camera.
    let (status, body) = server.get_json("/api/camera/stream/front_jpeg");
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("unknown camera 'front_jpeg'"));
}

#[test]
fn fps_thins_frames_evenly_for_that_viewer_only() {
    let server = one_camera(30);
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| {
            tx.send(read_for(&server, "/api/camera/stream/front", 3.0))
                .unwrap()
        });
        let slow = read_for(&server, "/api/camera/stream/front?fps=10", 3.0);
        let fast = rx.recv().unwrap();
        let rate = |v: &[(u32, SystemTime, usize)]| {
            (v.len() - 1) as f64
                / v.last()
                    .unwrap()
                    .1
                    .duration_since(v[0].1)
                    .unwrap()
                    .as_secs_f64()
        };
        assert!(
            (9.0..=10.6).contains(&rate(&slow)),
            "fps=10 viewer got {:.1}",
            rate(&slow)
        );
        assert!(
            rate(&fast) >= 27.0,
            "the other viewer got {:.1}",
            rate(&fast)
        );
        for w in slow.windows(2) {
            let step = w[1].0 - w[0].0;
            assert!(
                (2..=4).contains(&step),
                "uneven thinning: {:?}",
                slow.iter().map(|s| s.0).collect::<Vec<_>>()
            );
        }
    });
}

#[test]
fn viewers_asking_for_the_same_quality_share_one_encode() {
    let server = one_camera(30);
    let encoded = |s: &Server| {
        s.metric("camgraph_frames_encoded_total{camera=\"front\"")
            .unwrap_or(0.0)
    };
    let captured = |s: &Server| {
        s.metric("camgraph_frames_captured_total{camera=\"front\"")
            .unwrap_or(0.0)
    };
    let mut streams: Vec<_> = ["", "?quality=50", "?quality=50", "?quality=50"]
        .iter()
        .map(|q| server.mjpeg(&format!("/api/camera/stream/front{q}")))
        .collect();
    let mut sizes = Vec::new();
    for s in &mut streams {
        sizes.push(s.next_part().unwrap().unwrap().data.len());
    }
    // Keep every viewer reading while the counters are compared.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.next_part().unwrap().unwrap();
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let (e0, c0) = (encoded(&server), captured(&server));
    thread::sleep(Duration::from_secs(2));
    let (e1, c1) = (encoded(&server), captured(&server));
    let per_frame = (e1 - e0) / (c1 - c0);
    assert!(
        (1.8..=2.2).contains(&per_frame),
        "{per_frame:.2} encodes per captured frame for 2 distinct qualities"
    );
    let (_, graph) = server.get_json("/api/graph");
    let encoder = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "front_jpeg")
        .unwrap();
    assert_eq!(
        encoder["stats"]["variants"],
        serde_json::json!(["q50", "q80"])
    );
    assert_eq!(
        server.metric("camgraph_encoder_active_settings{camera=\"front\""),
        Some(2.0)
    );
    assert!(
        sizes[1] < sizes[0],
        "quality 50 ({}) should be smaller than 80 ({})",
        sizes[1],
        sizes[0]
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn nothing_is_captured_or_encoded_while_nobody_watches() {
    let server = one_camera(30);
    let captured = |s: &Server| {
        s.metric("camgraph_frames_captured_total{camera=\"front\"")
            .unwrap_or(0.0)
    };
    let before = captured(&server);
    thread::sleep(Duration::from_millis(700));
    assert_eq!(captured(&server), before, "captured frames with no viewer");
    {
        let mut stream = server.mjpeg("/api/camera/stream/front");
        for _ in 0..10 {
            stream.next_part().unwrap().unwrap();
        }
    }
    let watched = captured(&server);
    assert!(watched >= before + 10.0);
    thread::sleep(Duration::from_millis(300)); // the viewer's connection closes
    let idle = captured(&server);
    thread::sleep(Duration::from_millis(700));
    assert_eq!(
        captured(&server),
        idle,
        "still capturing after the last viewer left"
    );
}

#[test]
fn snapshot_start_and_stop() {
    let server = one_camera(30);
    for path in ["/api/camera/snapshot", "/api/camera/snapshot/front"] {
        let r = client::get(&server.url(path)).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        assert!(r.header("x-timestamp").is_some());
        let (rgb, w, h) = decode(&r.bytes().unwrap());
        assert_eq!((w, h), (640, 360));
        assert!(read_marks(&rgb, w, h).is_some());
    }
    assert_eq!(
        server.post_json("/api/camera/stop"),
        (200, serde_json::json!({"status": "stopped"}))
    );
    let stopped_at = SystemTime::now();
    let mut stream = server.mjpeg("/api/camera/stream/front");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        while let Ok(Some(part)) = stream.next_part() {
            if tx.send(part.timestamp).is_err() {
                break;
            }
        }
    });
    // A frame captured before the stop may still be on its way; none captured after it may come.
    while let Ok(ts) = rx.recv_timeout(Duration::from_millis(800)) {
        assert!(
            ts.unwrap() < stopped_at,
            "a frame captured after stop was sent"
        );
    }
    let (status, body) = server.get_json("/api/camera/snapshot");
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("front"), "{body}");
    // Exactly this body: the guide's client compares the string.
    let r = client::request("POST", &server.url("/api/camera/start"), &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text().unwrap(), r#"{"status":"started"}"#);
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_ok(),
        "no frames after start"
    );
}

#[test]
fn bad_requests_get_a_4xx_with_a_json_error() {
    let server = one_camera(30);
    let cases = [
        (
            "/api/camera/stream?quality=500",
            400,
            "'quality' must be a number 10..=100 (got '500')",
        ),
        (
            "/api/camera/stream?quality=high",
            400,
            "'quality' must be a number 10..=100 (got 'high')",
        ),
        (
            "/api/camera/stream?fps=0",
            400,
            "'fps' must be a number 1..=60 (got '0')",
        ),
        (
            "/api/camera/stream?fps=1e9",
            400,
            "'fps' must be a number 1..=60 (got '1e9')",
        ),
        (
            "/api/camera/stream/back",
            404,
            "unknown camera 'back' (cameras: front)",
        ),
        (
            "/api/camera/snapshot/back",
            404,
            "unknown camera 'back' (cameras: front)",
        ),
        (
            "/api/camera/stream/front_jpeg",
            404,
            "unknown camera 'front_jpeg' (cameras: front)",
        ),
        ("/api/nope", 404, "no route for GET /api/nope"),
    ];
    for (path, status, message) in cases {
        let (got, body) = server.get_json(path);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(message)),
            "{path}"
        );
    }
    let (status, body) = server.post_json("/api/camera/start?camera=back");
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown camera 'back' (cameras: front)"))
    );
    // Still serving after all that.
    assert_eq!(
        server.get_json("/healthz"),
        (200, serde_json::json!({"status": "ok"}))
    );
    assert_eq!(
        server.get_json("/api/camera/cameras"),
        (200, serde_json::json!({"cameras": ["front"]}))
    );
}

#[test]
fn cors_answers_allowed_origins_only() {
    // By default no other origin may read the API, a local one included (any local page or
    // program could otherwise read it).
    let default = one_camera(5);
    let allowed_by = |server: &Server, origin: &str| {
        let r = client::request(
            "GET",
            &server.url("/api/camera/cameras"),
            &[("Origin", origin)],
            None,
        )
        .unwrap();
        r.header("access-control-allow-origin").map(str::to_string)
    };
    assert_eq!(allowed_by(&default, "http://localhost:5173"), None);
    assert_eq!(allowed_by(&default, "http://127.0.0.1:3000"), None);
    drop(default);

    let server = Server::start(&format!(
        "server: {{ cors_origins: [\"http://localhost:5173\", \"http://127.0.0.1:3000\"] }}\nnodes:\n{}",
        test_camera_yaml("front", 640, 360, 5)
    ));
    let origin_header = |origin: &str| allowed_by(&server, origin);
    assert_eq!(
        origin_header("http://localhost:5173").as_deref(),
        Some("http://localhost:5173")
    );
    assert_eq!(origin_header("http://evil.example"), None);
    assert_eq!(origin_header("http://localhost:5174"), None);
    let preflight = client::request(
        "OPTIONS",
        &server.url("/api/camera/start"),
        &[
            ("Origin", "http://127.0.0.1:3000"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://127.0.0.1:3000")
    );
    assert!(preflight
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
}

/// A viewer that connects gets the newest frame at once, not the next capture: with a 1 fps camera
/// already watched, a second viewer's first part was captured before it asked, and came well
/// within one frame interval.
#[test]
fn a_new_viewer_gets_the_newest_frame_at_once() {
    let server = one_camera(1);
    let mut first = server.mjpeg("/api/camera/stream/front");
    first.next_part().unwrap().expect("a part");
    let asked = SystemTime::now();
    let started = Instant::now();
    let mut second = server.mjpeg("/api/camera/stream/front");
    let part = second.next_part().unwrap().expect("a part");
    let waited = started.elapsed();
    let captured = part.timestamp.expect("X-Timestamp");
    assert!(
        captured <= asked,
        "the first part was captured {:?} after the viewer asked: it waited for the next capture",
        captured.duration_since(asked).unwrap_or_default()
    );
    assert!(
        waited < Duration::from_secs(1),
        "first part after {waited:?}"
    );
}

/// An image request (`Accept: image/...`, as browsers send for `<img>`) gets the advance form: the
/// first part's headers at once, then each JPEG followed directly by the part end and the next
/// part's boundary and headers; the capture time is inside the JPEG (a comment segment) and is
/// the one painted into the picture. `?advance=0` gives the same request the classic form.
#[test]
fn an_image_request_gets_each_jpeg_followed_by_the_next_parts_headers() {
    use camgraph::mjpeg::{jpeg_timestamp, ADVANCE_END, ADVANCE_HEADER};
    use std::io::{BufRead, Read};
    let server = one_camera(30);
    let accept = [(
        "Accept",
        "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
    )];
    let r = client::request(
        "GET",
        &server.url("/api/camera/stream/front"),
        &accept,
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let mut body = r.into_body();
    let mut start = vec![0; ADVANCE_HEADER.len()];
    body.read_exact(&mut start).unwrap();
    assert_eq!(start, ADVANCE_HEADER);
    for _ in 0..3 {
        let mut part = Vec::new();
        while !part.ends_with(ADVANCE_END) {
            assert!(
                body.read_until(b'\n', &mut part).unwrap() > 0,
                "stream ended"
            );
        }
        let jpeg = &part[..part.len() - ADVANCE_END.len()];
        let ts = jpeg_timestamp(jpeg).expect("the capture time inside the JPEG");
        let (rgb, w, h) = decode(jpeg);
        assert_eq!((w, h), (640, 360));
        let marks = read_marks(&rgb, w, h).expect("frame number readable");
        let ts_ms = ts.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(captured_unix_ms(marks, SystemTime::now()), ts_ms);
    }
    let classic = client::request(
        "GET",
        &server.url("/api/camera/stream/front?advance=0"),
        &accept,
        None,
    )
    .unwrap();
    let mut parts =
        camgraph::mjpeg::PartReader::new(classic.into_body(), camgraph::mjpeg::BOUNDARY);
    let part = parts.next_part().unwrap().expect("a part");
    assert!(part.timestamp.is_some(), "classic parts carry X-Timestamp");
    assert_eq!(decode(&part.data).1, 640);
}

/// Both wire forms (`?advance=0`: parts with `Content-Length`; `?advance=1`: headers advanced,
/// no length) are read by ffprobe, which decodes 10 frames of each.
#[test]
fn ffprobe_reads_both_stream_forms_as_an_independent_client() {
    let server = one_camera(30);
    for form in ["advance=0", "advance=1"] {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-f",
                "mpjpeg",
                "-count_frames",
                "-read_intervals",
                "%+#10",
                "-show_entries",
                "stream=codec_name,width,height,nb_read_frames",
                "-of",
                "json",
            ])
            .arg(server.url(&format!("/api/camera/stream/front?{form}")))
            .output()
            .expect("ffprobe is installed (apt ffmpeg)");
        assert!(
            out.status.success(),
            "ffprobe ({form}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let stream = &info["streams"][0];
        assert_eq!(stream["codec_name"], "mjpeg", "{form}: {info}");
        assert_eq!(stream["width"], 640, "{form}: {info}");
        assert_eq!(stream["height"], 360, "{form}: {info}");
        assert_eq!(stream["nb_read_frames"], "10", "{form}: {info}");
    }
}

#[test]
fn a_recording_is_served_without_re_encoding() {
    let clip = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/clip.mjpeg");
    let server = Server::start(&format!(
        "nodes:\n  replay: {{ type: camera, source: {clip}, fps: 20 }}\n  \
         replay_jpeg: {{ type: jpeg_encoder, inputs: [replay] }}\n  \
         replay_mjpeg: {{ type: mjpeg_sink, inputs: [replay_jpeg] }}\n"
    ));
    let file = std::fs::read(clip).unwrap();
    let originals: BTreeSet<Vec<u8>> = camgraph::plugins::sources::files::split_jpegs(&file)
        .into_iter()
        .map(|r| file[r].to_vec())
        .collect();
    assert_eq!(originals.len(), 20);
    let mut stream = server.mjpeg("/api/camera/stream/replay");
    for _ in 0..25 {
        let part = stream.next_part().unwrap().unwrap();
        assert!(
            originals.contains(&part.data),
            "a served frame is not byte-identical to the file's"
        );
    }
    assert_eq!(
        server.metric("camgraph_frames_encoded_total{camera=\"replay\""),
        Some(0.0)
    );
    // Another quality needs a real re-encode, and gets one.
    let mut other = server.mjpeg("/api/camera/stream/replay?quality=20");
    let part = other.next_part().unwrap().unwrap();
    assert!(!originals.contains(&part.data));
    assert_eq!(decode(&part.data).1, 320);
}

#[test]
fn a_missing_v4l2_device_is_reported_and_viewers_see_no_signal() {
    let server = Server::start(
        "nodes:\n  usb: { type: camera, source: /dev/video7, width: 320, height: 240 }\n  \
         usb_jpeg: { type: jpeg_encoder, inputs: [usb] }\n  usb_mjpeg: { type: mjpeg_sink, inputs: [usb_jpeg] }\n",
    );
    let (_, graph) = server.get_json("/api/graph");
    let camera = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "usb")
        .unwrap()
        .clone();
    assert_eq!(camera["state"], "down", "{camera}");
    let error = camera["stats"]["error"].as_str().unwrap();
    assert!(error.contains("cannot open camera /dev/video7"), "{error}");
    // The log reaches the test through a pipe and a reader thread: it may trail /api/graph.
    common::wait_for("the error in the log", Duration::from_secs(5), || {
        server
            .log()
            .contains("cannot open camera /dev/video7")
            .then_some(())
    });
    assert_eq!(
        server.metric("camgraph_camera_up{camera=\"usb\""),
        Some(0.0)
    );
    // Viewers get the "no signal" picture at the camera's size.
    let part = server
        .mjpeg("/api/camera/stream/usb")
        .next_part()
        .unwrap()
        .unwrap();
    let (rgb, w, h) = decode(&part.data);
    assert_eq!((w, h), (320, 240));
    let corner = &rgb[..3];
    let bg = camgraph::plugins::sources::nosignal::BACKGROUND;
    assert!(
        corner.iter().zip(bg).all(|(a, b)| a.abs_diff(b) < 12),
        "corner {corner:?}"
    );
    assert!(!server.log().contains("panicked"));
}

#[test]
fn devices_lists_no_cameras_here() {
    let out = Command::new(env!("CARGO_BIN_EXE_camgraph"))
        .arg("devices")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no cameras found"
    );
}

#[test]
fn stats_give_the_stream_managers_numbers() {
    let server = one_camera(30);
    let seen = read_for(&server, "/api/camera/stream/front", 3.5);
    let (status, stats) = server.get_json("/api/stats/front");
    assert_eq!(status, 200);
    let fps_in = stats["fps_in"].as_f64().unwrap();
    assert!((27.0..=31.0).contains(&fps_in), "{stats}");
    assert!(stats["frames_sent"].as_f64().unwrap() >= seen.len() as f64);
    let latency = stats["latency_ms"].as_f64().unwrap();
    assert!(latency > 0.0 && latency < 100.0, "{stats}");
    let bytes_per_frame = seen.iter().map(|s| s.2).sum::<usize>() as f64 / seen.len() as f64;
    let expected_bps = bytes_per_frame * 8.0 * stats["fps_out"].as_f64().unwrap();
    let bps = stats["bandwidth_bps"].as_f64().unwrap();
    assert!(
        (bps / expected_bps - 1.0).abs() < 0.25,
        "{bps} vs {expected_bps}"
    );
    let (_, all) = server.get_json("/api/stats");
    assert!(all["cameras"]["front"].is_object());
    assert_eq!(server.get_json("/api/stats/nope").0, 404);
}

#[test]
fn a_viewer_that_leaves_a_stopped_camera_is_noticed() {
    let server = one_camera(30);
    let viewers = |s: &Server| {
        s.metric("camgraph_viewers{camera=\"front\"")
            .unwrap_or(-1.0)
    };
    let mut stream = server.mjpeg("/api/camera/stream/front");
    stream.next_part().unwrap().unwrap();
    assert_eq!(server.post_json("/api/camera/stop").0, 200);
    assert_eq!(viewers(&server), 1.0);
    drop(stream);
    // Nothing new is written while stopped; the last picture is repeated so the hang-up shows.
    common::wait_for("the viewer count to drop", Duration::from_secs(5), || {
        (viewers(&server) == 0.0).then_some(())
    });
}

/// Reads at most `rate` bytes a second from `inner`, in reads of at most 16 KiB: a viewer slower
/// than the camera.
struct Slow<R> {
    inner: R,
    rate: f64,
    start: Instant,
    read: usize,
}

impl<R: std::io::Read> std::io::Read for Slow<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let due = self.start + Duration::from_secs_f64(self.read as f64 / self.rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let len = buf.len().min(16 * 1024);
        let n = self.inner.read(&mut buf[..len])?;
        self.read += n;
        Ok(n)
    }
}

/// A viewer that reads slower than the camera sends (300 KB/s of a 1280x720 30 fps stream) fills
/// its socket: the server hands it the rest of each part its socket could not take and skips
/// frames for it meanwhile (counted as dropped behind). Every part it gets is whole and newer
/// than the last, and a viewer beside it keeps the camera's rate.
#[test]
fn a_viewer_slower_than_the_camera_gets_whole_parts_while_another_keeps_the_rate() {
    let server = Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 1280, 720, 30)
    ));
    let url = server.url("/api/camera/stream/front");
    let slow = thread::spawn(move || {
        let response = client::get(&url).expect("GET stream");
        let body = Slow {
            inner: response.into_body(),
            rate: 300_000.0,
            start: Instant::now(),
            read: 0,
        };
        let mut parts = camgraph::mjpeg::PartReader::new(
            std::io::BufReader::with_capacity(16 * 1024, body),
            camgraph::mjpeg::BOUNDARY,
        );
        let until = Instant::now() + Duration::from_secs(6);
        let mut stamps = Vec::new();
        while Instant::now() < until {
            let part = parts
                .next_part()
                .expect("a whole part")
                .expect("more parts");
            assert!(part.data.starts_with(&[0xFF, 0xD8]), "starts as a JPEG");
            assert!(part.data.ends_with(&[0xFF, 0xD9]), "ends as a JPEG");
            let (_, w, h) = decode(&part.data);
            assert_eq!((w, h), (1280, 720));
            stamps.push(part.timestamp.expect("X-Timestamp"));
        }
        stamps
    });
    let mut normal = server.mjpeg("/api/camera/stream/front");
    let start = Instant::now();
    let mut normal_parts = 0;
    while start.elapsed() < Duration::from_secs(5) {
        normal
            .next_part()
            .expect("read part")
            .expect("stream goes on");
        normal_parts += 1;
    }
    let fps = normal_parts as f64 / start.elapsed().as_secs_f64();
    let stamps = slow.join().expect("the slow viewer's parts were whole");
    assert!(fps >= 25.0, "the normal viewer got {fps:.1} fps");
    assert!(
        stamps.len() >= 5,
        "the slow viewer got {} parts",
        stamps.len()
    );
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "the slow viewer's parts go forward"
    );
    // It could not take every frame: it skipped some, and the server counted them.
    assert!(
        stamps.len() < 6 * 30 / 2,
        "the slow viewer got {} parts in 6 s",
        stamps.len()
    );
    let behind = server
        .metric(
            "camgraph_frames_dropped_total{camera=\"front\",node=\"front_mjpeg\",reason=\"behind\"",
        )
        .unwrap_or(0.0);
    assert!(behind > 0.0, "no frame counted as dropped behind");
}
