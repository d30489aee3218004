//! Capacity-aware playback: how fast the art moves on screen (`art_speed`) and how rich the
//! decoded frames are (the quality `Ladder`), both from what this machine shows it can do.
//!
//! - **Pace** (`art_speed`, used by playback every display period): the art advances along the
//!   walk at a share of its configured pace (`display.fps / interpolation.frames-per-transition`
//!   keyframes a second). As in buffer-based rate adaptation (BBA, BOLA) the share follows the
//!   buffer: full speed once `buffer.start-seconds` of art are decoded ahead, less below, so
//!   motion starts with the second decoded frame and a slow machine moves slowly instead of
//!   stopping and going. A floor of 0.9 x the measured capacity (over `RESERVE_S` of playback
//!   at least) keeps a thin buffer moving at what the machine sustains.
//! - **Ladder** (`Ladder`, consulted by the decoder at every batch): rungs from richest to
//!   cheapest, each a number of frames per transition and a generator quality (resolution,
//!   tiny decoder, keyframe steps: `generator::Knobs`). Fewer frames per transition keep the
//!   pace with fewer decoded frames (display-time blending fills the gaps); lower rungs cost
//!   sharpness. The costs of decoding and of keyframes are measured (`Costs`), and predicted for
//!   rungs not yet tried. The ladder steps down, as far as needed at once, when the current rung
//!   can't keep the configured pace (headroom below 1); it climbs one rung at a time, no sooner
//!   than `adapt.settle-seconds` after a change and only while the art plays at full speed, when
//!   the rung above is predicted to have 30% to spare. A rung left soon after it was reached
//!   waits twice as long for the next try (up to `MAX_SETTLE`), so at steady capacity the ladder
//!   settles instead of oscillating.
//!
//! Shared through `Adapt` by the decoder (measures, decides, applies decode quality), the
//! keyframe stage (measures keyframes, applies steps), playback (speed, position) and status.
//! Pure arithmetic behind one short lock; nothing fails. Off (`adapt.enabled = false`) the
//! ladder has one rung and playback keeps its pre-adaptation behaviour.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::config::AdaptConfig;
use crate::generator::{DecodeQuality, Knobs};

/// Shares of the configured frames per transition the ladder goes through, richest first.
const TRANSITION_SHARES: [f64; 8] = [
    1.0,
    2.0 / 3.0,
    0.5,
    1.0 / 3.0,
    0.25,
    1.0 / 6.0,
    0.125,
    1.0 / 12.0,
];
/// Below this headroom (capacity over what the configured pace needs) the ladder steps down...
const DOWN_BELOW: f64 = 1.0;
/// ...to the richest rung predicted to have this much...
const DOWN_TO: f64 = 1.15;
/// ...and climbs to a rung only when it is predicted to have this much.
const UP_FROM: f64 = 1.3;
/// A rung's headroom is judged once this many frames were decoded at it, over at least
/// `MIN_SECONDS` of decoding (or `ENOUGH_FRAMES` frames): the first frames of a run or of a new
/// size carry start-up costs.
const MIN_FRAMES: u64 = 3;
const MIN_SECONDS: f64 = 1.0;
const ENOUGH_FRAMES: u64 = 30;
/// On a machine this slow (seconds of decoding for a frame or two) it is judged at once: its
/// art would wait many seconds more for more measurements.
const SLOW_SECONDS: f64 = 2.0;
/// Measurements average over about this many seconds.
const TAU: f64 = 3.0;
/// A cost measured this many seconds ago counts for 1/e against one carried over from what the
/// machine does now (see `Costs`).
const RECALL: f64 = 20.0;
/// The longest wait before a rung that failed is tried again.
const MAX_SETTLE: f64 = 640.0;
/// A rung left within this many settle periods of reaching it failed: its next try waits longer.
const FAILED_WITHIN: f64 = 2.0;
/// What a tiny decoder is assumed to cost against the full one until it has been measured.
const TINY_PRIOR: f64 = 0.25;

/// One rung: how the walk is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rung {
    pub frames_per_transition: usize,
    pub quality: DecodeQuality,
    /// Keyframe steps, where the generator has them.
    pub steps: Option<usize>,
}

impl Rung {
    /// For logs and status: "45 frames, 192x108", ", tiny decoder", ", 2 steps".
    pub(crate) fn label(&self, knobs: &Knobs) -> String {
        let (width, height) = knobs.sizes[self.quality.size.min(knobs.sizes.len() - 1)];
        let mut label = format!("{} frames, {width}x{height}", self.frames_per_transition);
        if self.quality.tiny {
            label.push_str(", tiny decoder");
        }
        if let Some(steps) = self.steps {
            label.push_str(&format!(", {steps} steps"));
        }
        label
    }
}

