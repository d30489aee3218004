//! The memory sink, for tests: records when each frame was presented and a copy of it, so a test
//! can check pacing and content. It allocates; it is never used on a real display. `with_vblank`
//! makes it a page-flipping screen like the drm sink's: each frame goes up at the first vertical
//! blank (a multiple of the refresh from its creation) after its present, reported by
//! `take_flip` with a real vblank timestamp.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{Flip, Sink};
use crate::frame::Geometry;

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
    /// Vertical-blank mode: the flips reported to the pacer, in the order taken.
    pub flips_taken: Vec<Flip>,
}

pub struct MemorySink {
    geometry: Geometry,
    recording: Arc<Mutex<Recording>>,
    /// Fail (or panic) on this present, to test error paths.
    fail_at: Option<(usize, bool)>,
    presents: usize,
    /// Vertical-blank mode: the refresh, its clock's origin, and the flips not yet taken.
    vblank: Option<(Duration, Instant)>,
    queued: std::collections::VecDeque<Flip>,
}

impl MemorySink {
    pub fn new(geometry: Geometry) -> (Self, Arc<Mutex<Recording>>) {
        let recording = Arc::new(Mutex::new(Recording::default()));
        let sink = Self {
            geometry,
            recording: Arc::clone(&recording),
            fail_at: None,
            presents: 0,
            vblank: None,
            queued: std::collections::VecDeque::new(),
        };
        (sink, recording)
    }

    /// A screen refreshing every `refresh` whose frames go up by page flips.
    pub fn with_vblank(mut self, refresh: Duration) -> Self {
        self.vblank = Some((refresh, Instant::now()));
        self
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
        if let Some((refresh, origin)) = self.vblank {
            let refresh_ns = refresh.as_nanos();
            let since = presented.at.duration_since(origin).as_nanos();
            let vblanks = since / refresh_ns + 1;
            self.queued.push_back(Flip {
                number: index as u64,
                at: origin + Duration::from_nanos((vblanks * refresh_ns) as u64),
                vblank: true,
            });
        }
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

    fn refresh(&self) -> Option<Duration> {
        self.vblank.map(|(refresh, _)| refresh)
    }

    fn take_flip(&mut self) -> Option<Flip> {
        // Only once its vertical blank has passed, as a real screen reports it.
        let flip = *self.queued.front().filter(|f| f.at <= Instant::now())?;
        self.queued.pop_front();
        self.record_flip(flip);
        Some(flip)
    }
}

impl MemorySink {
    fn record_flip(&self, flip: Flip) {
        self.recording
            .lock()
            .expect("memory sink recording lock poisoned")
            .flips_taken
            .push(flip);
    }
}

impl Drop for MemorySink {
    fn drop(&mut self) {
        if let Ok(mut recording) = self.recording.lock() {
            recording.released = true;
        }
    }
}
