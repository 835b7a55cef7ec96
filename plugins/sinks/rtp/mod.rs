//! The `rtp_sink` node: sends a camera's H.264 (the one shared encode of its `h264_encoder`) as RTP
//! over UDP to one `target`, unicast or multicast, with RTCP sender reports, so that a media
//! server built to fan out (Janus's streaming plugin, MediaMTX, GStreamer, ffmpeg) serves the
//! audience: the robot's uplink carries one stream whatever the number of viewers. The matching
//! SDP is served at `GET /api/camera/sdp[/{name}]` (`api.rs`) and, with `sdp_file`, written to a
//! file. The sending itself (`sender.rs`) survives a target that does not resolve or where nobody
//! listens: it shows `down` with the reason in `/api/graph`, counts, and goes on.
//!
//! ```yaml
//! front_h264: { type: h264_encoder, inputs: [front] }
//! front_rtp:  { type: rtp_sink, inputs: [front_h264], target: "127.0.0.1:5004" }
//! ```

pub mod api;
mod sender;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::error::BuildError;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, Services};
use crate::port::{PortKind, Ports};
use crate::stop::{start_on_own_thread, Stopper};

/// Settings of an `rtp_sink` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtpSinkConfig {
    /// Where the RTP goes: `host:port`, `IPv4:port` or `[IPv6]:port`; a multicast address sends
    /// to a group. A host name is resolved when the node starts (and again while it does not
    /// resolve). Required.
    pub target: String,
    /// The RTP payload type, 96..=127 (the dynamic range; the receiver's config must say the
    /// same). Default 96.
    #[serde(default = "default_payload_type")]
    pub payload_type: u8,
    /// Where RTCP sender reports go, and whence keyframe requests (PLI, FIR) are taken. Default
    /// the target's port + 1.
    #[serde(default)]
    pub rtcp_port: Option<u16>,
    /// Hops a multicast packet may take, 1..=255 (1: the local network only). Unicast packets
    /// get the system's default. Default 1.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Also write the SDP to this file (whole, through a temporary file) when the node starts.
    /// Default none.
    #[serde(default)]
    pub sdp_file: Option<PathBuf>,
}

fn default_payload_type() -> u8 {
    96
}
fn default_ttl() -> u32 {
    1
}

/// A target split into host and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// A host name or an IP address (without brackets).
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Splits `host:port` (`[v6]:port` for IPv6), or says what is wrong in the words of a
    /// config error.
    pub fn parse(target: &str) -> Result<Target, String> {
        let form = || format!("'target' must be host:port (got '{target}')");
        let (host, port) = target.rsplit_once(':').ok_or_else(form)?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
                .ok_or_else(|| format!("'target' has a bad IPv6 address (got '{target}')"))?,
            None if host.contains(':') => {
                return Err(format!(
                    "'target' must put an IPv6 address in brackets, [addr]:port (got '{target}')"
                ))
            }
            None => host,
        };
        if host.is_empty() {
            return Err(form());
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("'target' port must be 1..=65535 (got '{port}')"))?;
        if port == 0 {
            return Err("'target' port must be 1..=65535 (got 0)".into());
        }
        // A name: letters, digits, '-' and '.', as DNS allows (and IPv4 addresses are).
        let name_ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if host.parse::<IpAddr>().is_err() && (!name_ok || host.len() > 253) {
            return Err(format!(
                "'target' host '{host}' is no host name or IP address"
            ));
        }
        Ok(Target {
            host: host.to_string(),
            port,
        })
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl RtpSinkConfig {
    /// The parsed target and RTCP port; valid once `validate` found nothing.
    fn target(&self) -> Result<(Target, u16), String> {
        let target = Target::parse(&self.target)?;
        let rtcp = match self.rtcp_port {
            Some(port) => port,
            None => target.port.checked_add(1).ok_or_else(|| {
                "'target' port 65535 leaves no port for RTCP: set 'rtcp_port'".to_string()
            })?,
        };
        Ok((target, rtcp))
    }
}

