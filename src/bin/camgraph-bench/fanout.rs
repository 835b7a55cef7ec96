//! `fanout`: the server with one 1280x720 30 fps test camera (or, with `--source`, a folder of
//! JPEGs or an .mjpeg file passed through with no encode) and N concurrent MJPEG viewers (one
//! thread each): what every viewer received and what the server spent, also per Gbit/s served.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;

use camgraph::client;
use camgraph::mjpeg::{self, PartReader};

use crate::common::{machine_jiffies, metric_sum, ms, quantile, scrape, sorted, warn_if_busy};
use crate::server::{clock_ticks, server_exe, stat_ticks, ServerProcess};

const STREAM_PATH: &str = "/api/camera/stream/front";
/// The graph: the test camera at 720p30 encoded at q80, or `source` passed through at 30 fps.
fn graph_yaml(source: Option<&Path>) -> String {
    let camera = match source {
        None => "source: test, width: 1280, height: 720".to_string(),
        Some(path) => format!("source: {}", path.display()),
    };
    format!(
        "server:\n  listen: 127.0.0.1:0\n  max_viewers: 2000\nnodes:\n  \
         front: {{ type: camera, {camera}, fps: 30 }}\n  \
         front_jpeg: {{ type: jpeg_encoder, inputs: [front], quality: 80 }}\n  \
         front_mjpeg: {{ type: mjpeg_sink, inputs: [front_jpeg], max_viewers: 2000 }}\n"
    )
}
const GOAL_VIEWERS: usize = 100;
const GOAL_FPS: f64 = 29.5;
const GOAL_CPU: f64 = 25.0;
const GOAL_P99_MS: f64 = 10.0;
/// The capacity of the body buffer `camgraph::client` reads through (see `Timed::read`).
const CLIENT_BUFFER: usize = 64 * 1024;

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
    /// JPEG bytes the server sent per second, in Gbit/s (its `camgraph_bytes_sent_total`).
    gbit_s: f64,
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
        gbit_s: delta("camgraph_bytes_sent_total", &[]) * 8.0 / 1e9 / window,
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

pub(crate) fn fanout(
    counts: &[usize],
    seconds: u64,
    warmup: u64,
    source: Option<PathBuf>,
    server: Option<PathBuf>,
    floor: bool,
) -> anyhow::Result<()> {
    if counts.is_empty() || counts.contains(&0) {
        bail!("--viewers needs positive counts, e.g. 1,10,100");
    }
    warn_if_busy();
    let (ticks, ticks_source) = clock_ticks();
    let (mut server, what) = match (floor, &source) {
        (true, Some(source)) => (
            ServerProcess::start_floor(source, STREAM_PATH)?,
            "the bare floor server (one thread, one sendmsg per viewer per frame)".to_string(),
        ),
        (true, None) => bail!("--floor needs --source (a folder of JPEGs)"),
        (false, _) => {
            let exe = server_exe(server)?;
            let process = ServerProcess::start(&exe, &graph_yaml(source.as_deref()))?;
            (process, exe.display().to_string())
        }
    };
    println!(
        "MJPEG fan-out: {what} (pid {}) at {}{STREAM_PATH}",
        server.pid(),
        server.base
    );
    let camera = match &source {
        None => "one test camera 1280x720 @ 30 fps -> jpeg_encoder q80".to_string(),
        Some(path) if floor => format!("{} @ 30 fps, held in memory", path.display()),
        Some(path) => format!("{} @ 30 fps passed through (no encode)", path.display()),
    };
    let sink = if floor {
        "its viewers"
    } else {
        "the MJPEG sink"
    };
    println!(
        "  {camera} -> {sink}; viewers are threads of this process on the same machine \
         ({warmup} s warm-up, {seconds} s measured per round)"
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
        "{:>7} {:>12} {:>12} {:>14} {:>16} {:>6} {:>8} {:>8} {:>10}",
        "viewers",
        "captured/s",
        "encoded/s",
        "sent/s/viewer",
        "dropped behind",
        "dup",
        "no stamp",
        "Gbit/s",
        "server CPU"
    );
    println!(
        "{:>7} {:>12} {:>12} {:>14} {:>16} {:>6} {:>8} {:>8} {:>10}",
        "", "", "", "", "/s/viewer", "parts", "parts", "sent", "%/Gbit/s"
    );
    for r in &rounds {
        println!(
            "{:>7} {:>12.2} {:>12.2} {:>14.2} {:>16.2} {:>6} {:>8} {:>8.3} {:>10.2}",
            r.viewers,
            r.captured_fps,
            r.encoded_fps,
            r.sent_per_viewer,
            r.dropped_behind_per_viewer,
            r.duplicates,
            r.missing_stamp,
            r.gbit_s,
            r.server_cpu / r.gbit_s
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
