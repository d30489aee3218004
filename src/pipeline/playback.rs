//! Playback: decides what goes on screen each display period and renders it (upscale + convert).
//!
//! Inputs: frames from the frame queue. Outputs: `ScreenFrame`s for the pacer through a
//! one-slot channel; screen buffers come back from the pacer through a pool, so rendering
//! allocates nothing. Runs on its own thread ("playback"), ahead of the pacer by at most two
//! frames, so the pacer itself never waits for rendering.
//!
//! With adaptation (`adapt.enabled`, the default) the screen moves along the walk (`Frame::at`)
//! at `adapt::art_speed` of the configured pace: the first frame shows at once, motion starts
//! with the second, and between two decoded frames the screen shows their blend, made at
//! internal resolution before the upscale (as mpv's `--interpolation` does for video slower
//! than the display; weights in 65536ths, temporally dithered, so a blend moving less than a
//! level a period still moves), so each period shows a new picture while the art moves,
//! whatever the rate frames are decoded at. Frames of another size (the ladder lowered the resolution) are
//! blended at the newer one's size and rendered by a renderer made for that size. When the
//! screen reaches the newest decoded frame (the generator stopped) that is an underrun, and the
//! policy decides what is shown until `buffer.resume-seconds` of playback are buffered again:
//! ping-pong bounces through the recent frames, blended, at the pace this machine sustains;
//! hold and slow-down keep the last frame (slowing down has already happened on the way there).
//!
//! Without adaptation, as before: the first frame is shown as a still at once and playback
//! starts when `buffer.start-seconds` are buffered, one decoded frame a period. In an underrun
//! the policy decides what is shown until `buffer.resume-seconds` are buffered again: hold the
//! last frame, or ping-pong through recent frames (resuming only at the newest, so motion never
//! jumps). The slow-down policy acts earlier: while the buffer is low each frame stays on screen
//! for 2 or 3 periods, so motion slows rather than stops.
//! Errors (a frame the renderer can't take) end the thread; the run then stops with that error.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::adapt::{art_speed, Adapt};
use super::control::{Control, Settings, Watcher, MIN_PING_PONG_FRAMES};
use super::pacer::ScreenFrame;
use super::queue::{FrameQueue, Level};
use super::stats::{PipelineStats, PlaybackState};
use crate::config::UnderrunPolicy;
use crate::events;
use crate::frame::{blend_dithered_into, resize_into, weight_of, Frame, WEIGHT_ONE};
use crate::render::Renderer;

/// How often waits wake up to notice shutdown.
const POLL: Duration = Duration::from_millis(50);

/// The last frames played forward, for ping-pong and for the snapshot writer (which reads them
/// from the tokio thread). A panic while the lock was held leaves the queue consistent, so a
/// poisoned lock is used as it is rather than ending the process.
pub(crate) struct RecentFrames {
    frames: Mutex<(VecDeque<Arc<Frame>>, usize)>,
}