impl NodeConfig for RtpSinkConfig {
    const TYPE: &'static str = "rtp_sink";

    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::H264, None)
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        if let Err(e) = self.target() {
            issues.push(FieldIssue::new("target", e));
        }
        check_range(&mut issues, "payload_type", self.payload_type, 96..=127);
        if let Some(port) = self.rtcp_port {
            check_range(&mut issues, "rtcp_port", port, 1..=65535);
        }
        check_range(&mut issues, "ttl", self.ttl, 1..=255);
        if self
            .sdp_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty() || f.file_name().is_none())
        {
            issues.push(FieldIssue::new("sdp_file", "'sdp_file' must name a file"));
        }
        issues
    }

    fn routes(cfg: &mut actix_web::web::ServiceConfig) {
        api::routes(cfg);
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let feed = cx.h264_input()?;
        let (target, rtcp_port) = self.target().map_err(|e| BuildError::new(&cx.id, e))?;
        let sdp: Arc<str> = api::sdp(&cx.camera, &target, rtcp_port, self).into();
        if let Some(file) = &self.sdp_file {
            api::write_sdp(file, &sdp).map_err(|e| {
                BuildError::new(&cx.id, format!("'sdp_file' {}: {e}", file.display()))
            })?;
        }
        let status = Arc::new(sender::Status::new(&self.target));
        let setup = sender::Setup {
            camera: cx.camera.to_string(),
            target,
            rtcp_port,
            payload_type: self.payload_type,
            ttl: self.ttl,
            feed,
            metrics: sender::SendMetrics::new(&cx.metrics),
            status: status.clone(),
        };
        // Packetizing and sending run on the sink's own thread, never on an HTTP worker.
        let stop = Stopper::new();
        let token = stop.token();
        start_on_own_thread(move |_| sender::RtpSender::new(setup, token));
        Ok(NodeHandle {
            output: None,
            services: Services::new().with(api::RtpSdp(sdp)),
            stats: Some(Box::new(move || status.describe())),
            stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> RtpSinkConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_and_targets() {
        let c = config("target: 127.0.0.1:5004");
        assert_eq!((c.payload_type, c.ttl, c.rtcp_port), (96, 1, None));
        assert!(c.validate().is_empty());
        let (t, rtcp) = c.target().unwrap();
        assert_eq!((t.host.as_str(), t.port, rtcp), ("127.0.0.1", 5004, 5005));
        let (t, _) = config("target: '[ff02::1]:6000'").target().unwrap();
        assert_eq!(t.host, "ff02::1");
        assert!(config("target: media.local:5004").validate().is_empty());
        assert!(
            serde_yaml::from_str::<RtpSinkConfig>("{}").is_err(),
            "target is required"
        );
    }

    #[test]
    fn every_bad_setting_is_reported_with_its_field() {
        let cases = [
            (
                "target: '127.0.0.1:0'",
                "target",
                "port must be 1..=65535 (got 0)",
            ),
            ("target: 'media.local'", "target", "must be host:port"),
            ("target: ':5004'", "target", "must be host:port"),
            ("target: 'a b:5004'", "target", "no host name or IP address"),
            ("target: '::1:5004'", "target", "in brackets"),
            ("target: 'x:99999'", "target", "(got '99999')"),
            ("target: 'x:65535'", "target", "set 'rtcp_port'"),
            (
                "{target: 'x:1', payload_type: 8}",
                "payload_type",
                "96..=127 (got 8)",
            ),
            (
                "{target: 'x:1', rtcp_port: 0}",
                "rtcp_port",
                "1..=65535 (got 0)",
            ),
            ("{target: 'x:1', ttl: 0}", "ttl", "1..=255 (got 0)"),
            ("{target: 'x:1', ttl: 256}", "ttl", "1..=255 (got 256)"),
            (
                "{target: 'x:1', sdp_file: ''}",
                "sdp_file",
                "must name a file",
            ),
        ];
        for (yaml, field, text) in cases {
            let issues = config(yaml).validate();
            assert_eq!(issues.len(), 1, "{yaml}: {issues:?}");
            assert_eq!(issues[0].field, field, "{yaml}");
            assert!(
                issues[0].message.contains(text),
                "{yaml}: {}",
                issues[0].message
            );
        }
        assert!(config("{target: 'x:65535', rtcp_port: 7}")
            .validate()
            .is_empty());
    }
}
