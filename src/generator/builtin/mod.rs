//! The built-in generators: art from a seed alone, no weights and no GPU, so a fresh machine
//! shows art at once and a model's load has something to show meanwhile. Three styles: `cppn` (a
//! compositional pattern-producing network), `warp` (domain-warped noise) and `flame` (fractal
//! flames). Each carries a look (`look`: placement, symmetry, palette) in its keyframe latents
//! beside its own values, and each draws a picture of the plane, so the adapt ladder's smaller
//! sizes (`knobs`) are the same picture with fewer samples. `mix` shows them in turn.
//!
//! What they share lives here: how a keyframe is made (a fresh random latent, or a drift from
//! the previous one), the ladder's sizes, how a decode is shared across the cores, and the
//! `Generator` methods every style answers alike (`style_methods!`).
//! Inputs: keyframe requests and latents. Outputs: latents and RGB8 frames. Runs on the
//! keyframe and decoder threads; a worker that fails or panics fails the decode.

/// The `Generator` methods the styles share, for inside their `impl Generator`: the name, the
/// device, the sizes, the keyframe walk and the themes. The style's struct has the fields
/// `full`, `width`, `height`, `drift`, `device` and `themes`, and the methods `latent_len` and
/// `style_len` (its own values at the head of the latent).
macro_rules! style_methods {
    ($name:literal) => {
        fn name(&self) -> &str {
            $name
        }

        fn device(&self) -> &candle_core::Device {
            &self.device
        }

        fn resolution(&self) -> (u32, u32) {
            self.full
        }

        fn knobs(&self) -> crate::generator::Knobs {
            super::knobs(self.full)
        }

        fn set_decode_quality(&mut self, quality: crate::generator::DecodeQuality) {
            let sizes = self.knobs().sizes;
            (self.width, self.height) = sizes[quality.size.min(sizes.len() - 1)];
        }

        fn keyframes(
            &mut self,
            requests: &[crate::generator::KeyframeRequest],
        ) -> anyhow::Result<Vec<candle_core::Tensor>> {
            super::keyframes(
                requests,
                self.latent_len(),
                self.style_len(),
                self.drift,
                &self.themes,
                &self.device,
            )
        }

        fn keyframe_label(&self, index: u64) -> Option<(u64, &str)> {
            self.themes.label(index)
        }

        fn next_theme(&mut self) {
            self.themes.advance();
        }

        fn reconfigure(&mut self, prompts: &crate::config::PromptsConfig) {
            self.themes.reconfigure(prompts);
        }
    };
}

pub(crate) mod cppn;
pub(crate) mod flame;
pub(crate) mod look;
pub(crate) mod mix;
pub(crate) mod themes;
pub(crate) mod warp;

use anyhow::ensure;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::{Generator, KeyframeRequest, Knobs};
pub(crate) use crate::config::Style;
use crate::config::{Config, CPPN_DEFAULT_SIZE, FLAME_DEFAULT_SIZE, WARP_DEFAULT_SIZE};
use themes::Themes;

/// The built-in generator of `style`, with `config`'s settings and themes for it, at
/// `model.width` x `model.height` (or the style's own size: 256 x 144 for cppn, 384 x 216 for
/// warp and flame), drawn from `seed`.
pub(crate) fn build(
    style: Style,
    config: &Config,
    seed: u64,
) -> anyhow::Result<Box<dyn Generator>> {
    Ok(match style {
        Style::Cppn => Box::new(cppn(config, seed, None)?),
        Style::Warp => Box::new(warp(config, seed, None)?),
        Style::Flame => Box::new(flame(config, seed, None)?),
    })
}