/// The rungs for a walk of `frames_per_transition` frames on a generator with `knobs`, within
/// `bounds`, richest first. The ladder alternates a step in frames per transition with a step of
/// the generator's (first the tiny decoder, then resolution and keyframe steps in turn), since
/// fewer frames at the same pace cost the least to the eye.
pub(crate) fn rungs(
    frames_per_transition: usize,
    knobs: &Knobs,
    bounds: &AdaptConfig,
) -> Vec<Rung> {
    let top_steps = knobs.steps.first().copied();
    let top = Rung {
        frames_per_transition: frames_per_transition.max(1),
        quality: DecodeQuality::default(),
        steps: top_steps,
    };
    if !bounds.enabled {
        return vec![top];
    }
    let fewest = bounds
        .min_frames_per_transition
        .clamp(1, top.frames_per_transition);
    let mut frames: Vec<usize> = TRANSITION_SHARES
        .iter()
        .map(|share| ((top.frames_per_transition as f64 * share).round() as usize).max(fewest))
        .collect();
    frames.dedup();
    let full_width = knobs.sizes[0].0.max(1) as f64;
    let sizes = knobs
        .sizes
        .iter()
        .take_while(|size| size.0 as f64 / full_width >= bounds.min_resolution_scale - 1e-9)
        .count();
    let fewest_steps =
        top_steps.map(|steps| bounds.min_steps.unwrap_or(steps.div_ceil(2)).min(steps));
    let steps: Vec<usize> = knobs
        .steps
        .iter()
        .copied()
        .filter(|&steps| fewest_steps.is_some_and(|fewest| steps >= fewest))
        .collect();
    let mut tiny = knobs.tiny_decoder && bounds.tiny_decoder;

    let mut ladder = vec![top];
    let (mut frame_step, mut size, mut step) = (1, 0, 0);
    let mut resolution_next = true;
    loop {
        let mut rung = *ladder.last().expect("the top rung");
        let mut moved = false;
        if let Some(&n) = frames.get(frame_step) {
            rung.frames_per_transition = n;
            frame_step += 1;
            ladder.push(rung);
            moved = true;
        }
        // One generator step: the tiny decoder first, then resolution and steps in turn.
        let mut generator = *ladder.last().expect("a rung");
        if tiny {
            generator.quality.tiny = true;
            tiny = false;
        } else {
            let can_size = size + 1 < sizes;
            let can_step = step + 1 < steps.len();
            if can_size && (resolution_next || !can_step) {
                size += 1;
                generator.quality.size = size;
                resolution_next = false;
            } else if can_step {
                step += 1;
                generator.steps = Some(steps[step]);
                resolution_next = true;
            }
        }
        if generator != *ladder.last().expect("a rung") {
            ladder.push(generator);
            moved = true;
        }
        if !moved {
            return ladder;
        }
    }
}

/// A running mean: the plain mean per item (frame) until its samples span `TAU` seconds of the
/// clock, then an exponential average with that time constant (the machine's speed now wins
/// over an hour ago, however many batches an hour holds).
#[derive(Debug, Clone, Copy, Default)]
struct Average {
    value: f64,
    /// Items measured, and the seconds they took.
    count: f64,
    seconds: f64,
    /// The clock at the first and the last sample.
    first: f64,
    last: f64,
}

impl Average {
    /// `value` measured over `count` items that took `seconds`, at `now` on the caller's clock.
    fn add(&mut self, value: f64, count: f64, seconds: f64, now: f64) {
        if self.count == 0.0 {
            self.first = now;
            self.last = now;
        }
        let weight = if now - self.first <= TAU {
            count / (self.count + count).max(1e-9)
        } else {
            1.0 - (-(now - self.last).max(0.0) / TAU).exp()
        };
        self.value += weight * (value - self.value);
        self.count += count;
        self.seconds += seconds;
        self.last = now;
    }

    /// Enough measured for one batch not to be trusted over all the others.
    fn established(&self) -> bool {
        self.count >= ENOUGH_FRAMES as f64
    }
}

