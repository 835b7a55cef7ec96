//! An `adaptive` node over a camera that passes its own H.264 through: the ladder's top step is the
//! camera's stream itself (no decode, no encode; a joining peer starts from the camera's frames
//! since its keyframe), and the steps below are made from it by the `h264_decoder` and
//! `h264_encoder` node types, started inside the node as its parts. Each part works only on demand
//! as it does on its own: the encoder encodes a step while a peer is on it, and the decoder
//! decodes while the encoder wants pictures, so a camera whose peers all sit on the top step
//! costs no decode and no encode. The parts report under the node's id with their own `type`
//! label (`camgraph_frames_decoded_total{node=ID,type="h264_decoder"}`,
//! `camgraph_frames_encoded_total{node=ID,type="h264_encoder"}`), and in `/api/graph` as the
//! node's `decoder` and `encoder` stats.

use std::sync::Arc;

use super::{PartStats, Steps};
use crate::adapt::AdaptPolicy;
use crate::error::{BuildError, ServiceError};
use crate::fanout::Subscriber;
use crate::frame::EncodedFrame;
use crate::node::{BuildContext, NodeConfig};
use crate::plugins::decoders::h264::H264DecoderConfig;
use crate::plugins::encoders::h264::H264EncoderConfig;
use crate::port::{Feed, H264Feed, H264Variant, Port};
use crate::stop::Stopper;

/// The decoder and the encoder that make the lower steps; started with the node, stopped with it.
pub(super) struct Parts {
    /// Their stops, fired (and waited for) when the node stops.
    pub stops: Vec<Stopper>,
    /// Their stats by name (`decoder`, `encoder`), shown in the node's.
    pub stats: PartStats,
}

impl Parts {
    /// The decoder and encoder for the `lower` steps of a ladder over `camera`; returns them and
    /// the encoder's output.
    pub fn start(
        camera: Arc<H264Feed>,
        lower: usize,
        cx: &BuildContext,
    ) -> Result<(Parts, Arc<H264Feed>), BuildError> {
        let part = |type_name: &str, input: Port| BuildContext {
            id: cx.id.clone(),
            camera: cx.camera.clone(),
            inputs: vec![input],
            metrics: cx.metrics.part(type_name),
            listen: cx.listen,
        };
        let decoder =
            H264DecoderConfig {}.build(part(H264DecoderConfig::TYPE, Port::H264(camera)))?;
        let pictures = decoder
            .output
            .clone()
            .ok_or_else(|| BuildError::new(&cx.id, "its H.264 decoder gave no output (a bug)"))?;
        // Room for every lower step and one a viewer chose for itself (`?bitrate=`, `?scale=`).
        let encoder_config = H264EncoderConfig {
            max_variants: lower + 1,
            ..Default::default()
        };
        let encoder = match encoder_config.build(part(H264EncoderConfig::TYPE, pictures)) {
            Ok(encoder) => encoder,
            Err(e) => {
                decoder.stop.fire();
                return Err(e);
            }
        };
        let Some(Port::H264(encoded)) = encoder.output.clone() else {
            decoder.stop.fire();
            encoder.stop.fire();
            return Err(BuildError::new(
                &cx.id,
                "its H.264 encoder gave no H.264 output (a bug)",
            ));
        };
        let parts = Parts {
            stops: vec![decoder.stop, encoder.stop],
            stats: vec![("decoder", decoder.stats), ("encoder", encoder.stats)],
        };
        Ok((parts, encoded))
    }
}

/// Whether `variant` is the top step: the camera's own stream.
fn is_camera(variant: Option<H264Variant>) -> bool {
    variant.is_none_or(|v| v == H264Variant::CAMERA)
}

/// The node's output over a camera that passes its H.264 through.
pub(super) struct AdaptivePassthrough {
    pub camera: Arc<H264Feed>,
    /// The encoder's output: the lower steps.
    pub encoded: Arc<H264Feed>,
    pub steps: Steps<H264Variant>,
}

impl Feed<H264Variant> for AdaptivePassthrough {
    /// Without a variant, or `camera`: the camera's own stream; else the encoder's.
    fn subscribe(
        &self,
        variant: Option<H264Variant>,
    ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
        if is_camera(variant) {
            self.camera.subscribe(None)
        } else {
            self.encoded.subscribe(variant)
        }
    }

    /// A viewer who chooses a bitrate or a size gets the rest from the first encoded step: the
    /// camera's stream has neither to take.
    fn default_variant(&self) -> Option<H264Variant> {
        self.steps.ladder.get(1).copied()
    }

    fn request_keyframe(&self, variant: Option<H264Variant>) {
        if !is_camera(variant) {
            self.encoded.request_keyframe(variant);
        }
    }

    fn passes_through(&self, variant: Option<H264Variant>) -> bool {
        is_camera(variant)
    }

    fn since_keyframe(&self, variant: Option<H264Variant>) -> Vec<Arc<EncodedFrame>> {
        if is_camera(variant) {
            self.camera.since_keyframe(None)
        } else {
            Vec::new()
        }
    }

