//! `crowd`: normal MJPEG viewers beside hostile ones, on one 1280x720 30 fps test camera. Slow
//! viewers read 1 KB a second, stuck ones read the status line and then nothing; when the server
//! cuts one off (its write timeout) it comes back, so the pressure lasts the whole run. Reports
//! what the normal viewers received (fps, the largest gap between two frames), how often the
//! server cut the hostile ones, and the server's resident memory each second. The last line is
//! the figures as JSON, for tests/soak.rs.

use std::fs;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;

use camgraph::client;
use camgraph::mjpeg::{self, PartReader};

use crate::common::{quantile, sorted};
use crate::server::{clock_ticks, server_exe, stat_ticks, ServerProcess};
use crate::soak::mjpeg_cycle;

/// How many of each kind of viewer, for how long, and the sink's write timeout.
pub(crate) struct Crowd {
    pub normal: usize,
    pub slow: usize,
    pub stuck: usize,
    pub seconds: u64,
    pub write_timeout_ms: u64,
}

fn yaml(c: &Crowd) -> String {
    format!(
        "nodes:\n  \
         front: {{ type: camera, source: test, width: 1280, height: 720, fps: 30 }}\n  \
         front_jpeg: {{ type: jpeg_encoder, inputs: [front], quality: 80 }}\n  \
         front_mjpeg: {{ type: mjpeg_sink, inputs: [front_jpeg], max_viewers: {}, write_timeout_ms: {} }}\n",
        (c.normal + c.slow + c.stuck + 10).max(1),
        c.write_timeout_ms
    )
}

fn vm_rss_kb(pid: u32) -> anyhow::Result<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Opens the stream on a raw socket and reads up to the status line; the socket.
fn open_raw(addr: &str, recv_buffer: Option<usize>) -> anyhow::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.connect(&addr.parse::<std::net::SocketAddr>()?.into())?;
    let mut s = TcpStream::from(socket);
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /api/camera/stream/front HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )?;
    let mut status = [0u8; 12];
    s.read_exact(&mut status)?;
    if &status != b"HTTP/1.1 200" {
        bail!("the stream answered {}", String::from_utf8_lossy(&status));
    }
    Ok(s)
}

/// A viewer that reads 1 KB a second; reconnects when cut off. Counts the cuts.
fn slow_viewer(addr: String, stop: Arc<AtomicBool>, cuts: Arc<AtomicUsize>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = open_raw(&addr, Some(4096)) else {
            thread::sleep(Duration::from_millis(200));
            continue;
        };
        let mut buf = [0u8; 1024];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    cuts.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(_) => thread::sleep(Duration::from_secs(1)),
            }
        }
    }
}

/// A viewer that never reads past the status line; opens a new connection after the server's
/// write timeout (plus a margin), so that one stuck connection is always held.
fn stuck_viewer(addr: String, stop: Arc<AtomicBool>, hold: Duration) {
    while !stop.load(Ordering::Relaxed) {
        let held = open_raw(&addr, Some(4096));
        let until = Instant::now() + hold;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(100));
        }
        drop(held);
    }
}

/// A normal viewer: arrival times of every part until `stop`.
fn normal_viewer(base: String, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<Instant>> {
    let response = client::get(&format!("{base}/api/camera/stream/front"))?;
    if response.status != 200 {
        bail!("the stream answered {}", response.status);
    }
    let mut parts = PartReader::new(BufReader::new(response.into_body()), mjpeg::BOUNDARY);
    let mut arrivals = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        parts.next_part()?.context("the stream ended")?;
        arrivals.push(Instant::now());
    }
    Ok(arrivals)
}

