//! What a plugin implements (`NodeConfig`) and what the graph hands it (`BuildContext`) and gets
//! back (`NodeHandle`). Ports are typed so the graph can refuse an edge that does not fit before
//! anything starts.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use actix::Recipient;
use serde::de::DeserializeOwned;

use crate::error::{BuildError, ServiceError};
use crate::fanout::{Fanout, Subscriber};
use crate::messages::{
    AddPeerCandidate, ClosePeer, EncodedFrame, Frame, OpenPeer, OpenStream, SaveSnapshot,
    SetCapture, TakeSnapshot,
};
use crate::metrics::NodeMetrics;
use crate::stop::Stopper;

/// The kind of data on an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// Captured frames (`Frame`): raw pixels, or JPEG as a camera delivered it.
    Frames,
    /// JPEG images from an encoder.
    Jpeg,
    /// H.264 video from an encoder, for WebRTC.
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
    pub fn full(quality: u8) -> Self {
        Self { quality, scale: 1 }
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

impl fmt::Display for H264Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scale {
            1 => write!(f, "{}k", self.bitrate_kbps),
            s => write!(f, "{}k/{s}", self.bitrate_kbps),
        }
    }
}

/// An encoder's output: one stream per distinct variant, created on demand and shared by everyone
/// asking for that variant.
pub trait EncodedFeed: Send + Sync {
    /// Subscribes to the stream of `variant` (`None`: the encoder's configured setting).
    fn subscribe(
        &self,
        variant: Option<JpegVariant>,
    ) -> Result<Subscriber<EncodedFrame>, ServiceError>;
    /// How a viewer that did not ask for a variant moves between variants; `None`: it does not.
    fn policy(&self) -> Option<Box<dyn AdaptPolicy<JpegVariant>>> {
        None
    }
}

/// Moves one viewer along a ladder of variants (`V`) from how its delivery goes.
pub trait AdaptPolicy<V>: Send {
    /// The variant to start with.
    fn initial(&self) -> V;
    /// `lost` of the last `total` units sent to the viewer did not reach it: frames it was too
    /// slow for (MJPEG), or packets its receiver reports lost (WebRTC). Returns the variant to
    /// switch to, if the viewer should move.
    fn observe(&mut self, now: Instant, lost: u64, total: u64) -> Option<V>;
    /// The move `observe` just returned could not be made (the encoder has no room for another
    /// variant): the viewer is back where it was.
    fn refused(&mut self);
}

/// One viewer's frames from a feed, following the feed's policy if it has one.
pub struct FeedReader {
    /// Weak: a viewer must not keep a removed encoder's outputs alive, or its stream never ends.
    feed: std::sync::Weak<dyn EncodedFeed>,
    frames: Subscriber<EncodedFrame>,
    policy: Option<Box<dyn AdaptPolicy<JpegVariant>>>,
}

impl FeedReader {
    /// A reader for `variant`; without one, the feed's policy (if any) picks and adapts it.
    pub fn open(
        feed: Arc<dyn EncodedFeed>,
        variant: Option<JpegVariant>,
    ) -> Result<Self, ServiceError> {
        let policy = if variant.is_none() {
            feed.policy()
        } else {
            None
        };
        let frames = feed.subscribe(policy.as_ref().map(|p| p.initial()).or(variant))?;
        Ok(Self {
            feed: Arc::downgrade(&feed),
            frames,
            policy,
        })
    }

    /// The next frame and how many were missed before it (this viewer was behind); `None` once
    /// the feed is gone. The policy also counts the frames the encoder was too busy for.
    pub async fn next(&mut self) -> Option<(Arc<EncodedFrame>, u64)> {
        let (frame, skipped) = self.frames.next().await?;
        let lost = skipped + frame.behind;
        if let Some(variant) = self
            .policy
            .as_mut()
            .and_then(|p| p.observe(Instant::now(), lost, lost + 1))
        {
            match self.feed.upgrade()?.subscribe(Some(variant)) {
                Ok(frames) => self.frames = frames,
                Err(e) => {
                    tracing::warn!("viewer stays on its variant: {e}");
                    if let Some(p) = self.policy.as_mut() {
                        p.refused();
                    }
                }
            }
        }
        Some((frame, skipped))
    }

    /// The newest frame of the current variant, without waiting.
    pub fn latest(&self) -> Option<Arc<EncodedFrame>> {
        self.frames.latest()
    }
}

