//! Shared by the integration tests: starts the real `camgraph` binary on a free loopback port with a
//! given YAML, and stops it when dropped.
#![allow(dead_code)]

pub mod media_server;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use camgraph::client;
use camgraph::mjpeg::PartReader;

pub struct Server {
    child: Child,
    pub base: String,
    /// The config file camgraph runs (and watches).
    pub config: std::path::PathBuf,
    _dir: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts camgraph with `yaml` as its config (listen address overridden to 127.0.0.1:0).
    pub fn start(yaml: &str) -> Server {
        Self::try_start(yaml).unwrap_or_else(|e| panic!("camgraph did not start: {e}"))
    }

    /// Starts camgraph; `Err` holds what it printed if it exited instead.
    pub fn try_start(yaml: &str) -> Result<Server, String> {
        Self::try_start_on(yaml, "127.0.0.1:0")
    }

    /// Starts camgraph listening on `listen`.
    pub fn start_on(yaml: &str, listen: &str) -> Server {
        Self::try_start_on(yaml, listen).unwrap_or_else(|e| panic!("camgraph did not start: {e}"))
    }

    pub fn try_start_on(yaml: &str, listen: &str) -> Result<Server, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_camgraph"))
            .arg("--config")
            .arg(&path)
            .args(["--listen", listen])
            // CAMGRAPH_TEST_LOG: another filter for a test's server (debugging a flaky test).
            .env(
                "RUST_LOG",
                std::env::var("CAMGRAPH_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn camgraph");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("camgraph listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => Ok(Server {
                child,
                base,
                config: path,
                _dir: dir,
                stderr,
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(100));
                let log = stderr.lock().unwrap().clone();
                Err(format!("exit status {status:?}; stderr:\n{log}"))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a `kill -s` name such as `TERM`) and waits up to `within` for camgraph to
    /// exit; gives its exit status and how long it took to exit.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        within: Duration,
    ) -> (std::process::ExitStatus, Duration) {
        let sent = std::time::Instant::now();
        let kill = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -s {signal} failed");
        let child = &mut self.child;
        let status = wait_for(
            &format!("camgraph to exit after SIG{signal}"),
            within,
            || child.try_wait().expect("wait for camgraph"),
        );
        (status, sent.elapsed())
    }

    /// Replaces the config file the way editors do: write a new file, rename it over the old one.
    pub fn rewrite_config(&self, yaml: &str) {
        let tmp = self.config.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = client::get(&self.url(path)).expect("GET");
        let status = r.status;
        let body = r.text().expect("body");
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")),
        )
    }

    pub fn post_json(&self, path: &str) -> (u16, serde_json::Value) {
        self.send_json("POST", path)
    }

    pub fn send_json(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
        let r = client::request(method, &self.url(path), &[], None).expect("request");
        let status = r.status;
        let body = r.text().expect("body");
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")),
        )
    }

    /// Opens an MJPEG stream and returns a part reader on it.
    pub fn mjpeg(&self, path: &str) -> PartReader<Box<dyn BufRead + Send>> {
        let r = client::get(&self.url(path)).expect("GET stream");
        assert_eq!(r.status, 200, "stream {path}");
        assert_eq!(
            r.header("content-type"),
            Some(camgraph::mjpeg::CONTENT_TYPE)
        );
        PartReader::new(r.into_body(), camgraph::mjpeg::BOUNDARY)
    }

    /// The value of the first metric sample whose line starts with `prefix`.
    /// The node `id` of `/api/graph`.
    pub fn node(&self, id: &str) -> serde_json::Value {
        let (_, graph) = self.get_json("/api/graph");
        graph["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == id).cloned())
            .unwrap_or_else(|| panic!("no node {id} in {graph}"))
    }

    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let text = client::get(&self.url("/metrics")).unwrap().text().unwrap();
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test camera at the given size and fps with a JPEG encoder and an MJPEG sink.
pub fn test_camera_yaml(name: &str, width: u32, height: u32, fps: u32) -> String {
    format!(
        "  {name}: {{ type: camera, source: test, width: {width}, height: {height}, fps: {fps} }}\n  \
         {name}_jpeg: {{ type: jpeg_encoder, inputs: [{name}], quality: 80 }}\n  \
         {name}_mjpeg: {{ type: mjpeg_sink, inputs: [{name}_jpeg] }}\n"
    )
}

/// Decodes a JPEG to RGB: (pixels, width, height).
pub fn decode(jpeg: &[u8]) -> (Vec<u8>, u32, u32) {
    let image = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("valid JPEG");
    (image.pixels, image.width as u32, image.height as u32)
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A viewer reading a stream on its own thread, recording each frame's painted number (`None` for
/// a frame without marks, such as "no signal") and when it arrived.
pub struct Recorder {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Seen, bool)>>,
}

/// Per frame: its painted number (if any), when it arrived, and its top-left pixel (if kept).
pub type Seen = Vec<(Option<u32>, std::time::Instant, Vec<u8>)>;

impl Recorder {
    pub fn start(server: &Server, path: &str, keep_pixels: bool) -> Recorder {
        let mut parts = server.mjpeg(path);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match parts.next_part() {
                    Ok(Some(part)) => {
                        let (rgb, w, h) = decode(&part.data);
                        let marks = camgraph::plugins::sources::testsrc::read_marks(&rgb, w, h);
                        let corner = if keep_pixels {
                            rgb[..3].to_vec()
                        } else {
                            Vec::new()
                        };
                        seen.push((marks.map(|m| m.seq), std::time::Instant::now(), corner));
                    }
                    Ok(None) => return (seen, true),
                    Err(e) => panic!("viewer stream failed: {e}"),
                }
            }
            (seen, false)
        });
        Recorder {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops reading; gives the frames seen and whether the stream ended cleanly by itself.
    pub fn finish(mut self) -> (Seen, bool) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// Largest step between consecutive painted frame numbers (1 = no frame missed).
pub fn largest_step(seen: &Seen) -> u32 {
    let numbers: Vec<u32> = seen.iter().filter_map(|s| s.0).collect();
    numbers
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]))
        .max()
        .unwrap_or(0)
}

