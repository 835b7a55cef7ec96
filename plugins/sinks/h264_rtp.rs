//! H.264 as RTP, shared by the sinks that send it (`webrtc_sink` to browsers, `rtp_sink` to a media
//! server): the packetizer (the `rtc` crate's H.264 payloader: FU-A fragments, and SPS and PPS
//! carried in a STAP-A before the IDR they come with), the RTP clock that stamps frames from their
//! capture time, the random numbers SSRCs and sequence starts come from, and which RTCP packets
//! ask for a keyframe.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::{new_packetizer, Packetizer};

/// The RTP clock rate of video (RFC 6184).
pub const H264_CLOCK_RATE: u32 = 90_000;
/// RTP payload size limit, as webrtc-rs uses for its own tracks; it also fits a plain RTP packet
/// with its headers in an Ethernet frame.
pub const RTP_MTU: usize = 1200;

/// A packetizer of Annex B H.264 frames into RTP packets of `ssrc` with `payload_type`, starting at
/// a random sequence number.
pub fn h264_packetizer(ssrc: u32, payload_type: u8) -> Box<dyn Packetizer> {
    Box::new(new_packetizer(
        Instant::now(),
        RTP_MTU,
        payload_type,
        ssrc,
        Box::<H264Payloader>::default(),
        Box::new(rtc::rtp::sequence::new_random_sequencer()),
        H264_CLOCK_RATE,
    ))
}

/// RTP time from capture time: a random base at the first frame, then 90 kHz ticks of capture
/// time since it. Integer ticks, wrapping as RTP time does (a float cast would stick at u32::MAX
/// after 13 hours).
#[derive(Clone, Copy, Debug, Default)]
pub struct RtpClock {
    /// The first frame's capture time and its RTP timestamp.
    origin: Option<(SystemTime, u32)>,
}

impl RtpClock {
    /// The RTP timestamp of a frame captured at `at`; the first call sets the origin.
    pub fn timestamp(&mut self, at: SystemTime) -> u32 {
        let (origin, base) = *self.origin.get_or_insert((at, random_u64() as u32));
        let elapsed = at.duration_since(origin).unwrap_or_default();
        let ticks = elapsed.as_nanos() * u128::from(H264_CLOCK_RATE) / 1_000_000_000;
        base.wrapping_add(ticks as u32)
    }

    /// The RTP timestamp of `at` if the clock has started (sender reports need one that does not
    /// move the origin).
    pub fn peek(&self, at: SystemTime) -> Option<u32> {
        self.origin.is_some().then(|| {
            let mut copy = *self;
            copy.timestamp(at)
        })
    }

    /// Forgets the origin: the next frame starts a new timeline.
    pub fn reset(&mut self) {
        self.origin = None;
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

/// Whether an RTCP packet asks for a keyframe (PLI or FIR).
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_clock_counts_90_khz_ticks_of_capture_time_and_wraps() {
        let mut clock = RtpClock::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(clock.peek(t0), None, "no origin before the first frame");
        let base = clock.timestamp(t0);
        assert_eq!(
            clock.timestamp(t0 + Duration::from_millis(100)),
            base.wrapping_add(9_000)
        );
        assert_eq!(
            clock.peek(t0 + Duration::from_secs(1)),
            Some(base.wrapping_add(90_000))
        );
        // Earlier than the origin (a clock step): no time passed.
        assert_eq!(clock.timestamp(t0 - Duration::from_secs(1)), base);
        // 14 hours is past u32::MAX ticks: the time wraps instead of sticking.
        let later = clock.timestamp(t0 + Duration::from_secs(14 * 3600));
        let ticks = 14u64 * 3600 * 90_000;
        assert_eq!(later, base.wrapping_add(ticks as u32));
        clock.reset();
        assert_eq!(clock.peek(t0), None);
    }
}
