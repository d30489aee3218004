//! The `flame` style: fractal flames in the manner of flam3 (Electric Sheep). An iterated
//! function system of `MAPS` maps, each an affine transform followed by a weighted blend of
//! nonlinear variations (linear, sinusoidal, swirl, horseshoe, bubble, handkerchief), is run
//! by the chaos game; the points it visits are counted per pixel and shown by log density, so
//! the filaments where orbits pile up glow and the sparse ones stay faint. Each map carries a
//! colour, and a point's colour moves halfway to its map's at every step, as flam3's does.
//!
//! A flame drawn with fresh random points each frame would sparkle, and one whose orbits were
//! chaotic would reshuffle with the slightest change. So the orbits are fixed: the starts and
//! the maps chosen at every step come from the run seed, and every map is a contraction (its
//! linear part's largest stretch at most `CONTRACTION`, its variations gentle). Then each
//! plotted point is a smooth function of the parameters, a small step of the walk moves every
//! point a little, and in-between frames morph without a jump. Points are splatted bilinearly
//! for the same reason.
//!
//! The keyframe latent holds each map's affine transform, variation weights and colour
//! (`STYLE_LEN` values), then the look (`look`): the flame is framed by its points' mean and
//! spread, then placed, mirrored (a mirrored copy of each point, weighted by the mirror) and
//! coloured by the look, with a glow over a dark ground of its own mean colour
//! (`Histogram::tone`).
//!
//! Plain Rust per point, one frame per thread (`render_frames`). Runs on the keyframe and
//! decoder threads under the model lock; fails only on a latent of the wrong shape.

use anyhow::{ensure, Context};
use candle_core::{DType, Device, Tensor};

use super::look::{Look, Palette, LOOK_SIZE};
use super::themes::Themes;
use crate::config::FlameConfig;
use crate::generator::Generator;

/// Maps in the system, chosen with equal chances (weighted chances would make a point jump to
/// another map as the weights move).
const MAPS: usize = 4;
/// Nonlinear variations a map blends.
const VARIATIONS: usize = 6;
/// Latent values per map: the affine transform (6), the variations' weights, the colour.
const PER_MAP: usize = 6 + VARIATIONS + 1;
/// The style's own latent values.
pub(crate) const STYLE_LEN: usize = MAPS * PER_MAP;
/// The largest stretch of a map's linear part: below 1, so orbits converge and depend
/// smoothly on the parameters.
const CONTRACTION: f32 = 0.72;
/// A variation with less than this share of a map is left out (the weights are lowered by it
/// and renormalised, so a weight reaches 0 smoothly before it is skipped).
const WEIGHT_FLOOR: f32 = 0.04;
/// Steps of each orbit before its points are plotted: the start's place forgotten.
const SKIP: usize = 12;
/// Steps of each orbit.
const ORBIT: usize = 64;
/// The dark ground under the flame: its mean colour at this brightness, plus `GROUND_FLOOR`
/// levels (of 255) on every channel so no channel of the ground sits at 0.
const GROUND_SHADE: f32 = 0.16;
const GROUND_FLOOR: f32 = 6.0;
/// The glow's radius is the height over this, and its brightness this share of a filament's.
const GLOW_SPAN: usize = 60;
const GLOW: f32 = 0.7;
/// Log density: a pixel this many times as dense as the lit pixels' mean is at full
/// brightness (before `brightness`).
const LOG_SCALE: f32 = 0.621_334_9; // 1 / ln(1 + 4)
/// Orbits whose points frame the flame: enough for a steady mean, few enough to cost little.
const FRAMING_ORBITS: usize = 2048;
/// Mean deviations of the points from their centre that span the screen's height.
const FRAMING: f32 = 2.4;

/// A map: `affine` (a, b, c, d, e, f: x' = a x + b y + e, y' = c x + d y + f), then the sum of
/// the variations by `weights`; a point's colour moves halfway to `colour` (0..1).
#[derive(Debug, Clone, Copy)]
struct Map {
    affine: [f32; 6],
    weights: [f32; VARIATIONS],
    colour: f32,
}

