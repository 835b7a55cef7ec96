//! The `camera` node: one actor per camera, controlling a capture thread that pulls frames from a
//! source (test pattern, files, V4L2 device) and publishes them. Capture runs only while capture is
//! on (`POST /api/camera/start|stop`) and someone downstream is subscribed.
//!
//! ```yaml
//! front: { type: camera, source: test, width: 1280, height: 720, fps: 30 }
//! ```

pub mod files;
pub mod testsrc;
#[cfg(feature = "v4l")]
pub mod v4l;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use actix::{Actor, Context, Handler};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::error::BuildError;
use crate::fanout::Fanout;
use crate::messages::{Frame, PixelFormat, SetCapture, Shutdown};
use crate::node::{
    check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, Port, PortKind, Ports, Service,
};

/// Settings of a `camera` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Where frames come from: `test` (a moving test pattern with the frame number and capture time
    /// painted in), a V4L2 device (`/dev/video0`, or its index `0`), or the path of a folder of
    /// JPEGs or of an `.mjpeg` file, played in a loop without re-encoding. Required.
    pub source: String,
    /// Frame width in pixels. Default 1280. A device uses the closest size it offers.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Frame height in pixels. Default 720.
    #[serde(default = "default_height")]
    pub height: u32,
    /// Frames per second. Default 30.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Whether capture is on at start; `false` waits for `POST /api/camera/start`. Default true.
    #[serde(default = "default_start")]
    pub start: bool,
}

fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_fps() -> u32 {
    30
}
fn default_start() -> bool {
    true
}

/// What `source:` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Test,
    Device(u32),
    Url(String),
    Path(PathBuf),
}

impl SourceKind {
    pub fn parse(source: &str) -> SourceKind {
        let s = source.trim();
        if s == "test" {
            SourceKind::Test
        } else if let Ok(index) = s.parse::<u32>() {
            SourceKind::Device(index)
        } else if let Some(index) = s
            .strip_prefix("/dev/video")
            .and_then(|n| n.parse::<u32>().ok())
        {
            SourceKind::Device(index)
        } else if s.starts_with("http://") || s.starts_with("https://") {
            SourceKind::Url(s.to_string())
        } else {
            SourceKind::Path(PathBuf::from(s))
        }
    }
}

impl NodeConfig for CameraConfig {
    const TYPE: &'static str = "camera";

    fn ports(&self) -> Ports {
        Ports {
            input: None,
            output: Some(PortKind::Frames),
        }
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        check_range(&mut issues, "fps", self.fps, 1..=120);
        match SourceKind::parse(&self.source) {
            SourceKind::Test => {
                check_range(&mut issues, "width", self.width, testsrc::MIN_WIDTH..=7680);
                check_range(
                    &mut issues,
                    "height",
                    self.height,
                    testsrc::MIN_HEIGHT..=4320,
                );
            }
            SourceKind::Device(_) if !cfg!(feature = "v4l") => issues.push(FieldIssue::new(
                "source",
                format!(
                    "'{}' is a V4L2 device, but camgraph was built without the 'v4l' feature",
                    self.source
                ),
            )),
            SourceKind::Device(_) => {
                check_range(&mut issues, "width", self.width, 16..=7680);
                check_range(&mut issues, "height", self.height, 16..=4320);
            }
            SourceKind::Url(url) => issues.push(FieldIssue::new(
                "source",
                format!("'{url}': http(s) MJPEG sources are not supported by this version"),
            )),
            SourceKind::Path(path) => {
                if !path.exists() {
                    issues.push(FieldIssue::new(
                        "source",
                        format!(
                            "'{}' is not 'test', a device (/dev/videoN or an index) or an existing file or folder",
                            self.source
                        ),
                    ));
                }
            }
        }
        issues
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let config = self.clone();
        let open: OpenFn = Box::new(move || open_source(&config));
        start_camera(cx, open, self.start)
    }
}

/// A picture as a source delivers it; the capture thread adds camera name and sequence number.
pub struct Captured {
    pub captured_at: SystemTime,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub data: Bytes,
}

/// Something frames can be pulled from. It runs on the camera's capture thread and may block.
pub trait FrameSource {
    /// Blocks until the next frame is due, then returns it. `seq` is the number the frame will carry.
    fn next_frame(&mut self, seq: u64) -> Result<Captured, String>;
    /// Nobody wants frames for now: release what can be released (a device's stream).
    fn pause(&mut self) {}
}

type OpenFn = Box<dyn FnOnce() -> Result<Box<dyn FrameSource>, String> + Send>;

fn open_source(config: &CameraConfig) -> Result<Box<dyn FrameSource>, String> {
    match SourceKind::parse(&config.source) {
        SourceKind::Test => Ok(Box::new(testsrc::TestPattern::new(
            config.width,
            config.height,
            config.fps,
        ))),
        SourceKind::Path(path) => Ok(Box::new(files::FilePlayer::open(&path, config.fps)?)),
        #[cfg(feature = "v4l")]
        SourceKind::Device(index) => Ok(Box::new(v4l::Device::open(
            index,
            config.width,
            config.height,
            config.fps,
        )?)),
        #[cfg(not(feature = "v4l"))]
        SourceKind::Device(_) => Err("built without V4L2 support".into()),
        SourceKind::Url(url) => Err(format!(
            "{url}: http(s) sources are not supported by this version"
        )),
    }
}