/// The flame style as `config` sets it, at `model.width` x `model.height`, else its own size.
pub(crate) fn flame(
    config: &Config,
    seed: u64,
    size: Option<(u32, u32)>,
) -> anyhow::Result<flame::FlameGenerator> {
    let (width, height) = size.or(config.model.size).unwrap_or(FLAME_DEFAULT_SIZE);
    flame::FlameGenerator::new(
        &config.flame,
        width,
        height,
        seed,
        config.keyframe.drift,
        Device::Cpu,
    )
    .map(|style| style.with_themes(Themes::new(&config.prompts)))
}

/// The cppn style as `config` sets it, at `size` (else `model.width` x `model.height`, else
/// its own).
pub(crate) fn cppn(
    config: &Config,
    seed: u64,
    size: Option<(u32, u32)>,
) -> anyhow::Result<cppn::CppnGenerator> {
    let (width, height) = size.or(config.model.size).unwrap_or(CPPN_DEFAULT_SIZE);
    cppn::CppnGenerator::new(
        &config.cppn,
        width,
        height,
        seed,
        config.keyframe.drift,
        Device::Cpu,
    )
    .map(|style| style.with_themes(Themes::new(&config.prompts)))
}

/// The warp style as `config` sets it, at `model.width` x `model.height`, else its own size.
pub(crate) fn warp(
    config: &Config,
    seed: u64,
    size: Option<(u32, u32)>,
) -> anyhow::Result<warp::WarpGenerator> {
    let (width, height) = size.or(config.model.size).unwrap_or(WARP_DEFAULT_SIZE);
    warp::WarpGenerator::new(
        &config.warp,
        width,
        height,
        seed,
        config.keyframe.drift,
        Device::Cpu,
    )
    .map(|style| style.with_themes(Themes::new(&config.prompts)))
}

/// The smaller resolutions the adapt ladder may ask for, as shares of the configured one.
const SCALES: [f64; 4] = [0.75, 0.5, 0.375, 0.25];
/// No side smaller than this (a smaller configured size is not lowered below its own).
const MIN_SIDE: u32 = 16;
/// Fewer pixels than this are not worth a thread of their own.
const MIN_PIXELS_PER_THREAD: usize = 4096;

/// The sizes a built-in generator configured at `full` decodes at: `full`, then 3/4, 1/2, 3/8
/// and 1/4 of it while no side is below 16 pixels.
pub(crate) fn knobs(full: (u32, u32)) -> Knobs {
    Knobs {
        sizes: Knobs::scaled_sizes(full, &SCALES, MIN_SIDE),
        ..Knobs::fixed(full)
    }
}

/// `count` standard-normal values from `seed`.
pub(crate) fn normal_values(seed: u64, count: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect()
}

/// One keyframe latent (`style_len` values of the style's own, then the look) per request:
/// fresh from the request's seed for the first, else drifted from the previous one (the
/// request's, or the one made just before in this batch), the look slower, its palette steered
/// to the keyframe's theme (`look::drift`).
pub(crate) fn keyframes(
    requests: &[KeyframeRequest],
    latent_len: usize,
    style_len: usize,
    drift: f64,
    themes: &Themes,
    device: &Device,
) -> anyhow::Result<Vec<Tensor>> {
    let mut previous: Option<Tensor> = None;
    let mut latents = Vec::with_capacity(requests.len());
    for request in requests {
        let fresh = Tensor::from_vec(normal_values(request.seed, latent_len), latent_len, device)?;
        let latent = match request.previous.as_ref().or(previous.as_ref()) {
            Some(previous) => {
                ensure!(
                    previous.dims() == [latent_len],
                    "the previous keyframe's latent has shape {:?}, expected [{latent_len}]",
                    previous.dims()
                );
                look::drift(
                    previous,
                    &fresh,
                    style_len,
                    drift,
                    themes.palette(request.index),
                )?
            }
            None => look::fresh(&fresh, themes.palette(request.index))?,
        };
        previous = Some(latent.clone());
        latents.push(latent);
    }
    Ok(latents)
}

