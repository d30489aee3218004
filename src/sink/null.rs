//! The null sink: shows nothing, at a chosen screen size. For benchmarks and headless runs; it
//! reads one byte per row so the frame's memory is really touched.

use super::Sink;
use crate::frame::Geometry;

pub(crate) struct NullSink {
    geometry: Geometry,
    checksum: u64,
}

impl NullSink {
    pub(crate) fn new(geometry: Geometry) -> Self {
        Self {
            geometry,
            checksum: 0,
        }
    }
}

impl Sink for NullSink {
    fn name(&self) -> &'static str {
        "null"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn present(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let sum: u64 = frame
            .iter()
            .step_by(self.geometry.stride.max(1))
            .map(|&b| b as u64)
            .sum();
        self.checksum = std::hint::black_box(self.checksum.wrapping_add(sum));
        Ok(())
    }
}
