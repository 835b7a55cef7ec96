//! The short form for the common case: an entry under `cameras:` expands to the usual chains
//! `NAME` (camera) -> `NAME_jpeg` (jpeg_encoder) -> `NAME_mjpeg` (mjpeg_sink) and, unless
//! `webrtc: false` (or a build without WebRTC), `NAME` -> `NAME_h264` (h264_encoder) ->
//! `NAME_rtc_adaptive` (adaptive) -> `NAME_rtc` (webrtc_sink), which costs nothing until a peer
//! connects. A camera that encodes (an `rtsp://` or `rtp://` source gives H.264, unless
//! an RTSP camera is set to `codec: mjpeg`) feeds its own
//! H.264 to `NAME_rtc_adaptive` (adaptive) -> `NAME_rtc`: no `h264_encoder`; peers get the
//! camera's stream untouched on the ladder's top step, and only a peer moved to a lower step
//! makes the adaptive node decode and encode. Its MJPEG chain starts with `NAME_decode`
//! (h264_decoder), which decodes only while an MJPEG viewer or a snapshot wants pictures. Cameras added through the API (`POST
//! /api/camera/cameras/NAME?source=...`) are expanded the same way. Registered with the registry
//! as its `ShortForm`.
//!
//! ```yaml
//! cameras:
//!   front: { source: test, width: 1280, height: 720, fps: 30, quality: 80 }
//!   rear:  { source: /dev/video0, webrtc: false }
//!   gate:  { source: "rtsp://192.168.1.30/stream1", transport: udp }
//!   dock:  { source: "rtsp://192.168.1.31/mjpeg", codec: mjpeg }   # the usual chain, as pictures
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use super::sources::kinds::kind_of;
use crate::http::face::param;
use crate::port::{JpegVariant, PortKind};
use crate::registry::{path_error, ParseError, ShortForm};

/// One camera in short form. Every field but `source` is optional and defaults as in the node types.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraShortForm {
    /// As `camera.source`: `test`, `/dev/videoN` or `N`, `http://...` MJPEG, `rtsp://...` H.264,
    /// a file or folder.
    pub source: String,
    /// As `camera.width`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// As `camera.height`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// As `camera.fps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
    /// As `camera.start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<bool>,
    /// As `camera.transport` (RTSP: `tcp` or `udp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// As `camera.codec` (RTSP: `h264` or `mjpeg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// As `jpeg_encoder.quality`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// As `mjpeg_sink.max_viewers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_viewers: Option<usize>,
    /// Also the WebRTC chain (H.264, adaptive, WebRTC sink). Default true in builds with WebRTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webrtc: Option<bool>,
}

fn node(type_name: &str, input: Option<&str>, fields: Vec<(&str, Value)>) -> Mapping {
    let mut m = Mapping::new();
    m.insert("type".into(), type_name.into());
    if let Some(input) = input {
        m.insert("inputs".into(), Value::Sequence(vec![input.into()]));
    }
    for (k, v) in fields {
        m.insert(k.into(), v);
    }
    m
}

