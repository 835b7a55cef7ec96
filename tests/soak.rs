//! Churn leaves nothing behind (issue 12, CI-sized): `camgraph-bench soak` with 200 MJPEG
//! connect/read-one-part/disconnect cycles, 100 WebSocket signalling sessions and 50 WHEP
//! POST+DELETE against the real server; its file descriptors and threads come back to within
//! a few of where they started, its RSS within 32 MiB, and it logs no panic. The full-size run
//! (5,000 / 2,000 / 500) and its figures are in RELIABILITY.md.

use std::process::Command;

/// Open file descriptors and threads may differ by this much between start and end (a timer
/// or a pooled socket that happens to be open at one reading and not at the other).
const FD_SLACK: i64 = 4;
const THREAD_SLACK: i64 = 2;
/// The allocator keeps some of what peers used; a leak per cycle would show in fds first.
const RSS_SLACK_KB: i64 = 32 * 1024;

#[test]
fn mjpeg_ws_and_whep_churn_leave_no_fds_threads_or_memory_behind() {
    let out = Command::new(env!("CARGO_BIN_EXE_camgraph-bench"))
        .args(["soak", "--mjpeg", "200", "--ws", "100", "--whep", "50"])
        .args(["--server", env!("CARGO_BIN_EXE_camgraph")])
        .output()
        .expect("run camgraph-bench soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "soak failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON figures in:\n{stdout}"));
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
