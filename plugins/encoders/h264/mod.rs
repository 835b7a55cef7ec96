//! The `h264_encoder` node: openh264 (bundled source), Constrained Baseline that every browser
//! decodes, on its own thread. One encode per frame and variant in use, whatever the number of
//! WebRTC peers: peers get the configured bitrate at full size, or, behind an `adaptive` node, a
//! step of its ladder (bitrate and size); peers on one step share its encode. Nothing is encoded
//! while no peer watches; a peer's join, switch or loss asks its variant for an IDR.
//!
//! ```yaml
//! front_h264: { type: h264_encoder, inputs: [front], bitrate_kbps: 2000, keyframe_interval: 60 }
//! ```

mod encoder;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use crate::error::BuildError;
use crate::node::{check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle};
use crate::port::{H264Variant, Port, PortKind, Ports};
use crate::stop::{start_on_own_thread, Stopper};

pub(crate) use encoder::Session;
pub use encoder::{H264Error, H264Output};

/// Settings of an `h264_encoder` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct H264EncoderConfig {
    /// Target bitrate in kbit/s (100..=50000). Default 2000.
    #[serde(default = "default_bitrate_kbps")]
    pub bitrate_kbps: u32,
    /// Frames between periodic keyframes (IDR), 1..=600. Default 60 (2 s at 30 fps). Peers that
    /// join or lose pictures get one at once anyway.
    #[serde(default = "default_keyframe_interval")]
    pub keyframe_interval: u32,
    /// The frame rate the rate control plans for (1..=120). Default 30.
    #[serde(default = "default_max_fps")]
    pub max_fps: u32,
    /// Most distinct variants (bitrate and size) encoded at once, each costing one encode per
    /// frame: a new peer needing one more is refused with a 503 naming those in use, and a peer
    /// whose ladder step would need one more stays where it is. Default 6 (room for an adaptive
    /// ladder of 5 and one more).
    #[serde(default = "default_max_variants")]
    pub max_variants: usize,
}

fn default_bitrate_kbps() -> u32 {
    2000
}
fn default_keyframe_interval() -> u32 {
    60
}
fn default_max_fps() -> u32 {
    30
}
fn default_max_variants() -> usize {
    6
}

impl Default for H264EncoderConfig {
    fn default() -> Self {
        Self {
            bitrate_kbps: default_bitrate_kbps(),
            keyframe_interval: default_keyframe_interval(),
            max_fps: default_max_fps(),
            max_variants: default_max_variants(),
        }
    }
}

impl NodeConfig for H264EncoderConfig {
    const TYPE: &'static str = "h264_encoder";

