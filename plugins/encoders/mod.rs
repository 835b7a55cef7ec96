//! Encoders: frames in, encoded images out.

#[cfg(feature = "webrtc")]
pub mod h264;
pub mod jpeg;
pub mod outputs;
pub mod pixels;
