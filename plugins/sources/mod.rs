//! The `camera` node: one actor per camera, controlling a capture thread that pulls frames from a
//! source (test pattern, files, V4L2 device, HTTP MJPEG) and publishes them. Capture runs only
//! while capture is on (`POST /api/camera/start|stop`) and someone downstream is subscribed; until
//! then the thread sleeps until one of them changes (no polling). A source that fails, or is
//! missing at start, is retried with exponential backoff and jitter; meanwhile viewers get a "no
//! signal" picture and stay connected. Recovery is logged (`camera up`, with how long it was down)
//! and counted (`camgraph_camera_reconnects_total`).
//!
//! ```yaml
//! front: { type: camera, source: test, width: 1280, height: 720, fps: 30 }
//! ```

pub mod api;
pub mod files;
pub mod http_mjpeg;
pub mod kinds;
pub mod nosignal;
pub mod testsrc;
#[cfg(feature = "v4l")]
pub mod v4l;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use actix::{Actor, Context, Handler};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::config::ApiSources;
use crate::error::BuildError;
use crate::fanout::{watch_demand, Demand, Fanout};
use crate::frame::{Frame, PixelFormat};
use crate::metrics::CameraErrorReason;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, Services};
use crate::port::{Port, PortKind, Ports};
use crate::stop::{stop_on, StopToken, Stopper};
use api::{CaptureSwitch, SetCapture};

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
    /// Test pattern only: random grain of up to this many levels (0..=64) added to every pixel,
    /// different in each frame, so encoders work as hard as with a real sensor (for bandwidth
    /// and adaptation tests). Default 0.
    #[serde(default)]
    pub noise: u8,
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

impl NodeConfig for CameraConfig {
    const TYPE: &'static str = "camera";

    fn ports(&self) -> Ports {
        Ports::Source(PortKind::Frames)
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        check_range(&mut issues, "fps", self.fps, 1..=120);
        check_range(&mut issues, "noise", self.noise, 0..=64);
        let kind = kinds::kind_of(&self.source);
        if self.noise > 0 && !kind.takes_noise {
            issues.push(FieldIssue::new(
                "noise",
                "'noise' is for the test pattern (source: test) only",
            ));
        }
        (kind.validate)(self, &mut issues);
        issues
    }

    /// A source added through the API must be listed in `server.api_sources` (a device by its
    /// path, whichever way it is written), and pass its kind's checks for added cameras (a
    /// device must exist; in the file, a missing device is a camera that is down until it
    /// appears).
    fn validate_added(&self, api_sources: &ApiSources) -> Vec<FieldIssue> {
        let source = self.source.trim();
        let canonical = kinds::device_index(source)
            .map_or_else(|| source.to_string(), |i| format!("/dev/video{i}"));
        if !api_sources.allows(&canonical) {
            return vec![FieldIssue::new(
                "source",
                format!(
                    "source '{}' may not be added through the API: server.api_sources allows {}",
                    self.source,
                    api_sources.patterns().join(", ")
                ),
            )];
        }
        let mut issues = Vec::new();
        (kinds::kind_of(source).validate_added)(self, &mut issues);
        issues
    }

    fn routes(cfg: &mut actix_web::web::ServiceConfig) {
        api::routes(cfg);
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let config = self.clone();
        let open: OpenFn = Box::new(move || open_source(&config));
        Ok(start_camera(cx, open, self))
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

/// Why a source could not be opened or could not deliver a frame; the camera shows it as its
/// `error` and retries. Each kind has its own error enum; they meet here.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Something frames can be pulled from. It runs on the camera's capture thread and may block.
pub trait FrameSource {
    /// Blocks until the next frame is due, then returns it. `seq` is the number the frame will carry.
    fn next_frame(&mut self, seq: u64) -> Result<Captured, SourceError>;
    /// Nobody wants frames for now: release what can be released (a device's stream).
    fn pause(&mut self) {}
}

type OpenFn = Box<dyn Fn() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

fn open_source(config: &CameraConfig) -> Result<Box<dyn FrameSource>, SourceError> {
    (kinds::kind_of(&config.source).open)(config)
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
    gate: Mutex<Gate>,
    /// Signalled at every change of `gate`.
    changed: Condvar,
    /// Why the source is down, if it is.
    last_error: Mutex<Option<String>>,
}

/// What the capture thread waits on.
#[derive(Clone, Copy)]
struct Gate {
    capture_on: bool,
    /// Someone downstream is subscribed.
    consumers: bool,
    stop: bool,
}

impl Gate {
    fn wanted(&self) -> bool {
        self.capture_on && self.consumers
    }
}

impl Control {
    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().expect("camera gate")
    }

    fn update(&self, change: impl FnOnce(&mut Gate)) {
        change(&mut self.gate());
        self.changed.notify_all();
    }

    /// Blocks until frames are wanted or stop is asked, or until `until` (if given) passes.
    fn wait(&self, until: Option<Instant>) {
        let idle = |g: &mut Gate| !g.wanted() && !g.stop;
        let gate = self.gate();
        match until {
            None => drop(self.changed.wait_while(gate, idle)),
            Some(t) => {
                let timeout = t.saturating_duration_since(Instant::now());
                drop(self.changed.wait_timeout_while(gate, timeout, idle))
            }
        }
    }
}
/// How often the "no signal" picture is sent while the source is down.
const NO_SIGNAL_FPS: u32 = 2;

/// Waits between attempts to reopen a failed source (or to reach a server again): doubling from
/// `first` up to `max`, each wait spread by +-20 % so that many cameras do not retry in lockstep.
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    /// A camera's: 100 ms doubling to 500 ms.
    pub fn new(seed: u64) -> Self {
        Self::between(seed, Duration::from_millis(100), Duration::from_millis(500))
    }

