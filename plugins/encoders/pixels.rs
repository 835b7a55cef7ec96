//! A frame's pixels at the sizes the encoders' variants ask for, each made at most once per frame:
//! the camera's RGB as it is, or its JPEG decoded once, and box-filtered copies at 1/2 and 1/4
//! size. Buffers are reused from frame to frame.

use crate::frame::{Frame, PixelFormat};
use thiserror::Error;

/// Why a frame's pixels could not be had.
#[derive(Debug, Error)]
pub enum PixelsError {
    #[error("cannot start the JPEG decoder: {0}")]
    Decoder(turbojpeg::Error),
    #[error("cannot decode camera JPEG: {0}")]
    Decode(turbojpeg::Error),
    #[error("frame has {got} bytes, {width}x{height} RGB needs {needed}")]
    Short {
        got: usize,
        width: u32,
        height: u32,
        needed: usize,
    },
}

/// Packed RGB at one size.
struct Scaled {
    scale: u8,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

#[derive(Default)]
pub struct Pixels {
    decompressor: Option<turbojpeg::Decompressor>,
    /// The camera's JPEG decoded, valid while `decoded_seq` is the current frame's.
    decoded: Vec<u8>,
    decoded_seq: Option<u64>,
    /// Scaled copies; the first `scaled_count` belong to frame `scaled_seq`.
    scaled: Vec<Scaled>,
    scaled_seq: Option<u64>,
    scaled_count: usize,
}

impl Pixels {
    /// `frame` as packed RGB divided in size by `scale` (1, 2 or 4), with its width and height.
    pub fn rgb<'a>(
        &'a mut self,
        frame: &'a Frame,
        scale: u8,
    ) -> Result<(&'a [u8], u32, u32), PixelsError> {
        self.decode_once(frame)?;
        let full: &[u8] = match frame.format {
            PixelFormat::Rgb24 => &frame.data,
            PixelFormat::Jpeg => &self.decoded,
        };
        let needed = frame.width as usize * frame.height as usize * 3;
        if full.len() < needed {
            return Err(PixelsError::Short {
                got: full.len(),
                width: frame.width,
                height: frame.height,
                needed,
            });
        }
        if scale <= 1 {
            return Ok((&full[..needed], frame.width, frame.height));
        }
        if self.scaled_seq != Some(frame.seq) {
            (self.scaled_seq, self.scaled_count) = (Some(frame.seq), 0);
        }
        let made = &self.scaled[..self.scaled_count];
        let slot = match made.iter().position(|s| s.scale == scale) {
            Some(i) => i,
            None => {
                if self.scaled.len() <= self.scaled_count {
                    self.scaled.push(Scaled {
                        scale: 0,
                        width: 0,
                        height: 0,
                        rgb: Vec::new(),
                    });
                }
                let s = &mut self.scaled[self.scaled_count];
                let (w, h) = downscale(full, frame.width, frame.height, scale, &mut s.rgb);
                (s.scale, s.width, s.height) = (scale, w, h);
                self.scaled_count += 1;
                self.scaled_count - 1
            }
        };
        let s = &self.scaled[slot];
        Ok((&s.rgb, s.width, s.height))
    }

