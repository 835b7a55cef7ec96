//! `camgraph-bench`: measures what camgraph costs, and prints only what it measured on this run.
//! `jpeg` times camgraph's JPEG encode path (`encode_rgb` on test-pattern frames) against bare
//! turbojpeg on the same frames. `fanout` starts the real `camgraph` server as a child process on
//! loopback with one 1280x720 30 fps test camera, opens N concurrent MJPEG viewers (one thread
//! each), and reports what every viewer received (unique frames per second, capture-to-arrival
//! latency) and what the server spent (CPU time of one core, from /proc). Build both binaries with
//! `ladder` times each step of the default WebRTC (H.264) ladder through camgraph's own scaling and
//! openh264 session, on grainy 720p test-pattern frames, and reports the bitrate each produces.
//! `idle` starts the server with four test cameras and their usual chains and no viewer, and
//! reports what it costs to do nothing (CPU of one core, wake-ups per second); `first-frame` times
//! opening a stream on an idle camera until its first JPEG arrives.
//! `cargo build --release --bins`, then run
//! `target/release/camgraph-bench <jpeg|fanout|ladder|idle|first-frame>`.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

use camgraph::client;
use camgraph::messages::{Frame, PixelFormat};
use camgraph::mjpeg::{self, PartReader};
use camgraph::plugins::control::adaptive::default_h264_ladder;
use camgraph::plugins::encoders::h264::{H264EncoderConfig, Session};
use camgraph::plugins::encoders::jpeg::encode_rgb;
use camgraph::plugins::encoders::pixels::Pixels;
use camgraph::plugins::sources::testsrc::TestPattern;