/// Runs `node tests/browser/SCRIPT ARGS...` (headless Chromium through playwright-core) and returns
/// the JSON summary it ends with; fails with its output and camgraph's log if it fails or cannot
/// run.
pub fn run_browser_script(server: &Server, script: &str, args: &[&str]) -> serde_json::Value {
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` (CI installs it)"
    );
    let output = Command::new("node")
        .arg(browser_dir.join(script))
        .args(args)
        .current_dir(&browser_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (install Node.js): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "{script} failed ({}) with {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\ncamgraph log:\n{}",
        output.status,
        server.log()
    );
    // The scripts end with one JSON summary line.
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary on stdout of {script}:\n{stdout}"))
}

/// A video-only offer as Chromium sends it (recvonly H.264 42e01f), enough to get an answer
/// (a file, so that the soak bench sends the same one).
pub const CHROMIUM_OFFER: &str = include_str!("../data/chromium-offer.sdp");

/// Prometheus's checker (Debian package `prometheus`).
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// `promtool check metrics` on an exposition: what it said if it found a problem.
pub fn promtool_check(exposition: &str) -> Result<(), String> {
    use std::io::Write;
    let mut promtool = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {PROMTOOL} (apt prometheus): {e}"))?;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics ({}):\n{said}", out.status))
    }
}

/// What ffprobe (an independent client) finds when it listens where an SDP file says, within 20 s:
/// its JSON with each stream's codec name and size (it waits for an IDR to know the size).
pub fn ffprobe_sdp(sdp_file: &std::path::Path) -> serde_json::Value {
    let out = Command::new("timeout")
        .args([
            "20",
            "ffprobe",
            "-v",
            "error",
            "-protocol_whitelist",
            "file,udp,rtp",
        ])
        .args([
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "json",
        ])
        .arg(sdp_file)
        .output()
        .expect("ffprobe is installed (apt ffmpeg)");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ffprobe ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}
