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

/// A loopback port nobody listens on (bound, then let go): a connection to it is refused.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The context a node harness builds a node with: node `id` of camera `cam`, fed by `input`.
/// Returns the metrics too, for reading the node's counters.
pub fn context(
    id: &str,
    type_name: &str,
    input: crate::port::Port,
) -> (
    crate::node::BuildContext,
    std::sync::Arc<crate::metrics::Metrics>,
) {
    let metrics = crate::metrics::Metrics::new();
    let cx = crate::node::BuildContext {
        id: id.into(),
        camera: "cam".into(),
        inputs: vec![input],
        metrics: metrics.node("cam", id, type_name),
        listen: std::net::Ipv4Addr::LOCALHOST.into(),
    };
    (cx, metrics)
}
