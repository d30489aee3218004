//! The built-in generator: a compositional pattern-producing network (CPPN). Needs no weights
//! and no GPU, so a fresh machine shows art at once.
//!
//! Every pixel's colour is a small network of its coordinates (x, y, radius) and the keyframe
//! latent z. The weights come from the run seed, so a seed always gives the same frames; the
//! latent walks (keyframes drift, frames slerp between them), so the picture morphs smoothly.
//! The coordinate half of the first layer does not depend on z and is computed once.
//! Runs on the keyframe and decoder threads under the model lock; errors are candle's.

use anyhow::{ensure, Context};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::{Generator, KeyframeRequest};
use crate::config::CppnConfig;
use crate::interpolation::slerp;

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

pub struct CppnGenerator {
    width: u32,
    height: u32,
    latent_size: usize,
    drift: f64,
    device: Device,
    /// coords @ W_coords + b, shape [pixels, hidden]: the z-independent half of layer one.
    coordinate_features: Tensor,
    /// [latent, hidden]
    latent_weight: Tensor,
    hidden: Vec<Layer>,
    /// [hidden, 3], then a per-channel phase [3].
    output_weight: Tensor,
    output_phase: Tensor,
    /// Threads a decode batch is split across.
    threads: usize,
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

        // Coordinates centred on the screen; y spans [-zoom, zoom], x keeps the aspect ratio.
        let aspect = width as f64 / height as f64;
        let zoom = config.zoom;
        let mut coords = Vec::with_capacity(width as usize * height as usize * 3);
        for row in 0..height {
            let y = ((row as f64 + 0.5) / height as f64 * 2.0 - 1.0) * zoom;
            for column in 0..width {
                let x = ((column as f64 + 0.5) / width as f64 * 2.0 - 1.0) * zoom * aspect;
                coords.extend_from_slice(&[x as f32, y as f32, (x * x + y * y).sqrt() as f32]);
            }
        }
        let pixels = (width * height) as usize;
        let coords = Tensor::from_vec(coords, (pixels, 3), &device)?;
        let coord_weight = normal_tensor(&mut rng, &[3, hidden], 1.0, &device)?;
        let first_bias = normal_tensor(&mut rng, &[hidden], 0.5, &device)?;
        let coordinate_features = coords.matmul(&coord_weight)?.broadcast_add(&first_bias)?;
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
        Ok(Self {
            width,
            height,
            latent_size: config.latent_size,
            drift,
            device,
            coordinate_features,
            latent_weight,
            hidden: layers,
            output_weight,
            output_phase,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
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
        (self.width, self.height)
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
        // decode slices of the batch on every core instead.
        let threads = self.threads.min(batch).max(1);
        if threads == 1 {
            return self.decode_on_this_thread(latents);
        }
        let chunk = batch.div_ceil(threads);
        let this: &Self = self;
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..batch)
                .step_by(chunk)
                .map(|start| {
                    let slice = latents.narrow(0, start, chunk.min(batch - start));
                    scope.spawn(move || this.decode_on_this_thread(&slice?))
                })
                .collect();
            let mut frames = Vec::with_capacity(batch);
            for worker in workers {
                frames.extend(
                    worker
                        .join()
                        .map_err(|_| anyhow::anyhow!("cppn decode worker panicked"))??,
                );
            }
            Ok(frames)
        })
    }
}

impl CppnGenerator {
    fn decode_on_this_thread(&self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let (batch, _) = latents.dims2()?;
        let pixels = (self.width * self.height) as usize;
        let (_, hidden) = self.coordinate_features.dims2()?;

        let z = latents.to_dtype(DType::F32)?.matmul(&self.latent_weight)?; // [batch, hidden]
        let mut h = self
            .coordinate_features
            .unsqueeze(0)?
            .broadcast_add(&z.unsqueeze(1)?)? // [batch, pixels, hidden]
            .tanh()?
            .reshape((batch * pixels, hidden))?;
        for layer in &self.hidden {
            h = layer
                .activation
                .apply(&h.matmul(&layer.weight)?.broadcast_add(&layer.bias)?)?;
        }
        // Colour: each channel a sine of the output, so the fields cycle through the palette
        // instead of saturating to flat regions.
        let rgb = h
            .matmul(&self.output_weight)?
            .broadcast_add(&self.output_phase)?
            .sin()?
            .affine(127.5, 127.5)?
            .clamp(0.0, 255.0)?
            .to_dtype(DType::U8)?
            .flatten_all()?
            .to_vec1::<u8>()?;
        Ok(rgb.chunks_exact(pixels * 3).map(<[u8]>::to_vec).collect())
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