/// `batch` frames of `pixels` pixels each, made on up to `threads` threads. `colours(first
/// frame, frames, first pixel, pixels)` gives the RGB8 of those pixels of those frames, frame
/// after frame. A batch at least as large as the threads is shared by frames (the fastest
/// split, measured); a smaller one, like a keyframe decoded alone, by pixels, so a single frame
/// uses every core too.
pub(crate) fn render_parallel<F>(
    batch: usize,
    pixels: usize,
    threads: usize,
    colours: F,
) -> anyhow::Result<Vec<Vec<u8>>>
where
    F: Fn(usize, usize, usize, usize) -> anyhow::Result<Vec<u8>> + Sync,
{
    let threads = threads.min(pixels.div_ceil(MIN_PIXELS_PER_THREAD)).max(1);
    // (first frame, frames, first pixel, pixels) per worker.
    let shares: Vec<(usize, usize, usize, usize)> = if batch >= threads {
        let step = batch.div_ceil(threads);
        (0..batch)
            .step_by(step)
            .map(|first| (first, step.min(batch - first), 0, pixels))
            .collect()
    } else {
        let step = pixels.div_ceil(threads).max(1);
        (0..pixels)
            .step_by(step)
            .map(|first| (0, batch, first, step.min(pixels - first)))
            .collect()
    };
    let mut frames = vec![vec![0u8; pixels * 3]; batch];
    let colours = &colours;
    std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|(frame, count_frames, first, count)| {
                let worker = scope.spawn(move || colours(frame, count_frames, first, count));
                (frame, first, count, worker)
            })
            .collect();
        for (frame, first, count, worker) in workers {
            let rgb = worker
                .join()
                .map_err(|_| anyhow::anyhow!("decode worker panicked"))??;
            for (target, part) in frames[frame..].iter_mut().zip(rgb.chunks_exact(count * 3)) {
                target[first * 3..(first + count) * 3].copy_from_slice(part);
            }
        }
        anyhow::Ok(())
    })?;
    Ok(frames)
}

