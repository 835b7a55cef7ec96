//! The H.264 encoder actor and its per-variant outputs. The actor lives on its own arbiter
//! (thread), subscribes to the camera only while some variant has a listener, and encodes each
//! frame once per variant in use (bitrate and size), for every peer on that variant; a peer's join,
//! switch or loss makes the next frame of its variant an IDR.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Context, StreamHandler};
use bytes::Bytes;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::{OpenH264API, Timestamp};
use prometheus::{Histogram, IntCounter, IntGauge};
use thiserror::Error;

use super::H264EncoderConfig;
use crate::error::ServiceError;
use crate::fanout::{watch_demand, Fanout, InputLink, Subscriber};
use crate::frame::{Codec, EncodedFrame, Frame};
use crate::metrics::{DropReason, NodeMetrics};
use crate::plugins::encoders::outputs::Outputs;
use crate::plugins::encoders::pixels::{Pixels, PixelsError};
use crate::port::{Feed, H264Variant};
use crate::stop::{stop_on, StopToken};

/// The encoder's outputs: one per variant in use.
pub struct H264Output {
    default: H264Variant,
    outputs: Outputs<H264Variant>,
}

impl H264Output {
    pub fn new(node: &str, default: H264Variant, max: usize) -> Self {
        Self {
            default,
            outputs: Outputs::new(format!("H.264 encoder '{node}'"), max),
        }
    }

    /// The variants being encoded now, e.g. `["2000k", "300k/2"]`.
    pub fn in_use(&self) -> Vec<String> {
        self.outputs.in_use()
    }

    /// Subscribers over all variants.
    pub fn listeners(&self) -> usize {
        self.outputs.listeners()
    }
}

impl Feed<H264Variant> for H264Output {
    fn subscribe(
        &self,
        variant: Option<H264Variant>,
    ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
        let variant = variant.unwrap_or(self.default);
        let problems = variant.problems();
        if !problems.is_empty() {
            return Err(ServiceError::BadRequest(problems.join("; ")));
        }
        self.outputs.subscribe(variant)
    }

    fn default_variant(&self) -> Option<H264Variant> {
        Some(self.default)
    }

    fn request_keyframe(&self, variant: Option<H264Variant>) {
        if let Some(o) = self.outputs.get(&variant.unwrap_or(self.default)) {
            o.keyframe.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Clone)]
pub(super) struct EncoderMetrics {
    pub encoded: IntCounter,
    pub keyframes: Arc<std::sync::atomic::AtomicU64>,
    pub dropped_behind: IntCounter,
    dropped_failed: IntCounter,
    seconds: Histogram,
    settings: IntGauge,
}

impl EncoderMetrics {
    pub fn new(m: &NodeMetrics) -> Self {
        Self {
            encoded: m.frames_encoded(),
            keyframes: Default::default(),
            dropped_behind: m.frames_dropped(DropReason::Behind),
            dropped_failed: m.frames_dropped(DropReason::EncodeFailed),
            seconds: m.encode_seconds(),
            settings: m.encoder_settings(),
        }
    }
}

/// Why a picture could not be encoded to H.264.
#[derive(Debug, Error)]
pub enum H264Error {
    #[error(transparent)]
    Pixels(#[from] PixelsError),
    /// H.264 needs even sizes; warned about once, then only counted.
    #[error("odd size {width}x{height}")]
    OddSize { width: u32, height: u32 },
    #[error("cannot start openh264 for {variant} at {width}x{height}: {source}")]
    Start {
        variant: H264Variant,
        width: u32,
        height: u32,
        source: openh264::Error,
    },
    #[error("openh264: {0}")]
    Encode(openh264::Error),
}

/// An openh264 encoder for one variant at one picture size (measured through `encoders::bench`).
pub(crate) struct Session {
    encoder: Encoder,
    yuv: YUVBuffer,
    width: u32,
    height: u32,
    started: Instant,
}

impl Session {
    pub fn new(
        config: &H264EncoderConfig,
        variant: H264Variant,
        width: u32,
        height: u32,
    ) -> Result<Self, H264Error> {
        let settings = EncoderConfig::new()
            .bitrate(BitRate::from_bps(variant.bitrate_kbps * 1000))
            .max_frame_rate(FrameRate::from_hz(config.max_fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(config.keyframe_interval))
            .num_threads(1);
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), settings).map_err(|source| {
                H264Error::Start {
                    variant,
                    width,
                    height,
                    source,
                }
            })?;
        Ok(Self {
            encoder,
            yuv: YUVBuffer::new(width as usize, height as usize),
            width,
            height,
            started: Instant::now(),
        })
    }

    /// The picture size it encodes.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Encodes one picture; returns the bitstream (empty if the rate control skipped it) and
    /// whether it is an IDR.
    pub fn encode(&mut self, rgb: &[u8], force_idr: bool) -> Result<(Bytes, bool), H264Error> {
        if force_idr {
            self.encoder.force_intra_frame();
        }
        let size = (self.width as usize, self.height as usize);
        self.yuv.read_rgb8(RgbSliceU8::new(rgb, size));
        let at = Timestamp::from_millis(self.started.elapsed().as_millis() as u64);
        let stream = self
            .encoder
            .encode_at(&self.yuv, at)
            .map_err(H264Error::Encode)?;
        let keyframe = matches!(stream.frame_type(), FrameType::IDR);
        Ok((Bytes::from(stream.to_vec()), keyframe))
    }
}

pub(super) struct H264Encoder {
    input: InputLink<Frame>,
    output: Arc<H264Output>,
    config: H264EncoderConfig,
    metrics: EncoderMetrics,
    sessions: HashMap<H264Variant, Session>,
    pixels: Pixels,
    warned_odd: bool,
    stop: StopToken,
}

impl H264Encoder {
    pub fn new(
        input: Fanout<Frame>,
        output: Arc<H264Output>,
        config: H264EncoderConfig,
        metrics: EncoderMetrics,
        stop: StopToken,
    ) -> Self {
        Self {
            input: InputLink::new(input),
            output,
            config,
            metrics,
            sessions: HashMap::new(),
            pixels: Pixels::default(),
            warned_odd: false,
            stop,
        }
    }

