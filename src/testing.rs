//! Helpers for the unit tests and node harnesses inside the crate.

use std::time::Duration;

/// Polls `cond` every 5 ms until it holds; panics naming `what` after 3 s.
pub async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
