//! The `camera` node: one actor per camera, controlling a capture thread that pulls frames from a
//! source (test pattern, files, V4L2 device, HTTP MJPEG, RTSP) and publishes them: pictures
//! (`frames`), or, for a camera that encodes (RTSP, RTP), its own H.264 (`h264`, passed through;
//! an RTSP camera set to `codec: mjpeg` gives its JPEGs as `frames`).
//! Capture runs only while capture is on (`POST /api/camera/start|stop`) and someone downstream is
//! subscribed; until then the thread sleeps until one of them changes (no polling). A source that
//! fails, or is missing at start, is retried with exponential backoff and jitter; meanwhile
//! viewers get a "no signal" picture and stay connected (a camera that gives H.264 gives it as
//! H.264: an IDR at its last picture's size, 2 a second, encoded only while it is down). The
//! first comes half a second into the outage: a source that fails once and answers its first
//! retry (an RTSP server that said "503" to a DESCRIBE right after the last one's connection
//! closed) shows none, and a snapshot waits for its picture. Recovery is logged (`camera up`,
//! with how long it was down) and counted (`camgraph_camera_reconnects_total`).
//!
//! ```yaml
//! front: { type: camera, source: test, width: 1280, height: 720, fps: 30 }
//! gate:  { type: camera, source: "rtsp://192.168.1.30/stream1", transport: udp }
//! dock:  { type: camera, source: "rtsp://192.168.1.32/mjpeg", codec: mjpeg }
//! ```

pub mod api;
pub mod files;
pub mod http_mjpeg;
pub mod kinds;
pub mod nosignal;
pub mod rtp;
pub mod rtsp;
pub mod testsrc;
#[cfg(feature = "v4l")]
pub mod v4l;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use actix::{Actor, Context, Handler};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::config::ApiSources;
use crate::error::{BuildError, ServiceError};
use crate::fanout::{watch_demand, Demand, Fanout, Subscriber};
use crate::frame::{Codec, EncodedFrame, Frame, PixelFormat};
use crate::metrics::CameraErrorReason;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, Services};
use crate::port::{Feed, H264Variant, Port, Ports};
use crate::stop::{stop_on, StopToken, Stopper};
use api::{CaptureSwitch, SetCapture};

