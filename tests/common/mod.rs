//! Shared by the integration tests: starts the real `camgraph` binary on a free loopback port with a
//! given YAML, and stops it when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use camgraph::client;
use camgraph::mjpeg::PartReader;

pub struct Server {
    child: Child,
    pub base: String,
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_camgraph"))
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
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
        let r = client::request("POST", &self.url(path), &[], None).expect("POST");
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