    fn ports(&self) -> Ports {
        Ports::Takes(PortKind::Frames, Some(PortKind::H264))
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        check_range(
            &mut issues,
            "bitrate_kbps",
            self.bitrate_kbps,
            H264Variant::BITRATE_KBPS,
        );
        check_range(
            &mut issues,
            "keyframe_interval",
            self.keyframe_interval,
            1..=600,
        );
        check_range(&mut issues, "max_fps", self.max_fps, 1..=120);
        check_range(&mut issues, "max_variants", self.max_variants, 1..=8);
        issues
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let input = cx.frames_input()?;
        let default = H264Variant {
            bitrate_kbps: self.bitrate_kbps,
            scale: 1,
        };
        let output = Arc::new(H264Output::new(&cx.id, default, self.max_variants));
        let metrics = encoder::EncoderMetrics::new(&cx.metrics);
        let stats_metrics = metrics.clone();
        let (actor_output, config) = (output.clone(), self.clone());
        let stop = Stopper::new();
        let token = stop.token();
        start_on_own_thread(move |_| {
            encoder::H264Encoder::new(input, actor_output, config, metrics, token)
        });
        let stats_output = output.clone();
        Ok(NodeHandle {
            output: Some(Port::H264(output)),
            services: Default::default(),
            stats: Some(Box::new(move || {
                json!({
                    "encoded": stats_metrics.encoded.get(),
                    "keyframes": stats_metrics.keyframes.load(Ordering::Relaxed),
                    "dropped_behind": stats_metrics.dropped_behind.get(),
                    "listeners": stats_output.listeners(),
                    "variants": stats_output.in_use(),
                })
            })),
            stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fanout::Fanout;
    use crate::frame::{Codec, Frame};
    use crate::plugins::sources::testsrc::{read_marks, test_frame};
    use crate::testing::wait_for;

    const W: u32 = 320;
    const H: u32 = 240;

    fn frame(seq: u64) -> Arc<Frame> {
        test_frame(W, H, seq)
    }

    #[actix_rt::test]
    async fn encodes_once_for_all_listeners_starts_with_an_idr_and_idles_without_them() {
        let input = Fanout::<Frame>::new();
        let (cx, metrics) =
            crate::testing::context("enc", "h264_encoder", Port::Frames(input.clone()));
        let handle = H264EncoderConfig::default().build(cx).unwrap();
        let Some(Port::H264(feed)) = handle.output.clone() else {
            panic!("h264 output")
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!input.has_subscribers(), "encoding with nobody listening");

        let mut a = feed.subscribe(None).unwrap();
        let mut b = feed.subscribe(None).unwrap();
        wait_for("the encoder to subscribe", || input.has_subscribers()).await;
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        let mut rgb = vec![0u8; (W * H * 3) as usize];
        for seq in 0..5 {
            input.publish(frame(seq));
            let (fa, _) = a.next().await.unwrap();
            let (fb, _) = b.next().await.unwrap();
            assert!(Arc::ptr_eq(&fa, &fb), "peers share one encoded frame");
            assert_eq!(fa.codec, Codec::H264);
            assert_eq!(
                fa.keyframe,
                seq == 0,
                "frame {seq}: only the first is an IDR"
            );
            let yuv = decoder.decode(&fa.data).unwrap().expect("a picture");
            yuv.write_rgb8(&mut rgb);
            let marks = read_marks(&rgb, W, H).expect("marks survive H.264");
            assert_eq!(u64::from(marks.seq), seq);
        }
        feed.request_keyframe(None);
        input.publish(frame(5));
        let (f, _) = a.next().await.unwrap();
        assert!(f.keyframe, "an IDR on request");
        let _ = b.next().await;
        let encoded = metrics.node("cam", "enc", "h264_encoder").frames_encoded();
        assert_eq!(encoded.get(), 6, "one encode per frame, not per listener");

        drop((a, b));
        wait_for("the encoder to let go of the camera", || {
            !input.has_subscribers()
        })
        .await;
        handle.stop.fire();
    }

    #[actix_rt::test]
    async fn each_variant_in_use_is_encoded_once_at_its_size_with_its_own_keyframes() {
        let input = Fanout::<Frame>::new();
        let (cx, metrics) =
            crate::testing::context("enc", "h264_encoder", Port::Frames(input.clone()));
        let config = H264EncoderConfig {
            max_variants: 2,
            ..Default::default()
        };
        let handle = config.build(cx).unwrap();
        let Some(Port::H264(feed)) = handle.output.clone() else {
            panic!("h264 output")
        };
        let small = H264Variant {
            bitrate_kbps: 300,
            scale: 2,
        };
        let mut full = feed.subscribe(None).unwrap();
        let mut half = feed.subscribe(Some(small)).unwrap();
        let mut half2 = feed.subscribe(Some(small)).unwrap();
        let third = H264Variant {
            bitrate_kbps: 150,
            scale: 4,
        };
        let refused = feed.subscribe(Some(third)).map(|_| ()).unwrap_err();
        assert!(refused.to_string().contains("(300k/2, 2000k)"), "{refused}");
        let bad = H264Variant {
            bitrate_kbps: 300,
            scale: 3,
        };
        assert!(feed.subscribe(Some(bad)).is_err(), "scale 3 is refused");
        wait_for("the encoder to subscribe", || input.has_subscribers()).await;
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        for seq in 0..3 {
            if seq == 2 {
                feed.request_keyframe(Some(small));
            }
            input.publish(frame(seq));
            let (f, _) = full.next().await.unwrap();
            let (h, _) = half.next().await.unwrap();
            let (h2, _) = half2.next().await.unwrap();
            assert!(Arc::ptr_eq(&h, &h2), "one encode per variant");
            assert_eq!((f.width, f.height), (W, H));
            assert_eq!((h.width, h.height), (W / 2, H / 2));
            assert_eq!(f.keyframe, seq == 0, "full size, frame {seq}");
            assert_eq!(
                h.keyframe,
                seq != 1,
                "half size, frame {seq}: IDR on request"
            );
            let yuv = decoder.decode(&h.data).unwrap().expect("a picture");
            let size = openh264::formats::YUVSource::dimensions(&yuv);
            assert_eq!(size, ((W / 2) as usize, (H / 2) as usize));
        }
        let encoded = metrics.node("cam", "enc", "h264_encoder").frames_encoded();
        assert_eq!(encoded.get(), 6, "3 frames x 2 variants");
        handle.stop.fire();
    }

    #[test]
    fn every_bad_setting_is_reported() {
        let bad = H264EncoderConfig {
            bitrate_kbps: 10,
            keyframe_interval: 0,
            max_fps: 500,
            max_variants: 0,
        };
        let fields: Vec<_> = bad.validate().into_iter().map(|i| i.field).collect();
        assert_eq!(
            fields,
            [
                "bitrate_kbps",
                "keyframe_interval",
                "max_fps",
                "max_variants"
            ]
        );
        let parsed: Result<H264EncoderConfig, _> = serde_yaml::from_str("bitrate: 5");
        assert!(parsed.is_err(), "unknown fields are refused");
    }
}
