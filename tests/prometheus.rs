//! Monitoring end to end: `promtool check metrics` on camgraph's exposition, then a real Prometheus
//! (the Debian package, on loopback with a temporary data dir) scrapes a streaming camgraph and every
//! query of the Grafana dashboard (configs/grafana/camgraph.json) must return data; and the frames a
//! viewer reads are exactly the frames the sent counter shows.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use camgraph::client;
use common::{promtool_check, test_camera_yaml, Server};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
use common::PROMTOOL;
/// What `$__rate_interval` and `$__interval` become in the test: 5 scrapes at 1 s.
const RATE_WINDOW: &str = "5s";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn need(tool: &str) {
    assert!(
        Path::new(tool).exists(),
        "{tool} is missing: install the Debian package `prometheus` (apt-get install -y prometheus)"
    );
}

/// Two MJPEG cameras; front also has a WebRTC chain behind an adaptive node, so the ladder and
/// RTP-loss series exist.
fn two_cameras() -> Server {
    Server::start(&format!(
        "nodes:\n{}{}{}",
        test_camera_yaml("front", 320, 240, 30),
        test_camera_yaml("back", 320, 240, 30),
        "  front_h264: { type: h264_encoder, inputs: [front] }\n  \
         front_adaptive: { type: adaptive, inputs: [front_h264] }\n  \
         front_rtc: { type: webrtc_sink, inputs: [front_adaptive] }\n"
    ))
}

/// Reads MJPEG parts on its own thread until dropped.
struct Viewer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Viewer {
    fn open(server: &Server, path: &str) -> Viewer {
        let mut parts = server.mjpeg(path);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match parts.next_part() {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        });
        Viewer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The dashboard, parsed.
fn dashboard() -> Value {
    let path = root().join("configs/grafana/camgraph.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// (panel title, expr) of every target of every panel, rows' nested panels included.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel '{title}' has a target without expr"));
                out.push((title.to_string(), expr.to_string()));
            }
            if let Some(nested) = panel["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"]
            .as_array()
            .expect("dashboard has panels"),
        &mut out,
    );
    out
}

/// Every `"expr"` anywhere in the document, however nested: the count `panel_queries` must reach.
fn count_exprs(v: &Value) -> usize {
    match v {
        Value::Object(map) => {
            usize::from(map.contains_key("expr")) + map.values().map(count_exprs).sum::<usize>()
        }
        Value::Array(items) => items.iter().map(count_exprs).sum(),
        _ => 0,
    }
}

