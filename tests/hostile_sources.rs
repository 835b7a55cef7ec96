//! Hostile camera sources, end to end with the real binary: an MJPEG server that announces absurd
//! part sizes, files that are devices or FIFOs, and `http://` sources added through the API
//! used to probe the network (SSRF).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{wait_for, Server};

/// A camera `front` pulling `source`, with an encoder and a stream sink.
fn camera_yaml(source: &str) -> String {
    format!(
        "nodes:\n  \
         front: {{ type: camera, source: '{source}', width: 320, height: 240, fps: 10 }}\n  \
         front_jpeg: {{ type: jpeg_encoder, inputs: [front] }}\n  \
         front_mjpeg: {{ type: mjpeg_sink, inputs: [front_jpeg] }}\n"
    )
}

/// An MJPEG server on 127.0.0.1 whose every part announces `length` bytes and then sends a few;
/// its URL. It serves every connection (the camera reconnects) until the test process ends.
fn lying_mjpeg_server(length: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n\
                     --frame\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\nJPEG"
                );
                // Hold the connection open (the camera gives up on it, not the server).
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    url
}

#[test]
fn an_mjpeg_part_announcing_a_huge_size_is_refused_and_the_camera_goes_down() {
    for length in ["1000000000000", "18446744073709551615"] {
        let url = lying_mjpeg_server(length);
        let server = Server::start(&camera_yaml(&url));
        // A viewer makes the camera read parts.
        let viewer = client_stream(&server);
        let front = wait_for(
            &format!("the camera to go down over a {length}-byte part"),
            Duration::from_secs(10),
            || {
                let front = server.node("front");
                let error = front["stats"]["error"].as_str().unwrap_or_default();
                (front["state"] == "down" && error.contains("larger than the limit"))
                    .then_some(front)
            },
        );
        let error = front["stats"]["error"].as_str().unwrap();
        assert!(
            error.contains(&url) && error.contains(length) && error.contains("32 MiB"),
            "{error}"
        );
        // Still serving, and the refusals are counted.
        assert_eq!(server.get_json("/healthz").0, 200);
        let refused = camera_errors(&server, "too_large");
        assert!(refused >= 1.0, "counted: {refused}");
        assert!(!server.log().contains("panicked"), "{}", server.log());
        drop(viewer);
    }
}

/// An open MJPEG stream of camera `front` (the viewer's demand starts capture).
fn client_stream(server: &Server) -> camgraph::client::Response {
    let r = camgraph::client::get(&server.url("/api/camera/stream/front")).expect("stream");
    assert_eq!(r.status, 200);
    r
}

/// `camgraph_camera_errors_total` of camera `front` for `reason`.
fn camera_errors(server: &Server, reason: &str) -> f64 {
    let text = camgraph::client::get(&server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("camgraph_camera_errors_total{")
                && l.contains("node=\"front\"")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_device_in_the_file_is_a_config_error_naming_it() {
    let err = Server::try_start(&camera_yaml("/dev/zero"))
        .err()
        .expect("refused to start");
    assert!(
        err.contains("/dev/zero: a character device, not a regular file or folder"),
        "{err}"
    );
}

/// The threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_fifo_added_through_the_api_is_refused_and_leaks_no_thread() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.mjpeg");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let server = Server::start(&format!(
        "server: {{ api_sources: [test, '{}/*'] }}\n{}",
        dir.path().display(),
        camera_yaml("test")
    ));
    let add = format!("/api/camera/cameras/x?source={}", fifo.display());
    // Warm up: the HTTP workers start their threads on first use.
    server.post_json(&add);
    server.send_json("DELETE", "/api/camera/cameras/x");
    let before = threads(server.pid());
    for i in 0..20 {
        let (status, body) = server.post_json(&add);
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            status == 400 && error.contains("pipe.mjpeg: a FIFO, not a regular file or folder"),
            "cycle {i}: {status} {body}"
        );
        server.send_json("DELETE", "/api/camera/cameras/x");
    }
    assert_eq!(threads(server.pid()), before, "threads after 20 cycles");
}

/// What `/api/graph` shows as the source error of a camera added through the API.
const API_SOURCE_ERROR: &str = "the source failed; the server's log says why";

