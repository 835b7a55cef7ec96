//! The `webrtc_sink` node: plays a camera's H.264 to browsers over WebRTC (webrtc-rs). Peers come
//! through the guide's WebSocket signalling (`/api/webrtc/ws?camera=NAME`) or WHEP (`POST
//! /api/webrtc/whep/{camera}`), both in `api.rs`; every peer gets the same encoded frames, packetized once; a peer
//! that joins or falls behind gets a fresh keyframe without stalling the others. Wired to an
//! `adaptive` node, each peer moves along its ladder (bitrate, then size) from the loss its
//! receiver reports, and peers on one step share that step's encode.
//!
//! ```yaml
//! front_h264: { type: h264_encoder, inputs: [front] }
//! front_rtc:  { type: webrtc_sink, inputs: [front_h264], max_peers: 10 }
//! ```
//!
//! ICE defaults work on loopback and on a LAN: host candidates on 127.0.0.1 and on every other
//! interface, mDNS off. Behind NAT, give `ice.nat_1to1_ips` or STUN/TURN `ice.servers`.

pub mod api;
pub(crate) mod connection;
pub(crate) mod feedback;
pub(crate) mod peer;
mod sink;
mod ws;

/// The SDP check every offer passes before a peer is built, public so that the fuzz harness
/// (tests/fuzz.rs) can feed it offers faster than the HTTP routes would.
pub use peer::check_offer;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use serde::Deserialize;
use serde_json::json;

use crate::error::BuildError;
use crate::node::{
    check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, Services, WatchRoute,
};
use crate::port::{PortKind, Ports};
use crate::stop::{start_on_own_thread, Stopper};

pub use connection::H264_FMTP;

/// Settings of a `webrtc_sink` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebRtcSinkConfig {
    /// Most peers at once (connecting or connected); one more gets a 503. Default 10.
    #[serde(default = "default_max_peers")]
    pub max_peers: usize,
    /// A peer still not connected this long after its answer is closed, in milliseconds.
    /// Default 10000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// ICE: where to listen, what to advertise, which STUN/TURN servers to use.
    #[serde(default)]
    pub ice: IceConfig,
}

/// ICE settings of a `webrtc_sink`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceConfig {
    /// UDP addresses to bind for media, one socket each; port 0 picks a free port per peer.
    /// `0.0.0.0:0` means every non-loopback interface. Default: follows `server.listen`, so a
    /// server no one else can reach tells no one its LAN address: `["127.0.0.1:0"]` for a
    /// loopback listen, `["127.0.0.1:0", "0.0.0.0:0"]` for `0.0.0.0`/`::`, `["IP:0"]` for one IP.
    #[serde(default)]
    pub udp_addrs: Option<Vec<String>>,
    /// Public IPs to advertise instead of the host's (a NAT that maps 1:1). Default none.
    #[serde(default)]
    pub nat_1to1_ips: Vec<String>,
    /// STUN/TURN servers. Default none (loopback and LAN need none).
    #[serde(default)]
    pub servers: Vec<IceServer>,
}

/// One STUN or TURN server.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp` or `turns:...`. Required.
    pub urls: Vec<String>,
    /// TURN user name. Default none.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password. Default none.
    #[serde(default)]
    pub credential: Option<String>,
}

