//! The built-in generator: a compositional pattern-producing network (CPPN). Needs no weights
//! and no GPU, so a fresh machine shows art at once.
//!
//! Every pixel's colour is a small network of its coordinates (x, y, radius) and the keyframe
//! latent z. The weights come from the run seed, so a seed always gives the same frames; the
//! latent walks (keyframes drift, frames slerp between them), so the picture morphs smoothly.
//! The coordinate half of the first layer does not depend on z and is computed once (per tile,
//! on the fly, when keeping it for the whole frame would take more than
//! `MAX_PRECOMPUTED_BYTES`). Frames are evaluated in tiles of rows, so a decode's working memory
//! stays within `TILE_VALUES` values per tensor whatever the frame size.
//! The adapt ladder may lower the resolution it decodes at (`Knobs::sizes`: 3/4, 1/2, 3/8 and 1/4
//! of the configured size): the network is a function of the coordinates, so a smaller frame is
//! the same picture with fewer samples, and only the coordinate features are made again.
//! Runs on the keyframe and decoder threads under the model lock; errors are candle's.

use anyhow::{ensure, Context};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::{Generator, KeyframeRequest};
use crate::config::CppnConfig;
use crate::generator::interpolation::slerp;

#[derive(Debug, Clone, Copy)]
enum Activation {
    Sin,
    Tanh,
    Gaussian,
}

impl Activation {
    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Sin => x.sin(),
            Activation::Tanh => x.tanh(),
            Activation::Gaussian => x.sqr()?.neg()?.exp(),
        }
    }
}

struct Layer {
    weight: Tensor,
    bias: Tensor,
    activation: Activation,
}

/// The z-independent half of layer one is kept for the whole frame up to this size.
const MAX_PRECOMPUTED_BYTES: usize = 64 * 1024 * 1024;
/// Values in one tile's [latents x pixels, hidden] tensor: ~16 MB of f32.
const TILE_VALUES: usize = 4 * 1024 * 1024;
/// Fewer pixels than this are not worth a thread of their own.
const MIN_PIXELS_PER_THREAD: usize = 4096;

/// The smaller resolutions the adapt ladder may ask for, as shares of the configured one.
const SCALES: [f64; 4] = [0.75, 0.5, 0.375, 0.25];
/// No side smaller than this (a smaller configured size is not lowered below its own).
const MIN_SIDE: u32 = 16;

pub struct CppnGenerator {
    /// The configured resolution (`Generator::resolution`).
    full: (u32, u32),
    /// The resolution decoded now (the adapt ladder's choice among `Knobs::sizes`).
    width: u32,
    height: u32,
    latent_size: usize,
    zoom: f64,
    drift: f64,
    device: Device,
    /// coords @ W_coords + b, shape [pixels, hidden]: the z-independent half of layer one; `None`
    /// when too large to keep (then made per tile).
    coordinate_features: Option<Tensor>,
    /// [3, hidden] and [hidden]: layer one's coordinate weights.
    coord_weight: Tensor,
    first_bias: Tensor,
    /// [latent, hidden]
    latent_weight: Tensor,
    hidden: Vec<Layer>,
    /// [hidden, 3], then a per-channel phase [3].
    output_weight: Tensor,
    output_phase: Tensor,
    /// Threads a decode batch is split across.
    threads: usize,
    /// `TILE_VALUES`, smaller in tests.
    tile_values: usize,
}

fn normal_tensor(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    scale: f64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| (rng.sample::<f64, _>(StandardNormal) * scale) as f32)
        .collect();
    Tensor::from_vec(values, shape, device)
}

