//! Decoders: a camera's encoded video in, pictures out, for the nodes that need pixels.

#[cfg(feature = "webrtc")]
pub mod h264;