impl Map {
    fn from_latent(values: &[f32]) -> Self {
        let v = |i: usize| values[i];
        let [mut a, mut b, mut c, mut d] = [v(0), v(1), v(2), v(3)].map(|x| 0.6 * x);
        // The largest singular value of [[a, b], [c, d]], scaled down to CONTRACTION if above.
        let (p, q) = (a * a + b * b + c * c + d * d, a * d - b * c);
        let stretch = ((p + (p * p - 4.0 * q * q).max(0.0).sqrt()) / 2.0).sqrt();
        let shrink = (CONTRACTION / stretch.max(CONTRACTION)).min(1.0);
        [a, b, c, d] = [a, b, c, d].map(|x| x * shrink);
        let affine = [a, b, c, d, 0.7 * v(4), 0.7 * v(5)];
        // Softmax, then the floor taken off: one or two variations lead in most maps.
        let raw: [f32; VARIATIONS] = std::array::from_fn(|k| (1.6 * v(6 + k)).exp());
        let total: f32 = raw.iter().sum();
        let floored = raw.map(|w| (w / total - WEIGHT_FLOOR).max(0.0));
        let kept: f32 = floored.iter().sum::<f32>().max(f32::MIN_POSITIVE);
        Self {
            affine,
            weights: floored.map(|w| w / kept),
            colour: 0.5 + 0.5 * v(6 + VARIATIONS).tanh(),
        }
    }

    #[inline]
    fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        let [a, b, c, d, e, f] = self.affine;
        let (x, y) = (a * x + b * y + e, c * x + d * y + f);
        let r2 = x * x + y * y;
        let r = r2.sqrt();
        let w = &self.weights;
        let (mut u, mut v) = (w[0] * x, w[0] * y);
        if w[1] > 0.0 {
            // Sinusoidal.
            u += w[1] * x.sin();
            v += w[1] * y.sin();
        }
        if w[2] > 0.0 {
            // Swirl, its turn leveling off away from the centre (flam3's turns by r^2 without
            // bound, which makes orbits chaotic).
            let (s, c) = (1.5 * r2 / (1.0 + r2)).sin_cos();
            u += w[2] * (x * s - y * c);
            v += w[2] * (x * c + y * s);
        }
        if w[3] > 0.0 {
            // Horseshoe: the angle doubled.
            let inverse = 1.0 / (r + 1e-6);
            u += w[3] * (x - y) * (x + y) * inverse;
            v += w[3] * 2.0 * x * y * inverse;
        }
        if w[4] > 0.0 {
            // Bubble.
            let k = 4.0 / (r2 + 4.0);
            u += w[4] * k * x;
            v += w[4] * k * y;
        }
        if w[5] > 0.0 {
            // Handkerchief, written without the angle (which jumps across the negative x axis).
            let (s, c) = r.sin_cos();
            u += w[5] * (y * c + x * s);
            v += w[5] * (x * c + y * s);
        }
        (u, v)
    }
}

/// What one latent describes: the maps and the look.
struct Frame {
    maps: [Map; MAPS],
    look: Look,
}

/// The orbits every frame follows, from the run seed: each orbit's start and colour, and the
/// map taken at each step, drawn afresh from the orbit's own stream (stored, they would take a
/// byte per point: a gigabyte at the largest size and density).
#[derive(Debug, Clone, Copy)]
struct Orbits {
    seed: u64,
}

