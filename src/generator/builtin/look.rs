//! The look of a built-in generator's keyframe: where the pattern's plane sits on the screen
//! (offset, rotation, scale, mirror symmetry) and the palette it is coloured with. Its values
//! travel in the keyframe latent beside the style's own, so the walk changes palette and
//! composition too, a resumed walk continues with the look it had, and a fresh keyframe (the
//! first, a re-anchor) brings a new one. Every value is a smooth function of the latent's
//! entries, so a slerp between two latents moves the picture without a jump.
//!
//! The free look (standard-normal values) drifts `LOOK_PACE` times as fast as the style's own
//! latent (`drift`): the shapes morph from one keyframe to the next, the palette and composition
//! over minutes. After it comes the theme's palette (`themes`) as plain palette values and a
//! weight, which move `MOOD_PACE` of the way to the current theme's each keyframe, so a new
//! theme's colours take over in a few keyframes.
//!
//! Inputs: latent slices of `LOOK_SIZE` values, the theme's palette. Outputs: pixel coordinates
//! in the pattern's plane and RGB colours. Pure functions, called on the keyframe and decoder
//! threads; cannot fail (tensor errors aside).

use candle_core::Tensor;

use crate::generator::interpolation::slerp;

/// Standard-normal latent values of the free look: 6 for the placement, 10 for the palette.
const FREE_SIZE: usize = 16;
/// Latent values of the theme's palette: base, amplitude, frequency and phase (3 each), then
/// the share of the keyframe's palette it sets (0..=1).
const MOOD_SIZE: usize = 13;
/// Latent values that make a look.
pub(crate) const LOOK_SIZE: usize = FREE_SIZE + MOOD_SIZE;

/// How far each keyframe moves its theme palette values towards the current theme's: most of
/// a new theme's colours are there after three keyframes.
const MOOD_PACE: f32 = 0.4;

/// How fast the look drifts against the style's own latent: at the shipped drift (0.45) a
/// keyframe turns the look about 10 degrees towards a new one, so half of it is new after
/// about 40 keyframes (two minutes at three seconds a keyframe).
pub(crate) const LOOK_PACE: f64 = 0.25;

/// The share of the offset `Placement::unapply` keeps.
const OBJECT_OFFSET: f32 = 0.3;

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
    amplitude: [f32; 3],
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
    /// The look `values` (`LOOK_SIZE` of them) describe.
    pub(crate) fn from_latent(values: &[f32]) -> Self {
        debug_assert_eq!(values.len(), LOOK_SIZE);
        let mood = values.get(FREE_SIZE..LOOK_SIZE).unwrap_or(&[]);
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
            amplitude: [0.42 + 0.08 * v(9).tanh(); 3],
            frequency: [
                1.0 + 0.3 * v(10).tanh(),
                1.0 + 0.3 * v(11).tanh(),
                1.0 + 0.3 * v(12).tanh(),
            ],
            phase: [v(13) * 0.35, v(14) * 0.35, v(15) * 0.35],
        };
        let palette = match (Palette::from_values(mood), mood.get(MOOD_SIZE - 1)) {
            (Some(theme), Some(weight)) => palette.mix(&theme, weight.clamp(0.0, 1.0)),
            _ => palette,
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

    /// The inverse of `apply` without the mirrors, its offset cut to `OBJECT_OFFSET` and its
    /// zoom to the square root: a point
    /// of a drawn object's plane to the screen. For styles that draw one object rather than
    /// colour an endless plane (`flame`), which the full offset would push half off the screen.
    #[inline]
    pub(crate) fn unapply(&self, x: f32, y: f32) -> (f32, f32) {
        let [c, s] = self.rotate;
        let (x, y) = (
            x - self.offset[0] * OBJECT_OFFSET,
            y - self.offset[1] * OBJECT_OFFSET,
        );
        // The zoom's square root: a drawn object zoomed fully is too small or too large.
        let norm = 1.0 / (c * c + s * s).powf(0.75);
        ((c * x + s * y) * norm, (c * y - s * x) * norm)
    }

    /// How much the left half mirrors the right, and the top the bottom (0..=1 each).
    pub(crate) fn mirror(&self) -> [f32; 2] {
        self.mirror
    }
}

impl Palette {
    pub(crate) const fn new(
        base: [f32; 3],
        amplitude: [f32; 3],
        frequency: [f32; 3],
        phase: [f32; 3],
    ) -> Self {
        Self {
            base,
            amplitude,
            frequency,
            phase,
        }
    }

    /// The palette `values` hold (12: base, amplitude, frequency, phase), if that many.
    fn from_values(values: &[f32]) -> Option<Self> {
        let three = |at: usize| -> Option<[f32; 3]> { values.get(at..at + 3)?.try_into().ok() };
        Some(Self::new(three(0)?, three(3)?, three(6)?, three(9)?))
    }

    fn values(&self) -> [f32; 12] {
        let mut values = [0.0; 12];
        for (at, part) in [self.base, self.amplitude, self.frequency, self.phase]
            .iter()
            .enumerate()
        {
            values[at * 3..at * 3 + 3].copy_from_slice(part);
        }
        values
    }

    /// `share` (0..=1) of the way from this palette to `other`, value by value.
    fn mix(&self, other: &Palette, share: f32) -> Palette {
        let (a, b) = (self.values(), other.values());
        let mixed: Vec<f32> = a.iter().zip(b).map(|(a, b)| a + (b - a) * share).collect();
        Self::from_values(&mixed).unwrap_or(*self)
    }

