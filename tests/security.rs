//! Safe on a real network, end to end with the real binary: tokens and roles on every route
//! (`server.auth`), the rule that a non-loopback server needs them, cross-site refusals (Origin,
//! form bodies, the Host header, the WebSocket upgrade), the `server.api_sources` allow-list,
//! and hostile input that used to panic or exhaust memory.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use camgraph::client;
use common::{test_camera_yaml, wait_for, Server, CHROMIUM_OFFER as OFFER};

const VIEW: &str = "view-token-0123456789abcdef";
const CONTROL: &str = "control-token-0123456789abcdef";

/// A camera with every kind of route: MJPEG, disk snapshots, WebRTC.
fn all_routes_nodes(snapshots: &std::path::Path) -> String {
    format!(
        "nodes:\n{}  \
         front_disk: {{ type: snapshot_sink, inputs: [front_jpeg], folder: {} }}\n  \
         front_h264: {{ type: h264_encoder, inputs: [front], bitrate_kbps: 500 }}\n  \
         front_rtc: {{ type: webrtc_sink, inputs: [front_h264] }}\n",
        test_camera_yaml("front", 320, 240, 15),
        snapshots.display()
    )
}

/// A server with a `view` token read from a file and a `control` token from the config.
fn with_tokens(dir: &tempfile::TempDir) -> Server {
    let token_file = dir.path().join("view.token");
    std::fs::write(&token_file, format!("{VIEW}\n")).unwrap();
    Server::start(&format!(
        "server:\n  auth:\n    tokens:\n      \
         - {{ name: laptop, token_file: {}, role: view }}\n      \
         - {{ name: admin, token: {CONTROL}, role: control }}\n{}",
        token_file.display(),
        all_routes_nodes(&dir.path().join("snaps"))
    ))
}

/// Sends a request with extra headers; the status and body.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> (u16, String, Option<String>) {
    let r = client::request(method, &server.url(path), headers, body).expect("request");
    let status = r.status;
    let location = r.header("location").map(str::to_string);
    let text = if r.header("content-type") == Some(camgraph::mjpeg::CONTENT_TYPE) {
        String::new() // an endless stream: its head is the answer
    } else {
        r.text().unwrap_or_default()
    };
    (status, text, location)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Sends raw bytes on a new connection and returns what the server answers until it closes
