//! Sinks: where encoded frames leave camgraph.

#[cfg(feature = "webrtc")]
pub mod h264_rtp;
pub mod mjpeg;
#[cfg(feature = "webrtc")]
pub mod rtp;
pub mod snapshot;
#[cfg(feature = "webrtc")]
pub mod webrtc;
#[cfg(feature = "webrtc")]
pub mod whip;
