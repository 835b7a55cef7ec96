//! The short form for the common case: an entry under `cameras:` expands to the usual chain
//! `NAME` (camera) -> `NAME_jpeg` (jpeg_encoder) -> `NAME_mjpeg` (mjpeg_sink). Cameras added through
//! the API (`POST /api/camera/cameras/NAME?source=...`) are expanded the same way. Registered
//! with the registry as its `ShortForm`.
//!
//! ```yaml
//! cameras:
//!   front: { source: test, width: 1280, height: 720, fps: 30, quality: 80 }
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use crate::http::face::param;
use crate::port::JpegVariant;
use crate::registry::{path_error, ParseError, ShortForm};

/// One camera in short form. Every field but `source` is optional and defaults as in the node types.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraShortForm {
    /// As `camera.source`: `test`, `/dev/videoN` or `N`, `http://...` MJPEG, a file or folder.
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
    /// As `jpeg_encoder.quality`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// As `mjpeg_sink.max_viewers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_viewers: Option<usize>,
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
            .ok_or("missing query parameter 'source' (test, a device index or /dev/videoN, an http:// MJPEG URL, a file or folder)")?;
        let bad = |e: crate::http::face::BadParam| e.to_string();
        let camera = CameraShortForm {
            source,
            width: param(query, "width", 16..=7680).map_err(bad)?,
            height: param(query, "height", 16..=4320).map_err(bad)?,
            fps: param(query, "fps", 1..=120).map_err(bad)?,
            quality: param(query, "quality", JpegVariant::QUALITY).map_err(bad)?,
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
    let mut jpeg = Vec::new();
    set(&mut jpeg, "quality", c.quality.map(u64::from));
    let mut mjpeg = Vec::new();
    set(&mut mjpeg, "max_viewers", c.max_viewers.map(|v| v as u64));
    let (jpeg_id, mjpeg_id) = (format!("{name}_jpeg"), format!("{name}_mjpeg"));
    vec![
        (name.to_string(), node("camera", None, camera)),
        (jpeg_id.clone(), node("jpeg_encoder", Some(name), jpeg)),
        (mjpeg_id, node("mjpeg_sink", Some(&jpeg_id), mjpeg)),
    ]
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
        assert_eq!(ids, ["rear", "rear_jpeg", "rear_mjpeg"]);
        assert_eq!(nodes[0].1["fps"], 15);
        assert_eq!(nodes[1].1["inputs"][0], "rear");
        assert_eq!(nodes[1].1["quality"], 60);
        assert_eq!(nodes[2].1["inputs"][0], "rear_jpeg");
        assert!(
            nodes[0].1.get("width").is_none(),
            "unset fields keep the node's defaults"
        );
    }
}