/// or `within` passes.
fn raw(server: &Server, request: &[u8], within: Duration) -> String {
    let mut s = TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    // The server may answer and close before it has read everything (a refused huge head).
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

fn host(server: &Server) -> &str {
    server.base.trim_start_matches("http://")
}

/// A WebSocket handshake for `path` with optional Origin; the status line of the answer and
/// the connection (open if it was upgraded).
fn ws_open(server: &Server, path: &str, origin: Option<&str>) -> (String, TcpStream) {
    let mut s = TcpStream::connect(host(server)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n",
        host(server)
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    (head.lines().next().unwrap_or("").to_string(), s)
}

fn refused_count(server: &Server, reason: &str) -> f64 {
    let r = client::request(
        "GET",
        &server.url("/metrics"),
        &[("Authorization", &bearer(VIEW))],
        None,
    )
    .unwrap();
    let text = r.text().unwrap();
    let prefix = format!("camgraph_http_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

#[test]
fn every_route_refuses_no_token_and_the_wrong_role_and_serves_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = with_tokens(&dir);
    let view = bearer(VIEW);
    let control = bearer(CONTROL);
    // (method, path, body, needs control, status when served)
    type Route<'a> = (&'a str, &'a str, Option<(&'a str, &'a [u8])>, bool, u16);
    let routes: Vec<Route> = vec![
        ("GET", "/", None, false, 200),
        ("GET", "/webrtc", None, false, 200),
        ("GET", "/metrics", None, false, 200),
        ("GET", "/api/graph", None, false, 200),
        ("GET", "/api/stats", None, false, 200),
        ("GET", "/api/stats/front", None, false, 200),
        ("GET", "/api/camera/cameras", None, false, 200),
        ("GET", "/api/camera/stream", None, false, 200),
        ("GET", "/api/camera/stream/front", None, false, 200),
        ("GET", "/api/camera/snapshot", None, false, 200),
        ("GET", "/api/camera/snapshot/front", None, false, 200),
        ("OPTIONS", "/api/webrtc/whep/front", None, false, 204),
        ("PATCH", "/api/webrtc/whep/front/x", None, false, 405),
        ("POST", "/api/camera/snapshot", None, true, 200),
        ("POST", "/api/camera/snapshot/front", None, true, 200),
        ("POST", "/api/camera/stop", None, true, 200),
        ("POST", "/api/camera/start", None, true, 200),
        ("POST", "/api/graph/reload", None, true, 200),
        (
            "POST",
            "/api/camera/cameras/side?source=test",
            None,
            true,
            200,
        ),
        ("DELETE", "/api/camera/cameras/side", None, true, 200),
    ];
    let mut refusals = 0.0;
    for (method, path, body, needs_control, served) in routes {
        let (status, text, _) = call(&server, method, path, &[], body);
        assert_eq!(status, 401, "{method} {path} without a token: {text}");
        assert!(text.contains("needs a token"), "{method} {path}: {text}");
        let (status, text, _) = call(
            &server,
            method,
            path,
            &[("Authorization", "Bearer nope")],
            body,
        );
        assert_eq!(status, 401, "{method} {path} with a wrong token: {text}");
        refusals += 2.0;
        if needs_control {
            let (status, text, _) = call(&server, method, path, &[("Authorization", &view)], body);
            assert_eq!(status, 403, "{method} {path} with the view token: {text}");
            assert!(text.contains("needs 'control'"), "{text}");
        } else {
            let (status, text, _) = call(&server, method, path, &[("Authorization", &view)], body);
            assert_eq!(
                status, served,
                "{method} {path} with the view token: {text}"
            );
        }
        let (status, text, _) = call(&server, method, path, &[("Authorization", &control)], body);
        assert_eq!(
            status, served,
            "{method} {path} with the control token: {text}"
        );
    }
    // WHEP only watches: a view token opens and closes a session.
    let offer = Some(("application/sdp", OFFER.as_bytes()));
    let (status, _, _) = call(&server, "POST", "/api/webrtc/whep/front", &[], offer);
    assert_eq!(status, 401);
    let (status, text, location) = call(
        &server,
        "POST",
        "/api/webrtc/whep/front",
        &[("Authorization", &view)],
        offer,
    );
    assert_eq!(status, 201, "{text}");
    let location = location.expect("Location");
    assert_eq!(call(&server, "DELETE", &location, &[], None).0, 401);
    let (status, text, _) = call(
        &server,
        "DELETE",
        &location,
        &[("Authorization", &view)],
        None,
    );
    assert_eq!(status, 200, "{text}");
    // /healthz stays open.
    assert_eq!(call(&server, "GET", "/healthz", &[], None).0, 200);
    assert!(refused_count(&server, "unauthenticated") >= refusals + 2.0);
    assert!(refused_count(&server, "role") >= 7.0);
    // The tokens are never logged.
    let log = server.log();
    assert!(!log.contains(VIEW) && !log.contains(CONTROL), "{log}");
    assert!(log.contains("written in the configuration file"), "{log}");
}

#[test]
fn a_token_in_the_query_opens_a_stream_and_the_websocket_and_a_session_cookie_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = with_tokens(&dir);
    let mut parts = server.mjpeg(&format!("/api/camera/stream/front?token={VIEW}"));
    assert!(parts.next_part().unwrap().is_some(), "a frame");
    let (status, _) = ws_open(&server, "/api/webrtc/ws?camera=front", None);
    assert!(status.contains(" 401 "), "{status}");
    let (status, _) = ws_open(
        &server,
        &format!("/api/webrtc/ws?camera=front&token={VIEW}"),
        None,
    );
    assert!(status.contains(" 101 "), "{status}");

    // The viewer page trades the token for an HttpOnly, SameSite=Strict cookie.
    let body = format!("{{\"token\":\"{CONTROL}\"}}");
    let r = client::request(
        "POST",
        &server.url("/api/session"),
        &[],
        Some(("application/json", body.as_bytes())),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").expect("Set-Cookie").to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let (status, text, _) = call(
        &server,
        "POST",
        "/api/camera/start",
        &[("Cookie", &pair)],
        None,
    );
    assert_eq!(status, 200, "{text}");
    let (status, _, _) = call(
        &server,
        "POST",
        "/api/session",
        &[],
        Some(("application/json", b"{\"token\":\"wrong\"}")),
    );
    assert_eq!(status, 401);
}

#[test]
fn a_non_loopback_listen_needs_auth_or_auth_none_on_purpose() {
    let yaml = format!("nodes:\n{}", test_camera_yaml("front", 320, 240, 5));
    let err = Server::try_start_on(&yaml, "0.0.0.0:0")
        .err()
        .expect("refused to start");
    assert!(
        err.contains("which is not a loopback address, without `server.auth`"),
        "{err}"
    );
    let open = Server::start_on(&format!("server: {{ auth: none }}\n{yaml}"), "0.0.0.0:0");
    wait_for("the warning", Duration::from_secs(5), || {
        open.log().contains("server.auth is 'none'").then_some(())
    });
    let missing = Server::try_start(&format!(
        "server:\n  auth: {{ tokens: [{{ name: x, token_file: /no/such/file, role: view }}] }}\n{yaml}"
    ))
    .err()
    .expect("refused to start");
    assert!(
        missing.contains("token 'x': cannot read token_file /no/such/file"),
        "{missing}"
    );
}

#[test]
fn a_cross_origin_simple_post_cannot_stop_capture() {
    let server = Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 320, 240, 30)
    ));
    let mut parts = server.mjpeg("/api/camera/stream/front");
    parts.next_part().unwrap().expect("a frame");
    let before = server.metric("camgraph_frames_captured_total").unwrap();
    let (status, text, _) = call(
        &server,
        "POST",
        "/api/camera/stop",
        &[("Origin", "http://evil.example")],
        Some(("text/plain", b"x")),
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("origin 'http://evil.example'"), "{text}");
    // A form body without an Origin (an old browser) is refused too.
    let (status, text, _) = call(
        &server,
        "POST",
        "/api/camera/stop",
        &[],
        Some(("application/x-www-form-urlencoded", b"a=b")),
    );
    assert_eq!(status, 415, "{text}");
    // Capture goes on.
    wait_for(
        "frames after the refused stop",
        Duration::from_secs(5),
        || {
            parts.next_part().unwrap().expect("stream goes on");
            (server.metric("camgraph_frames_captured_total").unwrap() >= before + 10.0)
                .then_some(())
        },
    );
    // The server's own origin may stop it: the refusal above was the origin's.
    let own = server.base.clone();
    let (status, text, _) = call(
        &server,
        "POST",
        "/api/camera/stop",
        &[("Origin", &own)],
        None,
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        server.metric("camgraph_http_refused_total{reason=\"origin\"}"),
        Some(1.0)
    );
    assert_eq!(
        server.metric("camgraph_http_refused_total{reason=\"content_type\"}"),
        Some(1.0)
    );
}