impl Orbits {
    /// Orbit `index`: its start (x, y, colour) and its choices, two bits per map taken.
    #[inline]
    fn orbit(&self, index: usize) -> ((f32, f32, f32), [u64; CHOICE_WORDS]) {
        let mut stream = SplitMix64(self.seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        let unit = |bits: u64| (bits >> 40) as f32 / (1u64 << 24) as f32;
        let start = (
            unit(stream.next()) * 2.0 - 1.0,
            unit(stream.next()) * 2.0 - 1.0,
            unit(stream.next()),
        );
        (start, std::array::from_fn(|_| stream.next()))
    }
}

/// Words of choices per orbit: 32 two-bit choices each.
const CHOICE_WORDS: usize = ORBIT.div_ceil(32);

/// SplitMix64 (Steele, Lea and Flood): a tiny, well-mixed stream, cheap to start per orbit.
/// A ChaCha stream (rand_chacha, as elsewhere) would refill a 256-byte block for the five
/// words an orbit takes, thousands of times a frame.
struct SplitMix64(u64);

impl SplitMix64 {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub(crate) struct FlameGenerator {
    full: (u32, u32),
    width: u32,
    height: u32,
    /// Points plotted per pixel of the configured size.
    density: f64,
    brightness: f32,
    drift: f64,
    device: Device,
    orbits: Orbits,
    threads: usize,
    themes: Themes,
}

impl FlameGenerator {
    /// The style for `seed` at `width` x `height`; `drift` is how far each keyframe moves from
    /// the previous one (0..=1).
    pub(crate) fn new(
        config: &FlameConfig,
        width: u32,
        height: u32,
        seed: u64,
        drift: f64,
        device: Device,
    ) -> anyhow::Result<Self> {
        ensure!(
            width > 0 && height > 0,
            "flame resolution must be non-zero, got {width}x{height}"
        );
        Ok(Self {
            full: (width, height),
            width,
            height,
            density: config.density,
            brightness: config.brightness as f32,
            drift,
            device,
            orbits: Orbits { seed },
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            themes: Themes::none(),
        })
    }

    /// Orbits that plot `density` points per pixel at `size`.
    fn orbits_for(density: f64, (width, height): (u32, u32)) -> usize {
        let points = density * width as f64 * height as f64;
        ((points / (ORBIT - SKIP) as f64).ceil() as usize).max(1)
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

    fn frame(latent: &[f32]) -> Frame {
        Frame {
            maps: std::array::from_fn(|m| Map::from_latent(&latent[m * PER_MAP..])),
            look: Look::from_latent(&latent[STYLE_LEN..]),
        }
    }

    /// Calls `plot` with each point of `frame`'s first `orbits` orbits and its colour.
    #[inline]
    fn each_point(&self, frame: &Frame, orbits: usize, mut plot: impl FnMut(f32, f32, f32)) {
        for index in 0..orbits {
            let ((mut x, mut y, mut colour), choices) = self.orbits.orbit(index);
            for step in 0..ORBIT {
                let choice = (choices[step / 32] >> (2 * (step % 32))) as usize % MAPS;
                let map = &frame.maps[choice];
                (x, y) = map.apply(x, y);
                colour = 0.5 * (colour + map.colour);
                if step >= SKIP {
                    plot(x, y, colour);
                }
            }
        }
    }

    /// `frame` drawn at the current size: RGB8.
    fn render(&self, frame: &Frame) -> Vec<u8> {
        let (width, height) = (self.width as usize, self.height as usize);
        let orbits = Self::orbits_for(self.density, (self.width, self.height));
        let framing = Framing::of(self, frame, orbits.min(FRAMING_ORBITS));
        let mut histogram = Histogram::new(width, height);
        let mirror = frame.look.placement.mirror();
        self.each_point(frame, orbits, |x, y, colour| {
            let (sx, sy) = framing.to_screen(&frame.look, x, y);
            histogram.splat(sx, sy, colour, 1.0);
            if mirror[0] > 0.0 {
                histogram.splat(-sx, sy, colour, mirror[0]);
            }
            if mirror[1] > 0.0 {
                histogram.splat(sx, -sy, colour, mirror[1]);
            }
        });
        histogram.tone(&frame.look.palette, self.brightness)
    }
}

/// Where the points sit: their mean, and the scale that fits their mean deviation to the
/// screen. Both are averages, so they move smoothly with the points (a bounding box would
/// jump with its outermost point).
struct Framing {
    centre: (f32, f32),
    scale: f32,
}

impl Framing {
    /// The framing of `frame`'s first `orbits` orbits' points.
    fn of(flame: &FlameGenerator, frame: &Frame, orbits: usize) -> Self {
        let mut points = Vec::with_capacity(orbits * (ORBIT - SKIP));
        flame.each_point(frame, orbits, |x, y, _| points.push((x, y)));
        let count = points.len().max(1) as f32;
        let (sx, sy) = points
            .iter()
            .fold((0.0, 0.0), |(sx, sy), &(x, y)| (sx + x, sy + y));
        let centre = (sx / count, sy / count);
        let spread = points
            .iter()
            .map(|&(x, y)| ((x - centre.0).powi(2) + (y - centre.1).powi(2)).sqrt())
            .sum::<f32>()
            / count;
        Self {
            centre,
            scale: 2.0 / (FRAMING * spread.max(1e-4)),
        }
    }