    /// Doubling from `first` up to `max`.
    pub fn between(seed: u64, first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            first,
            max,
            seed: seed | 1,
        }
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        // xorshift: enough randomness for jitter, no dependency.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let spread = (self.seed % 401) as f64 / 1000.0 - 0.2; // -0.2 ..= +0.2
        let wait = self.next.mul_f64(1.0 + spread);
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

struct CameraMetrics {
    captured: prometheus::IntCounter,
    up: prometheus::IntGauge,
    reconnects: prometheus::IntCounter,
    too_large: prometheus::IntCounter,
    failed: prometheus::IntCounter,
}

/// Starts the capture thread (which opens the source, and reopens it when it fails) and the
/// camera actor.
fn start_camera(cx: BuildContext, open: OpenFn, config: &CameraConfig) -> NodeHandle {
    let out = Fanout::<Frame>::new();
    let control = Arc::new(Control {
        gate: Mutex::new(Gate {
            capture_on: config.start,
            consumers: false,
            stop: false,
        }),
        changed: Condvar::new(),
        last_error: Mutex::new(None),
    });
    let metrics = CameraMetrics {
        captured: cx.metrics.frames_captured(),
        up: cx.metrics.camera_up(),
        reconnects: cx.metrics.camera_reconnects(),
        too_large: cx.metrics.camera_errors(CameraErrorReason::TooLarge),
        failed: cx.metrics.camera_errors(CameraErrorReason::Failed),
    };
    let (captured, up, reconnects) = (
        metrics.captured.clone(),
        metrics.up.clone(),
        metrics.reconnects.clone(),
    );
    let capture = Capture {
        open,
        camera: cx.camera.clone(),
        size: (config.width, config.height),
        out: out.clone(),
        control: control.clone(),
        metrics,
    };
    let spawned = thread::Builder::new()
        .name(format!("capture-{}", cx.id))
        .spawn(move || capture.run());
    if let Err(e) = spawned {
        *control.last_error.lock().expect("camera status") =
            Some(format!("cannot start capture thread: {e}"));
    }
    let stop = Stopper::new();
    let addr = Camera {
        control: control.clone(),
        demand: out.demand().clone(),
        stop: stop.token(),
    }
    .start();
    let stats_out = out.clone();
    NodeHandle {
        output: Some(Port::Frames(out)),
        services: Services::new().with(CaptureSwitch(addr.clone().recipient())),
        stats: Some(Box::new(move || {
            json!({
                "captured": captured.get(),
                "up": up.get() == 1,
                "reconnects": reconnects.get(),
                "error": *control.last_error.lock().expect("camera status"),
                "capture_on": control.gate().capture_on,
                "consumers": stats_out.subscriber_count(),
            })
        })),
        stop,
    }
}

/// The capture thread's state.
struct Capture {
    open: OpenFn,
    camera: Arc<str>,
    /// Size of the "no signal" picture.
    size: (u32, u32),
    out: Fanout<Frame>,
    control: Arc<Control>,
    metrics: CameraMetrics,
}

impl Capture {
    fn publish(
        &self,
        seq: u64,
        captured_at: SystemTime,
        width: u32,
        height: u32,
        format: PixelFormat,
        data: Bytes,
    ) {
        self.out.publish(Arc::new(Frame {
            camera: self.camera.clone(),
            seq,
            captured_at,
            width,
            height,
            format,
            data,
        }));
    }

