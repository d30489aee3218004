//! A fake generator for tests and benchmarks of everything around the model: each latent is an
//! RGB colour, decoded to a flat frame of that colour. Tests steer it through `FakeControls`
//! (slow it down, stall it, make it fail) while the pipeline runs.

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
    width: u32,
    height: u32,
    device: Device,
    pub controls: Arc<FakeControls>,
}

impl FakeGenerator {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            device: Device::Cpu,
            controls: Arc::new(FakeControls::default()),
        }
    }
}

impl Generator for FakeGenerator {
    fn name(&self) -> &str {
        "fake"
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn resolution(&self) -> (u32, u32) {
        (self.width, self.height)
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
            let delay = self.controls.decode_delay_us.load(Ordering::Relaxed);
            if delay > 0 {
                std::thread::sleep(Duration::from_micros(delay));
            }
            let pixel = [0, 1, 2].map(|c| (colour[c].clamp(0.0, 1.0) * 255.0).round() as u8);
            let frame = pixel.repeat((self.width * self.height) as usize);
            frames.push(frame);
            self.controls.decoded_frames.fetch_add(1, Ordering::Relaxed);
        }
        Ok(frames)
    }
}