impl RecentFrames {
    pub(crate) fn new(capacity: usize) -> Self {
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
    pub(crate) fn set_capacity(&self, capacity: usize) {
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

    pub(crate) fn len(&self) -> usize {
        self.lock().0.len()
    }

    fn get(&self, index: usize) -> Option<Arc<Frame>> {
        self.lock().0.get(index).cloned()
    }

    /// The frame with sequence number `seq`, if it is still among the recent ones.
    pub(crate) fn find(&self, seq: u64) -> Option<Arc<Frame>> {
        self.lock().0.iter().rev().find(|f| f.seq == seq).cloned()
    }
}

pub(crate) struct Playback {
    pub buffer: Arc<FrameQueue>,
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
    /// The quality ladder's figures (headroom), and where the art's speed and place go.
    pub adapt: Arc<Adapt>,
    /// Renderers for frame sizes other than `renderer`'s (the ladder's lower resolutions), the
    /// two used last.
    pub sized: Vec<Renderer>,
    /// The blend shown between two decoded frames (kept, so blending allocates once).
    pub blended: Option<Frame>,
    /// A frame resized to its neighbour's size before they are blended.
    pub scratch: Vec<u8>,
    /// The first picture has been handed to the pacer (what follows moves on from it).
    pub shown_first: bool,
    /// How often a new picture may be rendered (adaptive playback).
    pub budget: RenderBudget,
    /// Blends made so far (each one's dither differs).
    pub pictures: u32,
}

/// The screen's place on the walk (adaptive playback) and the decoded frames around it.
struct Place {
    /// On the walk, in keyframe intervals (`Frame::at`).
    at: f64,
    /// The frame at or before `at`, and the next one (if decoded yet).
    before: Arc<Frame>,
    after: Option<Arc<Frame>>,
    /// The picture rendered last: the two frames' sequence numbers and the blend weight.
    shown: (u64, u64, u32),
    /// The pacer's held deadlines when the last picture was handed over, and the periods
    /// playback let pass on purpose since (the same picture again).
    held_mark: u64,
    idled: u64,
}

/// Periods one picture may stand for when playback fell behind the pacer.
const MOST_PERIODS: u64 = 4;

/// How often adaptive playback may render a new picture: every period while rendering takes
/// less than `share` of the time (half of it; a quarter on a single core), else once every so
/// many periods, so that on a machine that renders slowly (QEMU's emulated CPU takes a third of
/// a second for a 1280x800 picture) the generator keeps most of the CPU and the art keeps
/// moving, in coarser steps.
pub(crate) struct RenderBudget {
    /// Seconds a picture takes to render (running average), and when the last one was done.
    seconds: f64,
    last: Option<std::time::Instant>,
    share: f64,
}

impl Default for RenderBudget {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            seconds: 0.0,
            last: None,
            share: if cores >= 2 { 0.5 } else { 0.25 },
        }
    }
}

impl RenderBudget {
    fn rendered(&mut self, took: Duration) {
        let took = took.as_secs_f64();
        self.seconds = if self.last.is_none() {
            took
        } else {
            self.seconds + 0.2 * (took - self.seconds)
        };
        self.last = Some(std::time::Instant::now());
    }

    /// Whether a picture may be rendered for the next period of `period`.
    fn allows(&self, period: Duration) -> bool {
        self.last.is_none_or(|last| {
            last.elapsed().as_secs_f64() + period.as_secs_f64() / 2.0 >= self.seconds / self.share
        })
    }
}

/// Position of a ping-pong walk through the recent frames (fractional: between two frames,
/// adaptive playback shows their blend).
#[derive(Debug, Clone, Copy)]
struct Bounce {
    position: f64,
    backwards: bool,
}

impl Bounce {
    fn at_newest(len: usize) -> Self {
        Self {
            position: len.saturating_sub(1) as f64,
            backwards: true,
        }
    }

    fn is_at_newest(&self, len: usize) -> bool {
        self.position + 1.0 >= len as f64 - 1e-9
    }

    /// Head back towards the newest frame (the buffer has refilled).
    fn turn_forward(&mut self) {
        self.backwards = false;
    }