/// What decoding and keyframes cost here: measured, and predicted for what has not run lately.
///
/// A decode quality's cost is what it took when it last ran, fading (over `RECALL` seconds)
/// into what the quality running now costs scaled by their prior ratio (pixels; a tiny decoder
/// `TINY_PRIOR`): so the machine's speed now carries over to every prediction, while a fresh
/// measurement of a quality (its true ratio to the others) counts for more. Nothing measured
/// in a moment of change (a start-up, another program) is believed for good.
#[derive(Debug, Default)]
struct Costs {
    /// Seconds per in-between frame, per decode quality, as measured when it last ran.
    frames: HashMap<DecodeQuality, Average>,
    /// The quality measured last (what runs now).
    current: Option<DecodeQuality>,
    /// Seconds to decode a keyframe (always the full decoder) per size.
    keyframe_decode: HashMap<usize, Average>,
    /// Seconds to make a keyframe, per step count (0: a generator without steps).
    keyframe: HashMap<usize, Average>,
    /// The latest measurement's time on the caller's clock.
    clock: f64,
}

impl Costs {
    fn prior(knobs: &Knobs, quality: DecodeQuality) -> f64 {
        let pixels = |size: (u32, u32)| size.0 as f64 * size.1 as f64;
        let size = knobs.sizes[quality.size.min(knobs.sizes.len() - 1)];
        let ratio = pixels(size) / pixels(knobs.sizes[0]).max(1.0);
        if quality.tiny {
            ratio * TINY_PRIOR
        } else {
            ratio
        }
    }

    /// `frames` in-betweens took `seconds` at `quality`, measured at `now`.
    fn frames(&mut self, quality: DecodeQuality, frames: usize, seconds: f64, now: f64) {
        if frames == 0 || !seconds.is_finite() || seconds <= 0.0 {
            return;
        }
        self.clock = self.clock.max(now);
        let average = self.frames.entry(quality).or_default();
        let mut per_frame = seconds / frames as f64;
        if average.established() {
            // One batch moves an established estimate at most fourfold: a hiccup (a stalled
            // GPU, a burst of other work) is not the machine's speed; a real change shows in
            // the next batches.
            per_frame = per_frame.clamp(average.value / 4.0, average.value * 4.0);
        }
        if self.current != Some(quality) && average.count > 0.0 {
            // Back at a quality after a while: start its average afresh from now.
            *average = Average::default();
        }
        average.add(per_frame, frames as f64, seconds, now);
        self.current = Some(quality);
    }

    fn per_frame(&self, knobs: &Knobs, quality: DecodeQuality) -> Option<f64> {
        let current = self.current?;
        let now = self.frames.get(&current)?.value;
        let scaled = now * Self::prior(knobs, quality) / Self::prior(knobs, current);
        match self.frames.get(&quality) {
            Some(own) if quality == current => Some(own.value),
            Some(own) if own.value > 0.0 && scaled > 0.0 => {
                let recall = (-(self.clock - own.last).max(0.0) / RECALL).exp();
                Some((scaled.ln() + recall * (own.value.ln() - scaled.ln())).exp())
            }
            _ => Some(scaled),
        }
    }

    /// Seconds one transition takes at `rung`; `overlap`: keyframes are made while the decoders
    /// work (they have a lock of their own).
    fn transition(&self, knobs: &Knobs, rung: &Rung, overlap: bool) -> Option<f64> {
        let per_frame = self.per_frame(knobs, rung.quality)?;
        let full = DecodeQuality {
            tiny: false,
            ..rung.quality
        };
        let full_frame = self.per_frame(knobs, full)?;
        let keyframe_decode = match self.keyframe_decode.get(&rung.quality.size) {
            // Measured: fading, as a frame's cost does, into what the machine costs now.
            Some(own) if own.value > 0.0 => {
                let recall = (-(self.clock - own.last).max(0.0) / RECALL).exp();
                (full_frame.ln() + recall * (own.value.ln() - full_frame.ln())).exp()
            }
            _ => full_frame,
        };
        let decode =
            (rung.frames_per_transition.saturating_sub(1)) as f64 * per_frame + keyframe_decode;
        let steps = rung.steps.unwrap_or(0);
        let keyframe = self.keyframe.get(&steps).map(|a| a.value).or_else(|| {
            // Another step count measured: steps cost in proportion.
            let (&measured, average) = self.keyframe.iter().find(|(s, _)| **s > 0)?;
            Some(average.value * steps as f64 / measured as f64)
        });
        let keyframe = keyframe.unwrap_or(0.0);
        Some(if overlap {
            decode.max(keyframe)
        } else {
            decode + keyframe
        })
    }
}

