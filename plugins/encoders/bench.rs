//! The encoders' public surface for measuring them outside the graph (`camgraph-bench`): the code
//! an encoder node runs on each frame (scaling, JPEG compression, an H.264 session), one frame at a
//! time, without actors or fan-out. The rest of the encoders' insides stays private to them.

use bytes::Bytes;

#[cfg(feature = "webrtc")]
pub use super::h264::H264Error;
pub use super::jpeg::JpegError;
use super::pixels::Pixels;
pub use super::pixels::PixelsError;
use crate::frame::Frame;
#[cfg(feature = "webrtc")]
use crate::plugins::encoders::h264::H264EncoderConfig;
#[cfg(feature = "webrtc")]
use crate::port::H264Variant;

/// A frame's packed RGB at full, 1/2 or 1/4 size, made as the encoders make it (a JPEG frame
/// decoded once, box-filtered copies, buffers reused from frame to frame).
#[derive(Default)]
pub struct Scaler(Pixels);

impl Scaler {
    pub fn new() -> Self {
        Self::default()
    }

    /// `frame`'s pixels divided in size by `scale` (1, 2 or 4), with their width and height.
    pub fn rgb<'a>(
        &'a mut self,
        frame: &'a Frame,
        scale: u8,
    ) -> Result<(&'a [u8], u32, u32), PixelsError> {
        self.0.rgb(frame, scale)
    }
}

/// JPEG compression as the `jpeg_encoder` node does it: one turbojpeg compressor reused for every
/// frame, 4:2:0.
pub struct JpegCompressor(turbojpeg::Compressor);

impl JpegCompressor {
    pub fn new() -> Result<Self, JpegError> {
        super::jpeg::compressor().map(Self)
    }

    /// Compresses packed RGB of `width` x `height` at `quality` (1..=100).
    pub fn encode(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        quality: u8,
    ) -> Result<Bytes, JpegError> {
        super::jpeg::encode_rgb(&mut self.0, rgb, width, height, quality)
    }
}

/// One H.264 variant as the `h264_encoder` node encodes it: an openh264 session (Constrained
/// Baseline) at one picture size.
#[cfg(feature = "webrtc")]
pub struct H264Session(super::h264::Session);

#[cfg(feature = "webrtc")]
impl H264Session {
    /// A session for `variant`'s bitrate at `width` x `height`, with the node's other settings.
    pub fn new(
        config: &H264EncoderConfig,
        variant: H264Variant,
        width: u32,
        height: u32,
    ) -> Result<Self, H264Error> {
        super::h264::Session::new(config, variant, width, height).map(Self)
    }

    /// Encodes one picture of packed RGB; returns the bitstream (empty if the rate control
    /// skipped it) and whether it is an IDR.
    pub fn encode(&mut self, rgb: &[u8], force_idr: bool) -> Result<(Bytes, bool), H264Error> {
        self.0.encode(rgb, force_idr)
    }
}
