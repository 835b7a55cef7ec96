//! Keyframe requests from peers. webrtc 0.21 ends inbound RTCP inside its interceptor chain, so a
//! browser's PLI or FIR never reaches the application by default; this interceptor, placed last,
//! marks exactly those packets for delivery, and `watch_requests` turns them into an IDR request
//! to the encoder (at most one per peer every `MIN_GAP`, so a burst costs one keyframe).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::node::VideoFeed;

/// The interceptor's place in the chain: after every default one (they read RTCP first).
pub const SLOT: usize = 14_000;
/// Closest two keyframe requests of one peer are passed on.
const MIN_GAP: Duration = Duration::from_millis(300);

/// Passes PLI and FIR on to the application and drops every other inbound RTCP packet there.
#[derive(Default)]
pub struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<_> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
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

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// Asks the encoder for an IDR whenever the peer sends PLI/FIR, until its track is unbound.
pub async fn watch_requests(
    track: Arc<TrackLocalStaticRTP>,
    feed: Arc<dyn VideoFeed>,
    counted: Arc<AtomicU64>,
) {
    let mut last: Option<Instant> = None;
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        if !packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
            continue;
        }
        counted.fetch_add(1, Ordering::Relaxed);
        if last.is_none_or(|t| t.elapsed() >= MIN_GAP) {
            last = Some(Instant::now());
            feed.request_keyframe();
        }
    }
}