/// A move on the ladder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub from: usize,
    pub to: usize,
    /// "capacity" (stepped down: the rung couldn't keep the pace) or "headroom" (climbed).
    pub reason: &'static str,
    /// Decoded frames a second the rung it left sustains.
    pub capacity_fps: f64,
    /// Decoded frames a second that rung needs for the configured pace.
    pub need_fps: f64,
}

/// The quality ladder: its rungs, where it stands, and what it has measured.
#[derive(Debug)]
pub(crate) struct Ladder {
    rungs: Vec<Rung>,
    knobs: Knobs,
    /// Frames per transition as configured, and the display rate: the configured pace.
    configured: (usize, f64),
    /// Keyframes are made while decoding (split decoders).
    overlap: bool,
    current: usize,
    /// When (seconds on the caller's clock) the current rung was reached, and frames decoded
    /// at it since (and the seconds they took).
    reached_at: f64,
    frames_here: u64,
    seconds_here: f64,
    /// Per rung: how long the ladder waits before climbing to it.
    wait_before: Vec<f64>,
    costs: Costs,
    changes: u64,
}

impl Ladder {
    pub(crate) fn new(
        frames_per_transition: usize,
        fps: f64,
        knobs: Knobs,
        bounds: &AdaptConfig,
        overlap: bool,
        now: f64,
    ) -> Self {
        let rungs = rungs(frames_per_transition, &knobs, bounds);
        let settle = bounds.settle.as_secs_f64();
        Self {
            wait_before: vec![settle; rungs.len()],
            rungs,
            knobs,
            configured: (frames_per_transition.max(1), fps),
            overlap,
            current: 0,
            reached_at: now,
            frames_here: 0,
            seconds_here: 0.0,
            costs: Costs::default(),
            changes: 0,
        }
    }

    /// The same ladder for another walk (a reload changed the frames per transition or the
    /// fps): what was measured carries over when the generator is the same.
    pub(crate) fn remade(
        self,
        frames_per_transition: usize,
        fps: f64,
        knobs: Knobs,
        bounds: &AdaptConfig,
        now: f64,
    ) -> Self {
        let same_generator = self.knobs == knobs;
        let mut ladder = Self::new(frames_per_transition, fps, knobs, bounds, self.overlap, now);
        if same_generator {
            ladder.costs = self.costs;
        }
        ladder
    }

    /// Whether this ladder was made for this walk and generator.
    pub(crate) fn fits(&self, frames_per_transition: usize, fps: f64, knobs: &Knobs) -> bool {
        self.configured == (frames_per_transition.max(1), fps) && &self.knobs == knobs
    }

    pub(crate) fn rung(&self) -> Rung {
        self.rungs[self.current]
    }

    pub(crate) fn index(&self) -> usize {
        self.current
    }

    pub(crate) fn len(&self) -> usize {
        self.rungs.len()
    }

    pub(crate) fn label(&self, index: usize) -> String {
        self.rungs[index].label(&self.knobs)
    }

    /// Seconds of art one transition is at the configured pace.
    fn nominal(&self) -> f64 {
        self.configured.0 as f64 / self.configured.1
    }

    /// Seconds an in-between frame takes at `quality`, as measured or predicted.
    pub(crate) fn seconds_per_frame(&self, quality: DecodeQuality) -> Option<f64> {
        self.costs.per_frame(&self.knobs, quality)
    }

    /// Capacity over need at `index`: 1 keeps the configured pace exactly.
    pub(crate) fn headroom(&self, index: usize) -> Option<f64> {
        let seconds = self
            .costs
            .transition(&self.knobs, &self.rungs[index], self.overlap)?;
        Some(self.nominal() / seconds.max(1e-9))
    }

    /// Decoded frames a second rung `index` sustains, and those it needs for the pace.
    pub(crate) fn capacity_fps(&self, index: usize) -> (Option<f64>, f64) {
        let rung = &self.rungs[index];
        let frames = rung.frames_per_transition as f64;
        let capacity = self
            .costs
            .transition(&self.knobs, rung, self.overlap)
            .map(|seconds| frames / seconds.max(1e-9));
        (capacity, frames / self.nominal())
    }

    /// `frames` in-betweens took `seconds` at `quality`; `now` on the `decide` clock.
    pub(crate) fn observe_frames(
        &mut self,
        quality: DecodeQuality,
        frames: usize,
        seconds: f64,
        now: f64,
    ) {
        self.costs.frames(quality, frames, seconds, now);
        if quality == self.rung().quality {
            self.frames_here += frames as u64;
            self.seconds_here += seconds;
        }
    }