fn default_max_peers() -> usize {
    10
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
/// The UDP addresses that follow the HTTP server's listen IP.
fn default_udp_addrs(listen: IpAddr) -> Vec<String> {
    if listen.is_loopback() {
        vec!["127.0.0.1:0".into()]
    } else if listen.is_unspecified() {
        vec!["127.0.0.1:0".into(), "0.0.0.0:0".into()]
    } else {
        vec![SocketAddr::new(listen, 0).to_string()]
    }
}

impl Default for WebRtcSinkConfig {
    fn default() -> Self {
        Self {
            max_peers: default_max_peers(),
            connect_timeout_ms: default_connect_timeout_ms(),
            ice: IceConfig::default(),
        }
    }
}

impl IceConfig {
    pub(crate) fn validate(&self, issues: &mut Vec<FieldIssue>) {
        let udp_addrs = self.udp_addrs.as_deref().unwrap_or_default();
        if self.udp_addrs.is_some() && udp_addrs.is_empty() {
            issues.push(FieldIssue::new(
                "ice.udp_addrs",
                "'ice.udp_addrs' needs at least one address",
            ));
        }
        for addr in udp_addrs {
            if addr.parse::<SocketAddr>().is_err() {
                issues.push(FieldIssue::new(
                    "ice.udp_addrs",
                    format!("'ice.udp_addrs' must hold IP:port addresses (got '{addr}')"),
                ));
            }
        }
        for ip in &self.nat_1to1_ips {
            if ip.parse::<IpAddr>().is_err() {
                issues.push(FieldIssue::new(
                    "ice.nat_1to1_ips",
                    format!("'ice.nat_1to1_ips' must hold IP addresses (got '{ip}')"),
                ));
            }
        }
        for server in &self.servers {
            if server.urls.is_empty() {
                issues.push(FieldIssue::new(
                    "ice.servers",
                    "'ice.servers' entries need at least one url",
                ));
            }
            for url in &server.urls {
                let turn = url.starts_with("turn:") || url.starts_with("turns:");
                if !(turn || url.starts_with("stun:")) {
                    issues.push(FieldIssue::new(
                        "ice.servers",
                        format!(
                            "'ice.servers' urls start with stun:, turn: or turns: (got '{url}')"
                        ),
                    ));
                } else if turn && (server.username.is_none() || server.credential.is_none()) {
                    issues.push(FieldIssue::new(
                        "ice.servers",
                        format!("TURN server '{url}' needs 'username' and 'credential'"),
                    ));
                }
            }
        }
    }
}

impl NodeConfig for WebRtcSinkConfig {
    const TYPE: &'static str = "webrtc_sink";

    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::H264, None)
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        check_range(&mut issues, "max_peers", self.max_peers, 1..=1000);
        check_range(
            &mut issues,
            "connect_timeout_ms",
            self.connect_timeout_ms,
            1000..=120_000,
        );
        self.ice.validate(&mut issues);
        issues
    }

    fn routes(cfg: &mut actix_web::web::ServiceConfig) {
        api::routes(cfg);
    }

    const WATCH_ROUTES: &'static [WatchRoute] = api::WATCH_ROUTES;

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let feed = cx.h264_input()?;
        let metrics = sink::SinkMetrics::new(&cx.metrics);
        let counts = Arc::new(sink::SinkCounts::default());
        let (camera, mut config, actor_counts) =
            (cx.camera.to_string(), self.clone(), counts.clone());
        // Resolved here: the sink knows the listen address only from its build context.
        config
            .ice
            .udp_addrs
            .get_or_insert_with(|| default_udp_addrs(cx.listen));
        let stats_metrics = metrics.clone();
        // Packetizing and the per-peer writers run on the sink's own thread; the connections'
        // drivers on webrtc-rs's.
        let stop = Stopper::new();
        let token = stop.token();
        let addr = start_on_own_thread(move |_| {
            sink::WebRtcSink::new(camera, config, feed, metrics, actor_counts, token)
        });
        Ok(NodeHandle {
            output: None,
            services: Services::new().with(api::WebRtcPeers {
                open: addr.clone().recipient(),
                candidate: addr.clone().recipient(),
                close: addr.clone().recipient(),
            }),
            stats: Some(Box::new(move || {
                json!({
                    "peers": counts.peers.load(Ordering::Relaxed),
                    "connected": counts.connected.load(Ordering::Relaxed),
                    "closed": counts.closed.load(Ordering::Relaxed),
                    "packetized": counts.packetized.load(Ordering::Relaxed),
                    "keyframe_requests": counts.keyframe_requests.load(Ordering::Relaxed),
                    "switches": counts.switches.load(Ordering::Relaxed),
                    "peer_variants": *counts.variants.lock().unwrap_or_else(PoisonError::into_inner),
                    "sent": stats_metrics.writer.sent.get(),
                    "bytes_sent": stats_metrics.writer.bytes.get(),
                    "dropped_behind": stats_metrics.writer.dropped_behind.get(),
                })
            })),
            stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_on_loopback() {
        let c: WebRtcSinkConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c.max_peers, 10);
        assert_eq!(c.ice.udp_addrs, None);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn the_default_udp_addresses_follow_the_listen_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(default_udp_addrs(ip("127.0.0.1")), ["127.0.0.1:0"]);
        assert_eq!(default_udp_addrs(ip("::1")), ["127.0.0.1:0"]);
        assert_eq!(
            default_udp_addrs(ip("0.0.0.0")),
            ["127.0.0.1:0", "0.0.0.0:0"]
        );
        assert_eq!(default_udp_addrs(ip("192.168.1.5")), ["192.168.1.5:0"]);
    }

    #[test]
    fn every_bad_setting_is_reported() {
        let c: WebRtcSinkConfig = serde_yaml::from_str(
            "max_peers: 0\nconnect_timeout_ms: 5\nice:\n  udp_addrs: [nowhere]\n  nat_1to1_ips: [1.2.3]\n  servers:\n    - urls: [http://x]\n    - urls: ['turn:t:3478']\n",
        )
        .unwrap();
        let fields: Vec<_> = c.validate().into_iter().map(|i| i.field).collect();
        assert_eq!(
            fields,
            [
                "max_peers",
                "connect_timeout_ms",
                "ice.udp_addrs",
                "ice.nat_1to1_ips",
                "ice.servers",
                "ice.servers"
            ]
        );
        assert!(serde_yaml::from_str::<WebRtcSinkConfig>("ice: {stun: x}").is_err());
    }

    #[test]
    fn offers_without_video_or_unparseable_are_refused() {
        let garbage = peer::check_offer("hello").unwrap_err();
        assert!(garbage.to_string().contains("malformed SDP"), "{garbage}");
        let audio_only = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
        let err = peer::check_offer(audio_only).unwrap_err();
        assert!(err.to_string().contains("no video section"), "{err}");
    }
}
