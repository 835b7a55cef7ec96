//! What travels on an edge and how a node reaches it: the kinds of data (`PortKind`), the ports a
//! node type declares (`Ports`, checked before anything starts), the running outputs handed to
//! downstream nodes (`Port`), the variants a consumer may ask an encoder for (a JPEG quality and
//! size, an H.264 bitrate and size) and the one `Feed` trait through which encoded streams of
//! either codec are subscribed to.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

use crate::adapt::AdaptPolicy;
use crate::error::ServiceError;
use crate::fanout::{Fanout, Subscriber};
use crate::frame::{EncodedFrame, Frame};

/// The kind of data on an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// Captured frames (`Frame`): raw pixels, or JPEG as a camera delivered it.
    Frames,
    /// JPEG images from an encoder.
    Jpeg,
    /// H.264 video for WebRTC: from an encoder, or a camera's own passed through.
    H264,
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortKind::Frames => "frames",
            PortKind::Jpeg => "jpeg",
            PortKind::H264 => "h264",
        })
    }
}

/// The input a node takes and the output it gives.
#[derive(Clone, Copy, Debug)]
pub enum Ports {
    /// A source: no input; gives this kind.
    Source(PortKind),
    /// One input of the first kind; gives the second (`None`: a sink).
    Takes(PortKind, Option<PortKind>),
    /// One input of any of these kinds, and gives the same kind: a controller placed on an edge.
    Through(&'static [PortKind]),
}

impl Ports {
    /// The kinds of input it accepts; empty for a source.
    pub fn accepts(&self) -> &[PortKind] {
        match self {
            Ports::Source(_) => &[],
            Ports::Takes(kind, _) => std::slice::from_ref(kind),
            Ports::Through(kinds) => kinds,
        }
    }

    /// What it gives when its input gives `input`.
    pub fn output(&self, input: Option<PortKind>) -> Option<PortKind> {
        match self {
            Ports::Source(kind) => Some(*kind),
            Ports::Takes(_, output) => *output,
            Ports::Through(_) => input,
        }
    }
}

/// The sizes an encoder can make: width and height divided by 1, 2 or 4.
pub const SCALES: [u8; 3] = [1, 2, 4];

fn check_scale(scale: u8, problems: &mut Vec<String>) {
    if !SCALES.contains(&scale) {
        problems.push(format!("scale must be 1, 2 or 4 (got {scale})"));
    }
}

/// What a JPEG consumer asks an encoder for: a quality and a size.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(deny_unknown_fields)]
pub struct JpegVariant {
    /// JPEG quality, 1..=100.
    pub quality: u8,
    /// Divides width and height: 1 (full size), 2 or 4. Default 1.
    #[serde(default = "full_size")]
    pub scale: u8,
}

fn full_size() -> u8 {
    1
}

impl JpegVariant {
    /// The qualities an encoder accepts.
    pub const QUALITY: RangeInclusive<u8> = 1..=100;

    pub fn full(quality: u8) -> Self {
        Self { quality, scale: 1 }
    }

    /// Every way this variant is out of range, in words; empty when it is valid. The encoders,
    /// the ladders and the config checks all ask this.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !Self::QUALITY.contains(&self.quality) {
            problems.push(format!("quality must be 1..=100 (got {})", self.quality));
        }
        check_scale(self.scale, &mut problems);
        problems
    }
}

impl fmt::Display for JpegVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scale {
            1 => write!(f, "q{}", self.quality),
            s => write!(f, "q{}/{s}", self.quality),
        }
    }
}

/// What a WebRTC consumer asks an H.264 encoder for: a bitrate and a size.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(deny_unknown_fields)]
pub struct H264Variant {
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Divides width and height: 1 (full size), 2 or 4. Default 1.
    #[serde(default = "full_size")]
    pub scale: u8,
}

impl H264Variant {
    /// The bitrates an encoder accepts, in kbit/s.
    pub const BITRATE_KBPS: RangeInclusive<u32> = 100..=50_000;

    /// The camera's own stream as a step of an `adaptive` ladder over a camera that passes its
    /// H.264 through: no bitrate or size of ours (bitrate 0, which no encoder takes), shown as
    /// `camera`.
    pub const CAMERA: H264Variant = H264Variant {
        bitrate_kbps: 0,
        scale: 1,
    };

    /// Every way this variant is out of range, in words; empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !Self::BITRATE_KBPS.contains(&self.bitrate_kbps) {
            problems.push(format!(
                "bitrate_kbps must be 100..=50000 (got {})",
                self.bitrate_kbps
            ));
        }
        check_scale(self.scale, &mut problems);
        problems
    }
}

impl fmt::Display for H264Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::CAMERA {
            return f.write_str("camera");
        }
        match self.scale {
            1 => write!(f, "{}k", self.bitrate_kbps),
            s => write!(f, "{}k/{s}", self.bitrate_kbps),
        }
    }
}

