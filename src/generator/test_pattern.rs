//! The test pattern: eight colour bars (white, yellow, cyan, green, magenta, red, blue, black)
//! that never change, played through the whole pipeline like any generator's frames. It shows
//! whether a screen's colours, orientation and placement are right (`model.kind =
//! "test-pattern"`), and the emulated-machine test compares it pixel for pixel.
//!
//! Inputs: keyframe requests and latents, both ignored but for their count. Outputs: the bars at
//! the configured size. Runs on the keyframe and decoder threads. Never fails.

use candle_core::{Device, Tensor};

use super::{Generator, KeyframeRequest};

/// The bars, left to right.
pub(crate) const BARS: [[u8; 3]; 8] = [
    [255, 255, 255],
    [255, 255, 0],
    [0, 255, 255],
    [0, 255, 0],
    [255, 0, 255],
    [255, 0, 0],
    [0, 0, 255],
    [0, 0, 0],
];

/// The pattern as a packed RGB8 image.
pub fn bars(width: u32, height: u32) -> Vec<u8> {
    let row: Vec<u8> = (0..width)
        .flat_map(|x| BARS[(x as usize * BARS.len()) / width as usize])
        .collect();
    row.repeat(height as usize)
}

pub struct TestPattern {
    size: (u32, u32),
    image: Vec<u8>,
    device: Device,
}

impl TestPattern {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            size: (width, height),
            image: bars(width, height),
            device: Device::Cpu,
        }
    }
}

impl Generator for TestPattern {
    fn name(&self) -> &str {
        "test-pattern"
    }

    /// Flat or fixed pictures by design: nothing for the walk's guard to judge.
    fn guarded(&self) -> bool {
        false
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn resolution(&self) -> (u32, u32) {
        self.size
    }

    fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
        requests
            .iter()
            .map(|_| Ok(Tensor::zeros(4, candle_core::DType::F32, &self.device)?))
            .collect()
    }

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        Ok(vec![self.image.clone(); latents.dim(0)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_equal_bars_in_order() {
        let image = bars(16, 2);
        let pixel = |x: usize, y: usize| {
            let i = (y * 16 + x) * 3;
            [image[i], image[i + 1], image[i + 2]]
        };
        for (bar, colour) in BARS.iter().enumerate() {
            assert_eq!(pixel(bar * 2, 1), *colour);
            assert_eq!(pixel(bar * 2 + 1, 0), *colour);
        }
        let mut pattern = TestPattern::new(16, 2);
        let latents =
            Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu).expect("latents");
        let frames = pattern.decode(&latents).expect("decode");
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| *f == image));
    }
}
