//! The encoder actor and its per-variant outputs. The actor lives on its own arbiter (thread), so
//! encoding never blocks the HTTP workers; it subscribes to the camera only while some variant has
//! a subscriber. Each frame is decoded (JPEG input) and scaled at most once per size (`Pixels`),
//! and encoded once per variant in use.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Context, StreamHandler};
use bytes::Bytes;
use prometheus::{Histogram, IntCounter, IntGauge};
use thiserror::Error;

use crate::error::ServiceError;
use crate::fanout::{watch_demand, Fanout, InputLink, Subscriber};
use crate::frame::{Codec, EncodedFrame, Frame, PixelFormat};
use crate::metrics::{DropReason, NodeMetrics};
use crate::plugins::encoders::outputs::Outputs;
use crate::plugins::encoders::pixels::{Pixels, PixelsError};
use crate::port::{Feed, JpegVariant};
use crate::stop::{stop_on, StopToken};

/// One output per variant in use.
pub struct Variants {
    default: JpegVariant,
    outputs: Outputs<JpegVariant>,
}

impl Variants {
    pub fn new(node: &str, default_quality: u8, max: usize) -> Self {
        Self {
            default: JpegVariant::full(default_quality),
            outputs: Outputs::new(format!("encoder '{node}'"), max),
        }
    }

    /// The variants being encoded now, e.g. `["q50", "q80", "q40/2"]`.
    pub fn in_use(&self) -> Vec<String> {
        self.outputs.in_use()
    }
}

impl Feed<JpegVariant> for Variants {
    fn subscribe(
        &self,
        variant: Option<JpegVariant>,
    ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
        let variant = variant.unwrap_or(self.default);
        let problems = variant.problems();
        if !problems.is_empty() {
            return Err(ServiceError::BadRequest(problems.join("; ")));
        }
        self.outputs.subscribe(variant)
    }

    fn default_variant(&self) -> Option<JpegVariant> {
        Some(self.default)
    }
}

#[derive(Clone)]
pub(super) struct EncoderMetrics {
    pub encoded: IntCounter,
    pub dropped_behind: IntCounter,
    seconds: Histogram,
    variants: IntGauge,
}

impl EncoderMetrics {
    pub fn new(m: &NodeMetrics) -> Self {
        Self {
            encoded: m.frames_encoded(),
            dropped_behind: m.frames_dropped(DropReason::Behind),
            seconds: m.encode_seconds(),
            variants: m.encoder_settings(),
        }
    }
}

/// Why a JPEG could not be made.
#[derive(Debug, Error)]
pub enum JpegError {
    #[error("cannot start the JPEG compressor: {0}")]
    Compressor(turbojpeg::Error),
    #[error("cannot set JPEG quality {quality}: {source}")]
    Quality {
        quality: u8,
        source: turbojpeg::Error,
    },
    #[error("cannot compress {width}x{height} to JPEG: {source}")]
    Compress {
        width: u32,
        height: u32,
        source: turbojpeg::Error,
    },
    #[error(transparent)]
    Pixels(#[from] PixelsError),
}

/// Compresses packed RGB at `quality`, 4:2:0.
pub(crate) fn encode_rgb(
    c: &mut turbojpeg::Compressor,
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Bytes, JpegError> {
    c.set_quality(i32::from(quality))
        .map_err(|source| JpegError::Quality { quality, source })?;
    let (w, h) = (width as usize, height as usize);
    let image = turbojpeg::Image {
        pixels: rgb,
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    c.compress_to_vec(image)
        .map(Bytes::from)
        .map_err(|source| JpegError::Compress {
            width,
            height,
            source,
        })
}

pub(super) struct JpegEncoder {
    input: InputLink<Frame>,
    variants: Arc<Variants>,
    metrics: EncoderMetrics,
    compressor: Option<turbojpeg::Compressor>,
    pixels: Pixels,
    stop: StopToken,
}

impl JpegEncoder {
    pub fn new(
        input: Fanout<Frame>,
        variants: Arc<Variants>,
        metrics: EncoderMetrics,
        stop: StopToken,
    ) -> Self {
        Self {
            input: InputLink::new(input),
            variants,
            metrics,
            compressor: None,
            pixels: Pixels::default(),
            stop,
        }
    }

    /// Subscribes to the camera while some variant has listeners, and lets go when none has.
    fn follow_demand(&mut self, ctx: &mut Context<Self>) {
        let active = self.variants.outputs.active().len();
        self.metrics.variants.set(active as i64);
        self.input.follow(active > 0, ctx);
    }

    fn encode(
        &mut self,
        frame: &Frame,
        variant: JpegVariant,
    ) -> Result<(Bytes, u32, u32), JpegError> {
        if self.compressor.is_none() {
            self.compressor = Some(compressor()?);
        }
        // Infallible: set just above when it was missing.
        let compressor = self.compressor.as_mut().expect("just made");
        let (rgb, width, height) = self.pixels.rgb(frame, variant.scale)?;
        let data = encode_rgb(compressor, rgb, width, height, variant.quality)?;
        Ok((data, width, height))
    }
}

/// A compressor set up as the encoder uses it (4:2:0).
pub(crate) fn compressor() -> Result<turbojpeg::Compressor, JpegError> {
    let mut c = turbojpeg::Compressor::new().map_err(JpegError::Compressor)?;
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2)
        .map_err(JpegError::Compressor)?;
    Ok(c)
}

impl Actor for JpegEncoder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        stop_on(&self.stop, ctx);
        watch_demand(self.variants.outputs.demand(), ctx, |act, _, ctx| {
            act.follow_demand(ctx)
        });
    }
}

impl StreamHandler<(Arc<Frame>, u64)> for JpegEncoder {
    fn handle(&mut self, (frame, skipped): (Arc<Frame>, u64), _: &mut Self::Context) {
        if skipped > 0 {
            self.metrics.dropped_behind.inc_by(skipped);
        }
        for (variant, output) in self.variants.outputs.active() {
            let passthrough = frame.format == PixelFormat::Jpeg && variant == self.variants.default;
            let started = Instant::now();
            let (data, width, height) = if passthrough {
                (frame.data.clone(), frame.width, frame.height)
            } else {
                match self.encode(&frame, variant) {
                    Ok(encoded) => encoded,
                    Err(e) => {
                        tracing::warn!(camera = %frame.camera, "JPEG encode failed: {e}");
                        continue;
                    }
                }
            };
            if !passthrough {
                self.metrics
                    .seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.encoded.inc();
            }
            output.out.publish(Arc::new(EncodedFrame {
                camera: frame.camera.clone(),
                seq: frame.seq,
                captured_at: frame.captured_at,
                codec: Codec::Jpeg,
                keyframe: true,
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