#[test]
fn a_foreign_host_and_a_foreign_websocket_origin_are_refused() {
    let server = Server::start(&format!(
        "server: {{ hosts: [robot.local] }}\nnodes:\n{}  \
         front_h264: {{ type: h264_encoder, inputs: [front] }}\n  \
         front_rtc: {{ type: webrtc_sink, inputs: [front_h264] }}\n",
        test_camera_yaml("front", 320, 240, 15)
    ));
    let answer = raw(
        &server,
        b"GET /api/camera/cameras HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    for ok in ["localhost", "robot.local:8080", "127.0.0.1"] {
        let answer = raw(
            &server,
            format!("GET /api/camera/cameras HTTP/1.1\r\nHost: {ok}\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{ok}: {answer}");
    }
    let (status, _) = ws_open(&server, "/api/webrtc/ws", Some("http://evil.example"));
    assert!(status.contains(" 403 "), "{status}");
    let own = server.base.clone();
    let (status, _) = ws_open(&server, "/api/webrtc/ws", Some(&own));
    assert!(status.contains(" 101 "), "{status}");
}

#[test]
fn the_api_adds_only_allowed_sources() {
    let server = Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 320, 240, 5)
    ));
    for source in ["/etc", "/no/such/folder", "/dev/video0/../../etc"] {
        let (status, body) = server.post_json(&format!("/api/camera/cameras/x?source={source}"));
        let error = body["error"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{source}: {body}");
        assert!(
            error.contains(&format!(
                "source '{source}' may not be added through the API"
            )) && error.contains("server.api_sources allows test, /dev/video*"),
            "{source}: {error}"
        );
    }
    // Listed, a file may be added.
    let clip = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/clip.mjpeg");
    let listed = Server::start(&format!(
        "server: {{ api_sources: [test, '{}/*'] }}\nnodes:\n{}",
        clip.parent().unwrap().display(),
        test_camera_yaml("front", 320, 240, 5)
    ));
    let (status, body) = listed.post_json("/api/camera/cameras/x?source=/etc");
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        listed.post_json(&format!("/api/camera/cameras/y?source={}", clip.display()));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_malformed_origin_is_answered_without_a_panic() {
    let server = Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 320, 240, 5)
    ));
    for origin in ["http://[", "https://[::1", "http://", "http://[]:x"] {
        let (status, text, _) = call(
            &server,
            "GET",
            "/api/camera/cameras",
            &[("Origin", origin)],
            None,
        );
        assert_eq!(status, 200, "{origin}: {text}");
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn a_websocket_frame_declaring_a_huge_size_closes_the_socket_unbuffered() {
    let server = Server::start(&format!(
        "nodes:\n{}  \
         front_h264: {{ type: h264_encoder, inputs: [front] }}\n  \
         front_rtc: {{ type: webrtc_sink, inputs: [front_h264] }}\n",
        test_camera_yaml("front", 320, 240, 15)
    ));
    let (status, mut ws) = ws_open(&server, "/api/webrtc/ws", None);
    assert!(status.contains(" 101 "), "{status}");
    // A masked text frame declaring 2^62 bytes, then data: the server must close the socket
    // rather than wait for (and hold) the rest.
    let mut head = vec![0x81, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 62).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    ws.write_all(&head).unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0usize;
    let closed = loop {
        if Instant::now() > deadline {
            break false;
        }
        match ws.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break true,
        }
        if sent > 256 * 1024 * 1024 {
            break false;
        }
    };
    assert!(closed, "the server kept reading ({} MiB sent)", sent >> 20);
    assert!(
        sent < 16 * 1024 * 1024,
        "closed only after {} MiB",
        sent >> 20
    );
}

