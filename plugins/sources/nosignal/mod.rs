//! The "no signal" picture a camera shows while its source is down: the camera's name and the time
//! (UTC) on a dark purple background, so viewers stay connected and see what is going on. Text is
//! drawn with a built-in 5x7 font; the background colour is `BACKGROUND`, which tests look for.
//! A camera that gives its own H.264 shows it as H.264 (`H264Picture`): an IDR with its SPS and
//! PPS, decodable on its own, encoded by openh264 only while the camera is down.

use std::time::{SystemTime, UNIX_EPOCH};

/// The background colour (RGB).
pub const BACKGROUND: [u8; 3] = [48, 16, 64];
const INK: [u8; 3] = [235, 235, 235];

/// 5x7 glyphs, one byte per row, bit 4 is the leftmost pixel.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ' ' => [0; 7],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04], // '?'
    }
}

/// Draws `text` centred horizontally with its top at `top`, each font pixel `scale` pixels wide.
fn draw_text(rgb: &mut [u8], width: usize, height: usize, text: &str, top: usize, scale: usize) {
    let advance = 6 * scale;
    let text_width = text.chars().count() * advance;
    let left = width.saturating_sub(text_width) / 2;
    for (i, c) in text.chars().enumerate() {
        let rows = glyph(c);
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits >> (4 - col) & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (x, y) = (
                            left + i * advance + col * scale + dx,
                            top + row * scale + dy,
                        );
                        if x < width && y < height {
                            rgb[(y * width + x) * 3..][..3].copy_from_slice(&INK);
                        }
                    }
                }
            }
        }
    }
}

/// `HH:MM:SS UTC` of `t`.
fn clock(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// A full "no signal" frame for `camera` at time `t`.
pub fn frame(camera: &str, width: u32, height: u32, t: SystemTime) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut rgb: Vec<u8> = BACKGROUND.iter().copied().cycle().take(w * h * 3).collect();
    let scale = (w / 160).max(1);
    let line = 10 * scale;
    let top = (h / 2).saturating_sub(line * 3 / 2);
    draw_text(&mut rgb, w, h, "NO SIGNAL", top, scale * 2);
    draw_text(&mut rgb, w, h, camera, top + line * 2, scale);
    draw_text(&mut rgb, w, h, &clock(t), top + line * 3, scale);
    rgb
}

/// The "no signal" picture as H.264, for a camera that gives its own: each one an IDR with SPS
/// and PPS in front, so a decoder that joins at any of them shows it. It is encoded again only
/// when what it shows changes (the clock's second, or the size), about once a second; nothing
/// is kept or done while the camera is up but the encoder of the last size.
#[cfg(feature = "webrtc")]
#[derive(Default)]
pub struct H264Picture {
    encoder: Option<crate::plugins::encoders::h264::Session>,
    /// The last picture: the second it shows, its size, its bitstream.
    last: Option<(u64, (u32, u32), bytes::Bytes)>,
}

#[cfg(feature = "webrtc")]
impl H264Picture {
    /// The bitrate it is encoded at: ample for a flat picture with text at `NO_SIGNAL_FPS`.
    const BITRATE_KBPS: u32 = 1000;

    /// The picture for `camera` at `t`, at `width` x `height` rounded down to even sizes
    /// (H.264's 4:2:0) and at least 16x16.
    pub fn at(
        &mut self,
        camera: &str,
        (width, height): (u32, u32),
        t: SystemTime,
    ) -> Result<super::AccessUnit, crate::plugins::encoders::h264::H264Error> {
        let size = ((width & !1).max(16), (height & !1).max(16));
        let second = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let unit = |data| super::AccessUnit {
            captured_at: t,
            width: size.0,
            height: size.1,
            keyframe: true,
            data,
        };
        if let Some((s, at, data)) = &self.last {
            if (*s, *at) == (second, size) {
                return Ok(unit(data.clone()));
            }
        }
        let fits = matches!(&self.encoder, Some(e) if e.size() == size);
        if !fits {
            let config = crate::plugins::encoders::h264::H264EncoderConfig {
                max_fps: super::NO_SIGNAL_FPS,
                keyframe_interval: 1,
                ..Default::default()
            };
            let variant = crate::port::H264Variant {
                bitrate_kbps: Self::BITRATE_KBPS,
                scale: 1,
            };
            self.encoder = Some(crate::plugins::encoders::h264::Session::new(
                &config, variant, size.0, size.1,
            )?);
        }
        let Some(encoder) = self.encoder.as_mut() else {
            unreachable!("made above")
        };
        let (data, _) = encoder.encode(&frame(camera, size.0, size.1, t), true)?;
        self.last = Some((second, size, data.clone()));
        Ok(unit(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_frame_has_the_background_and_some_text() {
        let t = UNIX_EPOCH + Duration::from_secs(3600 + 120 + 3);
        assert_eq!(clock(t), "01:02:03 UTC");
        let rgb = frame("front", 320, 240, t);
        assert_eq!(rgb.len(), 320 * 240 * 3);
        assert_eq!(&rgb[..3], &BACKGROUND);
        let ink = rgb.chunks_exact(3).filter(|p| *p == INK).count();
        assert!(ink > 500, "text drawn: {ink} pixels");
    }

    #[test]
    #[cfg(feature = "webrtc")]
    fn the_h264_picture_decodes_on_its_own_and_is_encoded_once_a_second() {
        use openh264::formats::YUVSource;
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut picture = H264Picture::default();
        let idr = picture.at("gate", (641, 361), t).unwrap();
        assert!(idr.keyframe && (idr.width, idr.height) == (640, 360));
        let idr = idr.data;
        let again = picture.at("gate", (641, 361), t + Duration::from_millis(500));
        assert_eq!(
            idr.as_ptr(),
            again.unwrap().data.as_ptr(),
            "the same second: not encoded again"
        );
        let next = picture
            .at("gate", (641, 361), t + Duration::from_secs(1))
            .unwrap()
            .data;
        assert_ne!(idr.as_ptr(), next.as_ptr());

        // Each one alone, in a fresh decoder: the picture, at the even size below the one asked.
        for data in [&idr, &next] {
            let types: Vec<u8> = data
                .windows(4)
                .filter(|w| w[..3] == [0, 0, 1])
                .map(|w| w[3] & 0x1f)
                .collect();
            assert_eq!(&types[..3], &[7, 8, 5], "SPS, PPS, IDR: {types:?}");
            let mut decoder = openh264::decoder::Decoder::new().unwrap();
            let yuv = decoder.decode(data).unwrap().expect("a picture");
            assert_eq!(yuv.dimensions(), (640, 360));
            let mut rgb = vec![0u8; 640 * 360 * 3];
            yuv.write_rgb8(&mut rgb);
            let near = |p: &[u8]| p.iter().zip(BACKGROUND).all(|(a, b)| a.abs_diff(b) <= 12);
            let background = rgb.chunks_exact(3).filter(|p| near(p)).count();
            assert!(
                background > 640 * 360 * 8 / 10,
                "{background} background pixels"
            );
        }
    }
}