/// Settings of a `camera` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Where frames come from: `test` (a moving test pattern with the frame number and capture time
    /// painted in), a V4L2 device (`/dev/video0`, or its index `0`), or the path of a folder of
    /// JPEGs or of an `.mjpeg` file, played in a loop without re-encoding, an `http://` MJPEG
    /// stream, or an `rtsp://[user:password@]host[:port]/path` H.264 stream, passed through
    /// without decoding. Required.
    pub source: String,
    /// Frame width in pixels. Default 1280. A device uses the closest size it offers; a camera
    /// that sends its own pictures (HTTP, RTSP, RTP) keeps their size and uses this one for its
    /// "no signal" picture (one that gives H.264: only until its first picture).
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
    /// RTSP only: how RTP comes, `tcp` (interleaved on the RTSP connection) or `udp`. Default
    /// `tcp`.
    #[serde(default)]
    pub transport: Option<String>,
    /// RTSP only: the user name, if not in the URL. Default none.
    #[serde(default)]
    pub username: Option<String>,
    /// RTSP only: the password, if not in the URL. Default none. Never logged nor shown.
    #[serde(default)]
    pub password: Option<String>,
    /// RTSP only: what the camera sends, `h264` (passed through: the camera gives `h264`) or
    /// `mjpeg` (RFC 2435 JPEG, passed on as JPEG pictures: the camera gives `frames`, like an
    /// HTTP MJPEG camera). Said here because what a camera gives is checked before anything
    /// connects; a stream that offers something else leaves the camera down, saying what it
    /// offers. Default `h264`.
    #[serde(default)]
    pub codec: Option<String>,
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

    /// What the camera gives follows its source: pictures, or the H.264 of a camera that encodes.
    fn ports(&self) -> Ports {
        Ports::Source(kinds::kind_of(&self.source).gives(self.codec.as_deref()))
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
        if kind.name != rtsp::KIND.name {
            for (field, set) in [
                ("transport", self.transport.is_some()),
                ("username", self.username.is_some()),
                ("password", self.password.is_some()),
            ] {
                if set {
                    issues.push(FieldIssue::new(
                        field,
                        format!("'{field}' is for rtsp:// sources only"),
                    ));
                }
            }
        }
        kind.check_codec(self.codec.as_deref(), &mut issues);
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
                    kinds::redacted(&self.source),
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
        let camera = cx.camera.clone();
        let opener = kinds::kind_of(&self.source).opener(self.codec.as_deref());
        Ok(match *opener {
            kinds::Open::Frames(open) => {
                let out = Fanout::<Frame>::new();
                let (w, h) = (self.width, self.height);
                let to = out.clone();
                let no_signal_camera = camera.clone();
                let outlet = Outlet {
                    publish: Box::new(move |seq, c: Captured| {
                        to.publish(Arc::new(Frame {
                            camera: camera.clone(),
                            seq,
                            captured_at: c.captured_at,
                            width: c.width,
                            height: c.height,
                            format: c.format,
                            data: c.data,
                        }))
                    }),
                    no_signal: Box::new(move || {
                        let now = SystemTime::now();
                        Some(Captured {
                            captured_at: now,
                            width: w,
                            height: h,
                            format: PixelFormat::Rgb24,
                            data: Bytes::from(nosignal::frame(&no_signal_camera, w, h, now)),
                        })
                    }),
                };
                let open: OpenFn<Captured> = Box::new(move || open(&config));
                start_camera(cx, (open, outlet, out), |o| Port::Frames(o.clone()), self)
            }
            kinds::Open::H264(open) => {
                let out = Fanout::<EncodedFrame>::new();
                let gop = Arc::new(Mutex::new(None));
                let feed = Arc::new(CameraH264 {
                    camera: camera.clone(),
                    out: out.clone(),
                    gop: gop.clone(),
                });
                let to = out.clone();
                // The size of the camera's last picture (the settings' until it sends one), for
                // its "no signal" picture: one relaxed store per frame.
                let size = Arc::new(AtomicU64::new(pack(self.width, self.height)));
                let no_signal = no_signal_h264(camera.clone(), size.clone());
                let outlet = Outlet {
                    publish: Box::new(move |seq, au: AccessUnit| {
                        size.store(pack(au.width, au.height), Ordering::Relaxed);
                        let frame = Arc::new(EncodedFrame {
                            camera: camera.clone(),
                            seq,
                            captured_at: au.captured_at,
                            codec: Codec::H264,
                            keyframe: au.keyframe,
                            width: au.width,
                            height: au.height,
                            data: au.data,
                            behind: 0,
                        });
                        // Kept before it is published: whoever sees it can find it kept.
                        Gop::keep(&mut gop.lock().unwrap_or_else(|e| e.into_inner()), &frame);
                        to.publish(frame);
                    }),
                    no_signal,
                };
                let open: OpenFn<AccessUnit> = Box::new(move || open(&config));
                start_camera(cx, (open, outlet, out), |_| Port::H264(feed), self)
            }
        })
    }
}

/// A width and height in one word.
fn pack(width: u32, height: u32) -> u64 {
    u64::from(width) << 32 | u64::from(height)
}

/// The "no signal" picture of a camera that gives H.264, as H.264 (`nosignal::H264Picture`), at
/// the size of the camera's last picture (`size`, packed).
#[cfg(feature = "webrtc")]
fn no_signal_h264(camera: Arc<str>, size: Arc<AtomicU64>) -> NoSignal<AccessUnit> {
    let mut picture = nosignal::H264Picture::default();
    let mut warned = false;
    Box::new(move || {
        let packed = size.load(Ordering::Relaxed);
        let wh = ((packed >> 32) as u32, packed as u32);
        match picture.at(&camera, wh, SystemTime::now()) {
            Ok(unit) => Some(unit),
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(%camera, "cannot encode the no-signal picture: {e}");
                }
                None
            }
        }
    })
}