    /// A point of the flame to the screen's plane (`builtin::screen_point`'s), placed by the
    /// look.
    #[inline]
    fn to_screen(&self, look: &Look, x: f32, y: f32) -> (f32, f32) {
        let (x, y) = (
            (x - self.centre.0) * self.scale,
            (y - self.centre.1) * self.scale,
        );
        look.placement.unapply(x, y)
    }
}

/// Points counted per pixel, with the sum of their colours.
struct Histogram {
    width: usize,
    height: usize,
    density: Vec<f32>,
    colour: Vec<f32>,
}

impl Histogram {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            density: vec![0.0; width * height],
            colour: vec![0.0; width * height],
        }
    }

    /// A point at screen position (x, y) (`builtin::screen_point`'s plane), shared among the
    /// four pixels around it.
    #[inline]
    fn splat(&mut self, x: f32, y: f32, colour: f32, weight: f32) {
        let (w, h) = (self.width as f32, self.height as f32);
        let column = (x * h / w + 1.0) * 0.5 * w - 0.5;
        let row = (y + 1.0) * 0.5 * h - 0.5;
        if !(column > -1.0 && row > -1.0 && column < w && row < h) {
            return;
        }
        let (c0, r0) = (column.floor(), row.floor());
        let (fx, fy) = (column - c0, row - r0);
        let (c0, r0) = (c0 as isize, r0 as isize);
        for (dr, wy) in [(0, 1.0 - fy), (1, fy)] {
            for (dc, wx) in [(0, 1.0 - fx), (1, fx)] {
                let (r, c) = (r0 + dr, c0 + dc);
                if r >= 0 && c >= 0 && (r as usize) < self.height && (c as usize) < self.width {
                    let at = r as usize * self.width + c as usize;
                    let share = weight * wx * wy;
                    self.density[at] += share;
                    self.colour[at] += share * colour;
                }
            }
        }
    }