/// Benchmarks for camgraph: JPEG encode cost and MJPEG fan-out to many viewers. Every figure is
/// measured on this run; goals are printed next to the figures they apply to.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// JPEG encode ms/frame (quality 80, 4:2:0) at 640x480, 1280x720 and 1920x1080: camgraph's
    /// `encode_rgb` versus bare `turbojpeg::compress` on the same test-pattern frames.
    Jpeg {
        /// Timed encodes per size and per path.
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// Untimed encodes per size and per path before timing.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Distinct frames (different sequence numbers) the encodes cycle through.
        #[arg(long, default_value_t = 8)]
        frames: usize,
    },
    /// MJPEG fan-out: runs the camgraph server as a child process (one 1280x720 30 fps test
    /// camera, JPEG quality 80) and measures N concurrent viewers on 127.0.0.1.
    Fanout {
        /// Viewer counts to measure, one round each.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        viewers: Vec<usize>,
        /// Length of the measured window of each round, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds between the last viewer connecting and the measured window.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// The camgraph server binary. Default: `camgraph` next to this executable.
        #[arg(long)]
        server: Option<PathBuf>,
    },
    /// The cost of each step of the default H.264 ladder at 1280x720: ms per frame (scaling and
    /// encoding, one thread) and the kbit/s it produces at 30 fps, on test-pattern frames with
    /// grain (noise 12), so the encoder has to spend its bitrate as with a real sensor.
    #[cfg(feature = "webrtc")]
    Ladder {
        /// Timed frames per step.
        #[arg(long, default_value_t = 150)]
        frames: usize,
        /// Untimed frames per step before timing (the first is the IDR).
        #[arg(long, default_value_t = 30)]
        warmup: usize,
    },
    /// Idle cost: runs the camgraph server as a child process with four 1280x720 30 fps test
    /// cameras, each with its usual chains (jpeg_encoder -> mjpeg_sink, h264_encoder ->
    /// webrtc_sink), and no viewer; measures its CPU (% of one core) and wake-ups per second.
    Idle {
        /// Measured windows; the median is the figure.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Length of each window, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds after start before the first window (startup settles).
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// The camgraph server binary. Default: `camgraph` next to this executable.
        #[arg(long)]
        server: Option<PathBuf>,
    },
    /// First-frame delay: on the idle four-camera server of `idle`, the time from opening an MJPEG
    /// stream of an idle camera to receiving its first JPEG (the cameras take turns; each is idle
    /// again before its next turn).
    FirstFrame {
        /// Streams opened; the median is the figure.
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// The camgraph server binary. Default: `camgraph` next to this executable.
        #[arg(long)]
        server: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Jpeg {
            iterations,
            warmup,
            frames,
        } => jpeg(iterations.max(1), warmup, frames.max(1)),
        Bench::Fanout {
            viewers,
            seconds,
            warmup,
            server,
        } => fanout(&viewers, seconds.max(1), warmup, server),
        #[cfg(feature = "webrtc")]
        Bench::Ladder { frames, warmup } => ladder(frames.max(1), warmup),
        Bench::Idle {
            rounds,
            seconds,
            warmup,
            server,
        } => idle(rounds.max(1), seconds.max(1), warmup, server),
        Bench::FirstFrame { samples, server } => first_frame(samples.max(1), server),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camgraph-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// The value at quantile `q` (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (busy, total) jiffies of all cores together, from the first line of /proc/stat.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3)? + cpu.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// Measures for one second how busy the machine is before starting, and warns if something else
/// is using the CPU: on a small machine that skews every figure.
fn warn_if_busy() {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let before = machine_jiffies();
    thread::sleep(Duration::from_secs(1));
    if let (Some((b0, t0)), Some((b1, t1))) = (before, machine_jiffies()) {
        let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * 100.0;
        println!("machine: {cores} cores, {busy:.0} % busy (all cores) in the second before start");
        if busy > 10.0 {
            println!("warning: something else is using the CPU; figures below are pessimistic");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// jpeg

const SIZES: [(u32, u32); 3] = [(640, 480), (1280, 720), (1920, 1080)];
const QUALITY: u8 = 80;
const JPEG_RATIO_GOAL: f64 = 1.2;

fn jpeg(iterations: usize, warmup: usize, frame_count: usize) -> anyhow::Result<()> {
    warn_if_busy();
    println!(
        "JPEG encode, quality {QUALITY}, 4:2:0, one thread: {iterations} timed encodes per size and \
         path after {warmup} warm-up encodes, cycling through {frame_count} test-pattern frames"
    );
    println!(
        "  camgraph = encode_rgb with one reused turbojpeg::Compressor (as the encoder node does)"
    );
    println!("  bare     = turbojpeg::compress (a new compressor per call), same frames");
    println!("  the two run alternately, in alternating order, so neither gets a warmer cache");
    println!();
    println!(
        "{:<10} {:>16} {:>16} {:>16} {:>16} {:>13} {:>9} {:>6}",
        "size",
        "camgraph median",
        "camgraph p90",
        "bare median",
        "bare p90",
        "ratio median",
        "JPEG KiB",
        "same"
    );
    println!(
        "{:<10} {:>16} {:>16} {:>16} {:>16} {:>13} {:>9} {:>6}",
        "", "ms/frame", "ms/frame", "ms/frame", "ms/frame", "(goal<=1.2x)", "", "bytes"
    );
    let mut worst_ratio: f64 = 0.0;
    for (w, h) in SIZES {
        let pattern = TestPattern::new(w, h, 30);
        let start = SystemTime::now();
        let frames: Vec<Vec<u8>> = (0..frame_count)
            .map(|i| {
                let mut buf = vec![0u8; (w * h * 3) as usize];
                pattern.draw(
                    &mut buf,
                    1000 + i as u64,
                    start + Duration::from_millis(33 * i as u64),
                );
                buf
            })
            .collect();
        let mut compressor = turbojpeg::Compressor::new()?;
        compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2)?;
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        let mut bytes = 0usize;
        let mut identical = true;
        for i in 0..warmup + iterations {
            let frame = &frames[i % frames.len()];
            let image = turbojpeg::Image {
                pixels: &frame[..],
                width: w as usize,
                pitch: w as usize * 3,
                height: h as usize,
                format: turbojpeg::PixelFormat::RGB,
            };
            let mut time_ours = || -> anyhow::Result<(Duration, bytes::Bytes)> {
                let t = Instant::now();
                let out = encode_rgb(&mut compressor, frame, w, h, QUALITY)
                    .map_err(anyhow::Error::msg)?;
                Ok((t.elapsed(), out))
            };
            let time_bare = || -> anyhow::Result<(Duration, turbojpeg::OwnedBuf)> {
                let t = Instant::now();
                let out =
                    turbojpeg::compress(image, i32::from(QUALITY), turbojpeg::Subsamp::Sub2x2)?;
                Ok((t.elapsed(), out))
            };
            let ((ta, a), (tb, b)) = if i % 2 == 0 {
                let a = time_ours()?;
                (a, time_bare()?)
            } else {
                let b = time_bare()?;
                (time_ours()?, b)
            };
            if i >= warmup {
                ours.push(ms(ta));
                bare.push(ms(tb));
                bytes += a.len();
                identical &= a[..] == b[..];
            }
        }
        let (ours, bare) = (sorted(ours), sorted(bare));
        let ratio = quantile(&ours, 0.5) / quantile(&bare, 0.5);
        worst_ratio = worst_ratio.max(ratio);
        println!(
            "{:<10} {:>16.3} {:>16.3} {:>16.3} {:>16.3} {:>12.2}x {:>9.1} {:>6}",
            format!("{w}x{h}"),
            quantile(&ours, 0.5),
            quantile(&ours, 0.9),
            quantile(&bare, 0.5),
            quantile(&bare, 0.9),
            ratio,
            bytes as f64 / iterations as f64 / 1024.0,
            if identical { "yes" } else { "NO" }
        );
    }
    println!();
    println!(
        "goal camgraph/bare <= {JPEG_RATIO_GOAL}x at every size: {} (worst {worst_ratio:.2}x)",
        if worst_ratio <= JPEG_RATIO_GOAL {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ladder

#[cfg(feature = "webrtc")]
fn ladder(frame_count: usize, warmup: usize) -> anyhow::Result<()> {
    const W: u32 = 1280;
    const H: u32 = 720;
    const FPS: f64 = 30.0;
    warn_if_busy();
    let config = H264EncoderConfig::default();
    println!(
        "H.264 ladder at {W}x{H}, {FPS} fps, keyframe every {} frames: {frame_count} timed frames per \
         step after {warmup} untimed, test pattern with grain (noise 12), one thread",
        config.keyframe_interval
    );
    println!("  ms/frame = camgraph's scaling (Pixels) + its openh264 session (Session::encode)");
    println!();
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>16} {:>12} {:>15}",
        "step", "size", "median ms", "p90 ms", "of it scaling ms", "kbit/s out", "share of 33 ms"
    );
    let pattern = TestPattern::new(W, H, 30).with_noise(12);
    let start = SystemTime::now();
    let frames: Vec<Frame> = (0..16u64)
        .map(|seq| {
            let mut buf = vec![0u8; (W * H * 3) as usize];
            pattern.draw(&mut buf, seq, start + Duration::from_millis(33 * seq));
            Frame {
                camera: "bench".into(),
                seq,
                captured_at: start,
                width: W,
                height: H,
                format: PixelFormat::Rgb24,
                data: buf.into(),
            }
        })
        .collect();
    let mut all_steps = 0.0;
    for variant in default_h264_ladder() {
        let mut pixels = Pixels::default();
        let mut session: Option<Session> = None;
        let (mut times, mut scaling, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        for i in 0..warmup + frame_count {
            // Frame numbers go on past the 16 frames, so the scaled copy is made anew each time.
            let mut frame = frames[i % frames.len()].clone();
            frame.seq = i as u64;
            let t = Instant::now();
            let (rgb, w, h) = pixels
                .rgb(&frame, variant.scale)
                .map_err(anyhow::Error::msg)?;
            let scaled = t.elapsed();
            let s = match &mut session {
                Some(s) => s,
                None => session
                    .insert(Session::new(&config, variant, w, h).map_err(anyhow::Error::msg)?),
            };
            let (data, _) = s.encode(rgb, false).map_err(anyhow::Error::msg)?;
            if i >= warmup {
                times.push(ms(t.elapsed()));
                scaling.push(ms(scaled));
                bytes += data.len();
            }
        }
        let (times, scaling) = (sorted(times), sorted(scaling));
        let median = quantile(&times, 0.5);
        all_steps += median;
        let (w, h) = (W / u32::from(variant.scale), H / u32::from(variant.scale));
        println!(
            "{:<10} {:>9} {:>10.2} {:>10.2} {:>16.2} {:>12.0} {:>14.0}%",
            variant.to_string(),
            format!("{w}x{h}"),
            median,
            quantile(&times, 0.9),
            quantile(&scaling, 0.5),
            bytes as f64 * 8.0 * FPS / frame_count as f64 / 1000.0,
            median / (1000.0 / FPS) * 100.0
        );
    }
    println!();
    println!(
        "all steps in use at once: {all_steps:.2} ms per camera frame ({:.0}% of one core at {FPS} fps)",
        all_steps / (1000.0 / FPS) * 100.0
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// fanout

const STREAM_PATH: &str = "/api/camera/stream/front";
const GRAPH_YAML: &str = "\
server:
  listen: 127.0.0.1:0
nodes:
  front: { type: camera, source: test, width: 1280, height: 720, fps: 30 }
  front_jpeg: { type: jpeg_encoder, inputs: [front], quality: 80 }
  front_mjpeg: { type: mjpeg_sink, inputs: [front_jpeg], max_viewers: 1000 }
";
const GOAL_VIEWERS: usize = 100;
const GOAL_FPS: f64 = 29.5;
const GOAL_CPU: f64 = 25.0;
const GOAL_P99_MS: f64 = 10.0;
/// The capacity of the body buffer `camgraph::client` reads through (see `Timed::read`).
const CLIENT_BUFFER: usize = 64 * 1024;

/// The camgraph server running as a child process; killed when dropped, error or not.
struct ServerProcess {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    base: String,
}

impl ServerProcess {
    fn start(exe: &Path, yaml: &str) -> anyhow::Result<ServerProcess> {
        let dir = std::env::temp_dir().join(format!("camgraph-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let config = dir.join("graph.yaml");
        fs::write(&config, yaml)?;
        let log = dir.join("camgraph.log");
        let child = Command::new(exe)
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let mut server = ServerProcess {
            child,
            dir,
            log,
            base: String::new(),
        };
        let stdout = server.child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("camgraph listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) if base.starts_with("http://127.0.0.1:") => server.base = base,
            Ok(base) => bail!("camgraph listens on {base}, not on 127.0.0.1"),
            Err(_) => bail!(
                "camgraph did not print its address within 30 s; its log:\n{}",
                server.log_text()
            ),
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if the server has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("camgraph exited ({status}); its log:\n{}", self.log_text());
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The server binary: the one given, or `camgraph` next to this executable.
fn server_exe(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let exe = match given {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("camgraph"),
    };
    if !exe.is_file() {
        bail!(
            "no server binary at {}: build both binaries with `cargo build --release --bins`",
            exe.display()
        );
    }
    Ok(exe)
}

/// Clock ticks per second of /proc/<pid>/stat times.
fn clock_ticks() -> (f64, &'static str) {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    match out
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        Some(t) if t > 0.0 => (t, "from getconf CLK_TCK"),
        _ => (100.0, "ASSUMED (getconf CLK_TCK failed)"),
    }
}

/// (command name, utime + stime in ticks) from a /proc stat file.
fn stat_ticks(path: &Path) -> io::Result<(String, u64)> {
    let text = fs::read_to_string(path)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("{}", path.display()));
    let open = text.find('(').ok_or_else(bad)?;
    let close = text.rfind(')').ok_or_else(bad)?;
    let name = text[open + 1..close].to_string();
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |i: usize| -> io::Result<u64> {
        fields.get(i).and_then(|v| v.parse().ok()).ok_or_else(bad)
    };
    Ok((name, field(11)? + field(12)?))
}

/// CPU ticks of every thread of a process, by thread id.
fn thread_ticks(pid: u32) -> HashMap<String, (String, u64)> {
    let mut out = HashMap::new();
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            if let Ok(t) = stat_ticks(&entry.path().join("stat")) {
                out.insert(entry.file_name().to_string_lossy().into_owned(), t);
            }
        }
    }
    out
}

/// The sum of every sample of metric `name` whose labels contain all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let rest = key.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            labels
                .iter()
                .all(|want| rest.contains(want))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn scrape(base: &str) -> String {
    client::get(&format!("{base}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// A response body that notes when the headers of each part were read off the connection: the
/// time of the read that brought the first byte after the previous part (other than the CRLF that
/// ends it). `stamp` is set once per part; the viewer takes it after each part.
struct Timed<R> {
    inner: R,
    /// Bytes left in the inner reader's buffer, as far as this wrapper has seen.
    avail: usize,
    refilled_at: SystemTime,
    stamp: Rc<Cell<Option<SystemTime>>>,
}

fn has_content(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| !matches!(b, b'\r' | b'\n'))
}

impl<R: BufRead> Read for Timed<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.avail == 0 && out.len() >= CLIENT_BUFFER {
            // A large read on an empty `BufReader` goes straight to the connection: no extra copy
            // of the JPEG bytes in the client, which shares the CPU with the server.
            let n = self.inner.read(out)?;
            self.refilled_at = SystemTime::now();
            if self.stamp.get().is_none() && has_content(&out[..n]) {
                self.stamp.set(Some(self.refilled_at));
            }
            return Ok(n);
        }
        let n = {
            let buf = self.fill_buf()?;
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Timed<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let refill = self.avail == 0;
        let buf = self.inner.fill_buf()?;
        if refill {
            self.refilled_at = SystemTime::now();
        }
        self.avail = buf.len();
        if self.stamp.get().is_none() && has_content(buf) {
            self.stamp.set(Some(self.refilled_at));
        }
        Ok(buf)
    }

    fn consume(&mut self, amt: usize) {
        self.avail = self.avail.saturating_sub(amt);
        self.inner.consume(amt);
    }
}

/// One part as a viewer saw it.
struct Sample {
    /// When its headers were read by the viewer.
    arrived: SystemTime,
    /// Its X-Timestamp (capture time).
    captured: Option<SystemTime>,
}

#[derive(Default)]
struct ViewerLog {
    samples: Vec<Sample>,
    error: Option<String>,
}

/// Reads one MJPEG stream until `stop`; `ready` counts viewers that have their response (or gave up).
fn run_viewer(url: &str, stop: &AtomicBool, ready: &AtomicUsize) -> ViewerLog {
    let mut log = ViewerLog::default();
    let response = client::get(url);
    ready.fetch_add(1, Ordering::SeqCst);
    let response = match response {
        Ok(r) if r.status == 200 => r,
        Ok(r) => {
            let status = r.status;
            let body = r.text().unwrap_or_default();
            log.error = Some(format!("HTTP {status}: {}", body.trim()));
            return log;
        }
        Err(e) => {
            log.error = Some(format!("cannot open the stream: {e}"));
            return log;
        }
    };
    if response.header("content-type") != Some(mjpeg::CONTENT_TYPE) {
        log.error = Some(format!(
            "unexpected content type {:?}",
            response.header("content-type")
        ));
        return log;
    }
    let stamp = Rc::new(Cell::new(None));
    let body = Timed {
        inner: response.into_body(),
        avail: 0,
        refilled_at: SystemTime::now(),
        stamp: stamp.clone(),
    };
    let mut parts = PartReader::new(body, mjpeg::BOUNDARY);
    while !stop.load(Ordering::Relaxed) {
        match parts.next_part() {
            Ok(Some(part)) => log.samples.push(Sample {
                arrived: stamp.take().unwrap_or_else(SystemTime::now),
                captured: part.timestamp,
            }),
            Ok(None) => {
                log.error = Some("the stream ended".into());
                break;
            }
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    log.error = Some(format!("read error: {e}"));
                }
                break;
            }
        }
    }
    log
}

/// The figures of one round.
struct Round {
    viewers: usize,
    failed: usize,
    fps_min: f64,
    fps_median: f64,
    max_gap_ms: f64,
    duplicates: usize,
    missing_stamp: usize,
    server_cpu: f64,
    bench_cpu: f64,
    other_cpu: f64,
    lat_p50: f64,
    lat_p99: f64,
    lat_max: f64,
    captured_fps: f64,
    encoded_fps: f64,
    sent_per_viewer: f64,
    dropped_behind_per_viewer: f64,
    threads: Vec<(String, f64)>,
    errors: BTreeMap<String, usize>,
}

fn round(
    server: &mut ServerProcess,
    viewers: usize,
    warmup: u64,
    seconds: u64,
    ticks: f64,
) -> anyhow::Result<Round> {
    let url = format!("{}{STREAM_PATH}", server.base);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(viewers);
    for i in 0..viewers {
        let (url, viewer_stop, ready) = (url.clone(), stop.clone(), ready.clone());
        let spawned = thread::Builder::new()
            .name(format!("viewer-{i}"))
            .spawn(move || run_viewer(&url, &viewer_stop, &ready));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                bail!("cannot start viewer thread {i}: {e}");
            }
        }
    }
    // Every viewer has its response headers or has given up (the client's connect timeout is 5 s
    // and its read timeout 10 s, so this is bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready.load(Ordering::SeqCst) < viewers && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_secs(warmup));
    server.check_alive()?;
    let pid = server.pid();
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let metrics_before = scrape(&server.base);
    let threads_before = thread_ticks(pid);
    let (_, bench_before) = stat_ticks(Path::new("/proc/self/stat"))?;
    let machine_before = machine_jiffies();
    let (_, cpu_before) = stat_ticks(&stat)?;
    let (window_start, clock) = (SystemTime::now(), Instant::now());
    thread::sleep(Duration::from_secs(seconds));
    let (_, cpu_after) = stat_ticks(&stat)?;
    let machine_after = machine_jiffies();
    let (_, bench_after) = stat_ticks(Path::new("/proc/self/stat"))?;
    let threads_after = thread_ticks(pid);
    let (window_end, window) = (SystemTime::now(), clock.elapsed().as_secs_f64());
    let metrics_after = scrape(&server.base);
    stop.store(true, Ordering::SeqCst);
    // Each viewer stops after its next part (33 ms at 30 fps) or at the client's read timeout.
    let logs: Vec<ViewerLog> = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| ViewerLog {
                error: Some("viewer thread panicked".into()),
                ..ViewerLog::default()
            })
        })
        .collect();
    server.check_alive()?;

    let in_window = |s: &&Sample| s.arrived >= window_start && s.arrived <= window_end;
    let mut fps = Vec::new();
    let mut latencies = Vec::new();
    let (mut max_gap, mut duplicates, mut missing_stamp, mut failed) = (0.0f64, 0, 0, 0);
    let mut errors = BTreeMap::new();
    for log in &logs {
        if let Some(e) = &log.error {
            failed += 1;
            *errors.entry(e.clone()).or_insert(0) += 1;
        }
        let mut unique = HashSet::new();
        let mut previous: Option<SystemTime> = None;
        for s in log.samples.iter().filter(in_window) {
            match s.captured {
                Some(c) => {
                    if !unique.insert(c) {
                        duplicates += 1;
                    }
                    let lat = match s.arrived.duration_since(c) {
                        Ok(d) => ms(d),
                        Err(e) => -ms(e.duration()),
                    };
                    latencies.push(lat);
                }
                None => missing_stamp += 1,
            }
            if let Some(p) = previous {
                max_gap = max_gap.max(ms(s.arrived.duration_since(p).unwrap_or_default()));
            }
            previous = Some(s.arrived);
        }
        fps.push(unique.len() as f64 / window);
    }
    let fps = sorted(fps);
    let latencies = sorted(latencies);

    let delta = |name: &str, labels: &[&str]| {
        metric_sum(&metrics_after, name, labels) - metric_sum(&metrics_before, name, labels)
    };
    // Thread names are cut to 15 characters by the kernel, so threads are listed one by one.
    let mut threads: Vec<(String, f64)> = threads_after
        .iter()
        .map(|(tid, (name, after))| {
            let before = threads_before.get(tid).map_or(0, |(_, t)| *t);
            let pct = after.saturating_sub(before) as f64 / ticks / window * 100.0;
            (format!("{name}[{tid}]"), pct)
        })
        .filter(|(_, pct)| *pct > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    threads.truncate(6);

    let server_cpu = (cpu_after - cpu_before) as f64 / ticks / window * 100.0;
    let bench_cpu = (bench_after - bench_before) as f64 / ticks / window * 100.0;
    Ok(Round {
        viewers,
        failed,
        fps_min: quantile(&fps, 0.0),
        fps_median: quantile(&fps, 0.5),
        max_gap_ms: max_gap,
        duplicates,
        missing_stamp,
        server_cpu,
        bench_cpu,
        other_cpu: match (machine_before, machine_after) {
            (Some((b0, _)), Some((b1, _))) => {
                ((b1 - b0) as f64 / ticks / window * 100.0 - server_cpu - bench_cpu).max(0.0)
            }
            _ => f64::NAN,
        },
        lat_p50: quantile(&latencies, 0.5),
        lat_p99: quantile(&latencies, 0.99),
        lat_max: quantile(&latencies, 1.0),
        captured_fps: delta("camgraph_frames_captured_total", &[]) / window,
        encoded_fps: delta("camgraph_frames_encoded_total", &[]) / window,
        sent_per_viewer: delta("camgraph_frames_sent_total", &[]) / window / viewers as f64,
        dropped_behind_per_viewer: delta(
            "camgraph_frames_dropped_total",
            &["type=\"mjpeg_sink\"", "reason=\"behind\""],
        ) / window
            / viewers as f64,
        threads,
        errors,
    })
}

fn fanout(
    counts: &[usize],
    seconds: u64,
    warmup: u64,
    server: Option<PathBuf>,
) -> anyhow::Result<()> {
    if counts.is_empty() || counts.contains(&0) {
        bail!("--viewers needs positive counts, e.g. 1,10,100");
    }
    let exe = server_exe(server)?;
    warn_if_busy();
    let (ticks, ticks_source) = clock_ticks();
    let mut server = ServerProcess::start(&exe, GRAPH_YAML)?;
    println!(
        "MJPEG fan-out: {} (pid {}) at {}{STREAM_PATH}",
        exe.display(),
        server.pid(),
        server.base
    );
    println!(
        "  one test camera 1280x720 @ 30 fps -> jpeg_encoder q80 -> mjpeg_sink; viewers are threads \
         of this process on the same machine ({warmup} s warm-up, {seconds} s measured per round)"
    );
    println!(
        "  CPU from /proc/<pid>/stat utime+stime, {ticks} ticks/s {ticks_source}; 100 % = one core"
    );
    println!(
        "  fps = distinct X-Timestamp values per viewer / window; latency = time the part's headers \
         were read by the viewer - X-Timestamp (capture), over all parts of all viewers"
    );
    println!();

    let mut rounds = Vec::new();
    for (i, &n) in counts.iter().enumerate() {
        if i > 0 {
            // Let the server notice the previous round's viewers are gone.
            thread::sleep(Duration::from_secs(1));
        }
        let r = round(&mut server, n, warmup, seconds, ticks)?;
        rounds.push(r);
    }

    println!(
        "{:>7} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "viewers",
        "failed",
        "fps min",
        "fps med",
        "max gap",
        "server",
        "lat p50",
        "lat p99",
        "lat max",
        "bench",
        "other"
    );
    println!(
        "{:>7} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "", "/viewer", "/viewer", "ms", "CPU %", "ms", "ms", "ms", "CPU %", "CPU %"
    );
    for r in &rounds {
        println!(
            "{:>7} {:>6} {:>9.2} {:>9.2} {:>8.1} {:>8.1} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>8.1}",
            r.viewers,
            r.failed,
            r.fps_min,
            r.fps_median,
            r.max_gap_ms,
            r.server_cpu,
            r.lat_p50,
            r.lat_p99,
            r.lat_max,
            r.bench_cpu,
            r.other_cpu
        );
    }
    println!(
        "  bench CPU % = this process (the viewers reading and parsing, on the same cores); other \
         CPU % = everything else on the machine in the window (high: figures are pessimistic)"
    );
    println!();
    println!("server's own counters over the window (from /metrics):");
    println!(
        "{:>7} {:>12} {:>12} {:>14} {:>16} {:>6} {:>8}",
        "viewers", "captured/s", "encoded/s", "sent/s/viewer", "dropped behind", "dup", "no stamp"
    );
    println!(
        "{:>7} {:>12} {:>12} {:>14} {:>16} {:>6} {:>8}",
        "", "", "", "", "/s/viewer", "parts", "parts"
    );
    for r in &rounds {
        println!(
            "{:>7} {:>12.2} {:>12.2} {:>14.2} {:>16.2} {:>6} {:>8}",
            r.viewers,
            r.captured_fps,
            r.encoded_fps,
            r.sent_per_viewer,
            r.dropped_behind_per_viewer,
            r.duplicates,
            r.missing_stamp
        );
    }
    println!();
    println!("busiest server threads over the window (name[tid] % of one core):");
    for r in &rounds {
        let list: Vec<String> = r
            .threads
            .iter()
            .map(|(name, pct)| format!("{name} {pct:.1}"))
            .collect();
        println!("{:>7}: {}", r.viewers, list.join(", "));
    }
    for r in rounds.iter().filter(|r| !r.errors.is_empty()) {
        println!();
        println!("viewer errors with {} viewers:", r.viewers);
        for (e, count) in &r.errors {
            println!("  {count} x {e}");
        }
    }

    println!();
    match rounds.iter().find(|r| r.viewers == GOAL_VIEWERS) {
        Some(r) => {
            let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
            println!("goals at {GOAL_VIEWERS} viewers:");
            println!(
                "  every viewer >= {GOAL_FPS} unique fps: {} (min {:.2})",
                verdict(r.fps_min >= GOAL_FPS),
                r.fps_min
            );
            println!(
                "  server CPU <= {GOAL_CPU} % of a core: {} ({:.1} %)",
                verdict(r.server_cpu <= GOAL_CPU),
                r.server_cpu
            );
            println!(
                "  capture-to-arrival latency p99 <= {GOAL_P99_MS} ms: {} ({:.2} ms)",
                verdict(r.lat_p99 <= GOAL_P99_MS),
                r.lat_p99
            );
        }
        None => println!("goals apply at {GOAL_VIEWERS} viewers, which this run did not measure"),
    }

    let log = server.log_text();
    let notable: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    println!();
    println!(
        "server log: {} lines, {} WARN/ERROR",
        log.lines().count(),
        notable.len()
    );
    for line in notable.iter().take(5) {
        println!("  {line}");
    }
    drop(server);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// idle and first-frame

const IDLE_CAMERAS: usize = 4;

/// Four test cameras with the usual chains, as `camgraph` would run them for a robot.
fn idle_yaml() -> String {
    let mut yaml = String::from("server:\n  listen: 127.0.0.1:0\nnodes:\n");
    for i in 0..IDLE_CAMERAS {
        yaml += &format!(
            "  cam{i}: {{ type: camera, source: test, width: 1280, height: 720, fps: 30 }}\n\
             \x20 cam{i}_jpeg: {{ type: jpeg_encoder, inputs: [cam{i}], quality: 80 }}\n\
             \x20 cam{i}_mjpeg: {{ type: mjpeg_sink, inputs: [cam{i}_jpeg] }}\n"
        );
        if cfg!(feature = "webrtc") {
            yaml += &format!(
                "  cam{i}_h264: {{ type: h264_encoder, inputs: [cam{i}] }}\n\
                 \x20 cam{i}_rtc: {{ type: webrtc_sink, inputs: [cam{i}_h264] }}\n"
            );
        }
    }
    yaml
}

/// What the threads of a process have used so far: CPU nanoseconds (from
/// /proc/<pid>/task/*/schedstat, which counts in ns where stat counts in 10 ms ticks) and context
/// switches (voluntary and not: each is a wake-up of a sleeping thread or a preemption).
#[derive(Default)]
struct ThreadUse {
    cpu_ns: u64,
    switches: u64,
}

fn thread_use(pid: u32) -> HashMap<String, (String, ThreadUse)> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let cpu_ns = fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        let status = fs::read_to_string(path.join("status")).unwrap_or_default();
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .map_or_else(String::new, |n| n.trim().to_string());
        if let Some(cpu_ns) = cpu_ns {
            let switches = field("voluntary_ctxt_switches:").unwrap_or(0)
                + field("nonvoluntary_ctxt_switches:").unwrap_or(0);
            let tid = entry.file_name().to_string_lossy().into_owned();
            out.insert(tid, (name, ThreadUse { cpu_ns, switches }));
        }
    }
    out
}

/// One idle window: CPU % of one core, wake-ups per second, and the busiest threads.
struct IdleRound {
    cpu: f64,
    cpu_ticks: f64,
    wakeups: f64,
    threads: Vec<(String, f64, f64)>,
}

fn idle_round(server: &mut ServerProcess, seconds: u64, ticks: f64) -> anyhow::Result<IdleRound> {
    let pid = server.pid();
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let (before, ticks_before, t0) = (thread_use(pid), stat_ticks(&stat)?.1, Instant::now());
    thread::sleep(Duration::from_secs(seconds));
    let (after, ticks_after, elapsed) = (
        thread_use(pid),
        stat_ticks(&stat)?.1,
        t0.elapsed().as_secs_f64(),
    );
    server.check_alive()?;
    let mut threads = Vec::new();
    let (mut cpu_ns, mut switches) = (0u64, 0u64);
    for (tid, (name, now)) in &after {
        let (ns, sw) = match before.get(tid) {
            Some((_, then)) => (now.cpu_ns - then.cpu_ns, now.switches - then.switches),
            None => (now.cpu_ns, now.switches),
        };
        cpu_ns += ns;
        switches += sw;
        if sw > 0 {
            threads.push((
                format!("{name}[{tid}]"),
                ns as f64 / 1e9 / elapsed * 100.0,
                sw as f64 / elapsed,
            ));
        }
    }
    threads.sort_by(|a, b| b.2.total_cmp(&a.2));
    threads.truncate(6);
    Ok(IdleRound {
        cpu: cpu_ns as f64 / 1e9 / elapsed * 100.0,
        cpu_ticks: (ticks_after - ticks_before) as f64 / ticks / elapsed * 100.0,
        wakeups: switches as f64 / elapsed,
        threads,
    })
}

fn idle(rounds: usize, seconds: u64, warmup: u64, server: Option<PathBuf>) -> anyhow::Result<()> {
    let exe = server_exe(server)?;
    warn_if_busy();
    let (ticks, ticks_source) = clock_ticks();
    let mut server = ServerProcess::start(&exe, &idle_yaml())?;
    println!(
        "idle cost: {} (pid {}) with {IDLE_CAMERAS} test cameras 1280x720 @ 30 fps, each \
         -> jpeg_encoder -> mjpeg_sink{}; no viewer",
        exe.display(),
        server.pid(),
        if cfg!(feature = "webrtc") {
            " and -> h264_encoder -> webrtc_sink"
        } else {
            ""
        }
    );
    println!(
        "  CPU % of one core from /proc/<pid>/task/*/schedstat (ns); in brackets from \
         /proc/<pid>/stat ({ticks} ticks/s {ticks_source}); wake-ups = context switches of all \
         threads per second; {warmup} s warm-up, {seconds} s per window"
    );
    thread::sleep(Duration::from_secs(warmup));
    let mut results = Vec::new();
    for i in 0..rounds {
        let r = idle_round(&mut server, seconds, ticks)?;
        let busiest: Vec<String> = r
            .threads
            .iter()
            .map(|(name, cpu, w)| format!("{name} {cpu:.2} % {w:.0}/s"))
            .collect();
        println!(
            "  window {}: CPU {:.3} % ({:.1} %), {:.0} wake-ups/s; busiest: {}",
            i + 1,
            r.cpu,
            r.cpu_ticks,
            r.wakeups,
            busiest.join(", ")
        );
        results.push(r);
    }
    let cpu = sorted(results.iter().map(|r| r.cpu).collect());
    let wakeups = sorted(results.iter().map(|r| r.wakeups).collect());
    println!(
        "median of {rounds}: CPU {:.3} % of one core, {:.0} wake-ups/s (goal: CPU < 0.2 %)",
        quantile(&cpu, 0.5),
        quantile(&wakeups, 0.5)
    );
    Ok(())
}

/// The camera node's current number of consumers, from `GET /api/graph`.
fn consumers(base: &str, camera: &str) -> Option<u64> {
    let text = client::get(&format!("{base}/api/graph"))
        .ok()?
        .text()
        .ok()?;
    let graph: serde_json::Value = serde_json::from_str(&text).ok()?;
    graph["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == camera)?["stats"]["consumers"]
        .as_u64()
}

/// Waits until nobody consumes `camera` (the last stream's end has reached it).
fn wait_idle(base: &str, camera: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumers(base, camera) != Some(0) {
        if Instant::now() > deadline {
            bail!("camera {camera} still has consumers 10 s after its stream closed");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn first_frame(samples: usize, server: Option<PathBuf>) -> anyhow::Result<()> {
    let exe = server_exe(server)?;
    warn_if_busy();
    let mut server = ServerProcess::start(&exe, &idle_yaml())?;
    println!(
        "first frame: {} (pid {}), the {IDLE_CAMERAS}-camera graph of `idle`; per sample: wait \
         until the camera has no consumer, then time GET /api/camera/stream/camN until the first \
         part is read",
        exe.display(),
        server.pid()
    );
    let mut delays = Vec::with_capacity(samples);
    for i in 0..samples {
        let camera = format!("cam{}", i % IDLE_CAMERAS);
        wait_idle(&server.base, &camera)?;
        // Idle for a moment: a camera that was just released is not what a new viewer meets.
        thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let response = client::get(&format!("{}/api/camera/stream/{camera}", server.base))
            .with_context(|| format!("cannot open the stream of {camera}"))?;
        if response.status != 200 {
            bail!("stream of {camera}: HTTP {}", response.status);
        }
        let mut parts = PartReader::new(response.into_body(), mjpeg::BOUNDARY);
        match parts.next_part() {
            Ok(Some(_)) => delays.push(ms(started.elapsed())),
            Ok(None) => bail!("the stream of {camera} ended before its first part"),
            Err(e) => bail!("reading the stream of {camera}: {e}"),
        }
        drop(parts);
        server.check_alive()?;
    }
    let d = sorted(delays);
    println!(
        "{samples} streams: first JPEG after median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        quantile(&d, 0.5),
        quantile(&d, 0.9),
        d[0],
        d[d.len() - 1]
    );
    Ok(())
}
