//! Every node type camgraph knows, registered in one list, and the short form of `cameras:`.
//! Adding a type, HTTP-facing or not, is one folder here and one line in `registry()`; main.rs
//! hands the registry to the core, which never names a plugin.

pub mod control;
pub mod decoders;
pub mod encoders;
pub mod short_form;
pub mod sinks;
pub mod sources;

use crate::registry::Registry;

pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register::<sources::CameraConfig>();
    r.register::<control::adaptive::AdaptiveConfig>();
    r.register::<control::dropper::FrameDropperConfig>();
    r.register::<encoders::jpeg::JpegEncoderConfig>();
    r.register::<sinks::mjpeg::MjpegSinkConfig>();
    r.register::<sinks::snapshot::SnapshotSinkConfig>();
    #[cfg(feature = "webrtc")]
    r.register::<encoders::h264::H264EncoderConfig>();
    #[cfg(feature = "webrtc")]
    r.register::<decoders::h264::H264DecoderConfig>();
    #[cfg(feature = "webrtc")]
    r.register::<sinks::webrtc::WebRtcSinkConfig>();
    #[cfg(feature = "webrtc")]
    r.register::<sinks::rtp::RtpSinkConfig>();
    #[cfg(feature = "webrtc")]
    r.register::<sinks::whip::WhipSinkConfig>();
    r.set_short_form(short_form::UsualChain);
    r
}
