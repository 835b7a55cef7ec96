//! What every WebRTC connection camgraph makes has in common, whichever side offers: the one
//! codec it sends (H.264 Constrained Baseline), the connection built with webrtc-rs 0.21 (media
//! engine, default interceptors plus `feedback::PeerFeedback`, mDNS off, the node's ICE
//! settings), the camera's local track, and the RTP packetizing of encoded frames (the payloader
//! and the clock are `sinks::h264_rtp`'s, shared with `rtp_sink`). The
//! `webrtc_sink` answers browsers' offers with it (`peer.rs`); the `whip_sink` offers to a media
//! server with it (`plugins/sinks/whip`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::packetizer::Packetizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateType, RTCIceServer,
    Registry, SettingEngineBuilder,
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
    let registry = register_default_interceptors(Registry::new(), &mut media)?.with(
        rtc::interceptor::Slot::from(feedback::SLOT),
        feedback::PeerFeedback::default(),
    );
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

/// Waits until `gathered` says ICE gathering is complete, at most `GATHER_TIMEOUT` (then the
/// description holds whatever was gathered).
pub async fn wait_gathered(gathered: &mut watch::Receiver<bool>) {
    let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|done| *done)).await;
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
