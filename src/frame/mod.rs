//! What a frame is, for every stage that touches one: a decoded `Frame` (packed RGB8 at internal
//! resolution, with its place in the walk), the screen's `Geometry` (size, stride) and its
//! `PixelFormat` (pixel_format.rs). Generators, the pipeline, the renderer and the sinks all
//! import these from here and not from each other. Two things are done here to frames at
//! internal resolution, before any upscale: blending two of them and resizing one to another's
//! size.
//!
//! Pure data and arithmetic: used by the decoder thread (the hand-over's cross-fade) and the
//! playback thread (display-time blending). Nothing here fails except a resize asked of a frame
//! whose bytes don't match its size (a bug upstream).

pub(crate) mod geometry;
pub(crate) mod pixel_format;

pub use geometry::Geometry;
pub use pixel_format::PixelFormat;

use anyhow::Context;
use fast_image_resize as fr;

/// A decoded frame: packed RGB8 at the generator's internal resolution (which the adapt ladder
/// may lower, so frames of one run can differ in size).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Position in the run, from 0.
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// Where in the walk the frame is, in keyframe intervals from the run's first frame: the
    /// first keyframe is at 0, the next at 1, and the in-betweens of that transition between.
    /// Playback advances along this axis, so how many frames a transition has doesn't change
    /// how fast the art moves.
    pub at: f64,
}

impl Frame {
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

/// Blend weights are in 65536ths of the way from one frame to the next: fine enough that a
/// blend moving very slowly still moves every display period.
pub(crate) const WEIGHT_ONE: u32 = 1 << 16;

/// The weight of `fraction` (0: all of the first frame, `WEIGHT_ONE`: all of the second).
pub(crate) fn weight_of(fraction: f64) -> u32 {
    (fraction.clamp(0.0, 1.0) * WEIGHT_ONE as f64).round() as u32
}

/// `out = a * (1 - w) + b * w` for `weight` w in 65536ths, rounded; the three of equal length.
pub(crate) fn blend_into(a: &[u8], b: &[u8], weight: u32, out: &mut [u8]) {
    blend_with(a, b, weight, out, |_| WEIGHT_ONE / 2);
}

/// The same blend with temporal dithering: each value is rounded up or down by a threshold
/// that varies from value to value and from one `salt` (picture) to the next, so a blend that
/// moves by less than one level a period still changes the picture, and over a few periods
/// averages to the exact blend (as video players' temporal dithering does). Two equal frames
/// blend to themselves whatever the threshold.
pub(crate) fn blend_dithered_into(a: &[u8], b: &[u8], weight: u32, salt: u32, out: &mut [u8]) {
    let salt = salt.wrapping_mul(0x85EB_CA6B);
    blend_with(a, b, weight, out, |i| {
        ((i as u32).wrapping_mul(0x9E37_79B1).wrapping_add(salt) ^ salt.rotate_left(13)) >> 16
    });
}

fn blend_with(a: &[u8], b: &[u8], weight: u32, out: &mut [u8], threshold: impl Fn(usize) -> u32) {
    let weight = weight.min(WEIGHT_ONE);
    let keep = WEIGHT_ONE - weight;
    for (i, ((out, &x), &y)) in out.iter_mut().zip(a).zip(b).enumerate() {
        *out = ((x as u32 * keep + y as u32 * weight + threshold(i)) >> 16) as u8;
    }
}

/// Packed RGB8 `rgb` of `from` pixels resized (bilinear) to `to`, into `out` (made to fit).
pub(crate) fn resize_into(
    rgb: &[u8],
    from: (u32, u32),
    to: (u32, u32),
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    out.resize(to.0 as usize * to.1 as usize * 3, 0);
    if from == to {
        out.copy_from_slice(rgb);
        return Ok(());
    }
    let source = fr::images::ImageRef::new(from.0, from.1, rgb, fr::PixelType::U8x3)
        .context("frame bytes do not match its size")?;
    let mut target = fr::images::Image::from_slice_u8(to.0, to.1, out, fr::PixelType::U8x3)
        .context("resized frame buffer")?;
    fr::Resizer::new()
        .resize(
            &source,
            &mut target,
            &fr::ResizeOptions::new()
                .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)),
        )
        .context("cannot resize a frame")?;
    Ok(())
}

/// `rgb` of `from` pixels at `to` pixels (a copy when the sizes agree).
pub(crate) fn resized(rgb: &[u8], from: (u32, u32), to: (u32, u32)) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    resize_into(rgb, from, to, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blends_weigh_each_frame_and_round() {
        let (a, b) = ([0u8, 100, 255], [255u8, 100, 0]);
        let mut out = [0u8; 3];
        blend_into(&a, &b, 0, &mut out);
        assert_eq!(out, a);
        blend_into(&a, &b, WEIGHT_ONE, &mut out);
        assert_eq!(out, b);
        blend_into(&a, &b, WEIGHT_ONE / 2, &mut out);
        assert_eq!(out, [128, 100, 128]);
        assert_eq!(weight_of(0.25), WEIGHT_ONE / 4);
        assert_eq!(weight_of(-1.0), 0);
        assert_eq!(weight_of(7.0), WEIGHT_ONE);
    }

    #[test]
    fn dithered_blends_move_below_one_level_and_average_to_the_blend() {
        // Two frames one level apart, blended a thousandth of the way further each picture:
        // every picture differs from the one before, and their mean is the exact blend.
        let a = vec![100u8; 4096];
        let b = vec![101u8; 4096];
        let mut previous = vec![0u8; 4096];
        let mut out = vec![0u8; 4096];
        for step in 1..=200u32 {
            let weight = weight_of(0.3 + step as f64 / 1000.0);
            blend_dithered_into(&a, &b, weight, step, &mut out);
            assert_ne!(out, previous, "picture {step} is the one before");
            let mean = out.iter().map(|&v| v as f64).sum::<f64>() / out.len() as f64;
            let exact = 100.0 + weight as f64 / WEIGHT_ONE as f64;
            assert!((mean - exact).abs() < 0.03, "mean {mean}, blend {exact}");
            previous.copy_from_slice(&out);
        }
        // Equal frames blend to themselves, dither or not.
        blend_dithered_into(&a, &a, weight_of(0.5), 7, &mut out);
        assert_eq!(out, a);
    }

    #[test]
    fn resizing_keeps_a_flat_colour_and_refuses_wrong_bytes() {
        let flat = [10u8, 20, 30].repeat(8 * 4);
        let small = resized(&flat, (8, 4), (4, 2)).unwrap();
        assert_eq!(small, [10u8, 20, 30].repeat(8));
        assert_eq!(resized(&flat, (8, 4), (8, 4)).unwrap(), flat);
        assert!(resized(&flat[..10], (8, 4), (4, 2)).is_err());
    }
}
