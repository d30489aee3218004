//! A fake generator for tests and benchmarks of everything around the model: each latent is an
//! RGB colour, decoded to a flat frame of that colour (or, `textured`, waves across the frame
//! whose phase in each channel is that colour, so neighbouring frames differ by varying amounts
//! from pixel to pixel and any two blends of them differ). Tests steer it through
//! `FakeControls` (slow it down, stall it, make it fail) while the pipeline runs; `with_sizes`
//! gives it a resolution knob for the adapt ladder, decode time in proportion to the pixels.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};

use super::{Generator, KeyframeRequest};

/// Knobs a test turns while the pipeline runs.
#[derive(Debug, Default)]
pub struct FakeControls {
    /// Sleep this long per decoded frame.
    pub decode_delay_us: AtomicU64,
    /// While set, decode blocks (holding the model lock), as a hung GPU would.
    pub stalled: AtomicBool,
    /// While set, every call fails.
    pub failing: AtomicBool,
    pub decoded_frames: AtomicU64,
    /// When non-zero, decoding more latents than this at once fails as CUDA does when out of memory.
    pub memory_limit_frames: AtomicU64,
}

pub struct FakeGenerator {
    /// The sizes it can decode at, the configured one first.
    sizes: Vec<(u32, u32)>,
    /// The size decoded now.
    width: u32,
    height: u32,
    textured: bool,
    device: Device,
    pub controls: Arc<FakeControls>,
}

impl FakeGenerator {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            sizes: vec![(width, height)],
            width,
            height,
            textured: false,
            device: Device::Cpu,
            controls: Arc::new(FakeControls::default()),
        }
    }

    /// Also decodes at these shares of its size; a frame's decode delay scales with its pixels.
    pub fn with_sizes(mut self, scales: &[f64]) -> Self {
        self.sizes = super::Knobs::scaled_sizes(self.sizes[0], scales, 1);
        self
    }

    /// Frames are waves whose phase is the colour (see the module header).
    pub fn textured(mut self) -> Self {
        self.textured = true;
        self
    }
}

impl Generator for FakeGenerator {
    fn name(&self) -> &str {
        "fake"
    }

    /// Flat or fixed pictures by design: nothing for the walk's guard to judge.
    fn guarded(&self) -> bool {
        false
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn resolution(&self) -> (u32, u32) {
        self.sizes[0]
    }

    fn knobs(&self) -> super::Knobs {
        super::Knobs {
            sizes: self.sizes.clone(),
            ..super::Knobs::fixed(self.sizes[0])
        }
    }

    fn set_decode_quality(&mut self, quality: super::DecodeQuality) {
        (self.width, self.height) = self.sizes[quality.size.min(self.sizes.len() - 1)];
    }

    fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
        if self.controls.failing.load(Ordering::Relaxed) {
            bail!("fake generator told to fail");
        }
        requests
            .iter()
            .map(|request| {
                let bytes = request.seed.to_le_bytes();
                let colour: Vec<f32> = bytes[..3].iter().map(|&b| b as f32 / 255.0).collect();
                Ok(Tensor::from_vec(colour, 3, &self.device)?)
            })
            .collect()
    }

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let colours = latents
            .to_vec2::<f32>()
            .context("fake latents must be [n, 3]")?;
        let limit = self.controls.memory_limit_frames.load(Ordering::Relaxed);
        if limit > 0 && colours.len() as u64 > limit {
            bail!("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")");
        }
        let mut frames = Vec::with_capacity(colours.len());
        for colour in colours {
            while self.controls.stalled.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if self.controls.failing.load(Ordering::Relaxed) {
                bail!("fake generator told to fail");
            }
            let full = self.sizes[0].0 as u64 * self.sizes[0].1 as u64;
            let pixels = self.width as u64 * self.height as u64;
            let delay = self.controls.decode_delay_us.load(Ordering::Relaxed) * pixels / full;
            if delay > 0 {
                std::thread::sleep(Duration::from_micros(delay));
            }
            let pixel = [0, 1, 2].map(|c| (colour[c].clamp(0.0, 1.0) * 255.0).round() as u8);
            let frame = if self.textured {
                let (width, height) = (self.width as f32, self.height as f32);
                (0..self.height)
                    .flat_map(|y| (0..self.width).map(move |x| (x as f32, y as f32)))
                    .flat_map(|(x, y)| {
                        let wave = std::f32::consts::TAU * (2.0 * x / width + y / height);
                        [0, 1, 2].map(|c| {
                            let value = 0.5 + 0.5 * (wave + 6.0 * colour[c]).sin();
                            (value * 255.0).round() as u8
                        })
                    })
                    .collect()
            } else {
                pixel.repeat(pixels as usize)
            };
            frames.push(frame);
            self.controls.decoded_frames.fetch_add(1, Ordering::Relaxed);
        }
        Ok(frames)
    }
}