    /// Subscribes to the camera while some variant has listeners, and lets go when none has.
    fn follow_demand(&mut self, ctx: &mut Context<Self>) {
        let active = self.output.outputs.active();
        tracing::debug!(variants = ?active.iter().map(|(v, _)| v.to_string()).collect::<Vec<_>>(), "h264_encoder follows demand");
        self.metrics.settings.set(active.len() as i64);
        self.sessions
            .retain(|v, _| active.iter().any(|(a, _)| a == v));
        self.input.follow(!active.is_empty(), ctx);
    }

    /// One variant of `frame`: the bitstream (empty if skipped), IDR or not, and the size.
    fn encode(
        &mut self,
        frame: &Frame,
        variant: H264Variant,
        force_idr: bool,
    ) -> Result<(Bytes, bool, u32, u32), H264Error> {
        let (rgb, width, height) = self.pixels.rgb(frame, variant.scale)?;
        if width % 2 == 1 || height % 2 == 1 {
            if !self.warned_odd {
                tracing::warn!(camera = %frame.camera, "H.264 needs even width and height (got {width}x{height})");
                self.warned_odd = true;
            }
            return Err(H264Error::OddSize { width, height });
        }
        let fits = matches!(self.sessions.get(&variant), Some(s) if (s.width, s.height) == (width, height));
        if !fits {
            let session = Session::new(&self.config, variant, width, height)?;
            self.sessions.insert(variant, session);
        }
        // Infallible: inserted just above unless one of this size was there.
        let session = self.sessions.get_mut(&variant).expect("just made");
        let (data, keyframe) = session.encode(rgb, force_idr)?;
        Ok((data, keyframe, width, height))
    }
}

impl Actor for H264Encoder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
        watch_demand(self.output.outputs.demand(), ctx, |act, _, ctx| {
            act.follow_demand(ctx)
        });
    }
}

impl StreamHandler<(Arc<Frame>, u64)> for H264Encoder {
    fn handle(&mut self, (frame, skipped): (Arc<Frame>, u64), _: &mut Self::Context) {
        if skipped > 0 {
            self.metrics.dropped_behind.inc_by(skipped);
        }
        for (variant, output) in self.output.outputs.active() {
            let force = output.keyframe.swap(false, Ordering::Relaxed);
            let started = Instant::now();
            let (data, keyframe, width, height) = match self.encode(&frame, variant, force) {
                Ok(r) => r,
                Err(e) => {
                    if !matches!(e, H264Error::OddSize { .. }) {
                        tracing::warn!(camera = %frame.camera, %variant, "H.264 encode failed: {e}");
                    }
                    if force {
                        output.keyframe.store(true, Ordering::Relaxed);
                    }
                    self.metrics.dropped_failed.inc();
                    continue;
                }
            };
            self.metrics
                .seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics.encoded.inc();
            if data.is_empty() {
                // The rate control skipped this picture.
                continue;
            }
            if keyframe {
                tracing::debug!(camera = %frame.camera, %variant, seq = frame.seq, force, "h264_encoder: IDR");
                self.metrics.keyframes.fetch_add(1, Ordering::Relaxed);
            }
            output.out.publish(Arc::new(EncodedFrame {
                camera: frame.camera.clone(),
                seq: frame.seq,
                captured_at: frame.captured_at,
                codec: Codec::H264,
                keyframe,
                width,
                height,
                data,
                behind: skipped,
            }));
        }
    }

    /// The camera stopped; the graph stops this node too.
    fn finished(&mut self, _: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn an_odd_size_is_its_own_error_and_an_even_one_encodes() {
        let metrics = Metrics::new().node("cam", "enc", "h264_encoder");
        let default = H264Variant {
            bitrate_kbps: 500,
            scale: 1,
        };
        let mut encoder = H264Encoder::new(
            Fanout::new(),
            Arc::new(H264Output::new("enc", default, 2)),
            H264EncoderConfig::default(),
            EncoderMetrics::new(&metrics),
            crate::stop::Stopper::new().token(),
        );
        let frame = |width: u32| Frame {
            camera: "cam".into(),
            seq: u64::from(width),
            captured_at: SystemTime::now(),
            width,
            height: 64,
            format: crate::frame::PixelFormat::Rgb24,
            data: vec![128; width as usize * 64 * 3].into(),
        };
        let err = encoder.encode(&frame(65), default, false).unwrap_err();
        assert!(
            matches!(
                err,
                H264Error::OddSize {
                    width: 65,
                    height: 64
                }
            ),
            "{err:?}"
        );
        let (data, keyframe, width, height) = encoder.encode(&frame(64), default, false).unwrap();
        assert!(!data.is_empty() && keyframe, "the first picture is an IDR");
        assert_eq!((width, height), (64, 64));
    }
}