/// Without openh264 (a build without WebRTC) there is no H.264 picture to show: peers keep the
/// camera's last one while it is down.
#[cfg(not(feature = "webrtc"))]
fn no_signal_h264(_: Arc<str>, _: Arc<AtomicU64>) -> NoSignal<AccessUnit> {
    Box::new(|| None)
}

/// The output of a camera whose source encodes: its own H.264, one stream, passed through to
/// every subscriber. There is nothing to choose (no bitrate or size: no encoder) and no keyframe
/// to ask for (RTSP has no general way to ask a camera for an IDR): a peer starts at the
/// camera's next one.
struct CameraH264 {
    camera: Arc<str>,
    out: Fanout<EncodedFrame>,
    /// The frames since the last keyframe, for newcomers (`since_keyframe`).
    gop: Arc<Mutex<Option<Gop>>>,
}

/// A camera's frames since its last keyframe, that one first, at most `GOP_MAX_BYTES`; `None` in
/// `CameraH264::gop` before the first keyframe, and from a GOP that grew over the cap until the
/// next keyframe.
#[derive(Default)]
struct Gop {
    frames: Vec<Arc<EncodedFrame>>,
    bytes: usize,
}

/// The most a kept GOP may hold (a 4K camera at 8 Mbit/s with a 2 s GOP sends 2 MB).
const GOP_MAX_BYTES: usize = 4 << 20;

impl Gop {
    /// Keeps `frame` in the GOP being gathered in `gop`, starting one at each keyframe.
    fn keep(gop: &mut Option<Gop>, frame: &Arc<EncodedFrame>) {
        if frame.keyframe {
            *gop = Some(Gop::default());
        }
        if let Some(g) = gop.as_mut() {
            g.bytes += frame.data.len();
            if g.bytes > GOP_MAX_BYTES {
                *gop = None;
            } else {
                g.frames.push(frame.clone());
            }
        }
    }
}

impl Feed<H264Variant> for CameraH264 {
    fn subscribe(
        &self,
        variant: Option<H264Variant>,
    ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
        match variant {
            None => Ok(self.out.subscribe()),
            Some(v) => Err(ServiceError::BadRequest(format!(
                "camera '{}' passes its own H.264 through: it has no variant {v} (no bitrate or size to choose)",
                self.camera
            ))),
        }
    }

    fn passes_through(&self, _: Option<H264Variant>) -> bool {
        true
    }