    /// A keyframe at size `size` took `seconds` to decode (with the full decoder: before any
    /// in-between is decoded, the first estimate of what a frame costs at that size).
    pub(crate) fn observe_keyframe_decode(&mut self, size: usize, seconds: f64, now: f64) {
        self.costs.clock = self.costs.clock.max(now);
        self.costs
            .keyframe_decode
            .entry(size)
            .or_default()
            .add(seconds, 1.0, seconds, now);
        let full = DecodeQuality { size, tiny: false };
        if self.costs.current.is_none() && self.rung().quality == full {
            self.observe_frames(full, 1, seconds, now);
        }
    }

    /// A keyframe of `steps` steps (0: a generator without steps) took `seconds` to make.
    pub(crate) fn observe_keyframe(&mut self, steps: usize, seconds: f64, now: f64) {
        self.costs.clock = self.costs.clock.max(now);
        self.costs
            .keyframe
            .entry(steps)
            .or_default()
            .add(seconds, 1.0, seconds, now);
    }

    /// The move to make now, if any (and makes it). `now` in seconds on any steady clock;
    /// `full_speed`: the art plays at its configured pace (the buffer holds enough).
    pub(crate) fn decide(&mut self, now: f64, full_speed: bool) -> Option<Change> {
        let measured = self.frames_here >= ENOUGH_FRAMES
            || (self.frames_here >= MIN_FRAMES && self.seconds_here >= MIN_SECONDS)
            || (self.frames_here >= 1 && self.seconds_here >= SLOW_SECONDS);
        if !measured {
            return None;
        }
        let here = self.headroom(self.current)?;
        let last = self.rungs.len() - 1;
        let to = if here < DOWN_BELOW && self.current < last {
            if now - self.reached_at < FAILED_WITHIN * self.wait_before[self.current] {
                self.wait_before[self.current] =
                    (self.wait_before[self.current] * 2.0).min(MAX_SETTLE);
            }
            (self.current + 1..=last)
                .find(|&rung| self.headroom(rung).is_some_and(|h| h >= DOWN_TO))
                .unwrap_or(last)
        } else if self.current > 0
            && full_speed
            && now - self.reached_at >= self.wait_before[self.current - 1]
            && self
                .headroom(self.current - 1)
                .is_some_and(|h| h >= UP_FROM)
        {
            self.current - 1
        } else {
            return None;
        };
        let (capacity, need) = self.capacity_fps(self.current);
        let change = Change {
            from: self.current,
            to,
            reason: if to > self.current {
                "capacity"
            } else {
                "headroom"
            },
            capacity_fps: capacity.unwrap_or(0.0),
            need_fps: need,
        };
        self.current = to;
        self.reached_at = now;
        self.frames_here = 0;
        self.seconds_here = 0.0;
        self.changes += 1;
        Some(change)
    }
}

/// Seconds of playback a thin buffer is spread over at least (more when batches take longer:
/// `Adapt::reserve_s`): the capacity floor gives way below it, so the screen slows down as it
/// nears the newest frame instead of running into it between two batches.
pub(crate) const RESERVE_S: f64 = 1.0;

/// The share of the configured pace the art plays at now (0 to 1).
///
/// `ahead_s`: seconds of art decoded ahead of the screen, at the configured pace; `cushion_s`:
/// where full speed is reached (`buffer.start-seconds`); `reserve_s`: the playback a thin buffer
/// is spread over; `headroom`: the measured capacity over the pace's need (0: not measured
/// yet); `full`: the buffer can take no more (the decoder waits), so there is nothing to save
/// up for.
pub(crate) fn art_speed(
    ahead_s: f64,
    cushion_s: f64,
    reserve_s: f64,
    headroom: f64,
    full: bool,
) -> f64 {
    if ahead_s <= 0.0 {
        return 0.0;
    }
    if full || ahead_s >= cushion_s {
        return 1.0;
    }
    let floor = (0.9 * headroom.max(0.0)).min(ahead_s / reserve_s.max(1e-9));
    (ahead_s / cushion_s).max(floor).clamp(0.0, 1.0)
}

