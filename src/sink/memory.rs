//! The memory sink, for tests: records when each frame was presented and a copy of it, so a test
//! can check pacing and content. It allocates; it is never used on a real display.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::bail;

use super::{Geometry, Sink};

#[derive(Debug, Clone)]
pub struct Presented {
    pub at: Instant,
    pub pixels: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Recording {
    pub frames: Vec<Presented>,
    /// Set when the sink was dropped (the run let go of the display).
    pub released: bool,
    /// Each FBIOBLANK-like call: when, and whether it blanked.
    pub blanks: Vec<(Instant, bool)>,
}

pub struct MemorySink {
    geometry: Geometry,
    recording: Arc<Mutex<Recording>>,
    /// Fail (or panic) on this present, to test error paths.
    fail_at: Option<(usize, bool)>,
    presents: usize,
}

impl MemorySink {
    pub fn new(geometry: Geometry) -> (Self, Arc<Mutex<Recording>>) {
        let recording = Arc::new(Mutex::new(Recording::default()));
        let sink = Self {
            geometry,
            recording: Arc::clone(&recording),
            fail_at: None,
            presents: 0,
        };
        (sink, recording)
    }

    /// Makes present number `index` (from 0) return an error, or panic when `panic` is set.
    pub fn failing_at(mut self, index: usize, panic: bool) -> Self {
        self.fail_at = Some((index, panic));
        self
    }
}

impl Sink for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn present(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let index = self.presents;
        self.presents += 1;
        match self.fail_at {
            Some((at, true)) if at == index => {
                panic!("memory sink told to panic at present {index}")
            }
            Some((at, false)) if at == index => {
                bail!("memory sink told to fail at present {index}")
            }
            _ => {}
        }
        let presented = Presented {
            at: Instant::now(),
            pixels: frame.to_vec(),
        };
        self.recording
            .lock()
            .expect("memory sink recording lock poisoned")
            .frames
            .push(presented);
        Ok(())
    }

    fn set_blanked(&mut self, blanked: bool) -> anyhow::Result<()> {
        self.recording
            .lock()
            .expect("memory sink recording lock poisoned")
            .blanks
            .push((Instant::now(), blanked));
        Ok(())
    }
}

impl Drop for MemorySink {
    fn drop(&mut self) {
        if let Ok(mut recording) = self.recording.lock() {
            recording.released = true;
        }
    }
}