    fn since_keyframe(&self, _: Option<H264Variant>) -> Vec<Arc<EncodedFrame>> {
        let gop = self.gop.lock().unwrap_or_else(|e| e.into_inner());
        gop.as_ref().map(|g| g.frames.clone()).unwrap_or_default()
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

/// One H.264 access unit as a camera encoded it: Annex B (start codes), SPS and PPS in front
/// of every IDR.
pub struct AccessUnit {
    pub captured_at: SystemTime,
    pub width: u32,
    pub height: u32,
    /// An IDR: a decoder can start here.
    pub keyframe: bool,
    pub data: Bytes,
}

/// Something frames (`Captured` pictures, or `AccessUnit`s of a camera that encodes) can be
/// pulled from. It runs on the camera's capture thread and may block.
pub trait FrameSource<T = Captured> {
    /// Blocks until the next frame is due, then returns it. `seq` is the number the frame will carry.
    fn next_frame(&mut self, seq: u64) -> Result<T, SourceError>;
    /// Nobody wants frames for now: release what can be released (a device's stream).
    fn pause(&mut self) {}
}

type OpenFn<T> = Box<dyn Fn() -> Result<Box<dyn FrameSource<T>>, SourceError> + Send>;

/// Makes the "no signal" picture shown while a source is down (`None`: none to show).
type NoSignal<T> = Box<dyn FnMut() -> Option<T> + Send>;

/// Where the capture thread puts what it pulled: how a source's item is published, and what is
/// published instead while the source is down.
struct Outlet<T> {
    publish: Box<dyn Fn(u64, T) + Send>,
    no_signal: NoSignal<T>,
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

    /// The next frame is due one interval from now.
    fn defer(&mut self) {
        self.next = Some(Instant::now() + self.interval);
    }

    /// When the next frame is due (now if it has not started).
    fn due(&self) -> Instant {
        self.next.unwrap_or_else(Instant::now)
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
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
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
/// camera actor. `out` is the fan-out the outlet publishes into (its demand starts and stops
/// capture); `port` makes the node's output of it.
fn start_camera<T: 'static, V: Send + Sync + 'static>(
    cx: BuildContext,
    (open, outlet, out): (OpenFn<T>, Outlet<T>, Fanout<V>),
    port: impl FnOnce(&Fanout<V>) -> Port,
    config: &CameraConfig,
) -> NodeHandle {
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
        outlet,
        control: control.clone(),
        metrics,
    };
    let spawned = thread::Builder::new()
        .name(format!("capture-{}", cx.id))
        .spawn(move || capture.run());
    if let Err(e) = spawned {
        *control
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
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
        output: Some(port(&out)),
        services: Services::new().with(CaptureSwitch(addr.clone().recipient())),
        stats: Some(Box::new(move || {
            json!({
                "captured": captured.get(),
                "up": up.get() == 1,
                "reconnects": reconnects.get(),
                "error": *control.last_error.lock().unwrap_or_else(PoisonError::into_inner),
                "capture_on": control.gate().capture_on,
                "consumers": stats_out.subscriber_count(),
            })
        })),
        stop,
    }
}

/// The capture thread's state.
struct Capture<T> {
    open: OpenFn<T>,
    camera: Arc<str>,
    outlet: Outlet<T>,
    control: Arc<Control>,
    metrics: CameraMetrics,
}

impl<T> Capture<T> {
    /// Notes and counts a failure; `down_since` keeps when the outage began. An outage's first
    /// "no signal" picture is due one `no_signal` interval after it began.
    fn down(&self, error: &SourceError, down_since: &mut Option<Instant>, no_signal: &mut Pacer) {
        if down_since.is_none() {
            *down_since = Some(Instant::now());
            no_signal.defer();
        }
        if too_large(error.as_ref()) {
            self.metrics.too_large.inc();
        } else {
            self.metrics.failed.inc();
        }
        let error = error.to_string();
        let mut last = self
            .control
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(error.as_str()) {
            tracing::error!(camera = %self.camera, "camera down: {error}");
        }
        *last = Some(error);
        self.metrics.up.set(0);
    }

    fn run(mut self) {
        let mut source: Option<Box<dyn FrameSource<T>>> = None;
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
                        // Paused below if nobody wants frames yet: a source lets go of what
                        // opening took (an RTSP camera's DESCRIBE connection) until it is wanted.
                        active = true;
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
                        *self
                            .control
                            .last_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = None;
                    }
                    Err(e) => {
                        self.down(&e, &mut down_since, &mut no_signal);
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
                    tracing::debug!(camera = %self.camera, "capture paused: nobody wants frames");
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
                // Down: retried when due, before the next "no signal" picture if that is later.
                if retry_at <= no_signal.due() {
                    thread::sleep(retry_at.saturating_duration_since(Instant::now()));
                    continue;
                }
                no_signal.wait();
                if let Some(picture) = (self.outlet.no_signal)() {
                    (self.outlet.publish)(seq, picture);
                    seq += 1;
                }
                continue;
            };
            match s.next_frame(seq) {
                // Capture may have been switched off while the source waited for the frame.
                Ok(_) if !self.control.gate().capture_on => {}
                Ok(c) => {
                    self.metrics.captured.inc();
                    (self.outlet.publish)(seq, c);
                    seq += 1;
                }
                Err(e) => {
                    source = None; // closes the device or connection
                    self.down(&e, &mut down_since, &mut no_signal);
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
    fn the_gop_starts_at_a_keyframe_and_is_dropped_when_too_big() {
        let frame = |keyframe: bool, bytes: usize| {
            Arc::new(EncodedFrame {
                camera: "cam".into(),
                seq: 0,
                captured_at: SystemTime::now(),
                codec: Codec::H264,
                keyframe,
                width: 16,
                height: 16,
                data: Bytes::from(vec![0u8; bytes]),
                behind: 0,
            })
        };
        let mut gop = None;
        Gop::keep(&mut gop, &frame(false, 10));
        assert!(gop.is_none(), "nothing before the first keyframe");
        Gop::keep(&mut gop, &frame(true, 10));
        Gop::keep(&mut gop, &frame(false, 10));
        assert_eq!(gop.as_ref().map(|g| g.frames.len()), Some(2));
        Gop::keep(&mut gop, &frame(true, 10));
        assert_eq!(gop.as_ref().map(|g| g.frames.len()), Some(1), "a new one");

        Gop::keep(&mut gop, &frame(true, GOP_MAX_BYTES - 5));
        assert!(gop.is_some());
        Gop::keep(&mut gop, &frame(false, 10));
        assert!(gop.is_none(), "over the cap: dropped, not grown");
        Gop::keep(&mut gop, &frame(false, 10));
        assert!(gop.is_none(), "until the next keyframe");
    }

    /// A source that gives its frame numbers, 100 a second.
    struct Numbers;

    impl FrameSource<Option<u64>> for Numbers {
        fn next_frame(&mut self, seq: u64) -> Result<Option<u64>, SourceError> {
            thread::sleep(Duration::from_millis(10));
            Ok(Some(seq))
        }
    }

    /// Runs a capture thread, wanted, over a source that fails to open `fails` times; gives what
    /// it publishes (`None`: the no-signal picture) and how many opens were tried when each was
    /// published. Stops after `count` of them.
    fn capture(fails: u64, count: usize) -> Vec<(Option<u64>, u64)> {
        let opens = Arc::new(AtomicU64::new(0));
        let tried = opens.clone();
        let open: OpenFn<Option<u64>> = Box::new(move || {
            if tried.fetch_add(1, Ordering::SeqCst) < fails {
                Err("503 Service Unavailable".into())
            } else {
                Ok(Box::new(Numbers))
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let tried = opens.clone();
        let outlet = Outlet {
            publish: Box::new(move |_, item| {
                let _ = tx.send((item, tried.load(Ordering::SeqCst)));
            }),
            no_signal: Box::new(|| Some(None)),
        };
        let control = Arc::new(Control {
            gate: Mutex::new(Gate {
                capture_on: true,
                consumers: true,
                stop: false,
            }),
            changed: Condvar::new(),
            last_error: Mutex::new(None),
        });
        let m = crate::metrics::Metrics::new().node("cam", "cam", "camera");
        let capture = Capture {
            open,
            camera: "cam".into(),
            outlet,
            control: control.clone(),
            metrics: CameraMetrics {
                captured: m.frames_captured(),
                up: m.camera_up(),
                reconnects: m.camera_reconnects(),
                too_large: m.camera_errors(CameraErrorReason::TooLarge),
                failed: m.camera_errors(CameraErrorReason::Failed),
            },
        };
        let thread = thread::spawn(move || capture.run());
        let seen = (0..count)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("published"))
            .collect();
        control.update(|g| g.stop = true);
        thread.join().unwrap();
        seen
    }

    /// A source that fails once and answers its first retry (gst-rtsp-server's "503" to a
    /// DESCRIBE right after the last one's connection closed: a snapshot of an RTSP camera nobody
    /// watched got the no-signal picture, tests/rtsp.rs) shows no "no signal" picture; one that
    /// stays down does, after a retry.
    #[test]
    fn the_no_signal_picture_waits_for_a_retry_that_fails_too() {
        let seen = capture(1, 3);
        assert!(seen.iter().all(|(item, _)| item.is_some()), "{seen:?}");

        let seen = capture(u64::MAX, 2);
        assert_eq!(seen[0].0, None, "down: no signal");
        assert!(seen[0].1 >= 2, "no signal before a retry: {seen:?}");
    }

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
