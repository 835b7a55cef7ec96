//! `idle` and `first-frame`: the server with four test cameras and their usual chains and no
//! viewer; what doing nothing costs, and how soon a new viewer of an idle camera gets its first JPEG.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use camgraph::client;
use camgraph::mjpeg::{self, PartReader};

use crate::common::{ms, quantile, sorted, warn_if_busy};
use crate::server::{clock_ticks, server_exe, stat_ticks, ServerProcess};

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

pub(crate) fn idle(
    rounds: usize,
    seconds: u64,
    warmup: u64,
    server: Option<PathBuf>,
) -> anyhow::Result<()> {
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

pub(crate) fn first_frame(samples: usize, server: Option<PathBuf>) -> anyhow::Result<()> {
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