/// Pixel `pixel` (row-major) of a `width` x `height` frame as a point centred on the screen,
/// y in -1..1 downwards, x keeping the aspect ratio.
#[inline]
pub(crate) fn screen_point(pixel: usize, width: usize, height: usize) -> (f32, f32) {
    let (row, column) = (pixel / width, pixel % width);
    let y = (row as f32 + 0.5) / height as f32 * 2.0 - 1.0;
    let x = ((column as f32 + 0.5) / width as f32 * 2.0 - 1.0) * width as f32 / height as f32;
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::keyframe_seed;

    const STYLES: [Style; 3] = [Style::Cppn, Style::Warp, Style::Flame];

    fn small(style: Style, seed: u64) -> Box<dyn Generator> {
        let mut config = Config::default();
        config.model.size = Some((48, 27));
        build(style, &config, seed).unwrap()
    }

    /// Keyframes 0..count of a walk from `seed`, each drifted from the last.
    fn walk(generator: &mut dyn Generator, seed: u64, count: u64) -> Vec<Tensor> {
        let mut latents: Vec<Tensor> = Vec::new();
        for index in 0..count {
            let request = KeyframeRequest {
                index,
                seed: keyframe_seed(seed, index),
                previous: latents.last().cloned(),
            };
            latents.extend(generator.keyframes(&[request]).unwrap());
        }
        latents
    }

    /// Share of coloured pixels in each of 12 hue bins (grey pixels left out).
    fn hues(rgb: &[u8]) -> [f64; 12] {
        let mut bins = [0f64; 12];
        let mut counted = 0;
        for pixel in rgb.chunks_exact(3) {
            let [r, g, b] = [pixel[0], pixel[1], pixel[2]].map(|c| c as f64 / 255.0);
            let (max, min) = (r.max(g).max(b), r.min(g).min(b));
            if max - min < 0.1 {
                continue;
            }
            let hue = if max == r {
                ((g - b) / (max - min)).rem_euclid(6.0)
            } else if max == g {
                (b - r) / (max - min) + 2.0
            } else {
                (r - g) / (max - min) + 4.0
            };
            bins[((hue * 2.0) as usize).min(11)] += 1.0;
            counted += 1;
        }
        bins.map(|n| n / counted.max(1) as f64)
    }

    pub(super) fn mean_difference(a: &[u8], b: &[u8]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / a.len() as f64
    }

    /// The mean and the largest `mean_difference` between consecutive frames.
    pub(super) fn steps(frames: &[Vec<u8>]) -> (f64, f64) {
        let steps: Vec<f64> = frames
            .windows(2)
            .map(|pair| mean_difference(&pair[0], &pair[1]))
            .collect();
        let mean = steps.iter().sum::<f64>() / steps.len() as f64;
        (mean, steps.iter().copied().fold(0.0, f64::max))
    }

    #[test]
    fn a_seeded_walk_changes_its_palette_within_forty_keyframes() {
        // Two minutes of the shipped walk (3 s a keyframe).
        for style in STYLES {
            for seed in 1..=4 {
                let mut generator = small(style, seed);
                let latents = Tensor::stack(&walk(generator.as_mut(), seed, 41), 0).unwrap();
                let frames = generator.decode(&latents).unwrap();
                let first = hues(&frames[0]);
                let moved = frames[1..]
                    .iter()
                    .map(|frame| {
                        let other = hues(frame);
                        first
                            .iter()
                            .zip(&other)
                            .map(|(a, b)| (a - b).abs())
                            .sum::<f64>()
                            / 2.0
                    })
                    .fold(0.0, f64::max);
                eprintln!("{style:?} seed {seed}: at most {moved:.3} of the hues moved");
                assert!(
                    moved > 0.6,
                    "{style:?} seed {seed}: at most {moved:.3} of the hues moved in 40 keyframes"
                );
            }
        }
    }

    #[test]
    fn in_between_frames_morph_without_a_jump() {
        for style in STYLES {
            for seed in 1..=3 {
                let mut generator = small(style, seed);
                let latents = walk(generator.as_mut(), seed, 6);
                // The shipped transition: 90 frames from one keyframe to the next.
                let path = crate::generator::interpolation::transition(
                    &latents[4],
                    &latents[5],
                    90,
                    crate::config::Easing::Linear,
                )
                .unwrap();
                let frames = generator.decode(&path).unwrap();
                let (mean, largest) = steps(&frames);
                eprintln!("{style:?} seed {seed}: step mean {mean:.2} largest {largest:.2}");
                assert!(
                    largest < 3.0 * mean + 1.0 && largest < 10.0,
                    "{style:?} seed {seed}: a step of {largest:.2} where they average {mean:.2}"
                );
            }
        }
    }

    #[test]
    fn every_split_of_the_work_gives_the_same_frames() {
        // Each pixel's colour names its frame and position.
        let colours = |frame: usize, frames: usize, first: usize, count: usize| {
            let mut out = Vec::new();
            for f in frame..frame + frames {
                for p in first..first + count {
                    out.extend_from_slice(&[f as u8, (p % 251) as u8, (p / 251) as u8]);
                }
            }
            Ok(out)
        };
        let expected = render_parallel(3, 20_000, 1, colours).unwrap();
        for threads in [2, 3, 4, 7] {
            assert_eq!(
                render_parallel(3, 20_000, threads, colours).unwrap(),
                expected
            );
        }
        assert_eq!(expected[2][3 * 19_999..], [2, (19_999 % 251) as u8, 79]);
    }

    #[test]
    fn a_failing_worker_fails_the_decode() {
        let failing = |frame: usize, _: usize, _: usize, count: usize| {
            anyhow::ensure!(frame == 0, "worker for frame {frame} failed");
            Ok(vec![0; count * 3])
        };
        let error = render_parallel(4, 20_000, 4, failing).unwrap_err();
        assert!(format!("{error}").contains("failed"), "{error}");
    }
}
