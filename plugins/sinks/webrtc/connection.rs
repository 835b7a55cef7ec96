//! What every WebRTC connection camgraph makes has in common, whichever side offers: the one
//! codec it sends (H.264 Constrained Baseline), the connection built with webrtc-rs 0.21 (media
//! engine, the interceptors a send-only peer needs plus `feedback::PeerFeedback`, mDNS off, the
//! node's ICE settings), the camera's local track, and the RTP packetizing of encoded frames (the payloader
//! and the clock are `sinks::h264_rtp`'s, shared with `rtp_sink`). The
//! `webrtc_sink` answers browsers' offers with it (`peer.rs`); the `whip_sink` offers to a media
//! server with it (`plugins/sinks/whip`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{NackResponderBuilder, SenderReportBuilder, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::packetizer::Packetizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateType, RTCIceServer, Registry, SettingEngineBuilder,
};

use super::feedback;
use super::peer::RtpFrame;
use super::{IceConfig, IceServer};
use crate::frame::EncodedFrame;
use crate::plugins::sinks::h264_rtp::{h264_packetizer, H264_CLOCK_RATE};

/// H.264 as Chromium offers it: Constrained Baseline 3.1, non-interleaved. We register only
/// what we send.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_PAYLOAD_TYPE: u8 = 102;
/// Longest a description waits for ICE gathering; it holds whatever was gathered by then.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

pub fn h264_codec() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_string(),
        parameter: parameter.to_string(),
    };
    RTCRtpCodec {
        mime_type: "video/H264".to_string(),
        clock_rate: H264_CLOCK_RATE,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_string(),
        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
    }
}

/// A connection sending H.264 only, with the node's ICE settings (plus `extra_servers`, e.g.
/// those a WHIP server announced) and `handler` for its events. Its driver runs on a thread of
/// its own, off the HTTP workers and the node's thread.
pub async fn build(
    ice: &IceConfig,
    extra_servers: &[IceServer],
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> Result<Arc<dyn PeerConnection>, webrtc::error::Error> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: h264_codec(),
            payload_type: H264_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    let registry = send_only_interceptors();
    let mut settings =
        SettingEngineBuilder::new().with_multicast_dns_mode(MulticastDnsMode::Disabled);
    if !ice.nat_1to1_ips.is_empty() {
        settings = settings.with_nat_1to1_ips(ice.nat_1to1_ips.clone(), RTCIceCandidateType::Host);
    }
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(
            ice.servers
                .iter()
                .chain(extra_servers)
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
        )
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_setting_engine(settings.build())
        .with_interceptor_registry(registry)
        .with_handler(handler)
        // Resolved when the node was built, so always set here.
        .with_udp_addrs(ice.udp_addrs.clone().unwrap_or_default())
        .with_dedicated_reactor_pool_size(1)
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// The interceptors of a connection that only sends: the NACK responder (retransmits what the
/// peer lost), sender reports (the peer's lip sync and round-trip time) and `PeerFeedback`
/// (keyframe requests and receiver reports to the writer). webrtc-rs's defaults also record
/// what arrives (NACK generator, receiver reports, TWCC receiver): nothing arrives here but
/// RTCP, yet every packet sent walked through them too, a share of each peer's cost (see
/// BENCHMARKS.md, "RTSP camera"). The NACK and PLI feedback they would register is the codec's
/// own (`h264_codec`).
fn send_only_interceptors() -> Registry {
    Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(
            Slot::from(feedback::SLOT),
            feedback::PeerFeedback::default(),
        )
}

/// Waits until `gathered` says ICE gathering is complete, at most `GATHER_TIMEOUT` (then the
/// description holds whatever was gathered).
pub async fn wait_gathered(gathered: &mut watch::Receiver<bool>) {
    let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|done| *done)).await;
}

/// The connection's own description once gathered, as it goes to the other side: without the
/// candidates webrtc-rs lists for a separate RTCP component (component 2, on the same port as
/// component 1) in sections that multiplex RTCP with RTP (`a=rtcp-mux`, which every camgraph
/// connection requires). No peer can use them, and Firefox rejects each one.
pub async fn local_sdp(pc: &Arc<dyn PeerConnection>) -> Option<String> {
    Some(without_rtcp_candidates(&pc.local_description().await?.sdp))
}

fn without_rtcp_candidates(sdp: &str) -> String {
    let lines: Vec<&str> = sdp.split_inclusive('\n').collect();
    let mut out = String::with_capacity(sdp.len());
    // Sections begin at `m=` lines; the session part before the first one has no candidates.
    let mut start = 0;
    while start < lines.len() {
        let end = (start + 1..lines.len())
            .find(|&i| lines[i].starts_with("m="))
            .unwrap_or(lines.len());
        let section = &lines[start..end];
        let muxed = section.iter().any(|l| l.trim_end() == "a=rtcp-mux");
        for line in section {
            let rtcp_candidate =
                line.starts_with("a=candidate:") && line.split_whitespace().nth(1) == Some("2");
            if !(muxed && rtcp_candidate) {
                out.push_str(line);
            }
        }
        start = end;
    }
    out
}

/// The camera's video track for one connection, sending with `ssrc`.
pub fn camera_track(camera: &str, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        camera.to_string(),
        format!("{camera}-video"),
        format!("camera {camera}"),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: h264_codec(),
            ..Default::default()
        }],
    )))
}

/// Cuts one stream of encoded frames into RTP packets, stamped on the sink's clock.
pub struct RtpPacketizer {
    packetizer: Box<dyn Packetizer>,
}

