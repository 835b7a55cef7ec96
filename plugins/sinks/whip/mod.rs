//! The `whip_sink` node: publishes a camera's H.264 (the one shared encode of its
//! `h264_encoder`) to a media server over WHIP (RFC 9725), so that MediaMTX, LiveKit, Cloudflare
//! or Janus fan it out to an audience camgraph need not serve. A WHIP client: a sendonly offer
//! with one H.264 Constrained Baseline track, gathered in full (non-trickle), POSTed as
//! `application/sdp` with `Authorization: Bearer` when a token is configured; the server's 201
//! gives the answer and the session's `Location`, whose DELETE ends it (on stop and on reload).
//! Lost or refused, it says why in `/api/graph` and connects again with backoff.
//!
//! ```yaml
//! front_h264: { type: h264_encoder, inputs: [front] }
//! front_whip: { type: whip_sink, inputs: [front_h264], url: "http://media:8889/front/whip" }
//! ```

mod http;
mod session;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Running, WrapFuture};
use serde::Deserialize;

use self::session::{Setup, State, Status, WhipMetrics};
use crate::config::TokenSource;
use crate::error::BuildError;
use crate::metrics::DropReason;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, Services};
use crate::plugins::sinks::webrtc::peer::WriterMetrics;
use crate::plugins::sinks::webrtc::IceConfig;
use crate::port::{PortKind, Ports};
use crate::stop::{start_on_own_thread, stop_on, StopToken, Stopper};

/// Settings of a `whip_sink` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipSinkConfig {
    /// The WHIP endpoint, `http://host:port/path` (e.g. MediaMTX's
    /// `http://host:8889/NAME/whip`). Required. `https://` is not supported.
    pub url: String,
    /// A file holding the bearer token the server wants (surrounding whitespace removed), read
    /// when the node starts. Default none.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token, read when the node starts. Default
    /// none.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A connection not established this long after the server's answer counts as failed, in
    /// milliseconds. Default 10000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// ICE: where to bind, what to advertise, which STUN/TURN servers to use (besides those the
    /// server announces). `udp_addrs` defaults to `["127.0.0.1:0", "0.0.0.0:0"]` (loopback and
    /// every interface: the server may be anywhere).
    #[serde(default)]
    pub ice: IceConfig,
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

impl WhipSinkConfig {
    /// Where the token is read from, if one is configured.
    fn token_source(&self) -> Option<TokenSource> {
        match (&self.token_file, &self.token_env) {
            (Some(path), _) => Some(TokenSource::File(path.clone())),
            (None, Some(var)) => Some(TokenSource::Env(var.clone())),
            (None, None) => None,
        }
    }
}

