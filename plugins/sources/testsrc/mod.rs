//! The test pattern: colour bars (with optional random grain), a box that moves one step per
//! frame, and three rows of 32
//! black/white blocks in the top-left corner carrying the frame number, its complement (a check),
//! and the capture time (Unix milliseconds, low 32 bits). `read_marks` reads them back from a
//! decoded frame, so tests and latency checks know exactly which frame they see and when it was
//! taken. Buffers are recycled once every consumer has let go of them.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use super::kinds::{no_checks, Open, SourceKind};
use super::{Captured, FrameSource, Pacer, SourceError};
use crate::frame::PixelFormat;
use crate::node::check_range;

/// `source: test`: a moving pattern with the frame number and capture time painted in.
pub const KIND: SourceKind = SourceKind {
    name: "test pattern",
    claims: |s| s == "test",
    validate: |c, issues| {
        check_range(issues, "width", c.width, MIN_WIDTH..=7680);
        check_range(issues, "height", c.height, MIN_HEIGHT..=4320);
    },
    validate_added: no_checks,
    open: Open::Frames(|c| {
        Ok(Box::new(OnDemand {
            size: (c.width, c.height),
            fps: c.fps,
            noise: c.noise,
            pattern: None,
        }))
    }),
    codecs: &[],
    takes_noise: true,
};

/// Smallest size that fits the marks (32 blocks of 8 pixels, three rows).
pub const MIN_WIDTH: u32 = 256;
pub const MIN_HEIGHT: u32 = 64;
const BITS: usize = 32;
const ROWS: usize = 3;
/// Buffers kept for reuse; a buffer comes back once viewers and encoders are done with it.
const SPARE_BUFFERS: usize = 4;
/// Grainy backgrounds made at start and cycled through, so grain costs nothing per frame.
const GRAIN_FRAMES: usize = 8;

/// The side of one mark block at this frame width: a multiple of 8 so JPEG blocks stay clean.
pub fn block_size(width: u32) -> usize {
    ((width as usize / BITS) / 8 * 8).max(8)
}

pub struct TestPattern {
    width: u32,
    height: u32,
    pacer: Pacer,
    /// One background, or `GRAIN_FRAMES` grainy ones.
    backgrounds: Vec<Vec<u8>>,
    recent: VecDeque<Bytes>,
}

const BARS: [[u8; 3]; 8] = [
    [235, 235, 235],
    [235, 235, 16],
    [16, 235, 235],
    [16, 235, 16],
    [235, 16, 235],
    [235, 16, 16],
    [16, 16, 235],
    [16, 16, 16],
];

impl TestPattern {
    pub fn new(width: u32, height: u32, fps: u32) -> Self {
        let (w, h) = (width as usize, height as usize);
        let mut background = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let px = if y < h * 2 / 3 {
                    BARS[x * BARS.len() / w]
                } else {
                    let v = (x * 255 / w.max(1)) as u8;
                    [v, v, v]
                };
                background[(y * w + x) * 3..][..3].copy_from_slice(&px);
            }
        }
        Self {
            width,
            height,
            pacer: Pacer::new(fps),
            backgrounds: vec![background],
            recent: VecDeque::new(),
        }
    }

    /// Adds random grain of up to `levels` to the background, different from frame to frame.
    pub fn with_noise(mut self, levels: u8) -> Self {
        if levels == 0 {
            return self;
        }
        let clean = self.backgrounds.swap_remove(0);
        // xorshift64: plenty random for grain, and the same on every run.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let span = 2 * u64::from(levels) + 1;
        self.backgrounds = (0..GRAIN_FRAMES)
            .map(|_| {
                clean
                    .iter()
                    .map(|&v| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let grain = (state % span) as i32 - i32::from(levels);
                        (i32::from(v) + grain).clamp(0, 255) as u8
                    })
                    .collect()
            })
            .collect();
        self
    }

    /// A buffer to draw into: the oldest recent frame if nobody holds it any more, else a new one.
    fn buffer(&mut self) -> BytesMut {
        if self.recent.len() >= SPARE_BUFFERS {
            if let Some(old) = self.recent.pop_front() {
                if let Ok(buf) = old.try_into_mut() {
                    return buf;
                }
            }
        }
        BytesMut::zeroed(self.backgrounds[0].len())
    }

    /// Paints frame `seq` captured at `captured_at` into `buf`.
    pub fn draw(&self, buf: &mut [u8], seq: u64, captured_at: SystemTime) {
        let (w, h) = (self.width as usize, self.height as usize);
        buf.copy_from_slice(&self.backgrounds[seq as usize % self.backgrounds.len()]);
        // A box moving 8 pixels a frame, so motion is visible and every frame differs.
        let side = (h / 6).max(16);
        let travel = w.saturating_sub(side).max(1);
        let x0 = (seq as usize * 8) % travel;
        let y0 = h / 2 - side / 2;
        for y in y0..(y0 + side).min(h) {
            let row = &mut buf[(y * w + x0) * 3..(y * w + x0 + side) * 3];
            for px in row.chunks_exact_mut(3) {
                px.copy_from_slice(&[255, 140, 0]);
            }
        }
        let ms = captured_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u32;
        let seq = seq as u32;
        for (row, value) in [seq, !seq, ms].into_iter().enumerate() {
            paint_row(buf, w, row, value);
        }
    }
}