    /// The colour at `t` (any real; the palette repeats every unit for frequency 1), each
    /// channel 0..1 before `shade` (0..1) darkens it.
    #[inline]
    pub(crate) fn rgb(&self, t: f32, shade: f32) -> [u8; 3] {
        let channel = |c: usize| {
            let wave = (std::f32::consts::TAU * (self.frequency[c] * t + self.phase[c])).cos();
            let value = (self.base[c] + self.amplitude[c] * wave) * shade;
            (value * 255.0 + 0.5).clamp(0.0, 255.0) as u8
        };
        [channel(0), channel(1), channel(2)]
    }
}

/// The theme palette values for `theme` (a palette and the share it sets), or, without one,
/// for none: `MOOD_SIZE` values.
fn mood_values(theme: Option<(Palette, f32)>) -> [f32; MOOD_SIZE] {
    let mut values = [0.0; MOOD_SIZE];
    if let Some((palette, weight)) = theme {
        values[..MOOD_SIZE - 1].copy_from_slice(&palette.values());
        values[MOOD_SIZE - 1] = weight;
    }
    values
}

/// `latent` (a fresh keyframe's, ending in the look) with its theme palette values set to
/// `theme`'s at once.
pub(crate) fn fresh(latent: &Tensor, theme: Option<(Palette, f32)>) -> candle_core::Result<Tensor> {
    let head = latent.narrow(0, 0, latent.dim(0)? - MOOD_SIZE)?;
    let mood = Tensor::from_slice(&mood_values(theme), MOOD_SIZE, latent.device())?;
    Tensor::cat(&[head, mood], 0)
}

/// The next keyframe's latent: its first `style_size` values drift `drift` of the way from
/// `previous` towards `fresh`, the values after them up to the theme palette values (a style's
/// slow values, then the free look) `drift * LOOK_PACE` of the way, and the theme palette values
/// `MOOD_PACE` of the way to `theme`'s (without a theme, the weight goes to 0 and the palette
/// values stay).
pub(crate) fn drift(
    previous: &Tensor,
    fresh: &Tensor,
    style_size: usize,
    drift: f64,
    theme: Option<(Palette, f32)>,
) -> candle_core::Result<Tensor> {
    let style = slerp(
        &previous.narrow(0, 0, style_size)?,
        &fresh.narrow(0, 0, style_size)?,
        drift,
    )?;
    let slow = previous.dim(0)? - style_size - MOOD_SIZE;
    let look = slerp(
        &previous.narrow(0, style_size, slow)?,
        &fresh.narrow(0, style_size, slow)?,
        drift * LOOK_PACE,
    )?;
    let was: Vec<f32> = previous
        .narrow(0, style_size + slow, MOOD_SIZE)?
        .to_vec1()?;
    let mut target = mood_values(theme);
    if theme.is_none() {
        target[..MOOD_SIZE - 1].copy_from_slice(&was[..MOOD_SIZE - 1]);
    }
    let mood: Vec<f32> = was
        .iter()
        .zip(target)
        .map(|(was, target)| was + (target - was) * MOOD_PACE)
        .collect();
    let mood = Tensor::from_vec(mood, MOOD_SIZE, previous.device())?;
    Tensor::cat(&[style, look, mood], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut values: Vec<f32> = (0..FREE_SIZE)
            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
            .collect();
        values.extend(mood_values(None));
        values
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
    fn the_look_drifts_slower_than_the_style_and_the_theme_palette_takes_over() {
        let device = candle_core::Device::Cpu;
        let unit = |at: usize| {
            let mut values = vec![0f32; 2 + LOOK_SIZE];
            values[at] = 1.0;
            Tensor::from_vec(values, 2 + LOOK_SIZE, &device).unwrap()
        };
        let (previous, fresh) = ((unit(0) + unit(2)).unwrap(), (unit(1) + unit(3)).unwrap());
        let theme = (Palette::new([0.9; 3], [0.1; 3], [2.0; 3], [0.5; 3]), 0.8);
        let next = drift(&previous, &fresh, 2, 0.4, Some(theme))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let turned = |x: f32, y: f32| y.atan2(x);
        let (style, look) = (turned(next[0], next[1]), turned(next[2], next[3]));
        assert!((style - 0.4 * std::f32::consts::FRAC_PI_2).abs() < 1e-4);
        assert!((look - 0.4 * LOOK_PACE as f32 * std::f32::consts::FRAC_PI_2).abs() < 1e-4);
        let mood = &next[2 + FREE_SIZE..];
        assert!((mood[0] - 0.9 * MOOD_PACE).abs() < 1e-6, "{mood:?}");
        assert!(
            (mood[MOOD_SIZE - 1] - 0.8 * MOOD_PACE).abs() < 1e-6,
            "{mood:?}"
        );

        // Keyframe after keyframe the theme's palette takes over; without a theme it lets go.
        let mut latent = previous;
        for _ in 0..12 {
            latent = drift(&latent, &fresh, 2, 0.4, Some(theme)).unwrap();
        }
        let values = latent.to_vec1::<f32>().unwrap();
        let palette = Look::from_latent(&values[2..]).palette;
        let free = Look::from_latent(&unit(2).to_vec1::<f32>().unwrap()[2..]).palette;
        let expected = free.mix(&theme.0, 0.8);
        for (got, want) in palette.values().iter().zip(expected.values()) {
            assert!((got - want).abs() < 0.02, "{palette:?} {expected:?}");
        }
        for _ in 0..12 {
            latent = drift(&latent, &fresh, 2, 0.4, None).unwrap();
        }
        let weight = latent.to_vec1::<f32>().unwrap()[1 + LOOK_SIZE];
        assert!(weight < 0.01, "{weight}");

        // A fresh keyframe takes its theme's palette at once.
        let fresh = super::fresh(&fresh, Some(theme))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(&fresh[2 + FREE_SIZE..], &mood_values(Some(theme)));
    }
}