impl CppnGenerator {
    /// Builds the network for `seed` at `width` x `height`; `drift` is how far each keyframe
    /// moves from the previous one (0..=1).
    pub fn new(
        config: &CppnConfig,
        width: u32,
        height: u32,
        seed: u64,
        drift: f64,
        device: Device,
    ) -> anyhow::Result<Self> {
        ensure!(
            width > 0 && height > 0,
            "cppn resolution must be non-zero, got {width}x{height}"
        );
        let hidden = config.hidden_units;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let coord_weight = normal_tensor(&mut rng, &[3, hidden], 1.0, &device)?;
        let first_bias = normal_tensor(&mut rng, &[hidden], 0.5, &device)?;
        let latent_weight = normal_tensor(
            &mut rng,
            &[config.latent_size, hidden],
            1.0 / (config.latent_size as f64).sqrt(),
            &device,
        )?;

        let activations = [Activation::Sin, Activation::Tanh, Activation::Gaussian];
        let mut layers = Vec::with_capacity(config.layers);
        for index in 0..config.layers {
            layers.push(Layer {
                // A gain above 1 keeps the fields structured rather than flat.
                weight: normal_tensor(
                    &mut rng,
                    &[hidden, hidden],
                    1.8 / (hidden as f64).sqrt(),
                    &device,
                )?,
                bias: normal_tensor(&mut rng, &[hidden], 0.5, &device)?,
                activation: activations[index % activations.len()],
            });
        }
        let output_weight = normal_tensor(
            &mut rng,
            &[hidden, 3],
            2.5 / (hidden as f64).sqrt(),
            &device,
        )?;
        let output_phase = normal_tensor(&mut rng, &[3], 1.0, &device)?;
        let mut generator = Self {
            full: (width, height),
            width,
            height,
            latent_size: config.latent_size,
            zoom: config.zoom,
            drift,
            device,
            coordinate_features: None,
            coord_weight,
            first_bias,
            latent_weight,
            hidden: layers,
            output_weight,
            output_phase,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tile_values: TILE_VALUES,
        };
        generator.precompute_features()?;
        Ok(generator)
    }

    /// Keeps the coordinate features of the current size when they are small enough.
    fn precompute_features(&mut self) -> candle_core::Result<()> {
        self.coordinate_features = None;
        let pixels = self.width as usize * self.height as usize;
        let hidden = self.first_bias.dim(0)?;
        if pixels * hidden * 4 <= MAX_PRECOMPUTED_BYTES {
            self.coordinate_features = Some(self.features_of(0, pixels)?);
        }
        Ok(())
    }

    /// Layer one's coordinate half for pixels `start..start + count` (row-major): [count, hidden].
    fn features_of(&self, start: usize, count: usize) -> candle_core::Result<Tensor> {
        if let Some(features) = &self.coordinate_features {
            if start == 0 && count == features.dim(0)? {
                return Ok(features.clone());
            }
            return features.narrow(0, start, count)?.contiguous();
        }
        // Coordinates centred on the screen; y spans [-zoom, zoom], x keeps the aspect ratio.
        let (width, height) = (self.width as usize, self.height as usize);
        let aspect = width as f64 / height as f64;
        let zoom = self.zoom;
        let mut coords = Vec::with_capacity(count * 3);
        for pixel in start..start + count {
            let (row, column) = (pixel / width, pixel % width);
            let y = ((row as f64 + 0.5) / height as f64 * 2.0 - 1.0) * zoom;
            let x = ((column as f64 + 0.5) / width as f64 * 2.0 - 1.0) * zoom * aspect;
            coords.extend_from_slice(&[x as f32, y as f32, (x * x + y * y).sqrt() as f32]);
        }
        Tensor::from_vec(coords, (count, 3), &self.device)?
            .matmul(&self.coord_weight)?
            .broadcast_add(&self.first_bias)
    }

    fn random_latent(&self, seed: u64) -> candle_core::Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        normal_tensor(&mut rng, &[self.latent_size], 1.0, &self.device)
    }
}