fn set<T: Into<Value>>(
    fields: &mut Vec<(&'static str, Value)>,
    name: &'static str,
    value: Option<T>,
) {
    if let Some(v) = value {
        fields.push((name, v.into()));
    }
}

/// The usual chain of a camera: what `cameras:` entries stand for.
pub struct UsualChain;

impl ShortForm for UsualChain {
    fn expand(&self, name: &str, entry: Value) -> Result<Vec<(String, Mapping)>, ParseError> {
        let camera: CameraShortForm =
            serde_path_to_error::deserialize(entry).map_err(path_error)?;
        Ok(expand(name, &camera))
    }

    fn chain(&self, name: &str) -> Vec<(String, Mapping)> {
        expand(name, &CameraShortForm::default())
    }

    fn entry_from_query(&self, query: &HashMap<String, String>) -> Result<Value, String> {
        let source = query
            .get("source")
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .ok_or("missing query parameter 'source' (test, a device index or /dev/videoN, an http:// MJPEG URL, an rtsp:// H.264 URL, a file or folder)")?;
        let bad = |e: crate::http::face::BadParam| e.to_string();
        let camera = CameraShortForm {
            source,
            width: param(query, "width", 16..=7680).map_err(bad)?,
            height: param(query, "height", 16..=4320).map_err(bad)?,
            fps: param(query, "fps", 1..=120).map_err(bad)?,
            quality: param(query, "quality", JpegVariant::QUALITY).map_err(bad)?,
            transport: query.get("transport").cloned(),
            codec: query.get("codec").cloned(),
            webrtc: match query.get("webrtc").map(String::as_str) {
                None => None,
                Some("true") => Some(true),
                Some("false") => Some(false),
                Some(other) => {
                    return Err(format!("'webrtc' must be true or false (got '{other}')"))
                }
            },
            ..Default::default()
        };
        serde_yaml::to_value(camera).map_err(|e| e.to_string())
    }
}

/// The node entries (id, settings with `type` and `inputs`) a short-form camera stands for.
fn expand(name: &str, c: &CameraShortForm) -> Vec<(String, Mapping)> {
    let mut camera = vec![("source", Value::from(c.source.clone()))];
    set(&mut camera, "width", c.width);
    set(&mut camera, "height", c.height);
    set(&mut camera, "fps", c.fps);
    set(&mut camera, "start", c.start);
    set(&mut camera, "transport", c.transport.clone());
    set(&mut camera, "codec", c.codec.clone());
    let webrtc = c.webrtc.unwrap_or(cfg!(feature = "webrtc"));
    let encodes = kind_of(&c.source).gives(c.codec.as_deref()) == PortKind::H264;
    let mut jpeg = Vec::new();
    set(&mut jpeg, "quality", c.quality.map(u64::from));
    let mut mjpeg = Vec::new();
    set(&mut mjpeg, "max_viewers", c.max_viewers.map(|v| v as u64));
    let (jpeg_id, mjpeg_id) = (format!("{name}_jpeg"), format!("{name}_mjpeg"));
    let mut nodes = vec![(name.to_string(), node("camera", None, camera))];
    // Pictures: the camera's own, or decoded from its H.264 (a decoder needs openh264, which
    // comes with the WebRTC feature).
    let pictures = match (encodes, cfg!(feature = "webrtc")) {
        (false, _) => Some(name.to_string()),
        (true, true) => {
            let decode = format!("{name}_decode");
            nodes.push((decode.clone(), node("h264_decoder", Some(name), Vec::new())));
            Some(decode)
        }
        (true, false) => None,
    };
    if let Some(pictures) = pictures {
        nodes.extend([
            (jpeg_id.clone(), node("jpeg_encoder", Some(&pictures), jpeg)),
            (mjpeg_id, node("mjpeg_sink", Some(&jpeg_id), mjpeg)),
        ]);
    }
    if webrtc {
        // The ladder's input: the camera's own H.264, or an encoder of its pictures.
        let h264 = if encodes {
            name.to_string()
        } else {
            let h264 = format!("{name}_h264");
            nodes.push((h264.clone(), node("h264_encoder", Some(name), Vec::new())));
            h264
        };
        let adaptive = format!("{name}_rtc_adaptive");
        nodes.extend([
            (adaptive.clone(), node("adaptive", Some(&h264), Vec::new())),
            (
                format!("{name}_rtc"),
                node("webrtc_sink", Some(&adaptive), Vec::new()),
            ),
        ]);
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_expands_to_the_usual_chain() {
        let c = CameraShortForm {
            source: "test".into(),
            fps: Some(15),
            quality: Some(60),
            ..Default::default()
        };
        let nodes = expand("rear", &c);
        let ids: Vec<&str> = nodes.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "rear",
                "rear_jpeg",
                "rear_mjpeg",
                "rear_h264",
                "rear_rtc_adaptive",
                "rear_rtc"
            ]
        );
        assert_eq!(nodes[3].1["inputs"][0], "rear");
        assert_eq!(nodes[4].1["inputs"][0], "rear_h264");
        assert_eq!(nodes[5].1["type"], "webrtc_sink");
        let mjpeg_only = expand(
            "rear",
            &CameraShortForm {
                webrtc: Some(false),
                ..c.clone()
            },
        );
        assert_eq!(
            mjpeg_only.len(),
            3,
            "webrtc: false keeps the MJPEG chain only"
        );
        assert_eq!(nodes[0].1["fps"], 15);
        assert_eq!(nodes[1].1["inputs"][0], "rear");
        assert_eq!(nodes[1].1["quality"], 60);
        assert_eq!(nodes[2].1["inputs"][0], "rear_jpeg");
        assert!(
            nodes[0].1.get("width").is_none(),
            "unset fields keep the node's defaults"
        );
    }

    #[test]
    #[cfg(feature = "webrtc")]
    fn a_camera_that_encodes_feeds_its_own_h264_to_the_ladder() {
        let c = CameraShortForm {
            source: "rtsp://cam/1".into(),
            transport: Some("udp".into()),
            webrtc: Some(true),
            ..Default::default()
        };
        let nodes = expand("gate", &c);
        let ids: Vec<&str> = nodes.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "gate",
                "gate_decode",
                "gate_jpeg",
                "gate_mjpeg",
                "gate_rtc_adaptive",
                "gate_rtc"
            ]
        );
        assert_eq!(nodes[0].1["transport"], "udp");
        assert_eq!(nodes[1].1["type"], "h264_decoder");
        assert_eq!(nodes[2].1["inputs"][0], "gate_decode");
        assert_eq!(nodes[4].1["type"], "adaptive");
        assert_eq!(nodes[4].1["inputs"][0], "gate", "no encoder between");
        assert_eq!(nodes[5].1["type"], "webrtc_sink");
        assert_eq!(nodes[5].1["inputs"][0], "gate_rtc_adaptive");

        // The same camera sending JPEG gives pictures: the usual chain, with its encoder.
        let jpeg = expand(
            "dock",
            &CameraShortForm {
                codec: Some("mjpeg".into()),
                ..c
            },
        );
        let ids: Vec<&str> = jpeg.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "dock",
                "dock_jpeg",
                "dock_mjpeg",
                "dock_h264",
                "dock_rtc_adaptive",
                "dock_rtc"
            ]
        );
        assert_eq!(jpeg[0].1["codec"], "mjpeg");
    }
}
