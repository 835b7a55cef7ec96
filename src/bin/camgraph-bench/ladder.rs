//! `ladder`: each step of the default H.264 ladder through camgraph's own scaling and openh264
//! session (`encoders::bench`), with the bitrate each produces.

use std::time::{Duration, Instant, SystemTime};

use camgraph::frame::{Frame, PixelFormat};
use camgraph::plugins::control::adaptive::default_h264_ladder;
use camgraph::plugins::encoders::bench::{H264Session, Scaler};
use camgraph::plugins::encoders::h264::H264EncoderConfig;
use camgraph::plugins::sources::testsrc::TestPattern;

use crate::common::{ms, quantile, sorted, warn_if_busy};

pub(crate) fn ladder(frame_count: usize, warmup: usize) -> anyhow::Result<()> {
    const W: u32 = 1280;
    const H: u32 = 720;
    const FPS: f64 = 30.0;
    warn_if_busy();
    let config = H264EncoderConfig::default();
    println!(
        "H.264 ladder at {W}x{H}, {FPS} fps, keyframe every {} frames: {frame_count} timed frames per \
         step after {warmup} untimed, test pattern with grain (noise 12), one thread",
        config.keyframe_interval
    );
    println!("  ms/frame = camgraph's scaling + its openh264 session (encoders::bench::{{Scaler, H264Session}})");
    println!();
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>16} {:>12} {:>15}",
        "step", "size", "median ms", "p90 ms", "of it scaling ms", "kbit/s out", "share of 33 ms"
    );
    let pattern = TestPattern::new(W, H, 30).with_noise(12);
    let start = SystemTime::now();
    let frames: Vec<Frame> = (0..16u64)
        .map(|seq| {
            let mut buf = vec![0u8; (W * H * 3) as usize];
            pattern.draw(&mut buf, seq, start + Duration::from_millis(33 * seq));
            Frame {
                camera: "bench".into(),
                seq,
                captured_at: start,
                width: W,
                height: H,
                format: PixelFormat::Rgb24,
                data: buf.into(),
            }
        })
        .collect();
    let mut all_steps = 0.0;
    for variant in default_h264_ladder() {
        let mut pixels = Scaler::new();
        let mut session: Option<H264Session> = None;
        let (mut times, mut scaling, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        for i in 0..warmup + frame_count {
            // Frame numbers go on past the 16 frames, so the scaled copy is made anew each time.
            let mut frame = frames[i % frames.len()].clone();
            frame.seq = i as u64;
            let t = Instant::now();
            let (rgb, w, h) = pixels
                .rgb(&frame, variant.scale)
                .map_err(anyhow::Error::msg)?;
            let scaled = t.elapsed();
            let s = match &mut session {
                Some(s) => s,
                None => session
                    .insert(H264Session::new(&config, variant, w, h).map_err(anyhow::Error::msg)?),
            };
            let (data, _) = s.encode(rgb, false).map_err(anyhow::Error::msg)?;
            if i >= warmup {
                times.push(ms(t.elapsed()));
                scaling.push(ms(scaled));
                bytes += data.len();
            }
        }
        let (times, scaling) = (sorted(times), sorted(scaling));
        let median = quantile(&times, 0.5);
        all_steps += median;
        let (w, h) = (W / u32::from(variant.scale), H / u32::from(variant.scale));
        println!(
            "{:<10} {:>9} {:>10.2} {:>10.2} {:>16.2} {:>12.0} {:>14.0}%",
            variant.to_string(),
            format!("{w}x{h}"),
            median,
            quantile(&times, 0.9),
            quantile(&scaling, 0.5),
            bytes as f64 * 8.0 * FPS / frame_count as f64 / 1000.0,
            median / (1000.0 / FPS) * 100.0
        );
    }
    println!();
    println!(
        "all steps in use at once: {all_steps:.2} ms per camera frame ({:.0}% of one core at {FPS} fps)",
        all_steps / (1000.0 / FPS) * 100.0
    );
    Ok(())
}
