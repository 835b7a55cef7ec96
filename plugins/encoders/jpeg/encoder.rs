//! The encoder actor and its per-quality outputs. The actor lives on its own arbiter (thread), so
//! encoding never blocks the HTTP workers; it subscribes to the camera only while some quality has
//! a subscriber.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, StreamHandler};
use bytes::Bytes;
use prometheus::{Histogram, IntCounter, IntGauge};

use crate::error::ServiceError;
use crate::fanout::{Fanout, InputLink, Subscriber};
use crate::messages::{Codec, EncodedFrame, Frame, PixelFormat, Shutdown};
use crate::metrics::NodeMetrics;
use crate::node::EncodedFeed;

/// How often the encoder checks whether anyone still listens.
const DEMAND_CHECK: Duration = Duration::from_millis(20);

/// One output per quality in use.
pub struct Qualities {
    node: String,
    default: u8,
    max: usize,
    outputs: Mutex<BTreeMap<u8, Fanout<EncodedFrame>>>,
}

impl Qualities {
    pub fn new(node: &str, default: u8, max: usize) -> Self {
        Self {
            node: node.to_string(),
            default,
            max,
            outputs: Mutex::new(BTreeMap::new()),
        }
    }

    /// Forgets qualities nobody listens to; returns those still listened to.
    fn active(&self) -> Vec<(u8, Fanout<EncodedFrame>)> {
        let mut outputs = self.outputs.lock().expect("qualities lock");
        outputs.retain(|_, out| out.has_subscribers());
        outputs.iter().map(|(q, out)| (*q, out.clone())).collect()
    }

    /// The qualities being encoded now.
    pub fn in_use(&self) -> Vec<u8> {
        self.active().into_iter().map(|(q, _)| q).collect()
    }
}

impl EncodedFeed for Qualities {
    fn subscribe(&self, quality: Option<u8>) -> Result<Subscriber<EncodedFrame>, ServiceError> {
        let quality = quality.unwrap_or(self.default);
        if !(1..=100).contains(&quality) {
            return Err(ServiceError::BadRequest(format!(
                "quality must be 1..=100 (got {quality})"
            )));
        }
        let mut outputs = self.outputs.lock().expect("qualities lock");
        if !outputs.contains_key(&quality) {
            outputs.retain(|_, out| out.has_subscribers());
            if outputs.len() >= self.max {
                let used: Vec<String> = outputs.keys().map(u8::to_string).collect();
                return Err(ServiceError::Busy(format!(
                    "encoder '{}' already encodes {} qualities ({}); ask for one of those",
                    self.node,
                    outputs.len(),
                    used.join(", ")
                )));
            }
        }
        Ok(outputs.entry(quality).or_default().subscribe())
    }
}

#[derive(Clone)]
pub(super) struct EncoderMetrics {
    pub encoded: IntCounter,
    pub dropped_behind: IntCounter,
    seconds: Histogram,
    qualities: IntGauge,
}

impl EncoderMetrics {
    pub fn new(m: &NodeMetrics) -> Self {
        Self {
            encoded: m.frames_encoded(),
            dropped_behind: m.frames_dropped("behind"),
            seconds: m.encode_seconds(),
            qualities: m.encoder_settings(),
        }
    }
}

/// Compresses packed RGB at `quality`, 4:2:0.
pub fn encode_rgb(
    c: &mut turbojpeg::Compressor,
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Bytes, String> {
    c.set_quality(i32::from(quality))
        .map_err(|e| e.to_string())?;
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
        .map_err(|e| e.to_string())
}

pub(super) struct JpegEncoder {
    input: InputLink<Frame>,
    qualities: Arc<Qualities>,
    metrics: EncoderMetrics,
    compressor: Option<turbojpeg::Compressor>,
    decompressor: Option<turbojpeg::Decompressor>,
    /// Pixels of the last JPEG input decoded for re-encoding at another quality.
    decoded: Vec<u8>,
}

impl JpegEncoder {
    pub fn new(input: Fanout<Frame>, qualities: Arc<Qualities>, metrics: EncoderMetrics) -> Self {
        Self {
            input: InputLink::new(input),
            qualities,
            metrics,
            compressor: None,
            decompressor: None,
            decoded: Vec::new(),
        }
    }

    /// Subscribes to the camera while some quality has listeners, and lets go when none has.
    fn follow_demand(&mut self, ctx: &mut Context<Self>) {
        let active = self.qualities.active().len();
        self.metrics.qualities.set(active as i64);
        self.input.follow(active > 0, ctx);
    }

    fn encode(
        &mut self,
        frame: &Frame,
        quality: u8,
        decoded_ok: &mut bool,
    ) -> Result<Bytes, String> {
        let compressor = match &mut self.compressor {
            Some(c) => c,
            None => self.compressor.insert(compressor()?),
        };
        match frame.format {
            PixelFormat::Rgb24 => {
                encode_rgb(compressor, &frame.data, frame.width, frame.height, quality)
            }
            PixelFormat::Jpeg => {
                if !*decoded_ok {
                    let d = match &mut self.decompressor {
                        Some(d) => d,
                        None => self
                            .decompressor
                            .insert(turbojpeg::Decompressor::new().map_err(|e| e.to_string())?),
                    };
                    let (w, h) = (frame.width as usize, frame.height as usize);
                    self.decoded.resize(w * h * 3, 0);
                    let image = turbojpeg::Image {
                        pixels: &mut self.decoded[..],
                        width: w,
                        pitch: w * 3,
                        height: h,
                        format: turbojpeg::PixelFormat::RGB,
                    };
                    d.decompress(&frame.data, image)
                        .map_err(|e| format!("cannot decode camera JPEG: {e}"))?;
                    *decoded_ok = true;
                }
                encode_rgb(
                    compressor,
                    &self.decoded,
                    frame.width,
                    frame.height,
                    quality,
                )
            }
        }
    }
}

fn compressor() -> Result<turbojpeg::Compressor, String> {
    let mut c = turbojpeg::Compressor::new().map_err(|e| e.to_string())?;
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2)
        .map_err(|e| e.to_string())?;
    Ok(c)
}

impl Actor for JpegEncoder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.follow_demand(ctx);
        ctx.run_interval(DEMAND_CHECK, |act, ctx| act.follow_demand(ctx));
    }
}

impl StreamHandler<(Arc<Frame>, u64)> for JpegEncoder {
    fn handle(&mut self, (frame, skipped): (Arc<Frame>, u64), _: &mut Self::Context) {
        if skipped > 0 {
            self.metrics.dropped_behind.inc_by(skipped);
        }
        let mut decoded_ok = false;
        for (quality, out) in self.qualities.active() {
            let passthrough =
                frame.format == PixelFormat::Jpeg && quality == self.qualities.default;
            let started = Instant::now();
            let data = if passthrough {
                frame.data.clone()
            } else {
                match self.encode(&frame, quality, &mut decoded_ok) {
                    Ok(d) => d,
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
            out.publish(Arc::new(EncodedFrame {
                camera: frame.camera.clone(),
                seq: frame.seq,
                captured_at: frame.captured_at,
                codec: Codec::Jpeg,
                keyframe: true,
                width: frame.width,
                height: frame.height,
                data,
            }));
        }
    }

    /// The camera stopped; the graph stops this node too.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<Shutdown> for JpegEncoder {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
