//! The H.264 encoder actor and its one shared output. The actor lives on its own arbiter (thread),
//! subscribes to the camera only while a peer listens, encodes each frame once for everybody, and
//! makes the next frame an IDR when a peer asks (joined, or lost pictures).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, StreamHandler};
use bytes::Bytes;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::{OpenH264API, Timestamp};
use prometheus::{Histogram, IntCounter, IntGauge};

use super::H264EncoderConfig;
use crate::fanout::{Fanout, InputLink, Subscriber};
use crate::messages::{Codec, EncodedFrame, Frame, PixelFormat, Shutdown};
use crate::metrics::NodeMetrics;
use crate::node::VideoFeed;

/// How often the encoder checks whether anyone still listens.
const DEMAND_CHECK: Duration = Duration::from_millis(20);

/// The encoder's output: one stream, and the keyframe request flag.
#[derive(Default)]
pub struct H264Output {
    out: Fanout<EncodedFrame>,
    keyframe: AtomicBool,
}

impl H264Output {
    pub fn listeners(&self) -> usize {
        self.out.subscriber_count()
    }
}

impl VideoFeed for H264Output {
    fn subscribe(&self) -> Subscriber<EncodedFrame> {
        self.out.subscribe()
    }

    fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
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
            dropped_behind: m.frames_dropped("behind"),
            dropped_failed: m.frames_dropped("encode_failed"),
            seconds: m.encode_seconds(),
            settings: m.encoder_settings(),
        }
    }
}

/// An openh264 encoder for one picture size.
struct Session {
    encoder: Encoder,
    yuv: YUVBuffer,
    width: u32,
    height: u32,
    started: Instant,
}

pub(super) struct H264Encoder {
    input: InputLink<Frame>,
    output: Arc<H264Output>,
    config: H264EncoderConfig,
    metrics: EncoderMetrics,
    session: Option<Session>,
    /// Pixels of the last JPEG input, decoded.
    decoded: Vec<u8>,
    decompressor: Option<turbojpeg::Decompressor>,
    warned_odd: bool,
}

impl H264Encoder {
    pub fn new(
        input: Fanout<Frame>,
        output: Arc<H264Output>,
        config: H264EncoderConfig,
        metrics: EncoderMetrics,
    ) -> Self {
        Self {
            input: InputLink::new(input),
            output,
            config,
            metrics,
            session: None,
            decoded: Vec::new(),
            decompressor: None,
            warned_odd: false,
        }
    }

    fn follow_demand(&mut self, ctx: &mut Context<Self>) {
        let wanted = self.output.out.has_subscribers();
        self.metrics.settings.set(i64::from(wanted));
        self.input.follow(wanted, ctx);
    }

    fn session(&mut self, width: u32, height: u32) -> Result<&mut Session, String> {
        if !matches!(&self.session, Some(s) if s.width == width && s.height == height) {
            let config = EncoderConfig::new()
                .bitrate(BitRate::from_bps(self.config.bitrate_kbps * 1000))
                .max_frame_rate(FrameRate::from_hz(self.config.max_fps as f32))
                .rate_control_mode(RateControlMode::Bitrate)
                .usage_type(UsageType::CameraVideoRealTime)
                .profile(Profile::Baseline)
                .skip_frames(false)
                .intra_frame_period(IntraFramePeriod::from_num_frames(
                    self.config.keyframe_interval,
                ))
                .num_threads(1);
            let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
                .map_err(|e| format!("cannot start openh264: {e}"))?;
            self.session = Some(Session {
                encoder,
                yuv: YUVBuffer::new(width as usize, height as usize),
                width,
                height,
                started: Instant::now(),
            });
        }
        Ok(self.session.as_mut().expect("session just made"))
    }

    fn encode(&mut self, frame: &Frame) -> Result<(Bytes, bool), String> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        if frame.format == PixelFormat::Jpeg {
            let d = match &mut self.decompressor {
                Some(d) => d,
                None => self
                    .decompressor
                    .insert(turbojpeg::Decompressor::new().map_err(|e| e.to_string())?),
            };
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
        }
        let force = self.output.keyframe.swap(false, Ordering::Relaxed);
        let decoded = std::mem::take(&mut self.decoded);
        let result = (|| {
            let rgb: &[u8] = match frame.format {
                PixelFormat::Rgb24 => &frame.data,
                PixelFormat::Jpeg => &decoded,
            };
            if rgb.len() < w * h * 3 {
                return Err(format!(
                    "frame has {} bytes, {w}x{h} RGB needs {}",
                    rgb.len(),
                    w * h * 3
                ));
            }
            let session = self.session(frame.width, frame.height)?;
            if force {
                session.encoder.force_intra_frame();
            }
            session
                .yuv
                .read_rgb8(RgbSliceU8::new(&rgb[..w * h * 3], (w, h)));
            let at = Timestamp::from_millis(session.started.elapsed().as_millis() as u64);
            let stream = session
                .encoder
                .encode_at(&session.yuv, at)
                .map_err(|e| format!("openh264: {e}"))?;
            let keyframe = matches!(stream.frame_type(), FrameType::IDR);
            Ok((Bytes::from(stream.to_vec()), keyframe))
        })();
        self.decoded = decoded;
        if result.is_err() && force {
            self.output.keyframe.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl Actor for H264Encoder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.follow_demand(ctx);
        ctx.run_interval(DEMAND_CHECK, |act, ctx| act.follow_demand(ctx));
    }
}

impl StreamHandler<(Arc<Frame>, u64)> for H264Encoder {
    fn handle(&mut self, (frame, skipped): (Arc<Frame>, u64), _: &mut Self::Context) {
        if skipped > 0 {
            self.metrics.dropped_behind.inc_by(skipped);
        }
        if frame.width % 2 == 1 || frame.height % 2 == 1 {
            if !self.warned_odd {
                tracing::warn!(camera = %frame.camera, "H.264 needs even width and height (got {}x{})", frame.width, frame.height);
                self.warned_odd = true;
            }
            self.metrics.dropped_failed.inc();
            return;
        }
        let started = Instant::now();
        let (data, keyframe) = match self.encode(&frame) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(camera = %frame.camera, "H.264 encode failed: {e}");
                self.metrics.dropped_failed.inc();
                return;
            }
        };
        self.metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.encoded.inc();
        if data.is_empty() {
            // The rate control skipped this picture.
            return;
        }
        if keyframe {
            self.metrics.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        self.output.out.publish(Arc::new(EncodedFrame {
            camera: frame.camera.clone(),
            seq: frame.seq,
            captured_at: frame.captured_at,
            codec: Codec::H264,
            keyframe,
            width: frame.width,
            height: frame.height,
            data,
        }));
    }

    /// The camera stopped; the graph stops this node too.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<Shutdown> for H264Encoder {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
