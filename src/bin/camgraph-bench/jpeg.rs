//! `jpeg`: camgraph's JPEG compression (`encoders::bench::JpegCompressor`, as the encoder node
//! runs it) against bare turbojpeg on the same test-pattern frames.

use std::time::{Duration, Instant, SystemTime};

use camgraph::plugins::encoders::bench::JpegCompressor;
use camgraph::plugins::sources::testsrc::TestPattern;

use crate::common::{ms, quantile, sorted, warn_if_busy};

const SIZES: [(u32, u32); 3] = [(640, 480), (1280, 720), (1920, 1080)];
const QUALITY: u8 = 80;
const JPEG_RATIO_GOAL: f64 = 1.2;

pub(crate) fn jpeg(iterations: usize, warmup: usize, frame_count: usize) -> anyhow::Result<()> {
    warn_if_busy();
    println!(
        "JPEG encode, quality {QUALITY}, 4:2:0, one thread: {iterations} timed encodes per size and \
         path after {warmup} warm-up encodes, cycling through {frame_count} test-pattern frames"
    );
    println!(
        "  camgraph = encoders::bench::JpegCompressor: one reused compressor, as the encoder node"
    );
    println!("  bare     = turbojpeg::compress (a new compressor per call), same frames");
    println!("  the two run alternately, in alternating order, so neither gets a warmer cache");
    println!();
    println!(
        "{:<10} {:>16} {:>16} {:>16} {:>16} {:>13} {:>9} {:>6}",
        "size",
        "camgraph median",
        "camgraph p90",
        "bare median",
        "bare p90",
        "ratio median",
        "JPEG KiB",
        "same"
    );
    println!(
        "{:<10} {:>16} {:>16} {:>16} {:>16} {:>13} {:>9} {:>6}",
        "", "ms/frame", "ms/frame", "ms/frame", "ms/frame", "(goal<=1.2x)", "", "bytes"
    );
    let mut worst_ratio: f64 = 0.0;
    for (w, h) in SIZES {
        let pattern = TestPattern::new(w, h, 30);
        let start = SystemTime::now();
        let frames: Vec<Vec<u8>> = (0..frame_count)
            .map(|i| {
                let mut buf = vec![0u8; (w * h * 3) as usize];
                pattern.draw(
                    &mut buf,
                    1000 + i as u64,
                    start + Duration::from_millis(33 * i as u64),
                );
                buf
            })
            .collect();
        let mut compressor = JpegCompressor::new().map_err(anyhow::Error::msg)?;
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        let mut bytes = 0usize;
        let mut identical = true;
        for i in 0..warmup + iterations {
            let frame = &frames[i % frames.len()];
            let image = turbojpeg::Image {
                pixels: &frame[..],
                width: w as usize,
                pitch: w as usize * 3,
                height: h as usize,
                format: turbojpeg::PixelFormat::RGB,
            };
            let mut time_ours = || -> anyhow::Result<(Duration, bytes::Bytes)> {
                let t = Instant::now();
                let out = compressor
                    .encode(frame, w, h, QUALITY)
                    .map_err(anyhow::Error::msg)?;
                Ok((t.elapsed(), out))
            };
            let time_bare = || -> anyhow::Result<(Duration, turbojpeg::OwnedBuf)> {
                let t = Instant::now();
                let out =
                    turbojpeg::compress(image, i32::from(QUALITY), turbojpeg::Subsamp::Sub2x2)?;
                Ok((t.elapsed(), out))
            };
            let ((ta, a), (tb, b)) = if i % 2 == 0 {
                let a = time_ours()?;
                (a, time_bare()?)
            } else {
                let b = time_bare()?;
                (time_ours()?, b)
            };
            if i >= warmup {
                ours.push(ms(ta));
                bare.push(ms(tb));
                bytes += a.len();
                identical &= a[..] == b[..];
            }
        }
        let (ours, bare) = (sorted(ours), sorted(bare));
        let ratio = quantile(&ours, 0.5) / quantile(&bare, 0.5);
        worst_ratio = worst_ratio.max(ratio);
        println!(
            "{:<10} {:>16.3} {:>16.3} {:>16.3} {:>16.3} {:>12.2}x {:>9.1} {:>6}",
            format!("{w}x{h}"),
            quantile(&ours, 0.5),
            quantile(&ours, 0.9),
            quantile(&bare, 0.5),
            quantile(&bare, 0.9),
            ratio,
            bytes as f64 / iterations as f64 / 1024.0,
            if identical { "yes" } else { "NO" }
        );
    }
    println!();
    println!(
        "goal camgraph/bare <= {JPEG_RATIO_GOAL}x at every size: {} (worst {worst_ratio:.2}x)",
        if worst_ratio <= JPEG_RATIO_GOAL {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