/// The ladder and the figures the stages share, for status.json and the log.
pub(crate) struct Adapt {
    pub enabled: bool,
    ladder: Mutex<Option<Ladder>>,
    /// The art's speed now, a share of the configured pace (f64 bits; playback writes it).
    speed: AtomicU64,
    /// Where on the walk the screen is, in keyframe intervals (f64 bits; playback writes it).
    position: AtomicU64,
    /// The current rung's headroom (f64 bits, 0 unknown; the decoder writes it).
    headroom: AtomicU64,
    /// Seconds the decoder expects its next batch to take (f64 bits; the decoder writes it).
    batch_seconds: AtomicU64,
}

/// What status.json shows of the ladder.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdaptStatus {
    pub rung: usize,
    pub rungs: usize,
    pub label: String,
    pub frames_per_transition: usize,
    pub width: u32,
    pub height: u32,
    pub tiny_decoder: bool,
    pub steps: Option<usize>,
    pub capacity_fps: Option<f64>,
    pub need_fps: f64,
    pub changes: u64,
}

fn load(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Ordering::Relaxed))
}

fn store(cell: &AtomicU64, value: f64) {
    cell.store(value.to_bits(), Ordering::Relaxed);
}

impl Adapt {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ladder: Mutex::new(None),
            speed: AtomicU64::new(0f64.to_bits()),
            position: AtomicU64::new(0f64.to_bits()),
            headroom: AtomicU64::new(0f64.to_bits()),
            batch_seconds: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// The ladder, under its lock (a panic while it was held leaves consistent figures).
    pub(crate) fn ladder(&self) -> MutexGuard<'_, Option<Ladder>> {
        self.ladder.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn speed(&self) -> f64 {
        load(&self.speed)
    }

    pub(crate) fn set_speed(&self, speed: f64) {
        store(&self.speed, speed);
    }

    pub(crate) fn position(&self) -> f64 {
        load(&self.position)
    }

    pub(crate) fn set_position(&self, at: f64) {
        store(&self.position, at);
    }

    pub(crate) fn headroom(&self) -> f64 {
        load(&self.headroom)
    }

    pub(crate) fn set_headroom(&self, headroom: f64) {
        store(&self.headroom, headroom);
    }

    pub(crate) fn set_batch_seconds(&self, seconds: f64) {
        store(&self.batch_seconds, seconds);
    }

    /// The playback a thin buffer is spread over: `RESERVE_S`, or two batches' decoding when
    /// that is longer, so the next batch lands before the screen reaches the newest frame.
    pub(crate) fn reserve_s(&self) -> f64 {
        RESERVE_S.max(2.0 * load(&self.batch_seconds))
    }

    /// Keyframe steps of the current rung, if the generator has steps.
    pub(crate) fn steps(&self) -> Option<usize> {
        self.ladder()
            .as_ref()
            .and_then(|ladder| ladder.rung().steps)
    }

    /// A keyframe of `steps` steps took `seconds`, at `now` on the ladder's clock.
    pub(crate) fn observe_keyframe(&self, steps: Option<usize>, seconds: f64, now: f64) {
        if let Some(ladder) = self.ladder().as_mut() {
            ladder.observe_keyframe(steps.unwrap_or(0), seconds, now);
        }
    }

