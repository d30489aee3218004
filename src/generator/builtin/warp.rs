//! The `warp` style: domain-warped noise, in the manner of Inigo Quilez's "warp" article. A
//! field of gradient noise (fractal sums of `octaves` layers, each twice as fine) is looked up
//! at a point pushed around by two more such fields, themselves pushed by two more:
//! `f(p + k r(p + k q(p)))`. The result flows like marbled paper, ink in water or gas clouds,
//! with detail down to the finest octave.
//!
//! The keyframe latent holds the five fields' offsets in the noise plane and the warp's
//! strength (`STYLE_LEN` values), then the look (`look`: placement, symmetry, palette). As the
//! walk moves the offsets, the fields slide past each other and the picture flows; every value
//! enters smoothly, so in-between frames morph without a jump. The noise itself comes from the
//! run seed. Where on the palette a pixel sits follows the final field and the first warp, its
//! shade the second warp.
//!
//! Plain Rust per pixel (no tensors: a handful of lookups and multiplies per octave), shared
//! across the cores by `render_parallel`. Runs on the keyframe and decoder threads under the
//! model lock; fails only on a latent of the wrong shape.

use anyhow::{ensure, Context};
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::look::{Look, LOOK_SIZE};
use super::themes::Themes;
use crate::config::WarpConfig;
use crate::generator::Generator;

/// The style's own latent values: five fields' offsets (x, y each), then the warp's strength.
pub(crate) const STYLE_LEN: usize = 11;
/// How far one standard deviation of each field's offset moves it, in units of its coarsest
/// features: the inner fields' moves are amplified by the warps after them (about the
/// strength times the noise's slope, each), so they move least; otherwise every step of the
/// walk would be a new picture where it should flow.
const OFFSET_SCALES: [f32; 5] = [0.08, 0.08, 0.2, 0.2, 0.5];

/// Octaves of the two fields that push the last one around.
const PUSH_OCTAVES: usize = 3;

/// Gradient noise on a lattice with a seeded permutation (Perlin's), about -0.7..0.7.
struct Noise {
    permutation: [u8; 512],
}

const GRADIENTS: [(f32, f32); 8] = [
    (1.0, 0.0),
    (-1.0, 0.0),
    (0.0, 1.0),
    (0.0, -1.0),
    (
        std::f32::consts::FRAC_1_SQRT_2,
        std::f32::consts::FRAC_1_SQRT_2,
    ),
    (
        -std::f32::consts::FRAC_1_SQRT_2,
        std::f32::consts::FRAC_1_SQRT_2,
    ),
    (
        std::f32::consts::FRAC_1_SQRT_2,
        -std::f32::consts::FRAC_1_SQRT_2,
    ),
    (
        -std::f32::consts::FRAC_1_SQRT_2,
        -std::f32::consts::FRAC_1_SQRT_2,
    ),
];

impl Noise {
    fn new(seed: u64) -> Self {
        let mut order: Vec<u8> = (0..=255).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut permutation = [0u8; 512];
        for (i, slot) in permutation.iter_mut().enumerate() {
            *slot = order[i & 255];
        }
        Self { permutation }
    }

    #[inline]
    fn corner(&self, ix: i32, iy: i32, dx: f32, dy: f32) -> f32 {
        let hash =
            self.permutation[self.permutation[(ix & 255) as usize] as usize + (iy & 255) as usize];
        let (gx, gy) = GRADIENTS[(hash & 7) as usize];
        gx * dx + gy * dy
    }

    #[inline]
    fn at(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x.floor(), y.floor());
        let (ix, iy) = (fx as i32, fy as i32);
        let (dx, dy) = (x - fx, y - fy);
        // Quintic fade: continuous second derivative, so no creases along the lattice.
        let fade = |t: f32| t * t * t * (t * (t * 6.0 - 15.0) + 10.0);
        let (u, v) = (fade(dx), fade(dy));
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        lerp(
            lerp(
                self.corner(ix, iy, dx, dy),
                self.corner(ix + 1, iy, dx - 1.0, dy),
                u,
            ),
            lerp(
                self.corner(ix, iy + 1, dx, dy - 1.0),
                self.corner(ix + 1, iy + 1, dx - 1.0, dy - 1.0),
                u,
            ),
            v,
        )
    }

    /// `octaves` layers of noise, each twice as fine and half as strong, turned against the
    /// last so the lattice never shows.
    #[inline]
    fn fractal(&self, mut x: f32, mut y: f32, octaves: usize) -> f32 {
        let (mut sum, mut amplitude) = (0.0, 0.5);
        for _ in 0..octaves {
            sum += amplitude * self.at(x, y);
            (x, y) = (1.6 * x + 1.2 * y, -1.2 * x + 1.6 * y);
            amplitude *= 0.5;
        }
        sum
    }
}

/// What one latent describes: the fields' offsets, the warp's strength, the look.
struct Frame {
    offsets: [(f32, f32); 5],
    strength: f32,
    look: Look,
}

pub(crate) struct WarpGenerator {
    full: (u32, u32),
    width: u32,
    height: u32,
    octaves: usize,
    strength: f32,
    scale: f32,
    drift: f64,
    device: Device,
    noise: Noise,
    threads: usize,
    /// The themes' palettes, rotating.
    themes: Themes,
}

impl WarpGenerator {
    /// The style for `seed` at `width` x `height`; `drift` is how far each keyframe moves from
    /// the previous one (0..=1).
    pub(crate) fn new(
        config: &WarpConfig,
        width: u32,
        height: u32,
        seed: u64,
        drift: f64,
        device: Device,
    ) -> anyhow::Result<Self> {
        ensure!(
            width > 0 && height > 0,
            "warp resolution must be non-zero, got {width}x{height}"
        );
        Ok(Self {
            full: (width, height),
            width,
            height,
            octaves: config.octaves,
            strength: config.warp as f32,
            scale: config.scale as f32,
            drift,
            device,
            noise: Noise::new(seed),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            themes: Themes::none(),
        })
    }