    /// Log-density tone mapping: a pixel's brightness is the log of its count against the
    /// lit pixels' mean, so the busiest filaments saturate and faint ones still show. A glow
    /// (the histogram blurred, `GLOW` as bright) haloes the filaments, as flam3's does, and the
    /// flame shines over a dark ground tinted by its own mean colour: pure black would leave
    /// most of the screen at 0, which the re-anchor guard rightly calls clipped.
    fn tone(&self, palette: &Palette, brightness: f32) -> Vec<u8> {
        let mean = lit_mean(&self.density);
        let total: f32 = self.density.iter().sum();
        let colours: f32 = self.colour.iter().sum();
        let ground = palette
            .rgb(colours / total.max(1e-6), GROUND_SHADE)
            .map(|c| c as f32 + GROUND_FLOOR);
        let radius = (self.height / GLOW_SPAN).max(1);
        let glow_density = blur(&self.density, self.width, self.height, radius);
        let glow_colour = blur(&self.colour, self.width, self.height, radius);
        let glow_mean = lit_mean(&glow_density);
        let shade = |density: f32, mean: f32| {
            ((density / mean).ln_1p() * LOG_SCALE * brightness)
                .min(1.0)
                .powf(0.5)
        };
        let mut rgb = Vec::with_capacity(self.density.len() * 3);
        for at in 0..self.density.len() {
            let (density, glow) = (self.density[at], glow_density[at]);
            let core = shade(density, mean);
            let halo = GLOW * shade(glow, glow_mean);
            let alpha = 1.0 - (1.0 - core) * (1.0 - halo);
            let colour = (self.colour[at] + glow_colour[at]) / (density + glow).max(1e-6);
            let lit = palette.rgb(colour, 1.0);
            for (ground, lit) in ground.iter().zip(lit) {
                let value = ground + alpha * (lit as f32 - ground);
                rgb.push((value + 0.5).clamp(0.0, 255.0) as u8);
            }
        }
        rgb
    }
}

/// The mean of the values above 0 (a tiny positive number where there are none).
fn lit_mean(values: &[f32]) -> f32 {
    let (lit, total) = values
        .iter()
        .filter(|&&v| v > 0.0)
        .fold((0usize, 0f32), |(n, sum), &v| (n + 1, sum + v));
    (total / lit.max(1) as f32).max(1e-6)
}

/// `values` (`width` x `height`, row by row) blurred by two passes of a box `radius` pixels
/// each way, along rows then columns: near enough a Gaussian, in time linear in the pixels.
fn blur(values: &[f32], width: usize, height: usize, radius: usize) -> Vec<f32> {
    let mut out = values.to_vec();
    let mut line = Vec::new();
    for _ in 0..2 {
        for row in out.chunks_exact_mut(width) {
            box_line(row, radius, &mut line);
        }
        let mut column = vec![0.0; height];
        for x in 0..width {
            for (y, value) in column.iter_mut().enumerate() {
                *value = out[y * width + x];
            }
            box_line(&mut column, radius, &mut line);
            for (y, value) in column.iter().enumerate() {
                out[y * width + x] = *value;
            }
        }
    }
    out
}

/// `values` replaced by their mean over a window of `radius` each way (the window cut at the
/// ends), by a running sum; `scratch` is reused between calls.
fn box_line(values: &mut [f32], radius: usize, scratch: &mut Vec<f32>) {
    scratch.clear();
    scratch.extend_from_slice(values);
    let len = values.len();
    let mut sum: f32 = scratch[..radius.min(len)].iter().sum();
    for i in 0..len {
        if i + radius < len {
            sum += scratch[i + radius];
        }
        if i > radius {
            sum -= scratch[i - radius - 1];
        }
        // Rounding in the running sum can leave a hair below 0 where the window has emptied.
        values[i] = (sum / (2 * radius + 1) as f32).max(0.0);
    }
}

/// Frame after frame of `batch`, each made whole by `render` on one of up to `threads` threads.
fn render_frames<F>(batch: usize, threads: usize, render: F) -> anyhow::Result<Vec<Vec<u8>>>
where
    F: Fn(usize) -> Vec<u8> + Sync,
{
    let threads = threads.clamp(1, batch.max(1));
    let render = &render;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    (worker..batch)
                        .step_by(threads)
                        .map(render)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut parts = Vec::with_capacity(threads);
        for worker in workers {
            parts.push(
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("decode worker panicked"))?
                    .into_iter(),
            );
        }
        // Frame i came from worker i % threads, in order.
        Ok((0..batch)
            .map(|i| parts[i % threads].next().unwrap_or_default())
            .collect())
    })
}

