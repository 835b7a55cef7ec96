//! Churn leaves nothing behind (issue 12, CI-sized): `camgraph-bench soak` with 200 MJPEG
//! connect/read-one-part/disconnect cycles, 100 WebSocket signalling sessions and 50 WHEP
//! POST+DELETE against the real server; its file descriptors and threads come back to within
//! a few of where they started, its RSS within 32 MiB, and it logs no panic. And
//! `camgraph-bench crowd`: normal viewers beside slow and stuck ones keep the camera's rate while
//! the server cuts the others off. The full-size runs and their figures are in RELIABILITY.md.
//! The floor benches (`fanout --floor`, `rtp-floor`) are kept measurable here too.

use std::process::Command;

/// Open file descriptors and threads may differ by this much between start and end (a timer
/// or a pooled socket that happens to be open at one reading and not at the other).
const FD_SLACK: i64 = 4;
const THREAD_SLACK: i64 = 2;
/// The allocator keeps some of what peers used; a leak per cycle would show in fds first.
const RSS_SLACK_KB: i64 = 32 * 1024;

/// Runs `camgraph-bench ARGS --server camgraph`; its JSON figures and its whole output.
fn bench(args: &[&str]) -> (serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_camgraph-bench"))
        .args(args)
        .args(["--server", env!("CARGO_BIN_EXE_camgraph")])
        .output()
        .expect("run camgraph-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "camgraph-bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let figures = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON figures in:\n{stdout}"));
    (figures, stdout)
}

#[test]
fn mjpeg_ws_and_whep_churn_leave_no_fds_threads_or_memory_behind() {
    let (figures, stdout) = bench(&["soak", "--mjpeg", "200", "--ws", "100", "--whep", "50"]);
    let growth = |what: &str| {
        figures["end"][what].as_i64().unwrap() - figures["start"][what].as_i64().unwrap()
    };
    assert!(growth("fds").abs() <= FD_SLACK, "fds: {stdout}");
    assert!(growth("threads").abs() <= THREAD_SLACK, "threads: {stdout}");
    assert!(growth("rss_kb") <= RSS_SLACK_KB, "RSS: {stdout}");
    assert_eq!(figures["panics"], 0, "{stdout}");
    let phases: Vec<&str> = figures["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    let expected: &[&str] = if cfg!(feature = "webrtc") {
        &["mjpeg", "ws", "whep"]
    } else {
        &["mjpeg"]
    };
    assert_eq!(phases, expected);
}

/// Stuck and slow viewers are cut off and come back all the time; the normal ones keep the
/// camera's 30 fps (a floor well below it: CI shares its cores) and memory stays bounded.
#[test]
fn normal_viewers_keep_their_rate_beside_slow_and_stuck_ones() {
    let (figures, stdout) = bench(&[
        "crowd",
        "--normal",
        "3",
        "--slow",
        "3",
        "--stuck",
        "10",
        "--seconds",
        "10",
        "--write-timeout-ms",
        "2000",
    ]);
    let lowest = figures["normal_fps"][0].as_f64().unwrap();
    assert!(
        lowest >= 24.0,
        "a normal viewer got {lowest:.1} fps: {stdout}"
    );
    // Every stuck viewer holds its connection past the 2 s timeout, then opens another.
    assert!(
        figures["server_cuts"].as_u64().unwrap() >= 10,
        "the server cut too few: {stdout}"
    );
    let rss = &figures["rss_kb"];
    let growth = rss["max"].as_i64().unwrap() - rss["start"].as_i64().unwrap();
    assert!(growth <= 64 * 1024, "RSS grew {growth} KiB: {stdout}");
    assert_eq!(figures["panics"], 0, "{stdout}");
}

/// `camgraph-bench fanout` measures camgraph and, with `--floor`, the bare server it is read
/// against, on the same JPEG folder: both rounds serve every viewer (the figures are a
/// benchmark's, in BENCHMARKS.md; this keeps the two measurable).
#[test]
fn the_fanout_bench_measures_camgraph_and_the_bare_floor_server() {
    let clip = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/clip.mjpeg"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, range) in camgraph::plugins::sources::files::split_jpegs(&clip)
        .into_iter()
        .enumerate()
    {
        std::fs::write(dir.path().join(format!("{i:03}.jpg")), &clip[range]).unwrap();
    }
    let source = dir.path().to_str().unwrap();
    for floor in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_camgraph-bench"));
        command.args([
            "fanout",
            "--source",
            source,
            "--viewers",
            "3",
            "--seconds",
            "2",
        ]);
        command.args(["--warmup", "1", "--server", env!("CARGO_BIN_EXE_camgraph")]);
        if floor {
            command.arg("--floor");
        }
        let out = command.output().expect("run camgraph-bench");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "floor {floor}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The round's row: viewers, failed, fps min, fps median, ...
        let row: Vec<f64> = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some("3"))
            .unwrap_or_else(|| panic!("no row for 3 viewers (floor {floor}):\n{stdout}"))
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(f64::NAN))
            .collect();
        assert_eq!(row[1], 0.0, "a viewer failed (floor {floor}):\n{stdout}");
        assert!(
            row[2] >= 10.0,
            "a viewer got {} fps (floor {floor}):\n{stdout}",
            row[2]
        );
        let expected = if floor {
            "the bare floor server"
        } else {
            "camgraph"
        };
        assert!(stdout.contains(expected), "{stdout}");
    }
}

/// `camgraph-bench rtp-floor` measures the least that sending to N WebRTC peers costs (SRTP and a
/// UDP send per packet per peer, or one GSO send per peer per frame): every packet it protects
/// reaches its peer's socket in both forms, at the stream's rate, and a size no datagram can have
/// is refused by name. The figures are a benchmark's (BENCHMARKS.md, "Per-peer cost").
#[cfg(feature = "webrtc")]
#[test]
fn the_rtp_floor_bench_delivers_every_protected_packet_and_refuses_an_impossible_size() {
    for gso in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_camgraph-bench"));
        command.args(["rtp-floor", "--peers", "1,3", "--seconds", "1"]);
        if gso {
            command.arg("--gso");
        }
        let out = command.output().expect("run camgraph-bench");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "gso {gso}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rounds: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(rounds.len(), 2, "one line per peer count:\n{stdout}");
        for (round, peers) in rounds.iter().zip([1u64, 3]) {
            assert_eq!(round["peers"], peers, "{stdout}");
            let sent = round["sent"].as_u64().unwrap();
            // 252 packets/s to each peer for the 1 s window; a loaded machine may fall behind.
            assert!(sent >= peers * 252 / 2, "gso {gso}: sent {sent}:\n{stdout}");
            assert_eq!(
                round["received"], sent,
                "gso {gso}: a packet was lost:\n{stdout}"
            );
            assert!(round["cpu_percent"].as_f64().unwrap() > 0.0, "{stdout}");
        }
        assert!(stdout.contains("floor per extra peer: "), "{stdout}");
    }
    // 100 packets a frame: more than one GSO send takes (64 segments), so the frame goes in two.
    let out = Command::new(env!("CARGO_BIN_EXE_camgraph-bench"))
        .args(["rtp-floor", "--gso", "--peers", "1", "--seconds", "1"])
        .args(["--packets-per-second", "3000"])
        .output()
        .expect("run camgraph-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let round: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no round:\n{stdout}"));
    assert!(round["sent"].as_u64().unwrap() >= 1500, "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_camgraph-bench"))
        .args(["rtp-floor", "--packet-bytes", "9000", "--seconds", "1"])
        .output()
        .expect("run camgraph-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--packet-bytes 9000 is outside 12..=1400"),
        "{stderr}"
    );
}
