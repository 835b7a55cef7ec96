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

    /// The node harness: a test pattern -> h264_encoder -> rtp_sink aimed at sockets of the test.
    mod harness {
        use std::sync::Arc;
        use std::time::Duration;

        use bytes::Bytes;
        use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        use rtc::rtp::codec::h264::H264Packet;
        use rtc::rtp::packetizer::Depacketizer;
        use rtc::shared::marshal::{Marshal, Unmarshal};
        use tokio::net::UdpSocket;

        use super::*;
        use crate::fanout::Fanout;
        use crate::frame::Frame;
        use crate::plugins::encoders::h264::H264EncoderConfig;
        use crate::plugins::sources::testsrc::{read_marks, test_frame};
        use crate::port::Port;
        use crate::testing::wait_for;

        const W: u32 = 320;
        const H: u32 = 240;

        fn frame(seq: u64) -> Arc<Frame> {
            test_frame(W, H, seq)
        }

        /// The RTP packets of one frame, up to the one with the marker bit.
        async fn packets_of_a_frame(socket: &UdpSocket) -> Vec<rtc::rtp::Packet> {
            let mut packets = Vec::new();
            let mut buf = vec![0u8; 2048];
            loop {
                let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
                    .await
                    .expect("an RTP packet within 3 s")
                    .unwrap();
                let packet = rtc::rtp::Packet::unmarshal(&mut &buf[..n]).unwrap();
                let last = packet.header.marker;
                packets.push(packet);
                if last {
                    return packets;
                }
            }
        }

        fn nal_type(payload: &Bytes) -> u8 {
            payload[0] & 0x1f
        }

        #[actix_rt::test]
        async fn sends_decodable_h264_with_parameter_sets_before_each_idr_reports_and_takes_pli() {
            let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = rtp.local_addr().unwrap().port();
            let rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let rtcp_port = rtcp.local_addr().unwrap().port();

            let input = Fanout::<Frame>::new();
            let (cx, _) =
                crate::testing::context("enc", "h264_encoder", Port::Frames(input.clone()));
            let encoder = H264EncoderConfig {
                keyframe_interval: 4,
                ..Default::default()
            }
            .build(cx)
            .unwrap();
            let (cx, metrics) =
                crate::testing::context("rtp", "rtp_sink", encoder.output.clone().unwrap());
            let config = config(&format!(
                "{{target: '127.0.0.1:{port}', rtcp_port: {rtcp_port}, payload_type: 101}}"
            ));
            let sink = config.build(cx).unwrap();
            let stats = sink.stats.as_ref().unwrap();
            wait_for("the sink to subscribe to the encoder", || {
                input.has_subscribers()
            })
            .await;
            assert_eq!(stats()["state"], "sending", "{}", stats());

            let mut decoder = openh264::decoder::Decoder::new().unwrap();
            let mut rgb = vec![0u8; (W * H * 3) as usize];
            let mut ssrc = None;
            let mut last_timestamp = None;
            for seq in 0..9 {
                input.publish(frame(seq));
                let packets = packets_of_a_frame(&rtp).await;
                let first = &packets[0];
                assert_eq!(first.header.payload_type, 101);
                assert_eq!(*ssrc.get_or_insert(first.header.ssrc), first.header.ssrc);
                assert!(packets
                    .iter()
                    .all(|p| p.header.timestamp == first.header.timestamp));
                assert_ne!(
                    last_timestamp,
                    Some(first.header.timestamp),
                    "frame {seq}: time moves"
                );
                last_timestamp = Some(first.header.timestamp);
                // Frames 0, 4 and 8 are IDRs (the first, then every keyframe_interval): each
                // starts with SPS and PPS in one STAP-A, so a receiver can join at any of them.
                let idr = seq % 4 == 0;
                assert_eq!(
                    nal_type(&first.payload) == 24,
                    idr,
                    "frame {seq}: STAP-A first iff IDR"
                );
                if idr {
                    let stap = &first.payload;
                    let sps_len = usize::from(u16::from_be_bytes([stap[1], stap[2]]));
                    assert_eq!(stap[3] & 0x1f, 7, "SPS first in the STAP-A");
                    assert_eq!(stap[3 + sps_len + 2] & 0x1f, 8, "then PPS");
                }
                let mut depacketizer = H264Packet::default();
                let mut annex_b = Vec::new();
                for p in &packets {
                    annex_b.extend_from_slice(&depacketizer.depacketize(&p.payload).unwrap());
                }
                let yuv = decoder
                    .decode(&annex_b)
                    .unwrap()
                    .expect("a picture per frame");
                yuv.write_rgb8(&mut rgb);
                assert_eq!(read_marks(&rgb, W, H).map(|m| u64::from(m.seq)), Some(seq));
            }
            let sent = metrics.node("cam", "rtp", "rtp_sink");
            // The packets reach the socket before the sink counts them (seen once under load).
            wait_for("9 frames counted", || sent.frames_sent().get() >= 9).await;
            assert!(sent.rtp_sent_packets().get() >= 9);
            assert_eq!(sent.frames_sent().get(), 9);

            // A sender report with the stream's SSRC reaches the RTCP port...
            let mut buf = vec![0u8; 1500];
            let (n, from) = tokio::time::timeout(Duration::from_secs(3), rtcp.recv_from(&mut buf))
                .await
                .expect("a sender report within 3 s")
                .unwrap();
            assert_eq!(buf[1], 200, "an SR first in the compound packet");
            assert_eq!(
                u32::from_be_bytes(buf[4..8].try_into().unwrap()),
                ssrc.unwrap()
            );
            assert!(n > 28, "with the CNAME after it");
            // ...and a PLI sent back from there makes the next frame an IDR.
            let pli = PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: ssrc.unwrap(),
            };
            rtcp.send_to(&pli.marshal().unwrap(), from).await.unwrap();
            wait_for("the PLI to arrive", || stats()["keyframe_requests"] == 1).await;
            input.publish(frame(9));
            let packets = packets_of_a_frame(&rtp).await;
            assert_eq!(
                nal_type(&packets[0].payload),
                24,
                "an IDR on the receiver's request"
            );

            sink.stop.fire();
            encoder.stop.fire();
            wait_for("the sink to let go of the encoder", || {
                !input.has_subscribers()
            })
            .await;
        }

        #[actix_rt::test]
        async fn an_ipv6_target_gets_the_stream() {
            let rtp = UdpSocket::bind("[::1]:0").await.unwrap();
            let port = rtp.local_addr().unwrap().port();
            let input = Fanout::<Frame>::new();
            let (cx, _) =
                crate::testing::context("enc", "h264_encoder", Port::Frames(input.clone()));
            let encoder = H264EncoderConfig::default().build(cx).unwrap();
            let (cx, _) =
                crate::testing::context("rtp", "rtp_sink", encoder.output.clone().unwrap());
            let sink = config(&format!("target: '[::1]:{port}'"))
                .build(cx)
                .unwrap();
            let stats = sink.stats.as_ref().unwrap();
            wait_for("the sink to subscribe", || input.has_subscribers()).await;
            assert_eq!(stats()["resolved"], format!("[::1]:{port}"));
            input.publish(frame(0));
            let packets = packets_of_a_frame(&rtp).await;
            assert_eq!(nal_type(&packets[0].payload), 24, "the first frame, an IDR");
            sink.stop.fire();
            encoder.stop.fire();
        }

        #[actix_rt::test]
        async fn nobody_listening_is_shown_and_counted_and_sending_goes_on() {
            // A port that was free a moment ago: nothing listens there.
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let input = Fanout::<Frame>::new();
            let (cx, _) =
                crate::testing::context("enc", "h264_encoder", Port::Frames(input.clone()));
            let encoder = H264EncoderConfig::default().build(cx).unwrap();
            let (cx, metrics) =
                crate::testing::context("rtp", "rtp_sink", encoder.output.clone().unwrap());
            let sink = config(&format!("target: '127.0.0.1:{port}'"))
                .build(cx)
                .unwrap();
            let stats = sink.stats.as_ref().unwrap();
            wait_for("the sink to subscribe", || input.has_subscribers()).await;
            let refused = metrics
                .node("cam", "rtp", "rtp_sink")
                .rtp_send_errors(crate::metrics::RtpSendFailure::Refused);
            let seq = std::cell::Cell::new(0);
            wait_for("a refusal", || {
                input.publish(frame(seq.get()));
                seq.set(seq.get() + 1);
                refused.get() > 0
            })
            .await;
            let s = stats();
            assert_eq!(
                (s["state"].as_str(), s["up"].as_bool()),
                (Some("refused"), Some(false)),
                "{s}"
            );
            assert!(
                s["error"]
                    .as_str()
                    .unwrap()
                    .contains("nobody receives at 127.0.0.1:"),
                "{s}"
            );
            // A receiver that comes gets the stream at once.
            let receiver = UdpSocket::bind(("127.0.0.1", port)).await.unwrap();
            input.publish(frame(seq.get() + 1));
            let mut buf = vec![0u8; 2048];
            tokio::time::timeout(Duration::from_secs(3), receiver.recv(&mut buf))
                .await
                .expect("packets once someone listens")
                .unwrap();
            sink.stop.fire();
            encoder.stop.fire();
        }
    }
}