impl RtpPacketizer {
    /// Packets with `ssrc`; sequence numbers are restamped by each writer.
    pub fn new(ssrc: u32) -> Self {
        Self {
            packetizer: h264_packetizer(ssrc, 0),
        }
    }

    /// One access unit as RTP packets stamped with `timestamp`.
    pub fn packets(
        &mut self,
        data: &bytes::Bytes,
        timestamp: u32,
    ) -> Result<Vec<rtc::rtp::Packet>, rtc::shared::error::Error> {
        let mut packets = self.packetizer.packetize(Instant::now(), data, 0)?;
        for p in &mut packets {
            p.header.timestamp = timestamp;
        }
        Ok(packets)
    }

    /// `frame` as RTP packets at `timestamp`; `after_gap`: encoded frames before it were never
    /// packetized.
    pub fn packetize(
        &mut self,
        frame: &EncodedFrame,
        timestamp: u32,
        after_gap: bool,
    ) -> Result<RtpFrame, rtc::shared::error::Error> {
        let packets = self.packets(&frame.data, timestamp)?;
        Ok(RtpFrame {
            packets,
            keyframe: frame.keyframe,
            captured_at: frame.captured_at,
            bytes: frame.data.len() as u64,
            behind: frame.behind,
            after_gap,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rtc::interceptor::{
        Attribute, AttributedPacket, Interceptor, Packet, RTCPFeedback as StreamFeedback,
        StreamInfo, TaggedPacket,
    };
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    use rtc::sansio::Protocol;
    use rtc::shared::{TransportContext, TransportMessage};

    use super::*;

    /// Component-2 candidates go only where RTCP shares RTP's port; every other line stays as it
    /// was, line endings included.
    #[test]
    fn rtcp_candidates_are_dropped_only_from_muxed_sections() {
        let sdp = "v=0\r\ns=-\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtcp-mux\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
            a=candidate:1 2 udp 2130706431 127.0.0.1 5000 typ host\r\n\
            a=end-of-candidates\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=candidate:2 1 udp 2130706431 127.0.0.1 6000 typ host\r\n\
            a=candidate:2 2 udp 2130706431 127.0.0.1 6001 typ host\r\n";
        assert_eq!(
            without_rtcp_candidates(sdp),
            "v=0\r\ns=-\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtcp-mux\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
            a=end-of-candidates\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=candidate:2 1 udp 2130706431 127.0.0.1 6000 typ host\r\n\
            a=candidate:2 2 udp 2130706431 127.0.0.1 6001 typ host\r\n"
        );
        assert_eq!(without_rtcp_candidates(""), "");
    }

    fn tagged(packet: Packet) -> TaggedPacket {
        TransportMessage {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(packet),
        }
    }

    /// The chain without webrtc-rs's defaults still does what a sending peer relies on: the NACK
    /// feedback of our codec is enough for the responder to keep what it sent and resend what the
    /// peer lost, and a keyframe request reaches the application (the writer).
    #[test]
    fn the_send_only_chain_resends_what_a_nack_names_and_passes_keyframe_requests_on() {
        let ssrc = 0x1234_5678;
        let codec = h264_codec();
        let mut chain = send_only_interceptors().build();
        chain.bind_local_stream(&StreamInfo {
            ssrc,
            payload_type: H264_PAYLOAD_TYPE,
            mime_type: codec.mime_type.clone(),
            clock_rate: codec.clock_rate,
            sdp_fmtp_line: codec.sdp_fmtp_line.clone(),
            rtcp_feedback: codec
                .rtcp_feedback
                .iter()
                .map(|f| StreamFeedback {
                    typ: f.typ.clone(),
                    parameter: f.parameter.clone(),
                })
                .collect(),
            ..Default::default()
        });
        let mut sent = 0;
        for seq in 100..105u16 {
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc,
                    payload_type: H264_PAYLOAD_TYPE,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: bytes::Bytes::from(vec![seq as u8; 10]),
            };
            chain.handle_write(tagged(Packet::Rtp(packet))).unwrap();
            sent += std::iter::from_fn(|| chain.poll_write()).count();
        }
        assert_eq!(sent, 5, "each packet leaves the chain once");

        // The peer lost 101 and 103 (one NACK pair: 101, and bit 1 for 101 + 2), and asks for a
        // keyframe in the same compound packet.
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: ssrc,
            nacks: vec![NackPair {
                packet_id: 101,
                lost_packets: 0b10,
            }],
        };
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: ssrc,
        };
        chain
            .handle_read(tagged(Packet::Rtcp(vec![Box::new(nack), Box::new(pli)])))
            .unwrap();
        let delivered: Vec<TaggedPacket> = std::iter::from_fn(|| chain.poll_read()).collect();
        let resent: Vec<(u16, Vec<u8>)> = std::iter::from_fn(|| chain.poll_write())
            .filter_map(|m| match m.message.packet {
                Packet::Rtp(p) => Some((p.header.sequence_number, p.payload.to_vec())),
                _ => None,
            })
            .collect();
        assert_eq!(resent, vec![(101, vec![101; 10]), (103, vec![103; 10])]);

        // Only the keyframe request reaches the application; the NACK was the chain's business.
        assert_eq!(delivered.len(), 1);
        assert!(delivered[0].message.has(&Attribute::DeliverToApplication));
        let Packet::Rtcp(rtcp) = &delivered[0].message.packet else {
            panic!("RTCP expected, got {:?}", delivered[0].message.packet);
        };
        assert_eq!(rtcp.len(), 1);
        assert!(rtcp[0].as_any().is::<PictureLossIndication>());
    }
}