fn paint_row(buf: &mut [u8], width: usize, row: usize, value: u32) {
    let b = block_size(width as u32);
    for bit in 0..BITS {
        let on = value >> (BITS - 1 - bit) & 1 == 1;
        let shade = if on { 255 } else { 0 };
        for y in row * b..(row + 1) * b {
            let start = (y * width + bit * b) * 3;
            buf[start..start + b * 3].fill(shade);
        }
    }
}

impl FrameSource for TestPattern {
    fn next_frame(&mut self, seq: u64) -> Result<Captured, SourceError> {
        self.pacer.wait();
        let captured_at = SystemTime::now();
        let mut buf = self.buffer();
        self.draw(&mut buf, seq, captured_at);
        let data = buf.freeze();
        self.recent.push_back(data.clone());
        Ok(Captured {
            captured_at,
            width: self.width,
            height: self.height,
            format: PixelFormat::Rgb24,
            data,
        })
    }

    fn pause(&mut self) {
        self.pacer.reset();
    }
}

/// The test pattern as a camera's source: its backgrounds (95 MiB at 8K, eight times that with
/// grain) exist only while frames are wanted: made for the first frame, dropped on pause.
struct OnDemand {
    size: (u32, u32),
    fps: u32,
    noise: u8,
    pattern: Option<TestPattern>,
}

impl FrameSource for OnDemand {
    fn next_frame(&mut self, seq: u64) -> Result<Captured, SourceError> {
        let (width, height) = self.size;
        self.pattern
            .get_or_insert_with(|| TestPattern::new(width, height, self.fps).with_noise(self.noise))
            .next_frame(seq)
    }

    fn pause(&mut self) {
        self.pattern = None;
    }
}

/// A `width`x`height` RGB frame of the test pattern numbered `seq`, captured now: what node tests
/// feed an encoder or sink.
#[cfg(test)]
pub fn test_frame(width: u32, height: u32, seq: u64) -> std::sync::Arc<crate::frame::Frame> {
    let mut data = vec![0; (width * height * 3) as usize];
    let now = SystemTime::now();
    TestPattern::new(width, height, 30).draw(&mut data, seq, now);
    std::sync::Arc::new(crate::frame::Frame {
        camera: "cam".into(),
        seq,
        captured_at: now,
        width,
        height,
        format: crate::frame::PixelFormat::Rgb24,
        data: data.into(),
    })
}

/// What the marks of a frame say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// The frame number (low 32 bits).
    pub seq: u32,
    /// Capture time, Unix milliseconds, low 32 bits.
    pub captured_ms: u32,
}

