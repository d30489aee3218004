//! The look of a built-in generator's keyframe: where the pattern's plane sits on the screen
//! (offset, rotation, scale, mirror symmetry) and the palette it is coloured with. Its values
//! travel in the keyframe latent beside the style's own, so the walk changes palette and
//! composition too, a resumed walk continues with the look it had, and a fresh keyframe (the
//! first, a re-anchor) brings a new one. Every value is a smooth function of standard-normal
//! latent entries, so a slerp between two latents moves the picture without a jump.
//!
//! The look drifts `LOOK_PACE` times as fast as the style's own latent (`drift`): the shapes
//! morph from one keyframe to the next, the palette and composition over minutes.
//!
//! Inputs: latent slices of `LOOK_SIZE` values. Outputs: pixel coordinates in the pattern's
//! plane and RGB colours. Pure functions, called on the decoder thread; cannot fail.

use candle_core::Tensor;

use crate::generator::interpolation::slerp;

/// Latent values that make a look: 6 for the placement, 10 for the palette.
pub(crate) const LOOK_SIZE: usize = 16;

/// How fast the look drifts against the style's own latent: at the shipped drift (0.45) a
/// keyframe turns the look about 10 degrees towards a new one, so half of it is new after
/// about 40 keyframes (two minutes at three seconds a keyframe).
pub(crate) const LOOK_PACE: f64 = 0.25;

/// Where a keyframe's pattern sits on the screen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Placement {
    offset: [f32; 2],
    /// cos and sin of the rotation, times the scale.
    rotate: [f32; 2],
    /// 0 (none) to 1 (the left half mirrors the right); same for top and bottom.
    mirror: [f32; 2],
}

/// A cosine palette (Inigo Quilez's `a + b cos(2 pi (c t + d))`, per channel): one smooth loop
/// through colour space, so every colour of a picture belongs to one scheme.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Palette {
    base: [f32; 3],
    amplitude: f32,
    frequency: [f32; 3],
    phase: [f32; 3],
}

/// A keyframe's look, decoded from its latent values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Look {
    pub placement: Placement,
    pub palette: Palette,
}

/// A steep but smooth switch: 0 below 0.5, 1 above 0.9 (the top quarter of the normal range).
/// Halfway, a mirror folds half the picture onto a line, so the walk passes the middle quickly
/// instead of lingering there.
fn switch(value: f32) -> f32 {
    let s = ((value - 0.5) / 0.4).clamp(0.0, 1.0);
    s * s * (3.0 - 2.0 * s)
}

impl Look {
    /// The look `values` (`LOOK_SIZE` standard-normal values) describe.
    pub(crate) fn from_latent(values: &[f32]) -> Self {
        debug_assert_eq!(values.len(), LOOK_SIZE);
        let v = |i: usize| values.get(i).copied().unwrap_or(0.0);
        let angle = v(2) * 0.8;
        let scale = (v(3) * 0.3).exp();
        let placement = Placement {
            offset: [v(0) * 0.5, v(1) * 0.5],
            rotate: [angle.cos() * scale, angle.sin() * scale],
            mirror: [switch(v(4)), switch(v(5) - 0.4)],
        };
        let palette = Palette {
            base: [
                0.5 + 0.12 * v(6).tanh(),
                0.5 + 0.12 * v(7).tanh(),
                0.5 + 0.12 * v(8).tanh(),
            ],
            amplitude: 0.42 + 0.08 * v(9).tanh(),
            frequency: [
                1.0 + 0.3 * v(10).tanh(),
                1.0 + 0.3 * v(11).tanh(),
                1.0 + 0.3 * v(12).tanh(),
            ],
            phase: [v(13) * 0.35, v(14) * 0.35, v(15) * 0.35],
        };
        Self { placement, palette }
    }
}

impl Placement {
    /// Screen point (x, y), centred, y in -1..1, to the pattern's plane.
    #[inline]
    pub(crate) fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        let x = x + (x.abs() - x) * self.mirror[0];
        let y = y + (y.abs() - y) * self.mirror[1];
        let [c, s] = self.rotate;
        (
            c * x - s * y + self.offset[0],
            s * x + c * y + self.offset[1],
        )
    }
}

