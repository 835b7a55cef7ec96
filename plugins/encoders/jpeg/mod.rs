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

use actix::{Actor, Arbiter};
use serde::Deserialize;
use serde_json::json;

use crate::error::BuildError;
use crate::messages::Shutdown;
use crate::node::{
    check_range, BuildContext, FieldIssue, NodeConfig, NodeHandle, Port, PortKind, Ports,
};

pub use encoder::{encode_rgb, Qualities};

/// Settings of a `jpeg_encoder` node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JpegEncoderConfig {
    /// JPEG quality (1..=100) for viewers that do not ask for one. Default 80.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Most distinct qualities encoded at once; a viewer asking for one more gets a 503 naming the
    /// qualities in use. Default 4.
    #[serde(default = "default_max_qualities")]
    pub max_qualities: usize,
}

fn default_quality() -> u8 {
    80
}
fn default_max_qualities() -> usize {
    4
}

impl NodeConfig for JpegEncoderConfig {
    const TYPE: &'static str = "jpeg_encoder";

    fn ports(&self) -> Ports {
        Ports {
            input: Some(PortKind::Frames),
            output: Some(PortKind::Jpeg),
        }
    }

    fn validate(&self) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        check_range(&mut issues, "quality", self.quality, 1..=100);
        check_range(&mut issues, "max_qualities", self.max_qualities, 1..=16);
        issues
    }

    fn build(&self, cx: BuildContext) -> Result<NodeHandle, BuildError> {
        let input = cx.frames_input()?;
        let qualities = Arc::new(Qualities::new(&cx.id, self.quality, self.max_qualities));
        let metrics = encoder::EncoderMetrics::new(&cx.metrics);
        let stats_metrics = metrics.clone();
        let arbiter = Arbiter::new();
        let actor_qualities = qualities.clone();
        let addr = encoder::JpegEncoder::start_in_arbiter(&arbiter.handle(), move |_| {
            encoder::JpegEncoder::new(input, actor_qualities, metrics)
        });
        let stats_qualities = qualities.clone();
        Ok(NodeHandle {
            output: Some(Port::Jpeg(qualities)),
            services: Vec::new(),
            stats: Some(Box::new(move || {
                json!({
                    "encoded": stats_metrics.encoded.get(),
                    "dropped_behind": stats_metrics.dropped_behind.get(),
                    "qualities": stats_qualities.in_use(),
                })
            })),
            stop: Box::new(move || {
                addr.do_send(Shutdown);
                arbiter.stop();
            }),
        })
    }
}