/// Problems of a WHIP URL, in words. The URL itself is not repeated: its path may hold a stream
/// key, and a reload's errors are shown by `/api/graph`.
fn url_problem(url: &str) -> Option<String> {
    if url.starts_with("https://") {
        return Some(
            "'url' must be an http:// URL: https:// is not supported (put a TLS-terminating \
             proxy on the robot, or use the server's plain-HTTP port)"
                .into(),
        );
    }
    let Some(rest) = url.strip_prefix("http://") else {
        let got = match url.split_once("://") {
            Some((scheme, _)) => format!("a {scheme}:// URL"),
            None => "no scheme".into(),
        };
        return Some(format!(
            "'url' must be an http:// URL of a WHIP endpoint (got {got})"
        ));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains('@') || host.chars().any(char::is_whitespace) {
        return Some(
            "'url' needs a host, and no user:password@ (a token goes in token_file or token_env)"
                .into(),
        );
    }
    None
}

impl NodeConfig for WhipSinkConfig {
    const TYPE: &'static str = "whip_sink";

    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::H264, None)
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        if let Some(problem) = url_problem(&self.url) {
            issues.push(FieldIssue::new("url", problem));
        }
        if self.token_file.is_some() && self.token_env.is_some() {
            issues.push(FieldIssue::new(
                "token_file",
                "give one of 'token_file' or 'token_env', not both",
            ));
        }
        check_range(
            &mut issues,
            "connect_timeout_ms",
            self.connect_timeout_ms,
            1000..=120_000,
        );
        self.ice.validate(&mut issues);
        issues
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let feed = cx.h264_input()?;
        let token = match self.token_source() {
            None => None,
            Some(source) => {
                let token = source
                    .read()
                    .map_err(|e| BuildError::new(&cx.id, format!("the WHIP token: {e}")))?;
                // It travels in a header: nothing that could end it or start another.
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(BuildError::new(
                        &cx.id,
                        "the WHIP token may hold only visible ASCII characters",
                    ));
                }
                Some(token)
            }
        };
        let mut ice = self.ice.clone();
        ice.udp_addrs
            .get_or_insert_with(|| vec!["127.0.0.1:0".into(), "0.0.0.0:0".into()]);
        let m = &cx.metrics;
        let metrics = WhipMetrics {
            writer: WriterMetrics {
                sent: m.frames_sent(),
                bytes: m.bytes_sent(),
                dropped_behind: m.frames_dropped(DropReason::Behind),
                latency: m.latency_seconds(),
            },
            states: State::ALL
                .iter()
                .map(|s| m.sink_state(s.as_str()))
                .collect(),
            reconnects: m.sink_reconnects(),
            viewers: m.viewers("whip"),
            rtp_lost: m.rtp_packets_lost(),
            keyframe_requests: Default::default(),
        };
        let status = Arc::new(Mutex::new(Status::new()));
        let (keyframe_requests, writer) =
            (metrics.keyframe_requests.clone(), metrics.writer.clone());
        let stop = Stopper::new();
        let setup = Setup {
            camera: cx.camera.to_string(),
            url: self.url.clone(),
            token,
            ice,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            feed,
            metrics,
            status: status.clone(),
            stop: stop.token(),
        };
        let token = stop.token();
        // The connection's driver runs on webrtc-rs's thread; the WHIP requests on threads of
        // their own; packetizing and writing here.
        start_on_own_thread(move |_| WhipSink {
            setup: Some(setup),
            done: false,
            stop: token,
        });
        Ok(NodeHandle {
            output: None,
            services: Services::new(),
            stats: Some(Box::new(move || {
                let mut stats = status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .describe();
                stats["sent"] = writer.sent.get().into();
                stats["bytes_sent"] = writer.bytes.get().into();
                stats["keyframe_requests"] = keyframe_requests.load(Ordering::Relaxed).into();
                stats
            })),
            stop,
        })
    }
}

/// Hosts the publishing loop (`session::run`) on the node's thread, and stops once the loop has
/// ended after the node's stop (its session deleted).
struct WhipSink {
    setup: Option<Setup>,
    /// The loop has ended.
    done: bool,
    stop: StopToken,
}

impl Actor for WhipSink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
        if let Some(setup) = self.setup.take() {
            ctx.spawn(session::run(setup).into_actor(self).map(|(), act, ctx| {
                act.done = true;
                ctx.stop();
            }));
        }
    }

    /// Waits for the loop, which watches the same stop, to delete its session and end.
    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if self.done {
            Running::Stop
        } else {
            Running::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> WhipSinkConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_url_is_all_it_needs() {
        let c = config("url: http://media:8889/cam/whip");
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.connect_timeout_ms, 10_000);
        assert!(c.token_source().is_none());
        assert!(
            serde_yaml::from_str::<WhipSinkConfig>("{}").is_err(),
            "url is required"
        );
        assert!(serde_yaml::from_str::<WhipSinkConfig>("url: http://x\ntoken: s").is_err());
    }

    #[test]
    fn every_bad_setting_is_reported_with_its_field() {
        let c = config(
            "url: https://media/cam/whip\ntoken_file: /t\ntoken_env: T\nconnect_timeout_ms: 5\nice: { udp_addrs: [x] }",
        );
        let issues = c.validate();
        let fields: Vec<_> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            ["url", "token_file", "connect_timeout_ms", "ice.udp_addrs"]
        );
        assert!(
            issues[0].message.contains("https:// is not supported"),
            "{}",
            issues[0].message
        );
        for bad in [
            "ftp://x/whip",
            "http:///whip",
            "http://user:pw@host/whip",
            "media:8889/whip",
        ] {
            assert!(url_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn the_token_comes_from_a_file_or_the_environment() {
        assert_eq!(
            config("url: http://m/w\ntoken_file: /etc/whip.token").token_source(),
            Some(TokenSource::File("/etc/whip.token".into()))
        );
        assert_eq!(
            config("url: http://m/w\ntoken_env: WHIP_TOKEN").token_source(),
            Some(TokenSource::Env("WHIP_TOKEN".into()))
        );
    }
}