    pub(crate) fn latent_len(&self) -> usize {
        STYLE_LEN + LOOK_SIZE
    }

    /// The style's own values at the head of the latent.
    fn style_len(&self) -> usize {
        STYLE_LEN
    }

    /// The same style, its palettes steered by `themes`.
    pub(crate) fn with_themes(self, themes: Themes) -> Self {
        Self { themes, ..self }
    }

    fn frame(&self, latent: &[f32]) -> Frame {
        let offset = |i: usize| {
            (
                latent[2 * i] * OFFSET_SCALES[i],
                latent[2 * i + 1] * OFFSET_SCALES[i],
            )
        };
        Frame {
            offsets: [offset(0), offset(1), offset(2), offset(3), offset(4)],
            strength: self.strength * (latent[10] * 0.2).exp(),
            look: Look::from_latent(&latent[STYLE_LEN..]),
        }
    }

    /// The colour of the point (x, y) of the screen (`builtin::screen_point`) in `frame`.
    #[inline]
    fn colour(&self, frame: &Frame, x: f32, y: f32) -> [u8; 3] {
        let (x, y) = frame.look.placement.apply(x, y);
        let (x, y) = (x * self.scale, y * self.scale);
        // The fields that push are smooth (at most `PUSH_OCTAVES`): fine noise there would
        // turn each step of the walk into a new picture, where it should flow.
        let push = self.octaves.min(PUSH_OCTAVES);
        let field = |(ox, oy): (f32, f32), px: f32, py: f32, octaves: usize| {
            self.noise.fractal(px + ox, py + oy, octaves)
        };
        let o = &frame.offsets;
        let k = frame.strength;
        let q = (field(o[0], x, y, push), field(o[1], x, y, push));
        let (rx, ry) = (x + k * q.0, y + k * q.1);
        let r = (field(o[2], rx, ry, push), field(o[3], rx, ry, push));
        let f = field(o[4], x + k * r.0, y + k * r.1, self.octaves);
        let t = 1.2 * f + 0.6 * q.0 - 0.3 * q.1;
        let shade = 0.6 + 0.4 * (1.0 - (2.2 * (r.0 * r.0 + r.1 * r.1).sqrt()).min(1.0));
        frame.look.palette.rgb(t, shade)
    }
}

impl Generator for WarpGenerator {
    style_methods!("warp");

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let (batch, size) = latents
            .dims2()
            .context("warp latents must be [batch, latent]")?;
        ensure!(
            size == self.latent_len(),
            "warp latent has {size} values, expected {}",
            self.latent_len()
        );
        let frames: Vec<Frame> = latents
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .iter()
            .map(|latent| self.frame(latent))
            .collect();
        let (width, height) = (self.width as usize, self.height as usize);
        super::render_parallel(
            batch,
            width * height,
            self.threads,
            |first_frame, count_frames, first, count| {
                let mut out = Vec::with_capacity(count_frames * count * 3);
                for frame in &frames[first_frame..first_frame + count_frames] {
                    for pixel in first..first + count {
                        let (x, y) = super::screen_point(pixel, width, height);
                        out.extend_from_slice(&self.colour(frame, x, y));
                    }
                }
                Ok(out)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::keyframe_seed;
    use crate::generator::KeyframeRequest;

    fn config() -> WarpConfig {
        WarpConfig {
            octaves: 4,
            warp: 2.0,
            scale: 1.5,
        }
    }

    #[test]
    fn noise_is_smooth_bounded_and_seeded() {
        let (a, b) = (Noise::new(1), Noise::new(2));
        let mut differs = false;
        for i in 0..2000 {
            let (x, y) = (i as f32 * 0.173 - 50.0, i as f32 * 0.071 - 30.0);
            let value = a.at(x, y);
            assert!(value.abs() <= 1.0, "{value} at {x},{y}");
            assert!(
                (a.at(x + 0.001, y) - value).abs() < 0.01,
                "a step at {x},{y}"
            );
            differs |= (b.at(x, y) - value).abs() > 0.01;
        }
        assert!(differs, "another seed gives another field");
        assert_eq!(a.at(3.0, 4.0), 0.0, "zero on the lattice");
    }

    #[test]
    fn a_walk_decodes_to_seeded_frames_that_differ_by_keyframe() {
        let mut warp = WarpGenerator::new(&config(), 64, 36, 7, 0.45, Device::Cpu).unwrap();
        let requests: Vec<_> = (0..2)
            .map(|index| KeyframeRequest {
                index,
                seed: keyframe_seed(7, index),
                previous: None,
            })
            .collect();
        let keys = warp.keyframes(&requests).unwrap();
        let frames = warp.decode(&Tensor::stack(&keys, 0).unwrap()).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), 64 * 36 * 3);
        assert_ne!(frames[0], frames[1]);
        let mut again = WarpGenerator::new(&config(), 64, 36, 7, 0.45, Device::Cpu).unwrap();
        again.threads = 1;
        assert_eq!(
            again.decode(&Tensor::stack(&keys, 0).unwrap()).unwrap(),
            frames,
            "same seed, same frames, however the work is split"
        );
        let wrong = Tensor::zeros((1, 5), DType::F32, &Device::Cpu).unwrap();
        let error = warp.decode(&wrong).unwrap_err();
        assert!(
            format!("{error}").contains(&format!("expected {}", warp.latent_len())),
            "{error}"
        );
    }
}