/// A TLS client on `tcp` (connected to `server`) that trusts only `ca_pem`.
fn tls_over(
    tcp: TcpStream,
    ca_pem: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn tls_addr(server: &Server) -> &str {
    server.base.trim_start_matches("https://")
}

/// A GET over TLS trusting only `ca_pem`; the response as it streams.
fn https_get(server: &Server, ca_pem: &str, path: &str) -> std::io::Result<client::Response> {
    let tcp = TcpStream::connect(tls_addr(server))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = tls_over(tcp, ca_pem);
    let port = tls_addr(server).rsplit(':').next().unwrap_or_default();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    )?;
    client::read_response(std::io::BufReader::new(tls))
}

/// Writes a fresh self-signed certificate for `localhost` and its key as `dir`/cert.pem and
/// key.pem; the certificate's PEM (what a client trusts).
fn new_certificate(dir: &tempfile::TempDir) -> String {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), pair.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
    pair.cert.pem()
}

/// A server on TLS with a fresh certificate (`new_certificate`), more `server:` settings
/// (`extra`, flow style, each starting with ", ") and the rest of the file; its CA PEM.
fn tls_server(dir: &tempfile::TempDir, extra: &str, rest: &str) -> (Server, String) {
    let ca = new_certificate(dir);
    let server = Server::start(&format!(
        "server: {{ tls: {{ cert: {}, key: {} }}{extra} }}\n{rest}",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    ));
    assert!(server.base.starts_with("https://"), "{}", server.base);
    (server, ca)
}

#[test]
fn tls_serves_health_and_a_stream_to_a_client_that_trusts_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = format!("nodes:\n{}", test_camera_yaml("front", 320, 240, 15));
    let (server, ca) = tls_server(&dir, "", &nodes);
    let cert = dir.path().join("cert.pem");
    let health = https_get(&server, &ca, "/healthz").unwrap();
    assert_eq!(health.status, 200);
    let text = health.text().unwrap();
    assert!(text.contains("\"ok\""), "{text}");
    let stream = https_get(&server, &ca, "/api/camera/stream/front").unwrap();
    assert_eq!(stream.status, 200);
    let mut parts = camgraph::mjpeg::PartReader::new(stream.into_body(), camgraph::mjpeg::BOUNDARY);
    for _ in 0..3 {
        let part = parts.next_part().unwrap().expect("a part");
        common::decode(&part.data);
    }
    // A client that does not trust the certificate gets no answer.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let refused = https_get(&server, &other.cert.pem(), "/healthz");
    assert!(
        refused.is_err(),
        "an unknown certificate must fail the handshake"
    );

    let missing = Server::try_start(&format!(
        "server: {{ tls: {{ cert: {}, key: /no/such/key.pem }} }}\n{nodes}",
        cert.display()
    ))
    .err()
    .expect("refused to start");
    assert!(
        missing.contains("server.tls.key: cannot read /no/such/key.pem"),
        "{missing}"
    );
}