    pub(crate) fn status(&self) -> Option<AdaptStatus> {
        let guard = self.ladder();
        let ladder = guard.as_ref()?;
        let rung = ladder.rung();
        let (width, height) =
            ladder.knobs.sizes[rung.quality.size.min(ladder.knobs.sizes.len() - 1)];
        let (capacity_fps, need_fps) = ladder.capacity_fps(ladder.current);
        Some(AdaptStatus {
            rung: ladder.current,
            rungs: ladder.len(),
            label: ladder.label(ladder.current),
            frames_per_transition: rung.frames_per_transition,
            width,
            height,
            tiny_decoder: rung.quality.tiny,
            steps: rung.steps,
            capacity_fps,
            need_fps,
            changes: ladder.changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bounds() -> AdaptConfig {
        crate::config::Config::default().adapt
    }

    fn cppn_knobs() -> Knobs {
        Knobs {
            sizes: vec![(256, 144), (192, 108), (128, 72), (96, 54), (64, 36)],
            ..Knobs::fixed((256, 144))
        }
    }

    fn sd_knobs() -> Knobs {
        Knobs {
            sizes: vec![(512, 512), (256, 256), (128, 128)],
            tiny_decoder: true,
            steps: vec![4, 3, 2],
        }
    }

    fn labels(rungs: &[Rung], knobs: &Knobs) -> Vec<String> {
        rungs.iter().map(|r| r.label(knobs)).collect()
    }

    #[test]
    fn the_built_in_ladder_alternates_fewer_frames_and_lower_resolution() {
        let knobs = cppn_knobs();
        assert_eq!(
            labels(&rungs(90, &knobs, &bounds()), &knobs),
            [
                "90 frames, 256x144",
                "60 frames, 256x144",
                "60 frames, 192x108",
                "45 frames, 192x108",
                "45 frames, 128x72",
                "30 frames, 128x72",
                "23 frames, 128x72",
                "15 frames, 128x72",
                "11 frames, 128x72",
                "10 frames, 128x72",
            ]
        );
    }

    #[test]
    fn a_models_ladder_takes_the_tiny_decoder_first_then_resolution_and_steps() {
        let knobs = sd_knobs();
        assert_eq!(
            labels(&rungs(30, &knobs, &bounds()), &knobs),
            [
                "30 frames, 512x512, 4 steps",
                "20 frames, 512x512, 4 steps",
                "20 frames, 512x512, tiny decoder, 4 steps",
                "15 frames, 512x512, tiny decoder, 4 steps",
                "15 frames, 256x256, tiny decoder, 4 steps",
                "10 frames, 256x256, tiny decoder, 4 steps",
                "10 frames, 256x256, tiny decoder, 3 steps",
                "10 frames, 256x256, tiny decoder, 2 steps",
            ]
        );
    }

    #[test]
    fn the_owners_bounds_are_every_rungs_bounds() {
        let knobs = sd_knobs();
        let mut bounds = bounds();
        bounds.min_frames_per_transition = 40;
        bounds.min_resolution_scale = 0.25;
        bounds.tiny_decoder = false;
        bounds.min_steps = Some(3);
        let ladder = rungs(90, &knobs, &bounds);
        assert!(ladder.len() > 3, "{:?}", labels(&ladder, &knobs));
        for rung in &ladder {
            assert!(rung.frames_per_transition >= 40, "{rung:?}");
            assert!(!rung.quality.tiny, "{rung:?}");
            assert!(rung.steps >= Some(3), "{rung:?}");
        }
        assert_eq!(ladder.last().unwrap().quality.size, 2, "down to a quarter");
        // Fewer frames than allowed are configured: that rung stays as configured.
        assert!(rungs(5, &knobs, &bounds)
            .iter()
            .all(|r| r.frames_per_transition == 5));
        bounds.enabled = false;
        assert_eq!(rungs(90, &knobs, &bounds).len(), 1, "off: one rung");
        bounds.enabled = true;
        bounds.min_resolution_scale = 1.0;
        assert!(rungs(90, &knobs, &bounds)
            .iter()
            .all(|r| r.quality.size == 0));
    }

    /// A ladder measured as if decoding took `seconds_per_frame` at full size (the cost of a
    /// smaller size in proportion to its pixels).
    fn run(ladder: &mut Ladder, seconds_per_frame: f64, from: f64, to: f64) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut now = from;
        while now < to {
            let rung = ladder.rung();
            let share = Costs::prior(&ladder.knobs, rung.quality);
            now += 5.0 * seconds_per_frame * share;
            ladder.observe_frames(rung.quality, 5, 5.0 * seconds_per_frame * share, now);
            changes.extend(ladder.decide(now, true));
        }
        changes
    }

    fn ladder(settle: f64) -> Ladder {
        let mut bounds = bounds();
        bounds.settle = Duration::from_secs_f64(settle);
        Ladder::new(90, 30.0, cppn_knobs(), &bounds, false, 0.0)
    }

    #[test]
    fn the_ladder_steps_down_when_capacity_drops_and_back_up_when_it_returns() {
        let mut ladder = ladder(10.0);
        // Fast enough for the top rung: no change.
        assert!(run(&mut ladder, 0.01, 0.0, 30.0).is_empty());
        // Five times too slow: down (as far as needed at once, then again once the new speed
        // is measured) to a rung that keeps the pace.
        let down = run(&mut ladder, 0.17, 30.0, 60.0);
        assert!((1..=2).contains(&down.len()), "{down:?}");
        assert!(down.iter().all(|c| c.reason == "capacity" && c.to > c.from));
        let low = ladder.index();
        assert!(low >= 4, "{}", ladder.label(low));
        assert!(ladder.headroom(low).unwrap() >= 1.0);
        // Fast again: one rung at a time back to the top, each after the settle time.
        let up = run(&mut ladder, 0.01, 60.0, 200.0);
        assert_eq!(ladder.index(), 0, "{up:?}");
        assert!(up
            .iter()
            .all(|c| c.reason == "headroom" && c.to + 1 == c.from));
        for pair in up.windows(2) {
            assert!(pair[0].to == pair[1].from);
        }
    }

    #[test]
    fn at_steady_capacity_the_ladder_settles_and_stays() {
        for seconds_per_frame in [0.02, 0.035, 0.05, 0.08, 0.12, 0.2, 0.4] {
            let mut ladder = ladder(5.0);
            let changes = run(&mut ladder, seconds_per_frame, 0.0, 600.0);
            let late = changes.iter().filter(|c| c.to != c.from).count();
            assert!(late <= 2, "{seconds_per_frame} s/frame: {changes:?}");
            let settled_at = ladder.index();
            let more = run(&mut ladder, seconds_per_frame, 600.0, 1800.0);
            assert!(
                more.is_empty(),
                "{seconds_per_frame} s/frame moved again: {more:?}"
            );
            assert_eq!(ladder.index(), settled_at);
        }
    }

    #[test]
    fn a_reloaded_walk_keeps_what_was_measured_of_the_same_generator() {
        let mut ladder = ladder(10.0);
        run(&mut ladder, 0.05, 0.0, 20.0);
        let bounds = bounds();
        let known = ladder.seconds_per_frame(DecodeQuality::default());
        assert!(known.is_some());
        let remade = ladder.remade(45, 30.0, cppn_knobs(), &bounds, 20.0);
        assert_eq!(
            (remade.index(), remade.rung().frames_per_transition),
            (0, 45)
        );
        assert_eq!(remade.seconds_per_frame(DecodeQuality::default()), known);
        let other = Knobs::fixed((64, 36));
        let fresh = remade.remade(45, 30.0, other, &bounds, 20.0);
        assert_eq!(fresh.seconds_per_frame(DecodeQuality::default()), None);
    }

    #[test]
    fn a_rung_that_fails_soon_after_a_climb_waits_longer_for_the_next_try() {
        let mut ladder = ladder(10.0);
        // A slow machine drives it down; the measurement of the rung above was optimistic.
        run(&mut ladder, 0.1, 0.0, 30.0);
        let low = ladder.index();
        assert!(low > 0);
        // Pretend the rung above is predicted fine but fails when tried.
        ladder.wait_before[low - 1] = 10.0;
        let before = ladder.wait_before[low - 1];
        ladder.current = low - 1;
        ladder.reached_at = 100.0;
        ladder.frames_here = ENOUGH_FRAMES;
        let quality = ladder.rungs[low - 1].quality;
        ladder.costs.frames.insert(
            quality,
            Average {
                value: 1.0, // far too slow now
                seconds: 100.0,
                count: 1000.0,
                first: 0.0,
                last: 100.0,
            },
        );
        ladder.costs.current = Some(quality);
        let change = ladder.decide(101.0, true).expect("steps down");
        assert_eq!(change.from, low - 1);
        assert_eq!(ladder.wait_before[low - 1], before * 2.0);
    }

    #[test]
    fn the_art_speeds_up_as_the_buffer_fills_and_never_runs_past_it() {
        // Nothing ahead: still.
        assert_eq!(art_speed(0.0, 10.0, 1.0, 5.0, false), 0.0);
        // Plenty ahead, or a full buffer, or no cushion asked for: full speed.
        assert_eq!(art_speed(12.0, 10.0, 1.0, 0.0, false), 1.0);
        assert_eq!(art_speed(1.0, 10.0, 1.0, 0.0, true), 1.0);
        assert_eq!(art_speed(0.01, 0.0, 1.0, 0.0, false), 1.0);
        // The fuller, the faster.
        let speeds: Vec<f64> = [1.0, 3.0, 6.0, 9.0]
            .iter()
            .map(|&s| art_speed(s, 10.0, 1.0, 0.0, false))
            .collect();
        assert!(speeds.windows(2).all(|w| w[0] < w[1]), "{speeds:?}");
        // A machine that keeps up half the pace plays at 0.45 of it once a second of playback
        // is buffered...
        assert!((art_speed(0.6, 10.0, 1.0, 0.5, false) - 0.45).abs() < 1e-9);
        // ...and slower on less, so the buffer lasts while the next frames are decoded (longer
        // when batches take longer).
        assert!((art_speed(0.1, 10.0, 1.0, 0.5, false) - 0.1).abs() < 1e-9);
        assert!((art_speed(0.1, 10.0, 4.0, 0.5, false) - 0.025).abs() < 1e-9);
    }
}