impl Generator for FlameGenerator {
    style_methods!("flame");

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let (batch, size) = latents
            .dims2()
            .context("flame latents must be [batch, latent]")?;
        ensure!(
            size == self.latent_len(),
            "flame latent has {size} values, expected {}",
            self.latent_len()
        );
        let frames: Vec<Frame> = latents
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .iter()
            .map(|latent| Self::frame(latent))
            .collect();
        render_frames(batch, self.threads, |index| self.render(&frames[index]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::keyframe_seed;
    use crate::generator::KeyframeRequest;

    fn config() -> FlameConfig {
        FlameConfig {
            density: 3.0,
            brightness: 1.0,
        }
    }

    fn latent(seed: u64) -> Vec<f32> {
        super::super::normal_values(seed, STYLE_LEN + LOOK_SIZE)
    }

    #[test]
    fn every_map_contracts_and_its_weights_sum_to_one() {
        for seed in 0..200 {
            let values = latent(seed);
            let map = Map::from_latent(&values);
            let total: f32 = map.weights.iter().sum();
            assert!((total - 1.0).abs() < 1e-4, "{:?}", map.weights);
            assert!(map.weights.iter().all(|w| *w >= 0.0));
            // No direction stretched beyond the bound by the linear part.
            let [a, b, c, d, _, _] = map.affine;
            for angle in 0..32 {
                let (s, co) = (angle as f32 * 0.2).sin_cos();
                let (x, y) = (a * co + b * s, c * co + d * s);
                assert!((x * x + y * y).sqrt() <= CONTRACTION + 1e-4);
            }
        }
    }

    #[test]
    fn orbits_stay_bounded_and_finite() {
        let flame = FlameGenerator::new(&config(), 64, 36, 3, 0.45, Device::Cpu).unwrap();
        for seed in 0..50 {
            let frame = FlameGenerator::frame(&latent(seed));
            let mut plotted = 0;
            flame.each_point(&frame, 20, |x, y, colour| {
                assert!(x.is_finite() && y.is_finite() && x.abs() < 100.0 && y.abs() < 100.0);
                assert!((0.0..=1.0).contains(&colour));
                plotted += 1;
            });
            assert_eq!(plotted, 20 * (ORBIT - SKIP));
        }
    }

    #[test]
    fn a_walk_decodes_to_seeded_frames_that_differ_by_keyframe() {
        let mut flame = FlameGenerator::new(&config(), 64, 36, 7, 0.45, Device::Cpu).unwrap();
        let requests: Vec<_> = (0..3)
            .map(|index| KeyframeRequest {
                index,
                seed: keyframe_seed(7, index),
                previous: None,
            })
            .collect();
        let keys = Tensor::stack(&flame.keyframes(&requests).unwrap(), 0).unwrap();
        let frames = flame.decode(&keys).unwrap();
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.len() == 64 * 36 * 3));
        assert_ne!(frames[0], frames[1]);
        // Well above the ground (the median: most of the screen) in more than a few places.
        let mut sorted = frames[0].clone();
        sorted.sort_unstable();
        let ground = sorted[sorted.len() / 2];
        let lit = frames[0]
            .iter()
            .filter(|&&c| c > ground.saturating_add(40))
            .count();
        assert!(
            lit > frames[0].len() / 50,
            "{lit} lit channels over a ground of {ground}: a flame, not a dot"
        );
        let mut again = FlameGenerator::new(&config(), 64, 36, 7, 0.45, Device::Cpu).unwrap();
        again.threads = 1;
        assert_eq!(
            again.decode(&keys).unwrap(),
            frames,
            "same seed, same frames, however the work is split"
        );
        let wrong = Tensor::zeros((1, 5), DType::F32, &Device::Cpu).unwrap();
        let error = flame.decode(&wrong).unwrap_err();
        assert!(
            format!("{error}").contains(&format!("expected {}", flame.latent_len())),
            "{error}"
        );
    }

    #[test]
    fn frames_come_back_in_order_however_many_threads() {
        let frames = |threads| render_frames(7, threads, |i| vec![i as u8; 3]).unwrap();
        let expected: Vec<Vec<u8>> = (0..7).map(|i| vec![i as u8; 3]).collect();
        for threads in [1, 2, 3, 8] {
            assert_eq!(frames(threads), expected);
        }
        assert!(render_frames(0, 4, |_| Vec::new()).unwrap().is_empty());
    }
}