impl Generator for CppnGenerator {
    fn name(&self) -> &str {
        "cppn"
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn resolution(&self) -> (u32, u32) {
        self.full
    }

    fn knobs(&self) -> super::Knobs {
        super::Knobs {
            sizes: super::Knobs::scaled_sizes(self.full, &SCALES, MIN_SIDE),
            ..super::Knobs::fixed(self.full)
        }
    }

    fn set_decode_quality(&mut self, quality: super::DecodeQuality) {
        let sizes = self.knobs().sizes;
        let size = sizes[quality.size.min(sizes.len() - 1)];
        if size != (self.width, self.height) {
            (self.width, self.height) = size;
            if let Err(error) = self.precompute_features() {
                // Made per tile instead: slower, never wrong.
                log::debug!("cppn coordinate features not kept: {error}");
                self.coordinate_features = None;
            }
        }
    }

    fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
        let mut previous: Option<Tensor> = None;
        let mut latents = Vec::with_capacity(requests.len());
        for request in requests {
            let fresh = self.random_latent(request.seed)?;
            // Drift from the given previous keyframe, or from the one made just before in this batch.
            let latent = match request.previous.as_ref().or(previous.as_ref()) {
                Some(previous) => slerp(previous, &fresh, self.drift)?,
                None => fresh,
            };
            previous = Some(latent.clone());
            latents.push(latent);
        }
        Ok(latents)
    }

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let (batch, latent_size) = latents
            .dims2()
            .context("cppn latents must be [batch, latent]")?;
        ensure!(
            latent_size == self.latent_size,
            "cppn latent has {latent_size} values, expected {}",
            self.latent_size
        );
        // candle's CPU element-wise ops (the activations, most of the cost) run on one core:
        // every core takes a share. A batch at least as large as the cores is shared by latents
        // (whole frames: the fastest split, measured); a smaller one, like the first keyframe
        // decoded alone, by rows, so a single frame uses every core too.
        let pixels = self.width as usize * self.height as usize;
        let threads = self
            .threads
            .min(pixels.div_ceil(MIN_PIXELS_PER_THREAD))
            .max(1);
        let z = latents.to_dtype(DType::F32)?.matmul(&self.latent_weight)?; // [batch, hidden]
                                                                            // (first latent, latents, first pixel, pixels) per worker.
        let shares: Vec<(usize, usize, usize, usize)> = if batch >= threads {
            let step = batch.div_ceil(threads);
            (0..batch)
                .step_by(step)
                .map(|first| (first, step.min(batch - first), 0, pixels))
                .collect()
        } else {
            let step = pixels.div_ceil(threads);
            (0..pixels)
                .step_by(step)
                .map(|first| (0, batch, first, step.min(pixels - first)))
                .collect()
        };
        let mut frames = vec![vec![0u8; pixels * 3]; batch];
        let this: &Self = self;
        std::thread::scope(|scope| {
            let workers: Vec<_> = shares
                .into_iter()
                .map(|(latent, latents, first, count)| {
                    let z = z.narrow(0, latent, latents).and_then(|z| z.contiguous());
                    let worker = scope.spawn(move || this.colours(&z?, first, count));
                    (latent, first, count, worker)
                })
                .collect();
            for (latent, first, count, worker) in workers {
                let colours = worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("cppn decode worker panicked"))??;
                for (frame, part) in frames[latent..]
                    .iter_mut()
                    .zip(colours.chunks_exact(count * 3))
                {
                    frame[first * 3..(first + count) * 3].copy_from_slice(part);
                }
            }
            anyhow::Ok(())
        })?;
        Ok(frames)
    }
}

impl CppnGenerator {
    /// RGB8 of pixels `first..first + count` (row-major) for every latent projection in `z`
    /// ([batch, hidden]), latent after latent, evaluated in tiles.
    fn colours(&self, z: &Tensor, first: usize, count: usize) -> anyhow::Result<Vec<u8>> {
        let (batch, hidden) = z.dims2()?;
        let tile = (self.tile_values / (batch * hidden).max(1)).clamp(1, count.max(1));
        if tile >= count {
            // One tile: its colours are the answer, already latent after latent.
            return self.tile_colours(z, first, count);
        }
        let mut out = vec![0u8; batch * count * 3];
        let mut offset = 0;
        while offset < count {
            let length = tile.min(count - offset);
            let rgb = self.tile_colours(z, first + offset, length)?;
            for (latent, part) in rgb.chunks_exact(length * 3).enumerate() {
                let at = (latent * count + offset) * 3;
                out[at..at + length * 3].copy_from_slice(part);
            }
            offset += length;
        }
        Ok(out)
    }