/// Reads the marks from a decoded RGB frame; `None` if they are not there or do not check out.
pub fn read_marks(rgb: &[u8], width: u32, height: u32) -> Option<Marks> {
    let (w, h) = (width as usize, height as usize);
    let b = block_size(width);
    if w < BITS * b || h < ROWS * b || rgb.len() < w * h * 3 {
        return None;
    }
    let read_row = |row: usize| {
        (0..BITS).fold(0u32, |acc, bit| {
            // Average the green channel over the middle half of the block.
            let (x0, y0) = (bit * b + b / 4, row * b + b / 4);
            let mut sum = 0usize;
            for y in y0..y0 + b / 2 {
                for x in x0..x0 + b / 2 {
                    sum += rgb[(y * w + x) * 3 + 1] as usize;
                }
            }
            let mean = sum / (b / 2 * b / 2);
            acc << 1 | u32::from(mean > 127)
        })
    };
    let seq = read_row(0);
    (read_row(1) == !seq).then(|| Marks {
        seq,
        captured_ms: read_row(2),
    })
}

/// Capture time in Unix milliseconds from the low 32 bits in the marks, taking the high bits from
/// `now` (valid while the frame is less than ~24 days old).
pub fn captured_unix_ms(marks: Marks, now: SystemTime) -> u64 {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let candidate = (now_ms & !0xffff_ffff) | u64::from(marks.captured_ms);
    if candidate > now_ms + (1 << 31) {
        candidate - (1 << 32)
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn marks_survive_jpeg_and_read_back() {
        let (w, h) = (640, 360);
        let pattern = TestPattern::new(w, h, 30);
        let mut buf = vec![0; (w * h * 3) as usize];
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_123_456);
        pattern.draw(&mut buf, 123_457, t);
        let image = turbojpeg::Image {
            pixels: &buf[..],
            width: w as usize,
            pitch: w as usize * 3,
            height: h as usize,
            format: turbojpeg::PixelFormat::RGB,
        };
        let jpeg = turbojpeg::compress(image, 50, turbojpeg::Subsamp::Sub2x2).unwrap();
        let decoded = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).unwrap();
        let marks = read_marks(&decoded.pixels, w, h).expect("marks readable");
        assert_eq!(marks.seq, 123_457);
        assert_eq!(
            captured_unix_ms(marks, t + Duration::from_secs(5)),
            1_764_000_123_456
        );
    }

    #[test]
    fn grain_changes_every_frame_within_its_levels_and_keeps_the_marks() {
        let (w, h) = (320, 240);
        let clean = TestPattern::new(w, h, 30);
        let grainy = TestPattern::new(w, h, 30).with_noise(10);
        let draw = |p: &TestPattern, seq| {
            let mut buf = vec![0; (w * h * 3) as usize];
            p.draw(&mut buf, seq, UNIX_EPOCH);
            buf
        };
        let (c, g1, g2) = (draw(&clean, 1), draw(&grainy, 1), draw(&grainy, 2));
        // The bottom row is background in all three (the box and marks are elsewhere).
        let row = |b: &[u8]| b[((h - 1) * w * 3) as usize..].to_vec();
        let (c, g1, g2) = (row(&c), row(&g1), row(&g2));
        assert!(
            c.iter().zip(&g1).all(|(a, b)| a.abs_diff(*b) <= 10),
            "grain within 10 levels"
        );
        assert!(
            c.iter().zip(&g1).filter(|(a, b)| a != b).count() > c.len() / 2,
            "grain on most pixels"
        );
        assert!(
            g1.iter().zip(&g2).filter(|(a, b)| a != b).count() > c.len() / 2,
            "different each frame"
        );
        let marks = read_marks(&draw(&grainy, 77), w, h).expect("marks readable through grain");
        assert_eq!(marks.seq, 77);
    }

    #[test]
    fn a_frame_without_marks_is_not_misread() {
        let (w, h) = (320, 240);
        assert_eq!(read_marks(&vec![200; (w * h * 3) as usize], w, h), None);
    }

    #[test]
    fn buffers_are_recycled_once_released() {
        let mut pattern = TestPattern::new(256, 64, 1000);
        let first = pattern.next_frame(0).unwrap().data;
        let first_ptr = first.as_ptr();
        drop(first);
        for seq in 1..SPARE_BUFFERS as u64 {
            pattern.next_frame(seq).unwrap();
        }
        let again = pattern.next_frame(9).unwrap().data;
        assert_eq!(again.as_ptr(), first_ptr);
    }
}