/// An encoder's output, whatever the codec: one stream per distinct variant (`V`), created on
/// demand and shared by everyone asking for that variant.
pub trait Feed<V>: Send + Sync {
    /// Subscribes to the stream of `variant` (`None`: the encoder's configured setting).
    fn subscribe(&self, variant: Option<V>) -> Result<Subscriber<EncodedFrame>, ServiceError>;
    /// The variant `subscribe(None)` gives, when it is one fixed variant: a viewer asking for only
    /// part of a variant (a size, not a quality) gets the rest from it.
    fn default_variant(&self) -> Option<V> {
        None
    }
    /// Makes the next frame of `variant` a keyframe; cheap, callable from any thread. A no-op
    /// where every frame is one (JPEG).
    fn request_keyframe(&self, _variant: Option<V>) {}
    /// Whether the stream of `variant` is a camera's own encoding passed through rather than an
    /// encoder's output: no bitrate or size of ours, and `request_keyframe` is not heard for it
    /// (the next keyframe comes when the camera sends it, so a consumer keeps what it needs to
    /// start a newcomer). A camera's feed has only that stream; an `adaptive` node over one has it
    /// as its top step and encoder outputs below.
    fn passes_through(&self, _variant: Option<V>) -> bool {
        false
    }
    /// For a stream that passes through: the frames since the camera's last keyframe, that one
    /// first (empty if none is kept), so that a newcomer can start now.
    fn since_keyframe(&self, _variant: Option<V>) -> Vec<Arc<EncodedFrame>> {
        Vec::new()
    }
    /// For a stream that passes through: what a consumer starting at frame `now` (a camera frame
    /// number) needs before it to decode it, the frames since the camera's keyframe before `now`;
    /// `None` when those are not kept whole (then it waits for the camera's next keyframe).
    fn gop_before(&self, variant: Option<V>, now: u64) -> Option<Vec<Arc<EncodedFrame>>> {
        whole_before(self.since_keyframe(variant), now)
    }
    /// How a viewer that did not ask for a variant moves between variants; `None`: it does not.
    fn policy(&self) -> Option<Box<dyn AdaptPolicy<V>>> {
        None
    }
}

/// The frames before frame `now` of `since_keyframe` (a camera's frames since its last keyframe),
/// when they run whole from that keyframe up to `now`; `None` otherwise.
fn whole_before(
    since_keyframe: Vec<Arc<EncodedFrame>>,
    now: u64,
) -> Option<Vec<Arc<EncodedFrame>>> {
    let before: Vec<_> = since_keyframe.into_iter().filter(|f| f.seq < now).collect();
    let whole = before.first().is_some_and(|f| f.keyframe)
        && before.last().is_some_and(|f| f.seq + 1 == now)
        && before.windows(2).all(|w| w[0].seq + 1 == w[1].seq);
    whole.then_some(before)
}

/// The frames skipped between `last` and `now` (frame numbers), taken from `since_keyframe` (a
/// camera's frames since its last keyframe): all `skipped` of them, or those from a keyframe on
/// (the chain starts again there); `None` when the chain cannot be mended.
pub fn missed(
    since_keyframe: Vec<Arc<EncodedFrame>>,
    last: u64,
    now: u64,
    skipped: u64,
) -> Option<Vec<Arc<EncodedFrame>>> {
    let missed: Vec<_> = since_keyframe
        .into_iter()
        .filter(|f| f.seq > last && f.seq < now)
        .collect();
    let whole = missed.len() as u64 == skipped;
    let restarts = missed.first().is_some_and(|f| f.keyframe);
    (whole || restarts).then_some(missed)
}

/// JPEG images, one stream per quality and size.
pub type JpegFeed = dyn Feed<JpegVariant>;
/// H.264 video, one stream per bitrate and size.
pub type H264Feed = dyn Feed<H264Variant>;

/// A running node's output, handed to the nodes wired to it.
#[derive(Clone)]
pub enum Port {
    Frames(Fanout<Frame>),
    Jpeg(Arc<JpegFeed>),
    H264(Arc<H264Feed>),
}

impl Port {
    pub fn kind(&self) -> PortKind {
        match self {
            Port::Frames(_) => PortKind::Frames,
            Port::Jpeg(_) => PortKind::Jpeg,
            Port::H264(_) => PortKind::H264,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_gets_the_frames_since_the_keyframe_only_when_they_are_whole() {
        let frame = |seq: u64| {
            Arc::new(EncodedFrame {
                camera: "cam".into(),
                seq,
                captured_at: std::time::SystemTime::now(),
                codec: crate::frame::Codec::H264,
                keyframe: seq == 10,
                width: 16,
                height: 16,
                data: bytes::Bytes::new(),
                behind: 0,
            })
        };
        let gop: Vec<_> = (10..20).map(frame).collect();
        let seqs = |m: Option<Vec<Arc<EncodedFrame>>>| {
            m.map(|v| v.iter().map(|f| f.seq).collect::<Vec<_>>())
        };
        assert_eq!(seqs(whole_before(gop.clone(), 13)), Some(vec![10, 11, 12]));
        assert_eq!(
            seqs(whole_before(gop.clone(), 10)),
            None,
            "nothing before a keyframe"
        );
        let holed: Vec<_> = gop.iter().filter(|f| f.seq != 12).cloned().collect();
        assert_eq!(seqs(whole_before(holed, 15)), None, "a hole");
        assert_eq!(
            seqs(whole_before(gop[..2].to_vec(), 13)),
            None,
            "not up to it"
        );
        assert_eq!(
            seqs(whole_before(gop[1..].to_vec(), 13)),
            None,
            "no keyframe first"
        );
        assert_eq!(seqs(whole_before(Vec::new(), 13)), None);
    }

    #[test]
    fn variants_say_every_problem() {
        assert!(JpegVariant::full(80).problems().is_empty());
        let bad = JpegVariant {
            quality: 0,
            scale: 3,
        };
        assert_eq!(
            bad.problems(),
            [
                "quality must be 1..=100 (got 0)",
                "scale must be 1, 2 or 4 (got 3)"
            ]
        );
        let h = H264Variant {
            bitrate_kbps: 99,
            scale: 2,
        };
        assert_eq!(h.problems(), ["bitrate_kbps must be 100..=50000 (got 99)"]);
    }
}