#[test]
fn a_body_that_never_arrives_times_out_and_a_huge_one_is_refused() {
    let server = Server::start(&format!(
        "nodes:\n{}  \
         front_h264: {{ type: h264_encoder, inputs: [front] }}\n  \
         front_rtc: {{ type: webrtc_sink, inputs: [front_h264] }}\n",
        test_camera_yaml("front", 320, 240, 15)
    ));
    // Declares 1000 bytes, sends 10, then waits: the server must answer rather than hold the
    // request (and its buffer) for ever.
    let started = Instant::now();
    let answer = raw(
        &server,
        format!(
            "POST /api/webrtc/whep/front HTTP/1.1\r\nHost: {}\r\nContent-Type: application/sdp\r\n\
             Content-Length: 1000\r\n\r\nv=0\r\no=- 1",
            host(&server)
        )
        .as_bytes(),
        Duration::from_secs(30),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let answer = raw(
        &server,
        format!(
            "POST /api/webrtc/whep/front HTTP/1.1\r\nHost: {}\r\nContent-Type: application/sdp\r\n\
             Content-Length: 100000000\r\n\r\nv=0\r\n",
            host(&server)
        )
        .as_bytes(),
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    // Headers beyond actix's 128 KiB are refused, and the server goes on.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n",
        host(&server),
        "a".repeat(200 * 1024)
    );
    let answer = raw(&server, huge.as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(call(&server, "GET", "/healthz", &[], None).0, 200);
}

#[test]
fn a_head_sent_slowly_is_cut_off_while_healthz_answers() {
    let server = Server::start(&format!(
        "nodes:\n{}",
        test_camera_yaml("front", 320, 240, 5)
    ));
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(host(&server)).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    assert_eq!(call(&server, "GET", "/healthz", &[], None).0, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    for mut s in slow {
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(12));
}

/// Opens a stream on a connection with a tiny receive buffer and never reads its body.
fn stuck_viewer(server: &Server, path: &str) -> socket2::Socket {
    let addr: std::net::SocketAddr = host(server).parse().unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut s = TcpStream::from(s);
    write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", host(server)).unwrap();
    // Read only the status line's start: the viewer is being served, then nothing more.
    let mut status = [0u8; 12];
    s.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
    socket2::Socket::from(s)
}

#[test]
fn viewers_that_never_read_are_cut_off_and_free_their_slots() {
    let server = Server::start(
        "nodes:\n  \
         front: { type: camera, source: test, width: 1280, height: 720, fps: 30 }\n  \
         front_jpeg: { type: jpeg_encoder, inputs: [front], quality: 95 }\n  \
         front_mjpeg: { type: mjpeg_sink, inputs: [front_jpeg], max_viewers: 3, write_timeout_ms: 1000 }\n",
    );
    let stuck: Vec<_> = (0..3)
        .map(|_| stuck_viewer(&server, "/api/camera/stream"))
        .collect();
    let status = || call(&server, "GET", "/api/camera/stream", &[], None).0;
    assert_eq!(status(), 503, "the 3 stuck viewers fill the sink");
    // Past the write timeout all three stuck viewers are cut off: a new viewer is served.
    let started = Instant::now();
    wait_for(
        "the stuck viewers to be cut off",
        Duration::from_secs(15),
        || {
            let viewers = server.metric("camgraph_viewers{")?;
            (viewers == 0.0).then_some(())
        },
    );
    println!("stuck viewers cut off after {:?}", started.elapsed());
    assert_eq!(status(), 200, "a new viewer is served");
    // Each stuck client's connection was reset (its unread bytes dropped): reading it ends.
    for (i, s) in stuck.into_iter().enumerate() {
        let mut s = TcpStream::from(s);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 65536];
        let mut total = 0;
        let ended = loop {
            match s.read(&mut buf) {
                Ok(0) => break "closed",
                Ok(n) => total += n,
                Err(_) => break "reset",
            }
            assert!(
                Instant::now() < until,
                "stuck viewer {i} still streams ({total} bytes read)"
            );
        };
        println!("stuck viewer {i}: {ended} after {total} bytes");
    }
}

#[test]
fn viewers_beyond_the_servers_total_get_503_and_are_counted() {
    let server = Server::start(&format!(
        "server: {{ max_viewers: 2 }}\nnodes:\n{}{}",
        test_camera_yaml("front", 320, 240, 10),
        test_camera_yaml("rear", 320, 240, 10)
    ));
    // Each camera allows 200: the server's total of 2 is the limit.
    let _front = server.mjpeg("/api/camera/stream/front");
    let _rear = server.mjpeg("/api/camera/stream/rear");
    let (status, body, _) = call(&server, "GET", "/api/camera/stream/front", &[], None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("server.max_viewers"), "{body}");
    assert_eq!(refused_count(&server, "viewers"), 1.0);
    drop(_rear);
    wait_for(
        "the rear viewer's slot to be free",
        Duration::from_secs(5),
        || (call(&server, "GET", "/api/camera/stream/rear", &[], None).0 == 200).then_some(()),
    );
}

#[test]
fn viewers_that_never_read_over_tls_are_cut_off_too() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = tls_server(
        &dir,
        "",
        "nodes:\n  \
         front: { type: camera, source: test, width: 1280, height: 720, fps: 30 }\n  \
         front_jpeg: { type: jpeg_encoder, inputs: [front], quality: 95 }\n  \
         front_mjpeg: { type: mjpeg_sink, inputs: [front_jpeg], max_viewers: 2, write_timeout_ms: 1000 }\n",
    );
    // Two viewers that read the status line and then nothing, on tiny receive buffers.
    let addr: std::net::SocketAddr = tls_addr(&server).parse().unwrap();
    let port = addr.port();
    let _stuck: Vec<_> = (0..2)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_recv_buffer_size(4096).unwrap();
            s.connect(&addr.into()).unwrap();
            let tcp = TcpStream::from(s);
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut tls = tls_over(tcp, &ca);
            write!(
                tls,
                "GET /api/camera/stream HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
            )
            .unwrap();
            let mut status = [0u8; 12];
            tls.read_exact(&mut status).unwrap();
            assert_eq!(&status, b"HTTP/1.1 200");
            tls
        })
        .collect();
    let status = || {
        https_get(&server, &ca, "/api/camera/stream")
            .map(|r| r.status)
            .unwrap_or(0)
    };
    assert_eq!(status(), 503, "the 2 stuck viewers fill the sink");
    let started = Instant::now();
    wait_for(
        "the stuck TLS viewers to be cut off",
        Duration::from_secs(15),
        || (status() == 200).then_some(()),
    );
    println!("stuck TLS viewers cut off after {:?}", started.elapsed());
}