/// A dashboard query as Grafana would send it with one camera selected.
fn substitute(expr: &str, camera: &str) -> String {
    let out = expr
        .replace("${camera}", camera)
        .replace("$camera", camera)
        .replace("${__rate_interval}", RATE_WINDOW)
        .replace("$__rate_interval", RATE_WINDOW)
        .replace("${__interval}", RATE_WINDOW)
        .replace("$__interval", RATE_WINDOW);
    assert!(
        !out.contains('$'),
        "a variable the test does not know is left in {out}"
    );
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus scraping one camgraph every second; killed and its data removed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        need(PROMETHEUS);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: camgraph\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        prometheus.wait_for("Prometheus to be ready", Duration::from_secs(30), |p| {
            client::get(&format!("{}/-/ready", p.base)).is_ok_and(|r| r.status == 200)
        });
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/query`: the whole answer (`status`, `data.result`, or `error`).
    fn query(&self, expr: &str) -> Value {
        let url = format!("{}/api/v1/query?query={}", self.base, percent_encode(expr));
        let body = client::get(&url)
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query {expr}: not JSON ({e}): {body}"))
    }

    /// The result vector of a successful query (empty if it failed).
    fn result(&self, expr: &str) -> Vec<Value> {
        let answer = self.query(expr);
        if answer["status"] != "success" {
            return Vec::new();
        }
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of a query's single sample.
    fn value(&self, expr: &str) -> Option<f64> {
        match self.result(expr).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Polls `ready` until it holds; panics with Prometheus's log after `limit`.
    fn wait_for(&self, what: &str, limit: Duration, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; prometheus log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sent counter of a camera's MJPEG sink, read from /metrics.
fn frames_sent(server: &Server, camera: &str) -> u64 {
    server
        .metric(&format!(
            "camgraph_frames_sent_total{{camera=\"{camera}\",node=\"{camera}_mjpeg\""
        ))
        .unwrap_or_else(|| panic!("no frames_sent_total for {camera}")) as u64
}

#[test]
fn the_dashboard_is_json_with_a_camera_variable_and_a_query_in_every_panel() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = d["templating"]["list"].as_array().unwrap();
    let camera = vars
        .iter()
        .find(|v| v["name"] == "camera")
        .expect("a camera variable");
    assert_eq!(
        camera["definition"],
        "label_values(camgraph_frames_captured_total, camera)"
    );
    let datasource = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["current"]["value"], "prometheus");
    // The default datasource is the provisioned one.
    let provisioned = std::fs::read_to_string(
        root().join("configs/grafana/provisioning/datasources/camgraph.yaml"),
    )
    .unwrap();
    assert!(provisioned.contains("uid: prometheus"));
    assert!(provisioned.contains("url: http://127.0.0.1:9090"));
    for panel in d["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert!(
                panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel '{}' has no query",
                panel["title"]
            );
        }
    }
    assert_eq!(panel_queries(&d).len(), count_exprs(&d));
}

#[test]
fn promtool_finds_no_problem_in_the_exposition() {
    need(PROMTOOL);
    let server = two_cameras();
    {
        // Every kind of series: a full-rate viewer, a second quality, a thinned viewer.
        let _full = Viewer::open(&server, "/api/camera/stream/front");
        let _q50 = Viewer::open(&server, "/api/camera/stream/front?quality=50");
        let mut thinned = server.mjpeg("/api/camera/stream/back?fps=5");
        for _ in 0..5 {
            thinned.next_part().unwrap().expect("a part");
        }
    }
    let exposition = client::get(&server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    for family in [
        "camgraph_frames_captured_total",
        "camgraph_frames_encoded_total",
        "camgraph_frames_sent_total",
        "camgraph_frames_dropped_total",
        "camgraph_bytes_sent_total",
        "camgraph_viewers",
        "camgraph_encode_duration_seconds_bucket",
        "camgraph_capture_to_send_latency_seconds_bucket",
        "camgraph_camera_up",
        "camgraph_encoder_active_settings",
        "camgraph_camera_reconnects_total",
        "camgraph_camera_errors_total",
        "camgraph_config_reloads_total",
        "camgraph_build_info",
    ] {
        assert!(
            exposition.lines().any(|l| l.starts_with(family)),
            "no {family} sample in:\n{exposition}"
        );
    }
    if let Err(said) = promtool_check(&exposition) {
        panic!("{said}");
    }
}

#[test]
fn a_real_prometheus_has_data_for_every_dashboard_panel_and_counts_frames_exactly() {
    let server = two_cameras();
    let target = server.base.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&target);

    // Two viewers of front at two qualities: two encoder settings, every front series moving.
    let _full = Viewer::open(&server, "/api/camera/stream/front");
    let _q50 = Viewer::open(&server, "/api/camera/stream/front?quality=50");
    // One reload of the unchanged file: the reload panels show a success.
    let (status, answer) = server.post_json("/api/graph/reload");
    assert_eq!(
        (status, &answer["status"]),
        (200, &serde_json::json!("reloaded"))
    );
    prometheus.wait_for(
        "scrapes of a streaming camgraph",
        Duration::from_secs(60),
        |p| {
            p.value("up{job=\"camgraph\"}") == Some(1.0)
                && p.value(&format!(
                    "count_over_time(camgraph_frames_sent_total{{camera=\"front\",node=\"front_mjpeg\"}}[{RATE_WINDOW}])"
                ))
                .is_some_and(|n| n >= 4.0)
                && p.value(&format!(
                    "rate(camgraph_frames_sent_total{{camera=\"front\",node=\"front_mjpeg\"}}[{RATE_WINDOW}])"
                ))
                .is_some_and(|r| r > 0.0)
                && p.value("camgraph_encoder_active_settings{camera=\"front\",node=\"front_jpeg\"}") == Some(2.0)
                && p.value("camgraph_config_reloads_total{result=\"success\"}") == Some(1.0)
        },
    );

    // The camera variable's query lists both cameras.
    let url = format!(
        "{}/api/v1/label/camera/values?match[]={}",
        prometheus.base,
        percent_encode("camgraph_frames_captured_total")
    );
    let cameras: Value = serde_json::from_str(&client::get(&url).unwrap().text().unwrap()).unwrap();
    assert_eq!(cameras["data"], serde_json::json!(["back", "front"]));

    // Every panel query, as Grafana sends it with camera=front, has data.
    let d = dashboard();
    let queries = panel_queries(&d);
    let mut empty = Vec::new();
    let mut checked = 0;
    for (title, expr) in &queries {
        let promql = substitute(expr, "front");
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            let answer = prometheus.query(&promql);
            let has_data = answer["status"] == "success"
                && answer["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty());
            if has_data || answer["status"] != "success" || Instant::now() >= deadline {
                break answer;
            }
            thread::sleep(Duration::from_millis(250));
        };
        if answer["status"] != "success" {
            empty.push(format!(
                "panel '{title}': {promql}\n    error: {}",
                answer["error"]
            ));
        } else if answer["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            empty.push(format!("panel '{title}': {promql}\n    returned nothing"));
        }
        checked += 1;
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n  {}",
        empty.join("\n  ")
    );
    assert_eq!(
        checked,
        count_exprs(&d),
        "every query of the dashboard was checked"
    );
    eprintln!("{checked} dashboard queries returned data");

    // Counters move as expected: back has no viewer yet, so its sink has sent nothing.
    assert_eq!(frames_sent(&server, "back"), 0);
    const N: u64 = 40;
    let mut parts = server.mjpeg("/api/camera/stream/back");
    for _ in 0..N {
        parts.next_part().unwrap().expect("a part");
    }
    // The sink counts a frame when it hands its header to the connection, so frames on their way
    // are counted before the viewer has them (and a viewer that hangs up now would still be
    // counted for them). Stop capture, let the counter settle, and read those in-flight frames too:
    // the viewer then holds exactly as many frames as the counter says.
    assert_eq!(
        server.post_json("/api/camera/stop?camera=back"),
        (200, serde_json::json!({"status": "stopped"}))
    );
    let mut sent = frames_sent(&server, "back");
    let mut settled_at = Instant::now();
    while settled_at.elapsed() < Duration::from_millis(500) {
        thread::sleep(Duration::from_millis(50));
        let now = frames_sent(&server, "back");
        if now != sent {
            (sent, settled_at) = (now, Instant::now());
        }
    }
    assert!(
        (N..=N + 3).contains(&sent),
        "the viewer read {N} frames; {sent} were counted as sent"
    );
    for _ in N..sent {
        parts
            .next_part()
            .unwrap()
            .expect("a counted frame reaches the viewer");
    }
    drop(parts);
    assert_eq!(frames_sent(&server, "back"), sent, "nothing more counted");
    eprintln!(
        "viewer read {N} frames, then {} in flight at stop: counter = {sent}",
        sent - N
    );
    // And Prometheus sees the same number within a scrape or two.
    let expr = "camgraph_frames_sent_total{camera=\"back\"}";
    prometheus.wait_for(
        &format!("Prometheus to see {expr} = {sent}"),
        Duration::from_secs(10),
        |p| p.value(expr) == Some(sent as f64),
    );
}
