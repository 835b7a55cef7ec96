//! Encoders: frames in, encoded images out.

pub mod bench;
#[cfg(feature = "webrtc")]
pub mod h264;
pub mod jpeg;
mod outputs;
mod pixels;