/// How a `WalkingFake` walk goes bad (or doesn't).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decay {
    /// Keeps moving and stays healthy.
    Healthy,
    /// Each step is a fifth of the one before: the walk settles on one picture.
    Converge,
    /// Each keyframe's colours are pushed 1.7x further out: the picture clips to saturation.
    Saturate,
    /// Each keyframe keeps half the pattern's amplitude: the picture fades to flat colour.
    Fade,
}

/// Latent layout of a `WalkingFake`: wave counts, phase, tint, amplitude, gain, step.
const FX: usize = 0;
const FY: usize = 1;
const PHASE: usize = 2;
const TINT: usize = 3; // three values
const AMPLITUDE: usize = 6;
const GAIN: usize = 7;
const STEP: usize = 8;
const WALK_LATENT: usize = 9;

/// A fake generator for the walk's guard: a coloured wave pattern that moves from keyframe to
/// keyframe and decays as `Decay` says; a fresh keyframe (no previous) is healthy again.
pub struct WalkingFake {
    width: u32,
    height: u32,
    decay: Decay,
    device: Device,
}

impl WalkingFake {
    pub fn new(width: u32, height: u32, decay: Decay) -> Self {
        Self {
            width,
            height,
            decay,
            device: Device::Cpu,
        }
    }

    /// A healthy pattern from `seed`.
    fn fresh(seed: u64) -> [f32; WALK_LATENT] {
        let unit = |k: u32| ((seed.rotate_left(k * 8) & 0xff) as f32) / 255.0;
        [
            1.0 + 3.0 * unit(1),
            1.0 + 3.0 * unit(2),
            std::f32::consts::TAU * unit(3),
            0.5 + 0.5 * unit(4),
            0.5 + 0.5 * unit(5),
            0.5 + 0.5 * unit(6),
            0.4,
            1.0,
            0.9,
        ]
    }

    fn next(&self, previous: &[f32], seed: u64) -> [f32; WALK_LATENT] {
        let mut latent = [0.0; WALK_LATENT];
        latent.copy_from_slice(previous);
        // Forward in phase, and the waves' counts wander: a healthy walk never comes back.
        let step = latent[STEP];
        let wander = |k: u32| ((seed.rotate_left(k * 8) & 0xff) as f32 / 255.0 - 0.5) * step;
        latent[PHASE] += step;
        latent[FX] = (latent[FX] + wander(1)).clamp(0.5, 6.0);
        latent[FY] = (latent[FY] + wander(2)).clamp(0.5, 6.0);
        match self.decay {
            Decay::Healthy => {}
            Decay::Converge => latent[STEP] *= 0.2,
            Decay::Saturate => latent[GAIN] *= 1.7,
            Decay::Fade => latent[AMPLITUDE] *= 0.5,
        }
        latent
    }
}

impl Generator for WalkingFake {
    fn name(&self) -> &str {
        "walking-fake"
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn resolution(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
        requests
            .iter()
            .map(|request| {
                let latent = match &request.previous {
                    Some(previous) => self.next(&previous.to_vec1::<f32>()?, request.seed),
                    None => Self::fresh(request.seed),
                };
                Ok(Tensor::new(&latent[..], &self.device)?)
            })
            .collect()
    }

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let (w, h) = (self.width as f32, self.height as f32);
        let latents = latents
            .to_vec2::<f32>()
            .context("walking-fake latents must be [n, 9]")?;
        Ok(latents
            .iter()
            .map(|z| {
                let mut frame = Vec::with_capacity((self.width * self.height * 3) as usize);
                for y in 0..self.height {
                    for x in 0..self.width {
                        let u = std::f32::consts::TAU * z[FX] * x as f32 / w + z[PHASE];
                        let v = std::f32::consts::TAU * z[FY] * y as f32 / h - 0.7 * z[PHASE];
                        let wave = u.sin() * v.cos();
                        for c in 0..3 {
                            let swing = z[GAIN] * z[AMPLITUDE] * wave * z[TINT + c];
                            let tilt = 0.15 * (c as f32 - 1.0);
                            let value = (0.5 + tilt + swing).clamp(0.0, 1.0);
                            frame.push((value * 255.0).round() as u8);
                        }
                    }
                }
                frame
            })
            .collect())
    }
}
