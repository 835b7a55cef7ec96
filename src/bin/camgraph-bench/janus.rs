//! `janus`: what a media server's audience costs camgraph. One 1280x720 30 fps test camera with
//! grain -> h264_encoder -> rtp_sink feeds Janus (Debian's, its streaming plugin with one RTP
//! mountpoint), and 0, 1, 10... aiortc viewers watch through Janus (tests/janus_viewer.py, in a
//! network namespace of their own joined by a veth pair, as in tests/janus.rs: the setup is
//! shared, tests/common/media_server.rs). Per round: camgraph's CPU (% of one core,
//! /proc/<pid>/stat), the RTP it sent, Janus's CPU, the viewers' decoded fps and how busy the whole
//! machine was (the viewers decode on the same cores: when it is saturated, the load client is the
//! limit). Needs root, `janus` (apt) and aiortc (pip).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::common::{machine_jiffies, metric_sum, quantile, scrape, sorted, warn_if_busy};
use crate::media_server::{cannot_build_network, free_tcp_port, free_udp_pair, Janus, ViewerNet};
use crate::server::{clock_ticks, server_exe, stat_ticks, ServerProcess};

/// One round's figures.
struct Round {
    viewers: usize,
    camgraph_cpu: f64,
    janus_cpu: f64,
    machine_busy: f64,
    rtp_packets_per_s: f64,
    rtp_kbit_per_s: f64,
    /// Decoded fps of each viewer that finished.
    fps: Vec<f64>,
    failed: Vec<String>,
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    Ok(stat_ticks(Path::new(&format!("/proc/{pid}/stat")))?.1)
}

fn round(
    n: usize,
    server: &mut ServerProcess,
    janus: &Janus,
    net: &ViewerNet,
    (warmup, seconds, ticks): (u64, u64, f64),
) -> anyhow::Result<Round> {
    // Each viewer receives from its first frame until after the measured window.
    let receive = (warmup + seconds + 2) as f64;
    let mut viewers: Vec<Child> = (0..n)
        .map(|_| net.viewer(&janus.url, receive, None).spawn())
        .collect::<Result<_, _>>()
        .context("cannot start python3")?;
    thread::sleep(Duration::from_secs(warmup));
    server.check_alive()?;
    let (pid, janus_pid) = (server.pid(), janus.pid());
    let metrics_before = scrape(&server.base);
    let (cg0, j0, m0, t0) = (
        cpu_ticks(pid)?,
        cpu_ticks(janus_pid)?,
        machine_jiffies(),
        Instant::now(),
    );
    thread::sleep(Duration::from_secs(seconds));
    let (cg1, j1, m1, elapsed) = (
        cpu_ticks(pid)?,
        cpu_ticks(janus_pid)?,
        machine_jiffies(),
        t0.elapsed().as_secs_f64(),
    );
    let metrics_after = scrape(&server.base);
    let sent = |name: &str| {
        (metric_sum(&metrics_after, name, &[]) - metric_sum(&metrics_before, name, &[])) / elapsed
    };
    let machine_busy = match (m0, m1) {
        (Some((b0, t0)), Some((b1, t1))) => (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * 100.0,
        _ => f64::NAN,
    };
    let (mut fps, mut failed) = (Vec::new(), Vec::new());
    for viewer in viewers.drain(..) {
        let out = viewer.wait_with_output()?;
        let summary = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok();
        match summary.as_ref().and_then(|s| s["fps"].as_f64()) {
            Some(f) if out.status.success() => fps.push(f),
            _ => failed.push(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        }
    }
    Ok(Round {
        viewers: n,
        camgraph_cpu: (cg1 - cg0) as f64 / ticks / elapsed * 100.0,
        janus_cpu: (j1 - j0) as f64 / ticks / elapsed * 100.0,
        machine_busy,
        rtp_packets_per_s: sent("camgraph_rtp_sent_packets_total"),
        rtp_kbit_per_s: sent("camgraph_rtp_sent_bytes_total") * 8.0 / 1000.0,
        fps,
        failed,
    })
}

pub(crate) fn janus(
    counts: &[usize],
    seconds: u64,
    warmup: u64,
    server: Option<PathBuf>,
) -> anyhow::Result<()> {
    if let Some(why) = cannot_build_network() {
        bail!("cannot run: {why}");
    }
    let exe = server_exe(server)?;
    warn_if_busy();
    let (ticks, ticks_source) = clock_ticks();
    let net = ViewerNet::create().map_err(|e| anyhow!("the viewers' network: {e}"))?;
    let dir = std::env::temp_dir().join(format!("camgraph-bench-janus-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (http_port, rtp_port) = (free_tcp_port(), free_udp_pair());
    let janus = Janus::start(&dir, http_port, rtp_port, &net.link).map_err(|e| anyhow!(e))?;
    let mut server = ServerProcess::start(
        &exe,
        &format!(
            "nodes:\n  \
             front: {{ type: camera, source: test, width: 1280, height: 720, fps: 30, noise: 12 }}\n  \
             front_h264: {{ type: h264_encoder, inputs: [front], bitrate_kbps: 2000 }}\n  \
             front_rtp: {{ type: rtp_sink, inputs: [front_h264], target: '127.0.0.1:{rtp_port}' }}\n"
        ),
    )?;
    println!(
        "rtp_sink -> Janus -> N aiortc viewers: one 1280x720 30 fps test camera with grain (noise 12, \
         so the encoder spends its bitrate as with a real sensor), H.264 2000 kbit/s; \
         {warmup} s warm-up, {seconds} s measured per round\n  \
         CPU from /proc/<pid>/stat utime+stime, {ticks} ticks/s {ticks_source}; 100 % = one core; \
         machine = all cores busy (viewers decode on the same cores)"
    );
    println!(
        "{:>7}  {:>14}  {:>11}  {:>10}  {:>12}  {:>16}  {:>12}",
        "viewers",
        "camgraph CPU %",
        "RTP pkt/s",
        "RTP kbit/s",
        "Janus CPU %",
        "viewer fps p50/min",
        "machine %"
    );
    for &n in counts {
        let r = round(n, &mut server, &janus, &net, (warmup, seconds, ticks))?;
        let fps = sorted(r.fps.clone());
        let fps_text = if fps.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1} / {:.1}", quantile(&fps, 0.5), fps[0])
        };
        println!(
            "{:>7}  {:>14.1}  {:>11.0}  {:>10.0}  {:>12.1}  {:>18}  {:>12.0}",
            r.viewers,
            r.camgraph_cpu,
            r.rtp_packets_per_s,
            r.rtp_kbit_per_s,
            r.janus_cpu,
            fps_text,
            r.machine_busy
        );
        for why in &r.failed {
            println!("  a viewer failed: {why}");
        }
    }
    drop(server);
    drop(janus);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