#[test]
fn an_http_source_added_through_the_api_does_not_tell_what_answered() {
    // A closed port, and a server that answers everything with 404.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let web_addr = web.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in web.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let server = Server::start(&camera_yaml("test"));
    for (name, addr) in [("closed", closed), ("web", web_addr)] {
        let (status, body) = server.post_json(&format!(
            "/api/camera/cameras/{name}?source=http://{addr}/stream"
        ));
        assert_eq!(status, 200, "{body}");
    }
    for name in ["closed", "web"] {
        let camera = wait_for(
            &format!("camera {name} to go down"),
            Duration::from_secs(10),
            || {
                let camera = server.node(name);
                // Down with a reason: before its first attempt a camera is down without one.
                (camera["state"] == "down" && camera["stats"]["error"].is_string())
                    .then_some(camera)
            },
        );
        assert_eq!(camera["stats"]["error"], API_SOURCE_ERROR, "{camera}");
    }
    // The log keeps what happened, for the operator.
    wait_for("the details in the log", Duration::from_secs(5), || {
        let log = server.log();
        (log.contains(&format!("{closed}/stream: Connection refused"))
            && log.contains(&format!("{web_addr}/stream: HTTP status 404")))
        .then_some(())
    });
    // A camera of the file still shows its error in full.
    let server = Server::start(&camera_yaml(&format!("http://{closed}/stream")));
    let front = wait_for("front to go down", Duration::from_secs(10), || {
        let front = server.node("front");
        (front["state"] == "down" && front["stats"]["error"].is_string()).then_some(front)
    });
    let error = front["stats"]["error"].as_str().unwrap();
    assert!(error.contains("Connection refused"), "{error}");
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .parse::<u64>()
                .ok()
        })
        .unwrap()
        / 1024
}

#[test]
fn an_idle_8k_test_camera_allocates_no_frame_memory() {
    // With grain the pattern keeps 8 backgrounds of 7680x4320x3 bytes: 796 MiB while someone watches.
    let server = Server::start(
        "nodes:\n  \
         big: { type: camera, source: test, width: 7680, height: 4320, fps: 1, noise: 4 }\n  \
         big_jpeg: { type: jpeg_encoder, inputs: [big] }\n  \
         big_mjpeg: { type: mjpeg_sink, inputs: [big_jpeg] }\n",
    );
    wait_for("the camera to be up", Duration::from_secs(20), || {
        (server.node("big")["stats"]["up"] == true).then_some(())
    });
    let rss = rss_mib(server.pid());
    assert!(rss < 200, "idle RSS {rss} MiB");
}

#[test]
fn a_removed_camera_lets_go_of_a_source_that_trickles() {
    // Announces a 1000-byte part, then sends one byte every 250 ms; tells when a connection
    // opens and when the camera hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let (hung_up, hang_ups) = std::sync::mpsc::channel();
    let (opened, opens) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = opened.send(());
            let hung_up = hung_up.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n\
                      --frame\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n",
                );
                while conn.write_all(b"x").is_ok() {
                    std::thread::sleep(Duration::from_millis(250));
                }
                let _ = hung_up.send(());
            });
        }
    });
    let server = Server::start(&camera_yaml("test"));
    let (status, body) = server.post_json(&format!("/api/camera/cameras/slow?source={url}"));
    assert_eq!(status, 200, "{body}");
    // The connection made at start to check the URL is closed at once.
    hang_ups
        .recv_timeout(Duration::from_secs(5))
        .expect("first hang-up");
    let viewer = camgraph::client::get(&server.url("/api/camera/stream/slow")).unwrap();
    opens
        .recv_timeout(Duration::from_secs(5))
        .expect("first connection");
    opens
        .recv_timeout(Duration::from_secs(5))
        .expect("the camera connects for the viewer and reads the trickle");
    drop(viewer);
    let (status, body) = server.send_json("DELETE", "/api/camera/cameras/slow");
    assert_eq!(status, 200, "{body}");
    hang_ups
        .recv_timeout(Duration::from_secs(20))
        .expect("the removed camera hung up");
}

#[test]
fn cameras_beyond_server_max_cameras_are_refused_from_the_file_and_the_api() {
    let server = Server::start(&format!(
        "server: {{ max_cameras: 2 }}\n{}",
        camera_yaml("test")
    ));
    let (status, body) = server.post_json("/api/camera/cameras/second?source=test");
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post_json("/api/camera/cameras/third?source=test");
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"], "camera 'third' would be camera 3: server.max_cameras is 2",
        "{body}"
    );
    // Removing one makes room.
    server.send_json("DELETE", "/api/camera/cameras/second");
    let (status, body) = server.post_json("/api/camera/cameras/third?source=test");
    assert_eq!(status, 200, "{body}");

    let err = Server::try_start(
        "server: { max_cameras: 2 }\ncameras:\n  a: { source: test }\n  b: { source: test }\n  \
         c: { source: test }\n",
    )
    .err()
    .expect("refused to start");
    assert!(
        err.contains("node 'c'") && err.contains("camera 3: server.max_cameras is 2"),
        "{err}"
    );
}

#[test]
fn a_reload_that_would_go_over_server_max_cameras_with_the_apis_changes_nothing() {
    let one = "server: { max_cameras: 2 }\ncameras:\n  a: { source: test }\n";
    let server = Server::start(one);
    let (status, body) = server.post_json("/api/camera/cameras/added?source=test");
    assert_eq!(status, 200, "{body}");
    server.rewrite_config(&format!("{one}  b: {{ source: test }}\n"));
    let (status, body) = server.post_json("/api/graph/reload");
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("camera 'b' would be camera 3: server.max_cameras is 2"),
        "{error}"
    );
    let (_, graph) = server.get_json("/api/graph");
    assert_eq!(
        graph["cameras"],
        serde_json::json!(["a", "added"]),
        "{graph}"
    );
}