    /// `by` frames on, turning at either end.
    fn step(&mut self, len: usize, by: f64) -> f64 {
        let last = len.saturating_sub(1) as f64;
        if self.backwards && self.position <= 0.0 {
            self.backwards = false;
        } else if !self.backwards && self.position >= last {
            self.backwards = true;
        }
        self.position = if self.backwards {
            (self.position - by).max(0.0)
        } else {
            (self.position + by).min(last)
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
                Ok(renderer) => {
                    self.renderer = renderer;
                    self.sized.clear(); // made again, turned and placed anew, when next needed
                }
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

    pub(crate) fn run(mut self) -> anyhow::Result<()> {
        if self.adapt.enabled {
            return self.run_adaptive();
        }
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
                self.adapt.set_position(frame.at);
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
        match self.recent.get(bounce.step(recent, 1.0) as usize) {
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
        let brightness = self.control.brightness();
        let renderer = self.renderer_for(frame.size())?;
        renderer.set_brightness(brightness);
        let started = std::time::Instant::now();
        renderer.render(frame, &mut pixels)?;
        let took = started.elapsed();
        self.stats.upscale.record(took);
        self.budget.rendered(took);
        let screen_frame = ScreenFrame {
            pixels,
            seq: frame.seq,
            periods,
            moves: self.shown_first,
        };
        self.shown_first = true;
        Ok(match self.ready.send(screen_frame) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop, // the pacer has ended
        })
    }
}

impl Playback {
    /// The renderer for frames of `size`: the configured one's, or one made for it (once).
    fn renderer_for(&mut self, size: (u32, u32)) -> anyhow::Result<&mut Renderer> {
        if self.renderer.source() == size {
            return Ok(&mut self.renderer);
        }
        let index = match self.sized.iter().position(|r| r.source() == size) {
            Some(index) => index,
            None => {
                // Two besides the configured size's at most (each may hold a screen-sized
                // scratch): the ladder moves between neighbouring sizes.
                if self.sized.len() >= 2 {
                    self.sized.remove(0);
                }
                self.sized.push(self.renderer.for_source(size)?);
                self.sized.len() - 1
            }
        };
        Ok(&mut self.sized[index])
    }

    /// Adaptive playback (see the module header): the first frame at once, then one picture a
    /// period at the art's speed.
    fn run_adaptive(mut self) -> anyhow::Result<()> {
        let first = loop {
            self.follow_settings();
            if self.buffer.wait_for_level(1, POLL).closed {
                return Ok(());
            }
            if let Some(frame) = self.buffer.pop() {
                break frame;
            }
        };
        self.recent.push(Arc::clone(&first));
        self.adapt.set_position(first.at);
        if let Flow::Stop = self.show(&first, 1)? {
            return Ok(());
        }
        let mut place = Place {
            at: first.at,
            shown: (first.seq, first.seq, 0),
            before: first,
            after: None,
            held_mark: self.stats.held_deadlines.load(Ordering::Relaxed),
            idled: 0,
        };
        let mut bounce = Bounce::at_newest(0);
        loop {
            self.follow_settings();
            let level = self.buffer.level();
            if level.closed {
                return Ok(());
            }
            let flow = match self.state {
                PlaybackState::Underrun => {
                    self.adaptive_underrun(level, &mut place, &mut bounce)?
                }
                _ => self.advance(level, &mut place, &mut bounce)?,
            };
            if let Flow::Stop = flow {
                return Ok(());
            }
        }
    }

    /// The next frame from the buffer, kept among the recent ones.
    fn take_next(&self) -> Option<Arc<Frame>> {
        let frame = self.buffer.pop()?;
        self.recent.push(Arc::clone(&frame));
        Some(frame)
    }

    /// Seconds of art one keyframe interval is at the configured pace.
    fn seconds_per_keyframe(&self) -> f64 {
        let live = &self.settings.live;
        live.frames_per_transition.max(1) as f64 / live.fps
    }

    /// Display periods the next picture stands for: one, plus any the pacer held because
    /// playback came late (not those it let pass on purpose), so the art keeps its pace on a
    /// machine that renders slower than the display.
    fn periods_since_last(&self, place: &mut Place) -> f64 {
        let held = self.stats.held_deadlines.load(Ordering::Relaxed);
        let late = held
            .saturating_sub(place.held_mark)
            .saturating_sub(place.idled)
            .min(MOST_PERIODS - 1);
        place.held_mark = held;
        place.idled = 0;
        // On a page-flipping screen a period is a whole number of refreshes, maybe not 1/fps.
        let pacer = self.stats.pacer_period_ns.load(Ordering::Relaxed) as f64;
        let ratio = if pacer > 0.0 {
            pacer / self.settings.period.as_nanos().max(1) as f64
        } else {
            1.0
        };
        (1 + late) as f64 * ratio
    }

    /// One period of adaptive playback: the art's speed from the buffer, the screen's place
    /// moved on by it, and the picture there.
    fn advance(
        &mut self,
        level: Level,
        place: &mut Place,
        bounce: &mut Bounce,
    ) -> anyhow::Result<Flow> {
        if place.after.is_none() {
            place.after = self.take_next();
        }
        let Some(after) = place.after.clone() else {
            if self.state == PlaybackState::Playing {
                self.enter_underrun(level, bounce);
            } else {
                // Only the first picture so far: it stays while the second is decoded.
                self.buffer.wait_for_level(1, POLL);
            }
            return Ok(Flow::Continue);
        };
        let newest = self.buffer.back().map_or(after.at, |frame| frame.at);
        let spacing = (after.at - place.before.at).max(1e-9);
        let full = level.frames > 0 && level.frames >= level.capacity_frames;
        let speed = art_speed(
            (newest - place.at) * self.seconds_per_keyframe(),
            self.settings.start_seconds,
            self.adapt.reserve_s(),
            self.adapt.headroom(),
            full,
        );
        self.adapt.set_speed(speed);
        if self.state == PlaybackState::Buffering && speed > 0.0 {
            self.set_state(PlaybackState::Playing, level);
        }
        // Within the last eighth of the newest frame, with nothing more decoded: the screen
        // slowed to a crawl (an eighth of a frame over the reserve) because the generator is
        // not keeping up at all (it stopped, or fails), which adaptation can't absorb.
        let room = (newest - place.at).max(0.0);
        if self.state == PlaybackState::Playing && level.frames == 0 && room <= spacing / 8.0 {
            self.enter_underrun(level, bounce);
            return Ok(Flow::Continue);
        }
        let periods = self.periods_since_last(place);
        // At most half the way to the newest frame in one picture: the screen nears it ever
        // more slowly instead of running into it (a period late or two can't make it jump).
        let step = (speed * periods / self.settings.live.frames_per_transition.max(1) as f64)
            .min(room / 2.0);
        place.at += step;
        // Past the next frame: on to the ones after it, as far as they are decoded.
        while let Some(after) = place.after.clone().filter(|after| place.at >= after.at) {
            place.before = after;
            place.after = self.take_next();
            if place.after.is_none() {
                place.at = place.before.at;
            }
        }
        self.adapt.set_position(place.at);
        let before = Arc::clone(&place.before);
        let weight = place.after.as_ref().map_or(0, |after| {
            weight_of((place.at - before.at) / (after.at - before.at).max(1e-9))
        });
        let after = place.after.clone().filter(|_| weight > 0);
        // The picture's identity: all of one frame is that frame, whichever pair it ends.
        let shown = match &after {
            Some(after) if weight >= WEIGHT_ONE => (after.seq, after.seq, 0),
            Some(after) => (before.seq, after.seq, weight),
            None => (before.seq, before.seq, 0),
        };
        if shown == place.shown || !self.budget.allows(self.settings.period) {
            // The same picture again, or no time to render one: the pacer keeps the last up a
            // period meanwhile.
            place.idled += 1;
            std::thread::sleep(self.settings.period);
            return Ok(Flow::Continue);
        }
        place.shown = shown;
        match after {
            Some(after) if weight < WEIGHT_ONE => self.show_blend(&before, &after, weight),
            Some(after) => self.show(&after, 1),
            None => self.show(&before, 1),
        }
    }

    /// The buffer ran dry while the art moved: the underrun policy takes over.
    fn enter_underrun(&mut self, level: Level, bounce: &mut Bounce) {
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
        self.adapt.set_speed(0.0);
        self.set_state(PlaybackState::Underrun, level);
    }

    /// Whether `buffer.resume-seconds` of playback are buffered again (at the speed this
    /// machine sustains), or the buffer is full.
    fn refilled_adaptive(&self, level: Level, place: &Place) -> bool {
        let Some(newest) = self.buffer.back() else {
            return false;
        };
        let sustained = (0.9 * self.adapt.headroom()).clamp(0.05, 1.0);
        let playback_s = (newest.at - place.at) * self.seconds_per_keyframe() / sustained;
        playback_s >= self.settings.resume_seconds || level.frames >= level.capacity_frames
    }

    /// An underrun in adaptive playback: ping-pong (blended, at the art's recent speed) or the
    /// last frame held, until the buffer has refilled.
    fn adaptive_underrun(
        &mut self,
        level: Level,
        place: &mut Place,
        bounce: &mut Bounce,
    ) -> anyhow::Result<Flow> {
        let refilled = self.refilled_adaptive(level, place);
        let recent = self.recent.len();
        if self.policy != UnderrunPolicy::PingPong || recent < MIN_PING_PONG_FRAMES {
            if refilled {
                self.resume(level, place);
            } else {
                self.buffer.wait_for_level(level.frames + 1, POLL);
            }
            return Ok(Flow::Continue);
        }
        if refilled && bounce.is_at_newest(recent) {
            self.resume(level, place);
            return Ok(Flow::Continue);
        }
        if refilled {
            bounce.turn_forward();
        }
        if !self.budget.allows(self.settings.period) {
            place.idled += 1;
            std::thread::sleep(self.settings.period);
            return Ok(Flow::Continue);
        }
        let position = bounce.step(recent, self.bounce_speed());
        let index = position as usize;
        let (Some(a), Some(b)) = (
            self.recent.get(index),
            self.recent.get((index + 1).min(recent - 1)),
        ) else {
            return Ok(Flow::Continue);
        };
        self.stats.underrun_frames.fetch_add(1, Ordering::Relaxed);
        let weight = weight_of(position - index as f64);
        if weight == 0 || a.seq == b.seq {
            self.show(&a, 1)
        } else {
            self.show_blend(&a, &b, weight)
        }
    }

    /// Recent frames a period ping-pong moves by: the art's configured pace, between a tenth of
    /// a frame and one frame.
    fn bounce_speed(&self) -> f64 {
        let (Some(newest), Some(before)) = (
            self.recent.get(self.recent.len().saturating_sub(1)),
            self.recent.get(self.recent.len().saturating_sub(2)),
        ) else {
            return 1.0;
        };
        let spacing = (newest.at - before.at).max(1e-9);
        let full_pace = 1.0 / (self.settings.live.frames_per_transition.max(1) as f64 * spacing);
        full_pace.clamp(0.1, 1.0)
    }

    /// Back to playing from where the screen stopped.
    fn resume(&mut self, level: Level, place: &mut Place) {
        place.held_mark = self.stats.held_deadlines.load(Ordering::Relaxed);
        place.idled = 0;
        self.set_state(PlaybackState::Playing, level);
    }

    /// Renders the blend of `before` and `after` (`weight` in 65536ths of the way), at `after`'s
    /// size, and hands it to the pacer.
    fn show_blend(&mut self, before: &Frame, after: &Frame, weight: u32) -> anyhow::Result<Flow> {
        let size = after.size();
        let mut blended = self.blended.take().unwrap_or_else(|| Frame {
            seq: 0,
            width: 0,
            height: 0,
            rgb: Vec::new(),
            at: 0.0,
        });
        blended.rgb.resize(after.rgb.len(), 0);
        (blended.width, blended.height) = size;
        blended.seq = if weight < WEIGHT_ONE / 2 {
            before.seq
        } else {
            after.seq
        };
        blended.at = before.at + (after.at - before.at) * weight as f64 / WEIGHT_ONE as f64;
        let from: &[u8] = if before.size() == size {
            &before.rgb
        } else {
            resize_into(&before.rgb, before.size(), size, &mut self.scratch)?;
            &self.scratch
        };
        self.pictures = self.pictures.wrapping_add(1);
        blend_dithered_into(from, &after.rgb, weight, self.pictures, &mut blended.rgb);
        let flow = self.show(&blended, 1);
        self.blended = Some(blended);
        flow
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
                at: seq as f64,
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
        let walk: Vec<f64> = (0..8).map(|_| bounce.step(4, 1.0)).collect();
        assert_eq!(walk, vec![2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
        // Half a frame a period: between frames, turning at the ends.
        let mut slow = Bounce::at_newest(3);
        let walk: Vec<f64> = (0..6).map(|_| slow.step(3, 0.5)).collect();
        assert_eq!(walk, vec![1.5, 1.0, 0.5, 0.0, 0.5, 1.0]);
        assert!(!slow.is_at_newest(3));
    }
}