/// A video encoder's output (H.264): one stream per variant in use, each shared by every peer on
/// it, and a way to ask for a keyframe when a peer joins, switches or lost pictures.
pub trait VideoFeed: Send + Sync {
    /// Subscribes to the stream of `variant` (`None`: the encoder's configured setting).
    fn subscribe(
        &self,
        variant: Option<H264Variant>,
    ) -> Result<Subscriber<EncodedFrame>, ServiceError>;
    /// Makes the next frame of `variant` a keyframe (IDR); cheap, and may be called from any
    /// thread.
    fn request_keyframe(&self, variant: Option<H264Variant>);
    /// How a peer moves between variants; `None`: it does not.
    fn policy(&self) -> Option<Box<dyn AdaptPolicy<H264Variant>>> {
        None
    }
}

/// A running node's output, handed to the nodes wired to it.
#[derive(Clone)]
pub enum Port {
    Frames(Fanout<Frame>),
    Jpeg(Arc<dyn EncodedFeed>),
    H264(Arc<dyn VideoFeed>),
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

/// What a node offers to the HTTP API.
#[derive(Clone)]
pub enum Service {
    /// Capture on/off for the node's camera.
    Capture(Recipient<SetCapture>),
    /// MJPEG streams and snapshots of the node's camera.
    Mjpeg {
        stream: Recipient<OpenStream>,
        snapshot: Recipient<TakeSnapshot>,
    },
    /// Saving pictures of the node's camera to disk.
    SaveSnapshot(Recipient<SaveSnapshot>),
    /// WebRTC peers of the node's camera (WS signalling and WHEP).
    WebRtc {
        open: Recipient<OpenPeer>,
        candidate: Recipient<AddPeerCandidate>,
        close: Recipient<ClosePeer>,
    },
}

/// Everything a node needs to start.
pub struct BuildContext {
    /// The node's id in the YAML file.
    pub id: String,
    /// The camera at the root of the node's chain (the node's own id for a camera).
    pub camera: Arc<str>,
    /// The outputs of the node's inputs, in the order the YAML lists them.
    pub inputs: Vec<Port>,
    /// Metrics labelled for this node.
    pub metrics: NodeMetrics,
}

impl BuildContext {
    /// The single input of a node that takes one frames input.
    pub fn frames_input(&self) -> Result<Fanout<Frame>, BuildError> {
        match self.inputs.first() {
            Some(Port::Frames(f)) => Ok(f.clone()),
            _ => Err(BuildError::new(
                &self.id,
                "needs one input of kind 'frames'",
            )),
        }
    }

    /// The single input of a node that takes one H.264 input.
    pub fn h264_input(&self) -> Result<Arc<dyn VideoFeed>, BuildError> {
        match self.inputs.first() {
            Some(Port::H264(f)) => Ok(f.clone()),
            _ => Err(BuildError::new(&self.id, "needs one input of kind 'h264'")),
        }
    }

    /// The single input of a node that takes one JPEG input.
    pub fn jpeg_input(&self) -> Result<Arc<dyn EncodedFeed>, BuildError> {
        match self.inputs.first() {
            Some(Port::Jpeg(f)) => Ok(f.clone()),
            _ => Err(BuildError::new(&self.id, "needs one input of kind 'jpeg'")),
        }
    }
}

/// A live node's statistics for `GET /api/graph`.
pub type StatsFn = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A started node.
pub struct NodeHandle {
    pub output: Option<Port>,
    pub services: Vec<Service>,
    pub stats: Option<StatsFn>,
    /// Stops the node: every actor of the node watches a token of it (`stop::stop_on`), and
    /// threads end with their actors. Firing it is the only way a node stops.
    pub stop: Stopper,
}

/// One problem in a node's settings: the field it is about and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldIssue {
    pub field: String,
    pub message: String,
}

impl FieldIssue {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// A node type: its YAML settings, and how to check and start it.
pub trait NodeConfig: DeserializeOwned + Clone + Send + Sync + 'static {
    /// The YAML `type:` that selects this plugin.
    const TYPE: &'static str;
    fn ports(&self) -> Ports;
    /// Every problem in the settings, not just the first.
    fn validate(&self) -> Vec<FieldIssue>;
    /// Starts the node's actors.
    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError>;
}

/// Checks that `value` lies in `range`, in the wording every plugin uses.
pub fn check_range<T>(
    issues: &mut Vec<FieldIssue>,
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) where
    T: PartialOrd + fmt::Display + Copy,
{
    if !range.contains(&value) {
        issues.push(FieldIssue::new(
            field,
            format!(
                "'{field}' must be {}..={} (got {value})",
                range.start(),
                range.end()
            ),
        ));
    }
}
