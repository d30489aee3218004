//! Playback: decides which frame goes on screen next and renders it (upscale + convert).
//!
//! Inputs: frames from the frame buffer. Outputs: `ScreenFrame`s for the pacer through a
//! one-slot channel; screen buffers come back from the pacer through a pool, so rendering
//! allocates nothing. Runs on its own thread ("playback"), ahead of the pacer by at most two
//! frames, so the pacer itself never waits for rendering.
//!
//! States: buffering (the first frame is shown as a still at once, playback starts when
//! `buffer.start-seconds` are buffered), playing, and underrun (the buffer ran dry). In an
//! underrun the policy decides what is shown until `buffer.resume-seconds` are buffered again:
//! hold the last frame, or ping-pong through recent frames (resuming only at the newest, so
//! motion never jumps). The slow-down policy acts earlier: while the buffer is low each frame
//! stays on screen for 2 or 3 periods, so motion slows rather than stops.
//! Errors (a frame of the wrong size) end the thread; the run then stops with that error.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::control::{Control, Settings, Watcher, MIN_PING_PONG_FRAMES};
use super::frame_buffer::{Frame, FrameBuffer, Level};
use super::pacer::ScreenFrame;
use super::stats::{PipelineStats, PlaybackState};
use crate::config::UnderrunPolicy;
use crate::events;
use crate::render::Renderer;

/// How often waits wake up to notice shutdown.
const POLL: Duration = Duration::from_millis(50);

/// The last frames played forward, for ping-pong and for the snapshot writer (which reads them
/// from the tokio thread). A panic while the lock was held leaves the queue consistent, so a
/// poisoned lock is used as it is rather than ending the process.
pub struct RecentFrames {
    frames: Mutex<(VecDeque<Arc<Frame>>, usize)>,
}

impl RecentFrames {
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: Mutex::new((VecDeque::with_capacity(capacity.max(1)), capacity.max(1))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (VecDeque<Arc<Frame>>, usize)> {
        self.frames
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps at most `capacity` frames from now on (the fps changed).
    pub fn set_capacity(&self, capacity: usize) {
        let mut guard = self.lock();
        let (frames, kept) = &mut *guard;
        *kept = capacity.max(1);
        while frames.len() > *kept {
            frames.pop_front();
        }
    }

    fn push(&self, frame: Arc<Frame>) {
        let mut guard = self.lock();
        let (frames, capacity) = &mut *guard;
        if frames.len() >= *capacity {
            frames.pop_front();
        }
        frames.push_back(frame);
    }

    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, index: usize) -> Option<Arc<Frame>> {
        self.lock().0.get(index).cloned()
    }

    /// The frame with sequence number `seq`, if it is still among the recent ones.
    pub fn find(&self, seq: u64) -> Option<Arc<Frame>> {
        self.lock().0.iter().rev().find(|f| f.seq == seq).cloned()
    }
}

pub struct Playback {
    pub buffer: Arc<FrameBuffer>,
    pub renderer: Renderer,
    pub pool: Receiver<Vec<u8>>,
    pub ready: SyncSender<ScreenFrame>,
    pub recent: Arc<RecentFrames>,
    pub stats: Arc<PipelineStats>,
    /// fps, start/resume thresholds, fit and rotation from the settings; brightness from the
    /// schedule.
    pub control: Arc<Control>,
    pub watcher: Watcher,
    pub settings: Arc<Settings>,
    pub policy: UnderrunPolicy,
    /// What playback is doing; mirrored into the stats for status.json and the pacer.
    pub state: PlaybackState,
}

/// Position of a ping-pong walk through the recent frames.
#[derive(Debug, Clone, Copy)]
struct Bounce {
    position: usize,
    backwards: bool,
}

impl Bounce {
    fn at_newest(len: usize) -> Self {
        Self {
            position: len.saturating_sub(1),
            backwards: true,
        }
    }

    fn is_at_newest(&self, len: usize) -> bool {
        self.position + 1 >= len
    }

    /// Head back towards the newest frame (the buffer has refilled).
    fn turn_forward(&mut self) {
        self.backwards = false;
    }

    fn step(&mut self, len: usize) -> usize {
        if self.backwards && self.position == 0 {
            self.backwards = false;
        } else if !self.backwards && self.position + 1 >= len {
            self.backwards = true;
        }
        self.position = if self.backwards {
            self.position - 1
        } else {
            self.position + 1
        };
        self.position
    }
}

enum Flow {
    Continue,
    Stop,
}

impl Playback {
    fn refilled(&self, level: Level) -> bool {
        let wanted = self.settings.resume_frames;
        level.frames >= wanted || (level.frames > 0 && level.frames >= level.capacity_frames)
    }

    /// Display periods for the next frame under slow-down: more as the buffer drains.
    fn periods_for(&self, level: Level) -> u32 {
        if self.policy != UnderrunPolicy::SlowDown {
            return 1;
        }
        let low = self
            .settings
            .resume_frames
            .max(self.settings.live.fps.ceil() as usize);
        if level.frames >= low {
            1
        } else if level.frames >= low / 2 {
            2
        } else {
            3
        }
    }

    fn set_state(&mut self, state: PlaybackState, level: Level) {
        if self.state != state {
            log::info!(
                "{}",
                events::Playback {
                    state: state.name().into(),
                    buffer_frames: level.frames,
                    policy: self.policy.name().into(),
                }
            );
            self.state = state;
            self.stats.set_state(state);
        }
    }

