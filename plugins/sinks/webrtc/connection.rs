//! What every WebRTC connection camgraph makes has in common, whichever side offers: the one
//! codec it sends (H.264 Constrained Baseline), the connection built with webrtc-rs 0.21 (media
//! engine, default interceptors plus `feedback::PeerFeedback`, mDNS off, the node's ICE
//! settings), the camera's local track, and the RTP packetizing of encoded frames. The
//! `webrtc_sink` answers browsers' offers with it (`peer.rs`); the `whip_sink` offers to a media
//! server with it (`plugins/sinks/whip`).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::packetizer::{new_packetizer, Packetizer};
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

/// H.264 as Chromium offers it: Constrained Baseline 3.1, non-interleaved. We register only
/// what we send.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
pub const H264_CLOCK_RATE: u32 = 90_000;
const H264_PAYLOAD_TYPE: u8 = 102;
/// RTP payload size limit, as webrtc-rs uses for its own tracks.
const RTP_MTU: usize = 1200;
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

/// A random number from the standard library's per-process random hasher keys.
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
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
        let payloader = h264_codec()
            .payloader()
            // Infallible: the codec is our constant H.264 one, which webrtc-rs always packetizes.
            .expect("webrtc-rs packetizes H.264");
        Self {
            packetizer: Box::new(new_packetizer(
                Instant::now(),
                RTP_MTU,
                0,
                ssrc,
                payloader,
                Box::new(rtc::rtp::sequence::new_random_sequencer()),
                H264_CLOCK_RATE,
            )),
        }
    }

    /// `frame` as RTP packets at `timestamp`; `after_gap`: encoded frames before it were never
    /// packetized.
    pub fn packetize(
        &mut self,
        frame: &EncodedFrame,
        timestamp: u32,
        after_gap: bool,
    ) -> Result<RtpFrame, rtc::shared::error::Error> {
        let mut packets = self.packetizer.packetize(Instant::now(), &frame.data, 0)?;
        for p in &mut packets {
            p.header.timestamp = timestamp;
        }
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

/// A sink's RTP clock: capture times as 90 kHz ticks from a random origin, one clock for every
/// stream of the sink (a peer switching between them sees time go on).
#[derive(Default)]
pub struct RtpClock {
    /// The first frame's capture time and its RTP timestamp.
    origin: Option<(SystemTime, u32)>,
}

impl RtpClock {
    /// The RTP timestamp of a frame captured at `at`. Integer ticks, wrapping as RTP time does
    /// (a float cast would stick at u32::MAX after 13 hours).
    pub fn timestamp(&mut self, at: SystemTime) -> u32 {
        let (origin, base) = *self.origin.get_or_insert((at, random_u64() as u32));
        let elapsed = at.duration_since(origin).unwrap_or_default();
        let ticks = elapsed.as_nanos() * u128::from(H264_CLOCK_RATE) / 1_000_000_000;
        base.wrapping_add(ticks as u32)
    }

    /// Starts again from the next frame (nobody receives the old clock any more).
    pub fn reset(&mut self) {
        self.origin = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_counts_90khz_ticks_from_its_first_frame() {
        let mut clock = RtpClock::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let base = clock.timestamp(t0);
        assert_eq!(
            clock.timestamp(t0 + Duration::from_millis(100)),
            base.wrapping_add(9000)
        );
        // Earlier than the origin (a clock step): no time passed.
        assert_eq!(clock.timestamp(t0 - Duration::from_secs(1)), base);
        clock.reset();
        let _ = clock.timestamp(t0 + Duration::from_secs(5));
        assert_eq!(
            clock
                .timestamp(t0 + Duration::from_secs(6))
                .wrapping_sub(clock.timestamp(t0 + Duration::from_secs(5))),
            90_000
        );
    }
}
