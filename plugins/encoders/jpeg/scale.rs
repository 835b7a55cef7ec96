//! Box-filter downscaling of packed RGB by 2 or 4, for the smaller rungs of an adaptive ladder.

/// Writes `rgb` (width x height) divided by `factor` into `out`; returns the new size. Edge pixels
/// that do not fill a whole box are dropped.
pub fn downscale(rgb: &[u8], width: u32, height: u32, factor: u8, out: &mut Vec<u8>) -> (u32, u32) {
    let f = usize::from(factor.max(1));
    let (w, h) = (width as usize, height as usize);
    let (ow, oh) = ((w / f).max(1), (h / f).max(1));
    out.clear();
    out.reserve(ow * oh * 3);
    let area = (f * f) as u32;
    for oy in 0..oh {
        for ox in 0..ow {
            let mut sum = [0u32; 3];
            for y in oy * f..(oy * f + f).min(h) {
                let row = &rgb[(y * w + ox * f) * 3..(y * w + (ox * f + f).min(w)) * 3];
                for px in row.chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
            out.extend(sum.map(|s| ((s + area / 2) / area) as u8));
        }
    }
    (ow as u32, oh as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_by_averaging_boxes() {
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
    }
}
