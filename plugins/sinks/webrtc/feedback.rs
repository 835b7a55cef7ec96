//! What peers say back over RTCP: keyframe requests (PLI, FIR) and receiver reports (how many
//! packets they lost). webrtc 0.21 ends inbound RTCP inside its interceptor chain, so by default
//! none of it reaches the application; `PeerFeedback`, placed last in the chain, marks exactly
//! those packets for delivery. `watch` then turns a keyframe request into an IDR request for the
//! peer's writer (at most one every `MIN_GAP`, so a burst costs one keyframe), and each receiver
//! report into the packets lost since the last one, for the writer's ladder position (behind an
//! `adaptive` node).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::plugins::sinks::h264_rtp::is_keyframe_request;

/// The interceptor's place in the chain: after the others (they read RTCP first).
pub const SLOT: usize = 14_000;
/// Closest two keyframe requests of one peer are passed on.
const MIN_GAP: Duration = Duration::from_millis(300);

/// Passes PLI, FIR and receiver reports on to the application and drops every other inbound RTCP
/// packet there.
#[derive(Default)]
pub struct PeerFeedback {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

fn is_wanted(packet: &dyn rtc::rtcp::Packet) -> bool {
    is_keyframe_request(packet) || packet.as_any().is::<ReceiverReport>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for PeerFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let wanted: Vec<_> = packets
                .iter()
                .filter(|p| is_wanted(p.as_ref()))
                .cloned()
                .collect();
            if wanted.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(wanted);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for PeerFeedback {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// Packets sent and lost between two receiver reports, from their cumulative counters.
#[derive(Default)]
pub struct LossCounter {
    /// The last report's extended highest sequence number and cumulative lost count.
    last: Option<(u32, i64)>,
}

impl LossCounter {
    /// `(lost, sent)` since the previous report; `None` for the first report (nothing to compare
    /// it with). The highest sequence number is extended (it wraps at 2^32). The lost count is a
    /// signed 24-bit number (RFC 3550: duplicates can make it negative) and can shrink when late
    /// packets arrive, which counts as none lost.
    pub fn report(&mut self, highest_seq: u32, total_lost: u32) -> Option<(u64, u64)> {
        let lost_so_far = i64::from(((total_lost << 8) as i32) >> 8);
        let previous = self.last.replace((highest_seq, lost_so_far))?;
        let sent = u64::from(highest_seq.wrapping_sub(previous.0));
        if sent > u64::from(u16::MAX) {
            // Older than the previous report (reordered), or a restart: start over.
            return None;
        }
        let lost = (lost_so_far - previous.1).clamp(0, sent as i64) as u64;
        Some((lost, sent))
    }
}

/// What a peer's RTCP tells its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// The peer lost pictures: its variant should send an IDR.
    Keyframe,
    /// A receiver report: of `sent` packets since the last one, the peer lost `lost`.
    Loss { lost: u64, sent: u64 },
}

/// Who the feedback of one peer goes to.
pub struct FeedbackTargets {
    /// The sink's SSRC: the report block about our stream.
    pub ssrc: u32,
    /// The peer's writer.
    pub writer: Box<dyn Fn(Feedback) + Send + Sync>,
    pub keyframe_requests: Arc<AtomicU64>,
    pub lost: IntCounter,
}

/// Reads the peer's RTCP until its track is unbound.
pub async fn watch(track: Arc<TrackLocalStaticRTP>, to: FeedbackTargets) {
    let mut last_request: Option<Instant> = None;
    let mut loss = LossCounter::default();
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        for packet in &packets {
            if is_keyframe_request(packet.as_ref()) {
                to.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                if last_request.is_none_or(|t| t.elapsed() >= MIN_GAP) {
                    last_request = Some(Instant::now());
                    (to.writer)(Feedback::Keyframe);
                }
                continue;
            }
            let Some(rr) = packet.as_any().downcast_ref::<ReceiverReport>() else {
                continue;
            };
            for report in rr.reports.iter().filter(|r| r.ssrc == to.ssrc) {
                let Some((lost, sent)) =
                    loss.report(report.last_sequence_number, report.total_lost)
                else {
                    continue;
                };
                to.lost.inc_by(lost);
                tracing::trace!(lost, sent, "receiver report");
                (to.writer)(Feedback::Loss { lost, sent });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_between_reports_comes_from_the_cumulative_counters() {
        let mut c = LossCounter::default();
        assert_eq!(
            c.report(1000, 5),
            None,
            "the first report has nothing before it"
        );
        assert_eq!(c.report(1300, 35), Some((30, 300)));
        assert_eq!(c.report(1600, 30), Some((0, 300)), "late packets arrived");
        assert_eq!(c.report(1600, 30), Some((0, 0)), "nothing sent in between");
        // The extended sequence number goes on past 2^16 (its cycle count grows).
        assert_eq!(c.report(65_536 + 100, 40), Some((10, 64_036)));
        assert_eq!(c.report(10, 40), None, "reordered or restarted: start over");
        assert_eq!(c.report(310, 40), Some((0, 300)));
        // Duplicates made the count negative: -1 is 0xFFFFFF on the wire, not 16.7 million lost.
        assert_eq!(c.report(610, 0xFF_FFFF), Some((0, 300)));
        assert_eq!(c.report(910, 2), Some((3, 300)));
    }
}
