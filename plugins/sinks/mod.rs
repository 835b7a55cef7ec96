//! Sinks: where encoded frames leave camgraph.

pub mod mjpeg;
pub mod snapshot;
#[cfg(feature = "webrtc")]
pub mod webrtc;
#[cfg(feature = "webrtc")]
pub mod whip;