pub(crate) fn crowd(c: Crowd, server: Option<PathBuf>) -> anyhow::Result<()> {
    let exe = server_exe(server)?;
    let mut server = ServerProcess::start(&exe, &yaml(&c))?;
    let pid = server.pid();
    let base = server.base.clone();
    let addr = base.trim_start_matches("http://").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicUsize::new(0));
    // Warm up: the first viewer starts capture and encode.
    mjpeg_cycle(&base)?;
    let rss_start = vm_rss_kb(pid)?;
    let (ticks_per_s, _) = clock_ticks();
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let cpu0 = stat_ticks(&stat)?.1;

    let hold = Duration::from_millis(c.write_timeout_ms + 2000);
    let mut hostile = Vec::new();
    for _ in 0..c.slow {
        let (addr, stop, cuts) = (addr.clone(), stop.clone(), cuts.clone());
        hostile.push(thread::spawn(move || slow_viewer(addr, stop, cuts)));
    }
    for _ in 0..c.stuck {
        let (addr, stop) = (addr.clone(), stop.clone());
        hostile.push(thread::spawn(move || stuck_viewer(addr, stop, hold)));
    }
    let normal: Vec<_> = (0..c.normal)
        .map(|_| {
            let (base, stop) = (base.clone(), stop.clone());
            thread::spawn(move || normal_viewer(base, stop))
        })
        .collect();
    let t0 = Instant::now();
    let mut rss = vec![rss_start];
    while t0.elapsed() < Duration::from_secs(c.seconds) {
        thread::sleep(Duration::from_secs(1));
        server.check_alive()?;
        rss.push(vm_rss_kb(pid)?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (stat_ticks(&stat)?.1 - cpu0) as f64 / ticks_per_s / elapsed * 100.0;
    stop.store(true, Ordering::Relaxed);
    let mut fps = Vec::new();
    let mut worst_gap_ms: f64 = 0.0;
    for viewer in normal {
        let arrivals = viewer
            .join()
            .map_err(|_| anyhow::anyhow!("a normal viewer panicked"))?
            .context("a normal viewer")?;
        // Frames that arrived within the measured window.
        let inside: Vec<&Instant> = arrivals
            .iter()
            .filter(|a| a.duration_since(t0).as_secs_f64() <= elapsed)
            .collect();
        fps.push(inside.len() as f64 / elapsed);
        for w in inside.windows(2) {
            worst_gap_ms = worst_gap_ms.max(w[1].duration_since(*w[0]).as_secs_f64() * 1000.0);
        }
    }
    for h in hostile {
        let _ = h.join();
    }
    let fps = sorted(fps);
    let (rss_min, rss_max) = (
        *rss.iter().min().unwrap_or(&0),
        *rss.iter().max().unwrap_or(&0),
    );
    let rss_end = *rss.last().unwrap_or(&0);
    let log = server.log_text();
    let panics = log.matches("panicked").count();
    let server_cuts = log.matches("its connection is cut").count();
    println!(
        "{} normal, {} slow (1 KB/s), {} stuck MJPEG viewers of a 1280x720 30 fps camera for {elapsed:.1} s \
         (write timeout {} ms)",
        c.normal, c.slow, c.stuck, c.write_timeout_ms
    );
    println!(
        "normal viewers: fps min {:.2}, median {:.2}; largest gap between two frames {worst_gap_ms:.0} ms",
        fps.first().copied().unwrap_or(0.0),
        quantile(&fps, 0.5)
    );
    println!(
        "connections the server cut off: {server_cuts} (slow viewers saw {} of them); server CPU {cpu:.1} % of a core",
        cuts.load(Ordering::Relaxed)
    );
    let every_10s: Vec<u64> = rss.iter().step_by(10).copied().collect();
    println!(
        "server RSS: start {rss_start} KiB, min {rss_min}, max {rss_max}, end {rss_end} KiB; every 10 s: {every_10s:?}; panics logged: {panics}"
    );
    println!(
        "{}",
        json!({
            "normal_fps": fps, "worst_gap_ms": worst_gap_ms,
            "slow_cuts": cuts.load(Ordering::Relaxed), "server_cuts": server_cuts,
            "cpu_percent": cpu,
            "rss_kb": {"start": rss_start, "min": rss_min, "max": rss_max, "end": rss_end,
                       "every_10s": every_10s},
            "panics": panics,
        })
    );
    Ok(())
}
