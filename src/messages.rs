//! The data that flows through the graph (`Frame`, `EncodedFrame`) and the actix messages the
//! HTTP layer sends to nodes. Frames are built once and shared by `Arc`; their pixels are `Bytes`.

use std::sync::Arc;
use std::time::SystemTime;

use actix::Message;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::error::ServiceError;

/// How the bytes of a [`Frame`] are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 8-bit RGB, `width * 3` bytes per row, no padding.
    Rgb24,
    /// A complete JPEG image, as some cameras and the `files` source deliver it.
    Jpeg,
}

/// One captured picture.
#[derive(Clone, Debug)]
pub struct Frame {
    pub camera: Arc<str>,
    /// Counts up from 0 for each capture session of a camera.
    pub seq: u64,
    pub captured_at: SystemTime,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub data: Bytes,
}

/// What an encoder produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Jpeg,
    /// H.264 Annex B (start codes), Constrained Baseline.
    H264,
}

/// One encoded picture, shared by every viewer of the same encoder setting.
#[derive(Clone, Debug)]
pub struct EncodedFrame {
    pub camera: Arc<str>,
    pub seq: u64,
    pub captured_at: SystemTime,
    pub codec: Codec,
    pub keyframe: bool,
    pub width: u32,
    pub height: u32,
    pub data: Bytes,
    /// Camera frames the encoder skipped just before this one because it was still busy (0 while
    /// it keeps up). Viewers count them as lost, so an overloaded encoder moves its viewers down
    /// an adaptive ladder just as a slow link does.
    pub behind: u64,
}

/// Turns a camera's capture on or off (the guide's start/stop).
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct SetCapture {
    pub on: bool,
}

/// The body of an HTTP streaming response.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Opens an MJPEG stream for one viewer.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<ByteStream, ServiceError>")]
pub struct OpenStream {
    /// JPEG quality; `None` is the encoder's configured quality.
    pub quality: Option<u8>,
    /// Frames per second for this viewer; `None` is every frame.
    pub fps: Option<f64>,
}

/// The latest JPEG of a camera, waiting briefly for one if capture was idle.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<Arc<EncodedFrame>, ServiceError>")]
pub struct TakeSnapshot;

/// Re-reads the configuration file and applies the difference.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<crate::graph::Changes, ServiceError>")]
pub struct Reload {
    /// What asked for it, for logs and `GET /api/graph`: `file`, `SIGHUP`, `api`.
    pub trigger: &'static str,
}

/// Adds a camera (with the usual chain) at run time.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct AddCamera {
    pub name: String,
    pub camera: crate::config::short::CameraShortForm,
}

/// Removes a camera added at run time, and its chain.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct RemoveCamera {
    pub name: String,
}

/// Saves a snapshot to disk now (`POST /api/camera/snapshot/{camera}`).
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "Result<SavedSnapshot, ServiceError>")]
pub struct SaveSnapshot;

/// A picture a snapshot sink wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SavedSnapshot {
    /// File name within the sink's folder.
    pub file: String,
    pub bytes: u64,
}

/// Opens a WebRTC peer for a camera: the remote offer in, the complete answer out (non-trickle:
/// the server's ICE candidates are already in it).
#[derive(Message, Debug)]
#[rtype(result = "Result<PeerAnswer, ServiceError>")]
pub struct OpenPeer {
    /// The remote SDP offer.
    pub sdp: String,
    /// `ws` or `whep`, for logs.
    pub signalling: &'static str,
    /// Where the peer reports later events (WS signalling); `None` for WHEP.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<PeerEvent>>,
}

/// The answer to an [`OpenPeer`].
#[derive(Clone, Debug)]
pub struct PeerAnswer {
    /// The session id, for candidates and closing.
    pub session: String,
    pub sdp: String,
}

/// Something a peer tells its signalling channel after the answer.
#[derive(Clone, Debug)]
pub enum PeerEvent {
    /// A local ICE candidate gathered late (JSON as `RTCIceCandidateInit`).
    Candidate(serde_json::Value),
    /// The peer was closed by the server (failed, disconnected, timed out, node stopped).
    Closed(String),
}

/// A remote ICE candidate for an open peer (`RTCIceCandidateInit` as JSON).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct AddPeerCandidate {
    pub session: String,
    pub candidate: serde_json::Value,
}

/// Closes a peer (WS closed, WHEP DELETE).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct ClosePeer {
    pub session: String,
}