    fn decode_once(&mut self, frame: &Frame) -> Result<(), PixelsError> {
        if frame.format == PixelFormat::Rgb24 || self.decoded_seq == Some(frame.seq) {
            return Ok(());
        }
        let d = match &mut self.decompressor {
            Some(d) => d,
            None => self
                .decompressor
                .insert(turbojpeg::Decompressor::new().map_err(PixelsError::Decoder)?),
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
        self.decoded_seq = None;
        d.decompress(&frame.data, image)
            .map_err(PixelsError::Decode)?;
        self.decoded_seq = Some(frame.seq);
        Ok(())
    }
}

/// Writes `rgb` (width x height) divided by `factor` into `out`; returns the new size, rounded down
/// to even numbers (H.264 needs them). Edge pixels that do not fill a whole box are dropped.
pub fn downscale(rgb: &[u8], width: u32, height: u32, factor: u8, out: &mut Vec<u8>) -> (u32, u32) {
    match factor {
        0 | 1 => box_average::<1>(rgb, width, height, out),
        2 => box_average::<2>(rgb, width, height, out),
        4 => box_average::<4>(rgb, width, height, out),
        f => {
            tracing::warn!("no {f}x downscale; using 4x");
            box_average::<4>(rgb, width, height, out)
        }
    }
}

/// Averages F x F boxes, a whole output row at a time: each input row of the box is added into a
/// row of sums in one tight pass (which the compiler unrolls for the constant F), then the sums
/// are divided once. Several times faster than summing box by box.
fn box_average<const F: usize>(
    rgb: &[u8],
    width: u32,
    height: u32,
    out: &mut Vec<u8>,
) -> (u32, u32) {
    let (w, h) = (width as usize, height as usize);
    if w < F || h < F || F == 1 {
        // Not one whole box (or nothing to average): the picture as it is.
        out.clear();
        out.extend_from_slice(&rgb[..(w * h * 3).min(rgb.len())]);
        return (width, height);
    }
    let even = |n: usize| if n >= 2 { n & !1 } else { n };
    let (ow, oh) = (even(w / F), even(h / F));
    out.clear();
    out.resize(ow * oh * 3, 0);
    // At most 16 x 255 per sum: u16 lanes, twice as many per SIMD register as u32.
    let mut sums = vec![0u16; ow * 3];
    let area = (F * F) as u16;
    for (oy, out_row) in out.chunks_exact_mut(ow * 3).enumerate() {
        sums.fill(0);
        for y in oy * F..oy * F + F {
            let row = &rgb[y * w * 3..][..ow * F * 3];
            for (sum, pixels) in sums.chunks_exact_mut(3).zip(row.chunks_exact(3 * F)) {
                for px in pixels.chunks_exact(3) {
                    sum[0] += u16::from(px[0]);
                    sum[1] += u16::from(px[1]);
                    sum[2] += u16::from(px[2]);
                }
            }
        }
        for (o, s) in out_row.iter_mut().zip(&sums) {
            *o = ((s + area / 2) / area) as u8;
        }
    }
    (ow as u32, oh as u32)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn halves_by_averaging_boxes_to_even_sizes() {
        // 4x2: left box black/white mix, right box all 200.
        let mut rgb = Vec::new();
        for _ in 0..2 {
            rgb.extend([0, 0, 0, 255, 255, 255, 200, 200, 200, 200, 200, 200]);
        }
        let mut out = Vec::new();
        assert_eq!(downscale(&rgb, 4, 2, 2, &mut out), (2, 1));
        assert_eq!(out, vec![128, 128, 128, 200, 200, 200]);
        assert_eq!(downscale(&vec![9; 16 * 8 * 3], 16, 8, 4, &mut out), (4, 2));
        assert!(out.iter().all(|&v| v == 9));
        // 12x12 / 4 = 3x3, rounded down to 2x2.
        assert_eq!(
            downscale(&vec![9; 12 * 12 * 3], 12, 12, 4, &mut out),
            (2, 2)
        );
        assert_eq!(out.len(), 2 * 2 * 3);
    }

    #[test]
    fn a_frame_is_scaled_once_per_size_and_short_frames_are_refused() {
        let frame = |seq, data: Vec<u8>| Frame {
            camera: Arc::from("cam"),
            seq,
            captured_at: SystemTime::now(),
            width: 8,
            height: 4,
            format: PixelFormat::Rgb24,
            data: data.into(),
        };
        let mut p = Pixels::default();
        let one = frame(1, vec![10; 8 * 4 * 3]);
        let size = |p: &mut Pixels, scale| p.rgb(&one, scale).map(|(_, w, h)| (w, h)).unwrap();
        assert_eq!(size(&mut p, 1), (8, 4));
        assert_eq!(size(&mut p, 2), (4, 2));
        let first = p.rgb(&one, 2).unwrap().0.as_ptr();
        assert_eq!(p.rgb(&one, 2).unwrap().0.as_ptr(), first, "made once");
        let two = frame(2, vec![20; 8 * 4 * 3]);
        assert!(
            p.rgb(&two, 2).unwrap().0.iter().all(|&v| v == 20),
            "a new frame is scaled anew"
        );
        let err = p.rgb(&frame(3, vec![0; 10]), 1).unwrap_err();
        assert!(
            matches!(
                err,
                PixelsError::Short {
                    got: 10,
                    needed: 96,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("needs 96"), "{err}");
    }
}