impl Palette {
    /// The colour at `t` (any real; the palette repeats every unit for frequency 1), each
    /// channel 0..1 before `shade` (0..1) darkens it.
    #[inline]
    pub(crate) fn rgb(&self, t: f32, shade: f32) -> [u8; 3] {
        let channel = |c: usize| {
            let wave = (std::f32::consts::TAU * (self.frequency[c] * t + self.phase[c])).cos();
            let value = (self.base[c] + self.amplitude * wave) * shade;
            (value * 255.0 + 0.5).clamp(0.0, 255.0) as u8
        };
        [channel(0), channel(1), channel(2)]
    }
}

/// The next keyframe's latent: its first `style_size` values drift `drift` of the way from
/// `previous` towards `fresh`, the look after them `drift * LOOK_PACE` of the way.
pub(crate) fn drift(
    previous: &Tensor,
    fresh: &Tensor,
    style_size: usize,
    drift: f64,
) -> candle_core::Result<Tensor> {
    let total = previous.dim(0)?;
    let style = slerp(
        &previous.narrow(0, 0, style_size)?,
        &fresh.narrow(0, 0, style_size)?,
        drift,
    )?;
    let look = slerp(
        &previous.narrow(0, style_size, total - style_size)?,
        &fresh.narrow(0, style_size, total - style_size)?,
        drift * LOOK_PACE,
    )?;
    Tensor::cat(&[style, look], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..LOOK_SIZE)
            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
            .collect()
    }

    #[test]
    fn a_small_step_in_the_latent_is_a_small_step_in_placement_and_colour() {
        for seed in 0..50 {
            let a = look(seed);
            let b: Vec<f32> = a.iter().map(|v| v + 0.002).collect();
            let (la, lb) = (Look::from_latent(&a), Look::from_latent(&b));
            for (x, y) in [(-1.5, -1.0), (0.0, 0.0), (1.7, 0.3), (0.2, -0.9)] {
                let (pa, pb) = (la.placement.apply(x, y), lb.placement.apply(x, y));
                assert!(
                    (pa.0 - pb.0).abs() + (pa.1 - pb.1).abs() < 0.05,
                    "{pa:?} {pb:?}"
                );
            }
            for t in [-3.0, 0.0, 0.4, 2.2] {
                let (ca, cb) = (la.palette.rgb(t, 1.0), lb.palette.rgb(t, 1.0));
                for c in 0..3 {
                    assert!((ca[c] as i32 - cb[c] as i32).abs() <= 6, "{ca:?} {cb:?}");
                }
            }
        }
    }

    #[test]
    fn looks_differ_in_colour_and_some_are_symmetric() {
        let mut mirrored = 0;
        let mut hues = std::collections::HashSet::new();
        for seed in 0..200 {
            let look = Look::from_latent(&look(seed));
            // A mirrored look maps x and -x to the same point.
            let (a, b) = (
                look.placement.apply(0.8, 0.1),
                look.placement.apply(-0.8, 0.1),
            );
            if (a.0 - b.0).abs() + (a.1 - b.1).abs() < 1e-5 {
                mirrored += 1;
            }
            let [r, g, b] = look.palette.rgb(0.0, 1.0);
            hues.insert((r / 64, g / 64, b / 64));
        }
        assert!((10..120).contains(&mirrored), "{mirrored} of 200 mirrored");
        assert!(hues.len() > 12, "{} colour cells", hues.len());
    }

    #[test]
    fn the_look_drifts_slower_than_the_style() {
        let device = candle_core::Device::Cpu;
        let previous = Tensor::from_vec(vec![1f32, 0.0, 1.0, 0.0], 4, &device).unwrap();
        let fresh = Tensor::from_vec(vec![0f32, 1.0, 0.0, 1.0], 4, &device).unwrap();
        let next = drift(&previous, &fresh, 2, 0.4)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let turned = |x: f32, y: f32| y.atan2(x);
        let (style, look) = (turned(next[0], next[1]), turned(next[2], next[3]));
        assert!((style - 0.4 * std::f32::consts::FRAC_PI_2).abs() < 1e-4);
        assert!((look - 0.4 * LOOK_PACE as f32 * std::f32::consts::FRAC_PI_2).abs() < 1e-4);
    }
}
