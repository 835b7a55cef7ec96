//! `soak`: churn against the real server (one 320x240 test camera with its usual chains) and what
//! it leaves behind. Three phases, one after the other: MJPEG connect / read one part /
//! disconnect, WebSocket signalling sessions opened and closed, WHEP offer POST + session DELETE.
//! Before and after each phase it reads the server's open file descriptors (/proc/PID/fd),
//! threads (/proc/PID/task) and resident memory (VmRSS of /proc/PID/status); "after" is taken
//! once the counts have stopped moving (a closed peer lets go of its sockets a moment later).
//! The last line is the figures as JSON, for tests/soak.rs.

use std::fs;
use std::io::BufReader;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;

use camgraph::client::{self, WebSocket};
use camgraph::mjpeg::{self, PartReader};

use crate::server::{server_exe, ServerProcess};

/// The offer the integration tests send (recvonly H.264, as Chromium sends it).
const OFFER: &str = include_str!("../../../tests/data/chromium-offer.sdp");

/// What the server holds at one moment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kb: u64,
}

fn usage(pid: u32) -> anyhow::Result<Usage> {
    let count = |what: &str| -> anyhow::Result<usize> {
        Ok(fs::read_dir(format!("/proc/{pid}/{what}"))
            .with_context(|| format!("cannot read /proc/{pid}/{what}"))?
            .count())
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(Usage {
        fds: count("fd")?,
        threads: count("task")?,
        rss_kb,
    })
}

/// The usage once file descriptors and threads have not changed for 1 s (at most 15 s).
fn settled(pid: u32) -> anyhow::Result<Usage> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = usage(pid)?;
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(100));
        let now = usage(pid)?;
        if (now.fds, now.threads) != (last.fds, last.threads) {
            since = Instant::now();
        }
        last = now;
    }
    Ok(last)
}

fn soak_yaml() -> String {
    let mut yaml = String::from(
        "nodes:\n  front: { type: camera, source: test, width: 320, height: 240, fps: 30 }\n  \
         front_jpeg: { type: jpeg_encoder, inputs: [front], quality: 80 }\n  \
         front_mjpeg: { type: mjpeg_sink, inputs: [front_jpeg] }\n",
    );
    if cfg!(feature = "webrtc") {
        yaml += "  front_h264: { type: h264_encoder, inputs: [front] }\n  \
                 front_rtc: { type: webrtc_sink, inputs: [front_h264] }\n";
    }
    yaml
}

/// Opens the stream, reads one part and hangs up.
pub(crate) fn mjpeg_cycle(base: &str) -> anyhow::Result<()> {
    let response = client::get(&format!("{base}/api/camera/stream/front"))?;
    if response.status != 200 {
        bail!("the stream answered {}", response.status);
    }
    let mut parts = PartReader::new(BufReader::new(response.into_body()), mjpeg::BOUNDARY);
    parts
        .next_part()?
        .context("the stream ended before a part")?;
    Ok(())
}

fn ws_cycle(base: &str) -> anyhow::Result<()> {
    WebSocket::connect(&format!("{base}/api/webrtc/ws?camera=front"), &[])?.close()?;
    Ok(())
}

fn whep_cycle(base: &str) -> anyhow::Result<()> {
    let answer = client::request(
        "POST",
        &format!("{base}/api/webrtc/whep/front"),
        &[],
        Some(("application/sdp", OFFER.as_bytes())),
    )?;
    let status = answer.status;
    if status != 201 {
        bail!("WHEP POST answered {status}: {}", answer.text()?);
    }
    let location = answer
        .header("location")
        .context("WHEP answer without Location")?
        .to_string();
    let closed = client::request("DELETE", &format!("{base}{location}"), &[], None)?;
    if closed.status != 200 {
        bail!("WHEP DELETE answered {}", closed.status);
    }
    Ok(())
}

pub(crate) fn soak(
    mjpeg: usize,
    ws: usize,
    whep: usize,
    server: Option<PathBuf>,
) -> anyhow::Result<()> {
    let exe = server_exe(server)?;
    let mut server = ServerProcess::start(&exe, &soak_yaml())?;
    let pid = server.pid();
    let base = server.base.clone();
    type Cycle = fn(&str) -> anyhow::Result<()>;
    let mut phases: Vec<(&str, usize, Cycle)> = vec![("mjpeg", mjpeg, mjpeg_cycle)];
    if cfg!(feature = "webrtc") {
        phases.push(("ws", ws, ws_cycle));
        phases.push(("whep", whep, whep_cycle));
    }
    // One of each first: the first viewer starts the encoders, which stay (and are not churn).
    for (_, _, cycle) in &phases {
        cycle(&base)?;
    }
    let start = settled(pid)?;
    println!(
        "camgraph pid {pid}, one 320x240 30 fps test camera; at start: {} fds, {} threads, RSS {} KiB",
        start.fds, start.threads, start.rss_kb
    );
    println!("phase   cycles   seconds   fds before->after   threads before->after   RSS KiB before->after");
    let mut figures = Vec::new();
    for (name, cycles, cycle) in phases {
        let before = settled(pid)?;
        let t0 = Instant::now();
        for i in 0..cycles {
            cycle(&base).with_context(|| format!("{name} cycle {i}"))?;
        }
        let secs = t0.elapsed().as_secs_f64();
        server.check_alive()?;
        let after = settled(pid)?;
        println!(
            "{name:<7} {cycles:>6}   {secs:>7.1}   {:>5} -> {:<5}        {:>4} -> {:<4}            {:>7} -> {:<7}",
            before.fds, after.fds, before.threads, after.threads, before.rss_kb, after.rss_kb
        );
        figures.push(json!({
            "phase": name, "cycles": cycles, "seconds": secs,
            "fds": [before.fds, after.fds], "threads": [before.threads, after.threads],
            "rss_kb": [before.rss_kb, after.rss_kb],
        }));
    }
    let end = settled(pid)?;
    let log = server.log_text();
    let panics = log.matches("panicked").count();
    println!(
        "at end: {} fds ({:+}), {} threads ({:+}), RSS {} KiB ({:+}); panics logged: {panics}",
        end.fds,
        end.fds as i64 - start.fds as i64,
        end.threads,
        end.threads as i64 - start.threads as i64,
        end.rss_kb,
        end.rss_kb as i64 - start.rss_kb as i64
    );
    println!(
        "{}",
        json!({
            "start": {"fds": start.fds, "threads": start.threads, "rss_kb": start.rss_kb},
            "end": {"fds": end.fds, "threads": end.threads, "rss_kb": end.rss_kb},
            "phases": figures, "panics": panics,
        })
    );
    Ok(())
}
