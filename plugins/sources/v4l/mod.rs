//! V4L2 cameras through nokhwa. MJPEG is preferred and passed on as it comes (no decode, no
//! re-encode); YUYV is converted to RGB. Opening a device that is not there fails with nokhwa's own
//! message, and `devices()` lists what is plugged in.

use std::time::SystemTime;

use bytes::Bytes;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};
use nokhwa::{Camera, NokhwaError};
use thiserror::Error;

use super::kinds::{check_size, device_index, Open, SourceKind};
use super::{Captured, FrameSource, SourceError};
use crate::node::FieldIssue;

/// `source: /dev/videoN` or `N`: a V4L2 camera through nokhwa.
pub const KIND: SourceKind = SourceKind {
    name: "V4L2 device",
    claims: |s| device_index(s).is_some(),
    validate: check_size,
    validate_added: |c, issues| {
        if let Some(index) = device_index(c.source.trim()) {
            if !std::path::Path::new(&format!("/dev/video{index}")).exists() {
                issues.push(FieldIssue::new(
                    "source",
                    format!("no such device /dev/video{index}"),
                ));
            }
        }
    },
    open: Open::Frames(|c| {
        let index = device_index(c.source.trim()).unwrap_or_default();
        Ok(Box::new(Device::open(index, c.width, c.height, c.fps)?))
    }),
    codecs: &[],
    takes_noise: false,
};
use crate::frame::PixelFormat;

/// Formats we can use, best first.
static FORMATS: [FrameFormat; 2] = [FrameFormat::MJPEG, FrameFormat::YUYV];

/// What failed with a V4L2 device; `index` is N of /dev/videoN.
#[derive(Debug, Error)]
pub enum DeviceError {
    #[error("cannot open camera /dev/video{index}: {source}")]
    Open { index: u32, source: NokhwaError },
    #[error("/dev/video{index}: cannot start streaming: {source}")]
    Stream { index: u32, source: NokhwaError },
    #[error("/dev/video{index}: {source}")]
    Frame { index: u32, source: NokhwaError },
    #[error("/dev/video{index}: unsupported pixel format {format}")]
    Format { index: u32, format: FrameFormat },
    #[error("/dev/video{index}: {source}")]
    Convert { index: u32, source: ShortFrame },
    #[error("cannot list cameras: {0}")]
    List(NokhwaError),
}

/// A YUYV frame smaller than its size says.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("short YUYV frame: {got} bytes for {width}x{height}")]
pub struct ShortFrame {
    pub got: usize,
    pub width: u32,
    pub height: u32,
}

pub struct Device {
    index: u32,
    camera: Camera,
    streaming: bool,
}

impl Device {
    pub fn open(index: u32, width: u32, height: u32, fps: u32) -> Result<Self, DeviceError> {
        let wanted = CameraFormat::new(Resolution::new(width, height), FrameFormat::MJPEG, fps);
        let request = RequestedFormat::with_formats(RequestedFormatType::Closest(wanted), &FORMATS);
        let camera = Camera::new(CameraIndex::Index(index), request)
            .map_err(|source| DeviceError::Open { index, source })?;
        let format = camera.camera_format();
        tracing::info!(device = index, "opened /dev/video{index}: {format}");
        Ok(Self {
            index,
            camera,
            streaming: false,
        })
    }
}

impl FrameSource for Device {
    fn next_frame(&mut self, _seq: u64) -> Result<Captured, SourceError> {
        let index = self.index;
        if !self.streaming {
            self.camera
                .open_stream()
                .map_err(|source| DeviceError::Stream { index, source })?;
            self.streaming = true;
        }
        let format = self.camera.camera_format();
        let raw = self
            .camera
            .frame_raw()
            .map_err(|source| DeviceError::Frame { index, source })?;
        let captured_at = SystemTime::now();
        let (width, height) = (format.width(), format.resolution().height());
        let (format, data) = match format.format() {
            FrameFormat::MJPEG => (PixelFormat::Jpeg, Bytes::copy_from_slice(&raw)),
            FrameFormat::YUYV => (
                PixelFormat::Rgb24,
                Bytes::from(
                    yuyv_to_rgb(&raw, width, height)
                        .map_err(|source| DeviceError::Convert { index, source })?,
                ),
            ),
            format => return Err(DeviceError::Format { index, format }.into()),
        };
        Ok(Captured {
            captured_at,
            width,
            height,
            format,
            data,
        })
    }

    fn pause(&mut self) {
        if self.streaming {
            let _ = self.camera.stop_stream();
            self.streaming = false;
        }
    }
}

/// Converts packed YUYV 4:2:2 (BT.601, limited range) to RGB24.
pub fn yuyv_to_rgb(yuyv: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ShortFrame> {
    let pixels = width as usize * height as usize;
    if yuyv.len() < pixels * 2 {
        return Err(ShortFrame {
            got: yuyv.len(),
            width,
            height,
        });
    }
    let mut rgb = Vec::with_capacity(pixels * 3);
    let clamp = |v: i32| v.clamp(0, 255) as u8;
    for quad in yuyv[..pixels * 2].chunks_exact(4) {
        let (u, v) = (i32::from(quad[1]) - 128, i32::from(quad[3]) - 128);
        for y in [quad[0], quad[2]] {
            let c = 298 * (i32::from(y) - 16);
            rgb.push(clamp((c + 409 * v + 128) >> 8));
            rgb.push(clamp((c - 100 * u - 208 * v + 128) >> 8));
            rgb.push(clamp((c + 516 * u + 128) >> 8));
        }
    }
    Ok(rgb)
}

/// Cameras the system reports, as `(index, name)`.
pub fn devices() -> Result<Vec<(String, String)>, DeviceError> {
    let found = nokhwa::query(ApiBackend::Auto).map_err(DeviceError::List)?;
    Ok(found
        .into_iter()
        .map(|c| (c.index().to_string(), c.human_name()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_grey_and_white_convert() {
        let rgb = yuyv_to_rgb(&[126, 128, 235, 128], 2, 1).unwrap();
        assert_eq!(rgb, vec![128, 128, 128, 255, 255, 255]);
        assert_eq!(
            yuyv_to_rgb(&[0; 3], 2, 1),
            Err(ShortFrame {
                got: 3,
                width: 2,
                height: 1
            })
        );
    }

    #[test]
    fn a_missing_device_fails_with_a_clear_message() {
        let err = Device::open(99, 640, 480, 30)
            .err()
            .expect("no /dev/video99 here");
        assert!(
            matches!(err, DeviceError::Open { index: 99, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("/dev/video99"), "{err}");
    }
}