    /// New settings from a reload: thresholds at once, fit and rotation through a renderer
    /// made before the old one goes (a failure keeps the picture as it was).
    fn follow_settings(&mut self) {
        let Some(settings) = self.watcher.changed(&self.control) else {
            return;
        };
        let (fit, rotation) = (settings.live.fit, settings.live.rotation);
        if (fit, rotation) != (self.renderer.fit(), self.renderer.rotation()) {
            match self.renderer.reconfigured(fit, rotation) {
                Ok(renderer) => self.renderer = renderer,
                Err(error) => log::warn!(
                    "{}",
                    events::ReloadRenderFailed {
                        error: format!("{error:#}")
                    }
                ),
            }
        }
        self.settings = settings;
    }

    pub fn run(mut self) -> anyhow::Result<()> {
        let mut still_shown = false;
        let mut bounce = Bounce::at_newest(0);
        loop {
            self.follow_settings();
            let level = self.buffer.level();
            if level.closed {
                return Ok(());
            }
            let flow = match self.state {
                PlaybackState::Buffering => self.buffering(&mut still_shown)?,
                PlaybackState::Playing => self.playing(level, &mut bounce)?,
                PlaybackState::Underrun => self.underrun(level, &mut bounce)?,
            };
            if let Flow::Stop = flow {
                return Ok(());
            }
        }
    }

    /// The first frame as a still at once; playing once `start_frames` are buffered.
    fn buffering(&mut self, still_shown: &mut bool) -> anyhow::Result<Flow> {
        if !*still_shown {
            if let Some(first) = self.buffer.front() {
                *still_shown = true;
                if let Flow::Stop = self.show(&first, 1)? {
                    return Ok(Flow::Stop);
                }
            }
        }
        let start = self.settings.start_frames;
        let level = self.buffer.wait_for_level(start, POLL);
        let full = level.frames > 0 && level.frames >= level.capacity_frames;
        if level.frames >= start || full {
            self.set_state(PlaybackState::Playing, level);
        }
        Ok(Flow::Continue)
    }

    /// The next frame forward, stretched under slow-down; an underrun when there is none.
    fn playing(&mut self, level: Level, bounce: &mut Bounce) -> anyhow::Result<Flow> {
        match self.buffer.pop() {
            Some(frame) => {
                let periods = self.periods_for(level);
                if periods > 1 {
                    self.stats
                        .underrun_frames
                        .fetch_add(periods as u64 - 1, Ordering::Relaxed);
                }
                self.recent.push(Arc::clone(&frame));
                self.show(&frame, periods)
            }
            None => {
                self.stats.underruns.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "{}",
                    events::Underrun {
                        policy: self.policy.name().into(),
                        buffer_frames: 0,
                        recent_frames: self.recent.len(),
                    }
                );
                *bounce = Bounce::at_newest(self.recent.len());
                self.set_state(PlaybackState::Underrun, level);
                Ok(Flow::Continue)
            }
        }
    }

    /// Ping-pong through the recent frames (or hold the last one) until the buffer refilled.
    fn underrun(&mut self, level: Level, bounce: &mut Bounce) -> anyhow::Result<Flow> {
        let recent = self.recent.len();
        if self.policy != UnderrunPolicy::PingPong || recent < MIN_PING_PONG_FRAMES {
            // Hold: the pacer keeps the last frame up while we wait.
            let level = self
                .buffer
                .wait_for_level(self.settings.resume_frames, POLL);
            if self.refilled(level) {
                self.set_state(PlaybackState::Playing, level);
            }
            return Ok(Flow::Continue);
        }
        let refilled = self.refilled(level);
        if refilled && bounce.is_at_newest(recent) {
            self.set_state(PlaybackState::Playing, level);
            return Ok(Flow::Continue);
        }
        if refilled {
            bounce.turn_forward();
        }
        match self.recent.get(bounce.step(recent)) {
            Some(frame) => {
                self.stats.underrun_frames.fetch_add(1, Ordering::Relaxed);
                self.show(&frame, 1)
            }
            None => Ok(Flow::Continue),
        }
    }

    /// Renders `frame` into a pooled screen buffer and hands it to the pacer.
    fn show(&mut self, frame: &Frame, periods: u32) -> anyhow::Result<Flow> {
        let mut pixels = loop {
            match self.pool.recv_timeout(POLL) {
                Ok(pixels) => break pixels,
                Err(RecvTimeoutError::Timeout) if !self.buffer.level().closed => continue,
                Err(_) => return Ok(Flow::Stop),
            }
        };
        self.follow_settings();
        self.renderer.set_brightness(self.control.brightness());
        let started = std::time::Instant::now();
        self.renderer.render(frame, &mut pixels)?;
        self.stats.upscale.record(started.elapsed());
        let screen_frame = ScreenFrame {
            pixels,
            seq: frame.seq,
            periods,
        };
        Ok(match self.ready.send(screen_frame) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop, // the pacer has ended
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_history_lock_is_used_not_fatal() {
        let recent = Arc::new(RecentFrames::new(2));
        let poisoner = Arc::clone(&recent);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.frames.lock().unwrap();
            panic!("a panic while holding the history");
        })
        .join();
        assert!(recent.frames.is_poisoned());
        let frame = |seq| {
            Arc::new(Frame {
                seq,
                width: 1,
                height: 1,
                rgb: vec![0; 3],
            })
        };
        for seq in 0..3 {
            recent.push(frame(seq));
        }
        assert_eq!(recent.len(), 2);
        assert_eq!(recent.find(2).map(|f| f.seq), Some(2));
        recent.set_capacity(1);
        assert_eq!(recent.find(1), None);
    }

    #[test]
    fn bounce_walks_back_to_the_oldest_and_forward_to_the_newest() {
        let mut bounce = Bounce::at_newest(4);
        assert!(bounce.is_at_newest(4));
        let walk: Vec<usize> = (0..8).map(|_| bounce.step(4)).collect();
        assert_eq!(walk, vec![2, 1, 0, 1, 2, 3, 2, 1]);
    }
}