    /// RGB8 of pixels `first..first + count` for every latent projection in `z`, latent after
    /// latent, in one pass.
    fn tile_colours(&self, z: &Tensor, first: usize, count: usize) -> anyhow::Result<Vec<u8>> {
        let (batch, hidden) = z.dims2()?;
        let mut h = self
            .features_of(first, count)?
            .unsqueeze(0)?
            .broadcast_add(&z.unsqueeze(1)?)? // [batch, count, hidden]
            .tanh()?
            .reshape((batch * count, hidden))?;
        for layer in &self.hidden {
            h = layer
                .activation
                .apply(&h.matmul(&layer.weight)?.broadcast_add(&layer.bias)?)?;
        }
        // Colour: each channel a sine of the output, so the fields cycle through the palette
        // instead of saturating to flat regions.
        Ok(h.matmul(&self.output_weight)?
            .broadcast_add(&self.output_phase)?
            .sin()?
            .affine(127.5, 127.5)?
            .clamp(0.0, 255.0)?
            .to_dtype(DType::U8)?
            .flatten_all()?
            .to_vec1::<u8>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> CppnConfig {
        CppnConfig {
            latent_size: 8,
            hidden_units: 8,
            layers: 3,
            zoom: 1.5,
        }
    }

    fn frames(seed: u64) -> Vec<Vec<u8>> {
        let mut generator =
            CppnGenerator::new(&small(), 32, 18, seed, 0.4, Device::Cpu).expect("cppn builds");
        let requests: Vec<KeyframeRequest> = (0..2)
            .map(|index| KeyframeRequest {
                index,
                seed: crate::generator::keyframe_seed(seed, index),
                previous: None,
            })
            .collect();
        let keys = generator.keyframes(&requests).expect("keyframes");
        generator
            .decode(&Tensor::stack(&keys, 0).expect("stack"))
            .expect("decode")
    }

    #[test]
    fn tiles_and_features_made_on_the_fly_give_the_same_frames() {
        let mut whole =
            CppnGenerator::new(&small(), 128, 72, 9, 0.4, Device::Cpu).expect("cppn builds");
        whole.threads = 1;
        let mut tiled = CppnGenerator::new(&small(), 128, 72, 9, 0.4, Device::Cpu).unwrap();
        // Features made per tile, tiles of 37 pixels (not a whole number of rows), the pixels
        // shared by three threads.
        tiled.coordinate_features = None;
        tiled.tile_values = 37 * 8 * 3;
        tiled.threads = 3;
        let latents = Tensor::from_vec(
            (0..24).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
            (3, 8),
            &Device::Cpu,
        )
        .unwrap();
        let expected = whole.decode(&latents).unwrap();
        assert_eq!(tiled.decode(&latents).unwrap(), expected);
    }

    #[test]
    fn a_lower_resolution_is_the_same_picture_with_fewer_samples() {
        let mut generator = CppnGenerator::new(&small(), 64, 36, 3, 0.4, Device::Cpu).unwrap();
        let knobs = generator.knobs();
        assert_eq!(
            knobs.sizes,
            vec![(64, 36), (48, 27), (32, 18)],
            "no side below 16 pixels, the shape kept"
        );
        assert_eq!(generator.resolution(), (64, 36));
        let latent = Tensor::from_vec(vec![0.3f32; 8], (1, 8), &Device::Cpu).unwrap();
        let full = generator.decode(&latent).unwrap().remove(0);
        generator.set_decode_quality(crate::generator::DecodeQuality {
            size: 2,
            tiny: false,
        });
        let half = generator.decode(&latent).unwrap().remove(0);
        assert_eq!(half.len(), 32 * 18 * 3);
        assert_eq!(
            generator.resolution(),
            (64, 36),
            "the configured size stays"
        );
        // The half-size frame resampled to full size is close to the full-size one.
        let up = crate::frame::resized(&half, (32, 18), (64, 36)).unwrap();
        let error: f64 = full
            .iter()
            .zip(&up)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / full.len() as f64;
        assert!(error < 12.0, "mean difference {error}");
        generator.set_decode_quality(crate::generator::DecodeQuality::default());
        assert_eq!(generator.decode(&latent).unwrap().remove(0), full);
    }

    #[test]
    fn same_seed_same_frames_other_seed_other_frames() {
        let a = frames(11);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].len(), 32 * 18 * 3);
        assert_eq!(a, frames(11));
        assert_ne!(a, frames(12));
        assert_ne!(a[0], a[1], "consecutive keyframes differ");
    }

    #[test]
    fn frames_are_colourful_fields_not_flat_or_noise() {
        let frame = &frames(5)[0];
        let pixels: Vec<[i32; 3]> = frame
            .chunks_exact(3)
            .map(|p| [p[0] as i32, p[1] as i32, p[2] as i32])
            .collect();
        // Colourful: channels differ from each other somewhere (not grey), and values vary.
        let max_channel_spread = pixels
            .iter()
            .map(|p| p.iter().max().unwrap() - p.iter().min().unwrap())
            .max()
            .unwrap();
        assert!(
            max_channel_spread > 60,
            "looks grey: spread {max_channel_spread}"
        );
        let distinct: std::collections::HashSet<_> = pixels.iter().collect();
        assert!(
            distinct.len() > 50,
            "looks flat: {} colours",
            distinct.len()
        );
        // Smooth: neighbouring pixels are much closer than random pixels would be.
        let width = 32;
        let neighbour: i32 = pixels
            .windows(2)
            .enumerate()
            .filter(|(i, _)| (i + 1) % width != 0)
            .map(|(_, w)| (0..3).map(|c| (w[0][c] - w[1][c]).abs()).sum::<i32>())
            .sum();
        let pairs = pixels.len() - pixels.len() / width;
        let mean_step = neighbour as f64 / pairs as f64;
        assert!(
            mean_step < 40.0,
            "looks like noise: mean neighbour step {mean_step}"
        );
    }
}
