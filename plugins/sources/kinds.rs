//! The kinds of camera source, as one table: which `source:` strings each claims, how the
//! camera's settings are checked for it, how it is opened and what it gives (pictures, or H.264
//! the camera encoded itself). A new source kind is one folder beside this file, holding its
//! `KIND`, and one line in `KINDS`.

use super::{AccessUnit, CameraConfig, FrameSource, SourceError};
use crate::node::FieldIssue;
use crate::port::PortKind;

/// Opens a source of `T` for a camera's settings.
pub type OpenWith<T> = fn(&CameraConfig) -> Result<Box<dyn FrameSource<T>>, SourceError>;

/// How a kind is opened, which says what its camera gives downstream.
pub enum Open {
    /// Pictures (raw pixels or JPEG): the camera gives `frames`.
    Frames(OpenWith<super::Captured>),
    /// H.264 access units as the camera encoded them: the camera gives `h264`, passed through.
    H264(OpenWith<AccessUnit>),
}

/// One kind of source.
pub struct SourceKind {
    /// What it is, for messages: "test pattern", "V4L2 device", ...
    pub name: &'static str,
    /// Whether a (trimmed) `source:` string is of this kind.
    pub claims: fn(&str) -> bool,
    /// Problems of a camera's settings for this kind (`source`, `width`, `height`).
    pub validate: fn(&CameraConfig, &mut Vec<FieldIssue>),
    /// Further problems when the camera is added through the API (in the file, a missing
    /// device or stream is a camera that is down until it appears).
    pub validate_added: fn(&CameraConfig, &mut Vec<FieldIssue>),
    /// Opens the source on the camera's capture thread, when no `codec:` is set.
    pub open: Open,
    /// The values the camera's `codec:` setting takes for this kind (what the source sends,
    /// which decides what the camera gives before any connection), each with how it opens; empty
    /// for kinds that have no such setting.
    pub codecs: &'static [(&'static str, Open)],
    /// Whether `noise:` (grain added to each frame) applies.
    pub takes_noise: bool,
}

/// Every kind, asked in order; the last one (files and folders) claims whatever is left.
pub const KINDS: &[&SourceKind] = &[
    &super::testsrc::KIND,
    #[cfg(feature = "v4l")]
    &super::v4l::KIND,
    #[cfg(not(feature = "v4l"))]
    &NO_V4L,
    &super::http_mjpeg::KIND,
    &super::rtsp::KIND,
    &super::rtp::KIND,
    &super::files::KIND,
];

impl SourceKind {
    /// How a camera of this kind with `codec:` set to `codec` opens (the default for no, or an
    /// unknown, codec: validation refuses the latter).
    pub fn opener(&self, codec: Option<&str>) -> &Open {
        let codec = codec.map(str::trim);
        self.codecs
            .iter()
            .find(|(name, _)| Some(*name) == codec)
            .map_or(&self.open, |(_, open)| open)
    }

    /// What a camera of this kind with `codec:` set to `codec` gives on its output.
    pub fn gives(&self, codec: Option<&str>) -> PortKind {
        match self.opener(codec) {
            Open::Frames(_) => PortKind::Frames,
            Open::H264(_) => PortKind::H264,
        }
    }

    /// Problems of a camera's `codec:` setting for this kind.
    pub fn check_codec(&self, codec: Option<&str>, issues: &mut Vec<FieldIssue>) {
        let Some(codec) = codec else { return };
        let names: Vec<&str> = self.codecs.iter().map(|(name, _)| *name).collect();
        if names.is_empty() {
            issues.push(FieldIssue::new(
                "codec",
                "'codec' is for rtsp:// sources only",
            ));
        } else if !names.contains(&codec.trim()) {
            issues.push(FieldIssue::new(
                "codec",
                format!("'codec' must be {} (got '{codec}')", names.join(" or ")),
            ));
        }
    }
}

/// `source` as it may be shown: the user name and password of a `scheme://user:pass@host/...`
/// URL replaced by `***`, for every message and log line.
pub fn redacted(source: &str) -> String {
    let Some((scheme, rest)) = source.split_once("://") else {
        return source.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => source.to_string(),
    }
}

/// The kind of `source`.
pub fn kind_of(source: &str) -> &'static SourceKind {
    let s = source.trim();
    KINDS
        .iter()
        .copied()
        .find(|k| (k.claims)(s))
        .unwrap_or(KINDS[KINDS.len() - 1])
}

/// Nothing more to check.
pub fn no_checks(_: &CameraConfig, _: &mut Vec<FieldIssue>) {}

/// The size range of sources that scale or accept any size: 16x16 up to 8K.
pub fn check_size(c: &CameraConfig, issues: &mut Vec<FieldIssue>) {
    crate::node::check_range(issues, "width", c.width, 16..=7680);
    crate::node::check_range(issues, "height", c.height, 16..=4320);
}

/// `/dev/videoN` or a bare index `N`: the device number.
pub fn device_index(source: &str) -> Option<u32> {
    source
        .parse::<u32>()
        .ok()
        .or_else(|| source.strip_prefix("/dev/video")?.parse().ok())
}

/// Devices in a build without V4L2: claimed, so that they are refused clearly rather than taken
/// for file names.
#[cfg(not(feature = "v4l"))]
const NO_V4L: SourceKind = SourceKind {
    name: "V4L2 device",
    claims: |s| device_index(s).is_some(),
    validate: |c, issues| {
        issues.push(FieldIssue::new(
            "source",
            format!(
                "'{}' is a V4L2 device, but camgraph was built without the 'v4l' feature",
                c.source
            ),
        ))
    },
    validate_added: no_checks,
    open: Open::Frames(|c| Err(format!("{}: built without V4L2 support", c.source.trim()).into())),
    codecs: &[],
    takes_noise: false,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_string_has_its_kind() {
        for (source, kind) in [
            ("test", "test pattern"),
            (" test ", "test pattern"),
            ("0", "V4L2 device"),
            ("2", "V4L2 device"),
            ("/dev/video3", "V4L2 device"),
            ("http://cam/video", "HTTP MJPEG"),
            ("https://cam/video", "HTTP MJPEG"),
            ("/var/lib/frames", "file or folder"),
            ("clips/a.mjpeg", "file or folder"),
            ("/dev/videoX", "file or folder"),
            ("rtsp://cam/stream1", "RTSP"),
        ] {
            assert_eq!(kind_of(source).name, kind, "{source}");
        }
        assert_eq!(kind_of("rtsp://cam/1").gives(None), PortKind::H264);
        assert_eq!(kind_of("rtsp://cam/1").gives(Some("h264")), PortKind::H264);
        assert_eq!(
            kind_of("rtsp://cam/1").gives(Some("mjpeg")),
            PortKind::Frames
        );
        assert_eq!(kind_of("http://cam/1").gives(None), PortKind::Frames);
    }

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            redacted("rtsp://admin:s3cret@10.0.0.5:554/live?x=1"),
            "rtsp://***@10.0.0.5:554/live?x=1"
        );
        assert_eq!(redacted("rtsp://user@cam/a@b"), "rtsp://***@cam/a@b");
        assert_eq!(redacted("rtsp://cam/a@b"), "rtsp://cam/a@b");
        assert_eq!(redacted("/srv/clips/a@b.mjpeg"), "/srv/clips/a@b.mjpeg");
    }
}