/// Sleeps to keep a steady frame rate; after a stall it restarts rather than bursting to catch up.
pub struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(fps: u32) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / f64::from(fps.max(1))),
            next: None,
        }
    }

    pub fn wait(&mut self) {
        let now = Instant::now();
        let due = self.next.unwrap_or(now);
        if due > now {
            thread::sleep(due - now);
        }
        let late = now.saturating_duration_since(due) > self.interval;
        self.next = Some(if late { Instant::now() } else { due } + self.interval);
    }

    pub fn reset(&mut self) {
        self.next = None;
    }
}

/// Shared between the camera actor and its capture thread.
struct Control {
    capture_on: AtomicBool,
    stop: AtomicBool,
}

/// How often an idle capture thread looks whether it is wanted again.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// How long to wait before retrying a failing source.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a source may take to open before the build fails.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the capture thread (which opens the source) and the camera actor. Fails with the source's
/// own message if it cannot be opened.
fn start_camera(
    cx: BuildContext,
    open: OpenFn,
    capture_on: bool,
) -> Result<NodeHandle, BuildError> {
    let out = Fanout::<Frame>::new();
    let control = Arc::new(Control {
        capture_on: AtomicBool::new(capture_on),
        stop: AtomicBool::new(false),
    });
    let captured = cx.metrics.frames_captured();
    let up = cx.metrics.camera_up();
    let (opened_tx, opened_rx) = mpsc::channel();
    let thread_out = out.clone();
    let thread_control = control.clone();
    let camera = cx.camera.clone();
    let thread_up = up.clone();
    let thread_captured = captured.clone();
    thread::Builder::new()
        .name(format!("capture-{}", cx.id))
        .spawn(move || {
            let source = match open() {
                Ok(s) => {
                    let _ = opened_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            capture_loop(
                source,
                camera,
                thread_out,
                thread_control,
                thread_captured,
                thread_up,
            );
        })
        .map_err(|e| BuildError::new(&cx.id, format!("cannot start capture thread: {e}")))?;
    match opened_rx.recv_timeout(OPEN_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(message)) => return Err(BuildError::new(&cx.id, message)),
        Err(_) => {
            control.stop.store(true, Ordering::Relaxed);
            return Err(BuildError::new(
                &cx.id,
                format!("source did not open within {OPEN_TIMEOUT:?}"),
            ));
        }
    }
    up.set(1);
    let addr = Camera {
        control: control.clone(),
    }
    .start();
    let stats_control = control.clone();
    let stats_out = out.clone();
    Ok(NodeHandle {
        output: Some(Port::Frames(out)),
        services: vec![Service::Capture(addr.clone().recipient())],
        stats: Some(Box::new(move || {
            json!({
                "captured": captured.get(),
                "up": up.get() == 1,
                "capture_on": stats_control.capture_on.load(Ordering::Relaxed),
                "consumers": stats_out.subscriber_count(),
            })
        })),
        stop: Box::new(move || addr.do_send(Shutdown)),
    })
}

fn capture_loop(
    mut source: Box<dyn FrameSource>,
    camera: Arc<str>,
    out: Fanout<Frame>,
    control: Arc<Control>,
    captured: prometheus::IntCounter,
    up: prometheus::IntGauge,
) {
    let mut seq = 0u64;
    let mut active = false;
    let mut failing = false;
    while !control.stop.load(Ordering::Relaxed) {
        if !control.capture_on.load(Ordering::Relaxed) || !out.has_subscribers() {
            if active {
                source.pause();
                active = false;
            }
            thread::sleep(IDLE_POLL);
            continue;
        }
        active = true;
        match source.next_frame(seq) {
            // Capture may have been switched off while the source waited for the frame.
            Ok(_) if !control.capture_on.load(Ordering::Relaxed) => {}
            Ok(c) => {
                if failing {
                    tracing::info!(camera = %camera, "camera delivers frames again");
                    failing = false;
                }
                up.set(1);
                captured.inc();
                out.publish(Arc::new(Frame {
                    camera: camera.clone(),
                    seq,
                    captured_at: c.captured_at,
                    width: c.width,
                    height: c.height,
                    format: c.format,
                    data: c.data,
                }));
                seq += 1;
            }
            Err(message) => {
                if !failing {
                    tracing::error!(camera = %camera, "capture failed: {message}; retrying every {RETRY_AFTER:?}");
                    failing = true;
                }
                up.set(0);
                source.pause();
                thread::sleep(RETRY_AFTER);
            }
        }
    }
    source.pause();
}

/// The control side of a camera: start/stop and shutdown. Frames never pass through it.
struct Camera {
    control: Arc<Control>,
}

impl Actor for Camera {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.control.stop.store(true, Ordering::Relaxed);
    }
}

impl Handler<SetCapture> for Camera {
    type Result = ();
    fn handle(&mut self, msg: SetCapture, _: &mut Self::Context) {
        self.control.capture_on.store(msg.on, Ordering::Relaxed);
    }
}

impl Handler<Shutdown> for Camera {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        use actix::ActorContext;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart() {
        assert_eq!(SourceKind::parse("test"), SourceKind::Test);
        assert_eq!(SourceKind::parse("2"), SourceKind::Device(2));
        assert_eq!(SourceKind::parse("/dev/video1"), SourceKind::Device(1));
        assert_eq!(
            SourceKind::parse("http://cam/x"),
            SourceKind::Url("http://cam/x".into())
        );
        assert_eq!(
            SourceKind::parse("clips/a.mjpeg"),
            SourceKind::Path("clips/a.mjpeg".into())
        );
    }
}