#[test]
fn tokens_and_the_certificate_are_read_again_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("view.token");
    std::fs::write(&token_file, "first-view-token-0123456789\n").unwrap();
    let (server, first_ca) = tls_server(
        &dir,
        &format!(
            ", auth: {{ tokens: [ {{ name: laptop, token_file: {}, role: view }} ] }}",
            token_file.display()
        ),
        &format!("nodes:\n{}", test_camera_yaml("front", 320, 240, 10)),
    );
    let status = |ca: &str, token: &str| {
        https_get(&server, ca, &format!("/api/graph?token={token}"))
            .map(|r| r.status)
            .unwrap_or(0)
    };
    assert_eq!(status(&first_ca, "first-view-token-0123456789"), 200);
    assert_eq!(status(&first_ca, "second-view-token-0123456789"), 401);

    // The token file and the certificate are replaced; SIGHUP reads them again.
    std::fs::write(&token_file, "second-view-token-0123456789\n").unwrap();
    let second_ca = new_certificate(&dir);
    let hup = || {
        let kill = std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    };
    hup();
    wait_for(
        "the new token and certificate to be served",
        Duration::from_secs(10),
        || (status(&second_ca, "second-view-token-0123456789") == 200).then_some(()),
    );
    assert_eq!(status(&second_ca, "first-view-token-0123456789"), 401);
    assert!(
        https_get(&server, &first_ca, "/healthz").is_err(),
        "the old certificate is no longer served"
    );

    // A key that cannot be read fails the reload, says why, and changes nothing.
    std::fs::write(dir.path().join("key.pem"), "not a key\n").unwrap();
    hup();
    let graph = wait_for("the failed reload", Duration::from_secs(10), || {
        let r = https_get(
            &server,
            &second_ca,
            "/api/graph?token=second-view-token-0123456789",
        )
        .ok()?;
        let graph: serde_json::Value = serde_json::from_str(&r.text().ok()?).ok()?;
        (graph["last_reload"]["ok"] == false).then_some(graph)
    });
    let error = graph["last_reload"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("server.tls.key"), "{graph}");
    assert_eq!(status(&second_ca, "second-view-token-0123456789"), 200);
}