    fn policy(&self) -> Option<Box<dyn AdaptPolicy<H264Variant>>> {
        Some(self.steps.policy())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::fanout::Fanout;
    use crate::frame::Codec;
    use crate::node::NodeHandle;
    use crate::plugins::control::adaptive::AdaptiveConfig;
    use crate::plugins::decoders::h264::access_units;
    use crate::testing::wait_for;

    /// A camera that passes its own H.264 through: one stream, no variants.
    struct Camera(Fanout<EncodedFrame>);

    impl Feed<H264Variant> for Camera {
        fn subscribe(
            &self,
            variant: Option<H264Variant>,
        ) -> Result<Subscriber<EncodedFrame>, ServiceError> {
            match variant {
                None => Ok(self.0.subscribe()),
                Some(v) => Err(ServiceError::BadRequest(format!("no variant {v}"))),
            }
        }

        fn passes_through(&self, _: Option<H264Variant>) -> bool {
            true
        }
    }

    fn publish(camera: &Fanout<EncodedFrame>, seq: u64, (keyframe, data): &(bool, bytes::Bytes)) {
        camera.publish(Arc::new(EncodedFrame {
            camera: "gate".into(),
            seq,
            captured_at: SystemTime::now(),
            codec: Codec::H264,
            keyframe: *keyframe,
            width: W,
            height: H,
            data: data.clone(),
            behind: 0,
        }));
    }

    const W: u32 = 128;
    const H: u32 = 96;

    #[actix_rt::test]
    async fn the_top_step_is_the_camera_untouched_and_lower_steps_are_made_only_while_watched() {
        let camera = Fanout::<EncodedFrame>::new();
        let input = Port::H264(Arc::new(Camera(camera.clone())));
        let (cx, metrics) = crate::testing::context("gate_adaptive", "adaptive", input);
        let config: AdaptiveConfig =
            serde_yaml::from_str("ladder: [{ bitrate_kbps: 300, scale: 2 }]").unwrap();
        // Once refused ("there are no variants to move peers between").
        let handle: NodeHandle = config.build(cx).expect("an adaptive node over a camera");
        let Some(Port::H264(feed)) = handle.output.clone() else {
            panic!("an h264 output")
        };
        let stats = || handle.stats.as_ref().unwrap()();
        assert_eq!(stats()["ladder"], serde_json::json!(["camera", "300k/2"]));
        let low = H264Variant {
            bitrate_kbps: 300,
            scale: 2,
        };
        let policy = feed.policy().expect("a ladder");
        assert_eq!(policy.initial(), H264Variant::CAMERA, "peers start on top");
        assert!(feed.passes_through(Some(H264Variant::CAMERA)) && !feed.passes_through(Some(low)));
        let encoded = metrics
            .node("cam", "gate_adaptive", "h264_encoder")
            .frames_encoded();
        let decoded = metrics
            .node("cam", "gate_adaptive", "h264_decoder")
            .frames_decoded();

        // On top: the camera's own access units, the same bytes, nothing decoded or encoded.
        let units = access_units(8, W as usize, H as usize);
        let mut top = feed.subscribe(Some(H264Variant::CAMERA)).unwrap();
        publish(&camera, 0, &units[0]);
        let (frame, _) = top.next().await.unwrap();
        assert_eq!(frame.data, units[0].1, "passed through untouched");
        assert_eq!(stats()["decoder"]["decoding"], false);
        assert_eq!((decoded.get(), encoded.get()), (0, 0));

        // A peer on the lower step: the camera is decoded and that step encoded at half size.
        let mut lower = feed.subscribe(Some(low)).unwrap();
        wait_for("the decoder to start", || {
            stats()["decoder"]["decoding"] == true
        })
        .await;
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        // The decoder starts at the camera's next IDR: a fresh stream, as after a camera's GOP.
        let next_gop = access_units(3, W as usize, H as usize);
        for (i, unit) in next_gop.iter().enumerate() {
            publish(&camera, 1 + i as u64, unit);
            let (small, _) = lower.next().await.expect("the lower step's frames");
            assert_eq!((small.width, small.height), (W / 2, H / 2));
            assert_eq!(small.keyframe, i == 0, "it starts with an IDR");
            let yuv = decoder.decode(&small.data).unwrap().expect("a picture");
            let size = openh264::formats::YUVSource::dimensions(&yuv);
            assert_eq!(size, ((W / 2) as usize, (H / 2) as usize));
            top.next().await.expect("the top step goes on");
        }
        assert_eq!((decoded.get(), encoded.get()), (3, 3));
        assert_eq!(
            stats()["encoder"]["variants"],
            serde_json::json!(["300k/2"])
        );

        // The last peer leaves the lower step: decoding and encoding stop.
        drop(lower);
        wait_for("the decoder and encoder to stop", || {
            stats()["decoder"]["decoding"] == false && stats()["encoder"]["listeners"] == 0
        })
        .await;
        publish(&camera, 10, &units[1]);
        top.next().await.unwrap();
        assert_eq!((decoded.get(), encoded.get()), (3, 3), "nothing more made");

        // Its parts stop with the node.
        handle.stop.fire();
        tokio::time::timeout(std::time::Duration::from_secs(5), handle.stop.stopped())
            .await
            .expect("the node and its parts stopped");
    }
}
