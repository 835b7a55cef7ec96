//! The data that flows along the graph's edges: captured pictures (`Frame`) and encoded ones
//! (`EncodedFrame`). Each is built once and shared by `Arc`; the bytes are `Bytes`, never copied
//! per consumer.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

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
