//! Churn leaves nothing behind (issue 12, CI-sized): `camgraph-bench soak` with 200 MJPEG
//! connect/read-one-part/disconnect cycles, 100 WebSocket signalling sessions and 50 WHEP
//! POST+DELETE against the real server; its file descriptors and threads come back to within
//! a few of where they started, its RSS within 32 MiB, and it logs no panic. And
//! `camgraph-bench crowd`: normal viewers beside slow and stuck ones keep the camera's rate while
//! the server cuts the others off. The full-size runs and their figures are in RELIABILITY.md.

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
