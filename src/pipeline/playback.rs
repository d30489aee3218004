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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::UnderrunPolicy;
use crate::pipeline::frame_buffer::{Frame, FrameBuffer, Level};
use crate::pipeline::pacer::ScreenFrame;
use crate::pipeline::stats::{PipelineStats, PlaybackState};
use crate::render::Renderer;

/// How often waits wake up to notice shutdown.
const POLL: Duration = Duration::from_millis(50);
/// Fewer recent frames than this make ping-pong a two-frame flicker: hold instead.
pub const MIN_PING_PONG_FRAMES: usize = 8;

/// The last frames played forward, for ping-pong and for the snapshot writer.
pub struct RecentFrames {
    frames: Mutex<VecDeque<Arc<Frame>>>,
    capacity: usize,
}

impl RecentFrames {
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
            capacity: capacity.max(1),
        }
    }

    fn push(&self, frame: Arc<Frame>) {
        let mut frames = self.frames.lock().expect("recent frames lock poisoned");
        if frames.len() == self.capacity {
            frames.pop_front();
        }
        frames.push_back(frame);
    }

    fn len(&self) -> usize {
        self.frames
            .lock()
            .expect("recent frames lock poisoned")
            .len()
    }

    fn get(&self, index: usize) -> Option<Arc<Frame>> {
        self.frames
            .lock()
            .expect("recent frames lock poisoned")
            .get(index)
            .cloned()
    }

    /// The frame with sequence number `seq`, if it is still among the recent ones.
    pub fn find(&self, seq: u64) -> Option<Arc<Frame>> {
        let frames = self.frames.lock().expect("recent frames lock poisoned");
        frames.iter().rev().find(|f| f.seq == seq).cloned()
    }
}

#[derive(Debug, Clone)]
pub struct PlaybackSettings {
    pub fps: f64,
    pub start_frames: usize,
    pub resume_frames: usize,
    pub policy: UnderrunPolicy,
}

pub struct Playback {
    pub settings: PlaybackSettings,
    pub buffer: Arc<FrameBuffer>,
    pub renderer: Renderer,
    pub pool: Receiver<Vec<u8>>,
    pub ready: SyncSender<ScreenFrame>,
    pub recent: Arc<RecentFrames>,
    pub stats: Arc<PipelineStats>,
    /// Fit, rotation and fps from reloads; brightness from the schedule.
    pub live: Arc<crate::pipeline::control::Live>,
    pub watcher: crate::pipeline::control::Watcher,
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
        let wanted = self.settings.resume_frames.max(1);
        level.frames >= wanted || (level.frames > 0 && level.frames >= level.capacity_frames)
    }

    /// Display periods for the next frame under slow-down: more as the buffer drains.
    fn periods_for(&self, level: Level) -> u32 {
        if self.settings.policy != UnderrunPolicy::SlowDown {
            return 1;
        }
        let low = self
            .settings
            .resume_frames
            .max(self.settings.fps.ceil() as usize);
        if level.frames >= low {
            1
        } else if level.frames >= low / 2 {
            2
        } else {
            3
        }
    }

    fn set_state(&self, state: PlaybackState, level: Level) {
        if self.stats.state() != state {
            log::info!(
                "playback state={} buffer_frames={} policy={:?}",
                state.name(),
                level.frames,
                self.settings.policy
            );
            self.stats.set_state(state);
        }
    }

    pub fn run(mut self) -> anyhow::Result<()> {
        let mut still_shown = false;
        let mut bounce = Bounce::at_newest(0);
        loop {
            let level = self.buffer.level();
            if level.closed {
                return Ok(());
            }
            let flow = match self.stats.state() {
                PlaybackState::Buffering => {
                    if !still_shown {
                        if let Some(first) = self.buffer.front() {
                            still_shown = true;
                            if let Flow::Stop = self.show(&first, 1)? {
                                return Ok(());
                            }
                        }
                    }
                    let level = self
                        .buffer
                        .wait_for_level(self.settings.start_frames.max(1), POLL);
                    let full = level.frames > 0 && level.frames >= level.capacity_frames;
                    if level.frames >= self.settings.start_frames.max(1) || full {
                        self.set_state(PlaybackState::Playing, level);
                    }
                    Flow::Continue
                }
                PlaybackState::Playing => match self.buffer.pop() {
                    Some(frame) => {
                        let periods = self.periods_for(level);
                        if periods > 1 {
                            self.stats
                                .underrun_frames
                                .fetch_add(periods as u64 - 1, Ordering::Relaxed);
                        }
                        self.recent.push(Arc::clone(&frame));
                        self.show(&frame, periods)?
                    }
                    None => {
                        self.stats.underruns.fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "underrun policy={:?} buffer_frames=0 recent_frames={}",
                            self.settings.policy,
                            self.recent.len()
                        );
                        bounce = Bounce::at_newest(self.recent.len());
                        self.set_state(PlaybackState::Underrun, level);
                        Flow::Continue
                    }
                },
                PlaybackState::Underrun => {
                    let recent = self.recent.len();
                    if self.settings.policy == UnderrunPolicy::PingPong
                        && recent >= MIN_PING_PONG_FRAMES
                    {
                        let refilled = self.refilled(level);
                        if refilled && bounce.is_at_newest(recent) {
                            self.set_state(PlaybackState::Playing, level);
                            Flow::Continue
                        } else {
                            if refilled {
                                bounce.turn_forward();
                            }
                            let index = bounce.step(recent);
                            match self.recent.get(index) {
                                Some(frame) => {
                                    self.stats.underrun_frames.fetch_add(1, Ordering::Relaxed);
                                    self.show(&frame, 1)?
                                }
                                None => Flow::Continue,
                            }
                        }
                    } else {
                        // Hold: the pacer keeps the last frame up while we wait.
                        let level = self
                            .buffer
                            .wait_for_level(self.settings.resume_frames.max(1), POLL);
                        if self.refilled(level) {
                            self.set_state(PlaybackState::Playing, level);
                        }
                        Flow::Continue
                    }
                }
            };
            if let Flow::Stop = flow {
                return Ok(());
            }
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
        if let Some(settings) = self.watcher.changed(&self.live) {
            self.settings.fps = settings.fps;
            if (settings.fit, settings.rotation) != (self.renderer.fit(), self.renderer.rotation())
            {
                // Made before the old one goes, so a failure keeps the picture as it was.
                match self.renderer.reconfigured(settings.fit, settings.rotation) {
                    Ok(renderer) => self.renderer = renderer,
                    Err(error) => log::warn!("reload_render_failed error=\"{error:#}\""),
                }
            }
        }
        self.renderer.set_brightness(self.live.brightness());
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
    fn bounce_walks_back_to_the_oldest_and_forward_to_the_newest() {
        let mut bounce = Bounce::at_newest(4);
        assert!(bounce.is_at_newest(4));
        let walk: Vec<usize> = (0..8).map(|_| bounce.step(4)).collect();
        assert_eq!(walk, vec![2, 1, 0, 1, 2, 3, 2, 1]);
    }
}
