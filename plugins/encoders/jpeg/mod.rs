//! The `jpeg_encoder` node: turbojpeg, 4:2:0, on its own thread. Viewers may ask for their own
//! quality; each distinct quality in use is encoded once per frame and shared by everyone asking for
//! it, and nothing is encoded while nobody listens. JPEG frames from the camera pass through
//! untouched at the configured quality.
//!
//! ```yaml
//! front_jpeg: { type: jpeg_encoder, inputs: [front], quality: 80 }
//! ```

mod encoder;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use crate::error::BuildError;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle};
use crate::port::{JpegVariant, Port, PortKind, Ports};
use crate::stop::{start_on_own_thread, Stopper};

pub(super) use encoder::{compressor, encode_rgb};
pub use encoder::{JpegError, Variants};

/// Settings of a `jpeg_encoder` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JpegEncoderConfig {
    /// JPEG quality (1..=100) for viewers that do not ask for one. Default 80.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Most distinct variants (quality and size) encoded at once; a viewer asking for one more gets
    /// a 503 naming the variants in use. Default 6 (room for an adaptive ladder of 5 and one more).
    #[serde(default = "default_max_variants")]
    pub max_variants: usize,
}

fn default_quality() -> u8 {
    80
}
fn default_max_variants() -> usize {
    6
}

impl NodeConfig for JpegEncoderConfig {
    const TYPE: &'static str = "jpeg_encoder";

    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::Frames, Some(PortKind::Jpeg))
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        check_range(&mut issues, "quality", self.quality, JpegVariant::QUALITY);
        check_range(&mut issues, "max_variants", self.max_variants, 1..=16);
        issues
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let input = cx.frames_input()?;
        let qualities = Arc::new(Variants::new(&cx.id, self.quality, self.max_variants));
        let metrics = encoder::EncoderMetrics::new(&cx.metrics);
        let stats_metrics = metrics.clone();
        let actor_qualities = qualities.clone();
        let stop = Stopper::new();
        let token = stop.token();
        start_on_own_thread(move |_| {
            encoder::JpegEncoder::new(input, actor_qualities, metrics, token)
        });
        let stats_qualities = qualities.clone();
        Ok(NodeHandle {
            output: Some(Port::Jpeg(qualities)),
            services: Default::default(),
            stats: Some(Box::new(move || {
                json!({
                    "encoded": stats_metrics.encoded.get(),
                    "dropped_behind": stats_metrics.dropped_behind.get(),
                    "variants": stats_qualities.in_use(),
                })
            })),
            stop,
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::error::ServiceError;
    use crate::fanout::Fanout;
    use crate::frame::{Frame, PixelFormat};
    use crate::plugins::sources::testsrc::test_frame;
    use crate::testing::wait_for;

    fn frame(seq: u64) -> Arc<Frame> {
        test_frame(256, 64, seq)
    }

    #[actix_rt::test]
    async fn one_encode_per_quality_in_use_shared_by_its_subscribers_and_idle_without_them() {
        let input = Fanout::<Frame>::new();
        let (cx, metrics) =
            crate::testing::context("enc", "jpeg_encoder", Port::Frames(input.clone()));
        let handle = JpegEncoderConfig {
            quality: 80,
            max_variants: 2,
        }
        .build(cx)
        .unwrap();
        let Some(Port::Jpeg(feed)) = handle.output.clone() else {
            panic!("jpeg output")
        };
        assert!(
            !input.has_subscribers(),
            "subscribed to the camera with nobody listening"
        );

        let mut default_a = feed.subscribe(None).unwrap();
        let mut default_b = feed.subscribe(Some(JpegVariant::full(80))).unwrap();
        let mut low = feed.subscribe(Some(JpegVariant::full(30))).unwrap();
        let refused = feed.subscribe(Some(JpegVariant::full(50))).err();
        assert!(
            matches!(refused, Some(ServiceError::Busy(ref m)) if m.contains("q30, q80")),
            "{refused:?}"
        );
        wait_for("the encoder to subscribe", || input.has_subscribers()).await;

        input.publish(frame(7));
        let (a, _) = default_a.next().await.unwrap();
        let (b, _) = default_b.next().await.unwrap();
        let (l, _) = low.next().await.unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "two subscribers of one quality must share one encoded frame"
        );
        assert_eq!((a.seq, a.width, a.height), (7, 256, 64));
        assert!(l.data.len() < a.data.len());
        let decoded = turbojpeg::decompress(&a.data, turbojpeg::PixelFormat::RGB).unwrap();
        let marks = crate::plugins::sources::testsrc::read_marks(&decoded.pixels, 256, 64).unwrap();
        assert_eq!(marks.seq, 7);
        let encoded = metrics.node("cam", "enc", "jpeg_encoder").frames_encoded();
        assert_eq!(
            encoded.get(),
            2,
            "one encode per quality, not per subscriber"
        );

        drop((default_a, default_b, low));
        wait_for("the encoder to let go of the camera", || {
            !input.has_subscribers()
        })
        .await;
        handle.stop.fire();
    }

    #[actix_rt::test]
    async fn camera_jpeg_passes_through_at_the_default_quality() {
        let input = Fanout::<Frame>::new();
        let (cx, _) = crate::testing::context("enc", "jpeg_encoder", Port::Frames(input.clone()));
        let handle = JpegEncoderConfig {
            quality: 80,
            max_variants: 4,
        }
        .build(cx)
        .unwrap();
        let Some(Port::Jpeg(feed)) = handle.output.clone() else {
            panic!("jpeg output")
        };
        let mut out = feed.subscribe(None).unwrap();
        wait_for("the encoder to subscribe", || input.has_subscribers()).await;
        let raw = frame(1);
        let image = turbojpeg::Image {
            pixels: &raw.data[..],
            width: 256,
            pitch: 768,
            height: 64,
            format: turbojpeg::PixelFormat::RGB,
        };
        let jpeg = bytes::Bytes::from(
            turbojpeg::compress(image, 95, turbojpeg::Subsamp::Sub2x2)
                .unwrap()
                .to_vec(),
        );
        input.publish(Arc::new(Frame {
            format: PixelFormat::Jpeg,
            data: jpeg.clone(),
            ..(*raw).clone()
        }));
        let (got, _) = out.next().await.unwrap();
        assert_eq!(
            got.data.as_ptr(),
            jpeg.as_ptr(),
            "passed through without a copy"
        );
        handle.stop.fire();
    }
}