    /// Notes and counts a failure; `down_since` keeps when the outage began.
    fn down(&self, error: &SourceError, down_since: &mut Option<Instant>) {
        down_since.get_or_insert_with(Instant::now);
        if too_large(error.as_ref()) {
            self.metrics.too_large.inc();
        } else {
            self.metrics.failed.inc();
        }
        let error = error.to_string();
        let mut last = self.control.last_error.lock().expect("camera status");
        if last.as_deref() != Some(error.as_str()) {
            tracing::error!(camera = %self.camera, "camera down: {error}");
        }
        *last = Some(error);
        self.metrics.up.set(0);
    }

    fn run(self) {
        let mut source: Option<Box<dyn FrameSource>> = None;
        let seed = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let mut backoff = Backoff::new(seed);
        let mut retry_at = Instant::now();
        // Since when the source is down (failed, or missing since start), if it is.
        let mut down_since: Option<Instant> = None;
        let mut active = false;
        let mut no_signal = Pacer::new(NO_SIGNAL_FPS);
        let mut seq = 0u64;
        loop {
            if source.is_none() && Instant::now() >= retry_at {
                match (self.open)() {
                    Ok(s) => {
                        source = Some(s);
                        if let Some(since) = down_since.take() {
                            self.metrics.reconnects.inc();
                            tracing::info!(
                                camera = %self.camera,
                                "camera up after {:.1} s down",
                                since.elapsed().as_secs_f64()
                            );
                        }
                        backoff.reset();
                        self.metrics.up.set(1);
                        *self.control.last_error.lock().expect("camera status") = None;
                    }
                    Err(e) => {
                        self.down(&e, &mut down_since);
                        retry_at = Instant::now() + backoff.next_wait();
                    }
                }
            }
            let gate = *self.control.gate();
            if gate.stop {
                break;
            }
            if !gate.wanted() {
                if active {
                    if let Some(s) = source.as_mut() {
                        s.pause();
                    }
                    active = false;
                }
                // Sleeps until wanted; a source that is down is retried meanwhile.
                self.control.wait(source.is_none().then_some(retry_at));
                continue;
            }
            active = true;
            let Some(s) = source.as_mut() else {
                no_signal.wait();
                let (w, h) = self.size;
                let now = SystemTime::now();
                let picture = nosignal::frame(&self.camera, w, h, now);
                self.publish(seq, now, w, h, PixelFormat::Rgb24, Bytes::from(picture));
                seq += 1;
                continue;
            };
            match s.next_frame(seq) {
                // Capture may have been switched off while the source waited for the frame.
                Ok(_) if !self.control.gate().capture_on => {}
                Ok(c) => {
                    self.metrics.captured.inc();
                    self.publish(seq, c.captured_at, c.width, c.height, c.format, c.data);
                    seq += 1;
                }
                Err(e) => {
                    source = None; // closes the device or connection
                    self.down(&e, &mut down_since);
                    retry_at = Instant::now() + backoff.next_wait();
                }
            }
        }
        if let Some(mut s) = source {
            s.pause();
        }
    }
}

/// Whether a source failed because it offered more than camgraph accepts (an MJPEG part or a
/// file over its limit), anywhere in the error's chain.
fn too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        // An `io::Error`'s `source()` skips the error it carries, so look inside it here.
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| crate::mjpeg::PartTooLarge::find(io).is_some())
            || matches!(
                e.downcast_ref::<files::FilesError>(),
                Some(
                    files::FilesError::FileTooLarge { .. }
                        | files::FilesError::FolderTooLarge { .. }
                )
            )
    })
}

/// The control side of a camera: start/stop, demand and stop, passed to the capture thread.
/// Frames never pass through it.
struct Camera {
    control: Arc<Control>,
    /// The camera's consumers.
    demand: Demand,
    stop: StopToken,
}

impl Actor for Camera {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
        watch_demand(&self.demand, ctx, |act, consumers, _| {
            act.control.update(|g| g.consumers = consumers > 0)
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.control.update(|g| g.stop = true);
    }
}

impl Handler<SetCapture> for Camera {
    type Result = ();
    fn handle(&mut self, msg: SetCapture, _: &mut Self::Context) {
        self.control.update(|g| g.capture_on = msg.on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_with_jitter_and_resets() {
        let mut b = Backoff::new(42);
        let waits: Vec<f64> = (0..8).map(|_| b.next_wait().as_secs_f64()).collect();
        let nominal = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5];
        for (w, n) in waits.iter().zip(nominal) {
            assert!(*w >= n * 0.8 - 1e-9 && *w <= n * 1.2 + 1e-9, "{waits:?}");
        }
        assert!(
            waits[4..].windows(2).any(|p| p[0] != p[1]),
            "jitter: {waits:?}"
        );
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(120));
    }
}
