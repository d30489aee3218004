//! The decode stage: turns the walk from keyframe to keyframe into frames. The very first
//! keyframe is decoded alone and pushed at once, so it is on screen before any transition is
//! decoded. Then, for each next keyframe, the in-between latents are slerped a batch at a time
//! (`decode.batch-size`, fewer when frames are large; see `config::FrameBudget`), each batch is
//! decoded under one acquisition of the decoders' own lock (the model lock where the generator
//! keeps its decoders; each wait goes into `decode_lock_wait`) and pushed into the frame queue
//! before the next is made; the transition ends with the new keyframe itself, through the
//! generator's best decoder. So nothing holds more than one batch of frames outside the buffer.
//! Each decoded keyframe is shown to the walk's guard (`guard`), whose re-anchor is logged,
//! counted and passed to the keyframe stage.
//!
//! Every frame carries its place on the walk (`Frame::at`: keyframe k at k, its in-betweens
//! between), so playback can move along the walk at any speed. With adaptation
//! (`adapt.enabled`) the quality ladder (`adapt::Ladder`) is fed each batch's decode time and
//! consulted after it: a new rung takes effect at the next batch, even midway through a
//! transition (the rest of the way is walked in the new number of steps, at the new decode
//! quality, logged `adapt`), and batches are made no longer than `BATCH_SECONDS`, so a slow
//! machine's second frame comes one frame's decode after the first.
//!
//! Inputs: `Keyframe`s from the keyframe stage; transition length and easing from the settings
//! (read once per transition). Outputs: `Frame`s into the frame queue, which blocks this thread
//! while full (never while a lock is held). Runs on the "decoder" thread and pauses
//! while the schedule blanks the screen. A decode error is logged and the same batch retried
//! with backoff, so the picture never jumps; playback meanwhile follows the underrun policy.
//! Ends when the buffer is closed, the pipeline stops or the keyframe stage has gone. Logs one
//! `[TIMING] transition` line per transition.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Tensor;

use super::adapt::{Adapt, Ladder, Rung};
use super::control::{Control, Settings, Watcher};
use super::guard::WalkGuard;
use super::keyframes::Keyframe;
use super::queue::FrameQueue;
use super::stage::Retry;
use super::stats::{PipelineStats, TimingSnapshot};
use crate::config::AdaptConfig;
use crate::events;
use crate::frame::{blend_into, resized, weight_of, Frame};
use crate::generator::interpolation::{ease, Transition};
use crate::generator::{DecodeQuality, ModelLock};

/// With adaptation, a decode batch takes at most about this long (at least one frame), so
/// frames reach the screen steadily on a slow machine.
const BATCH_SECONDS: f64 = 0.25;
/// The art plays at least this share of its pace for the ladder to climb.
const FULL_SPEED: f64 = 0.95;

pub(crate) struct DecodeStage {
    pub model: Arc<ModelLock>,
    pub input: Receiver<Keyframe>,
    pub buffer: Arc<FrameQueue>,
    /// Frames decoded at once (the budget's `decode_batch`); halved on out-of-memory.
    pub batch_size: usize,
    pub stats: Arc<PipelineStats>,
    pub control: Arc<Control>,
    pub watcher: Watcher,
    /// The settings the current transition uses.
    pub settings: Arc<Settings>,
    /// Upscale timings up to the last `[TIMING]` line, for the next line's mean.
    pub upscale_mark: TimingSnapshot,
    /// Judges each decoded keyframe; asks for a re-anchor when the walk degrades.
    pub guard: WalkGuard,
    /// The quality ladder (a single rung without adaptation) and the figures it shares.
    pub adapt: Arc<Adapt>,
    pub bounds: AdaptConfig,
    /// What the decoders were last told to decode at.
    pub applied: DecodeQuality,
    /// The sizes the generator decodes at (`Knobs::sizes`), for the ladder's rungs.
    pub sizes: Vec<(u32, u32)>,
    /// Where on the walk the next transition starts (its first keyframe's `Frame::at`).
    pub walked: f64,
    /// Seconds the last `decode` took, when it worked at the first try (what the ladder learns).
    pub last_decode: Option<f64>,
}

/// Whether a decode failed for want of (GPU) memory, which a smaller batch may avoid.
fn is_out_of_memory(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let text = cause.to_string().to_ascii_lowercase();
        text.contains("out of memory") || text.contains("out_of_memory")
    })
}

/// Latents to decode at once when each takes `per_frame` seconds: as many as take about
/// `BATCH_SECONDS`, 1 to `most`; one while the cost is unknown.
fn adaptive_batch(per_frame: Option<f64>, most: usize) -> usize {
    match per_frame {
        Some(seconds) if seconds > 0.0 => ((BATCH_SECONDS / seconds) as usize).clamp(1, most),
        Some(_) => most,
        None => 1,
    }
}

/// Why the stage ends early.
enum Ended {
    /// Shutdown, or the buffer or the keyframe stage has gone.
    Stopped,
    /// Something that retrying can't mend (a tensor operation on our own latents failed).
    Failed(anyhow::Error),
}

impl From<candle_core::Error> for Ended {
    fn from(error: candle_core::Error) -> Self {
        Ended::Failed(error.into())
    }
}

/// One transition's figures, for its `[TIMING]` line.
#[derive(Default)]
struct TransitionTimes {
    slerp: Duration,
    decode: Duration,
    lock_wait_max: f64,
    lock_acquisitions: u32,
}

impl DecodeStage {
    /// Decodes `latents` (all keyframes when `keyframe`), retrying with backoff until it works
    /// or the stage must end. Halves the batch size on out-of-memory.
    fn decode(
        &mut self,
        latents: &Tensor,
        keyframe: bool,
        times: &mut TransitionTimes,
    ) -> Result<Vec<Vec<u8>>, Ended> {
        let mut retry = Retry::default();
        let mut first_try = true;
        loop {
            if self.control.stopping() {
                return Err(Ended::Stopped);
            }
            let started = Instant::now();
            let (result, lock_wait) = self.model.decode(latents, keyframe);
            self.last_decode = first_try.then(|| started.elapsed().as_secs_f64());
            first_try = false;
            times.decode += started
                .elapsed()
                .saturating_sub(Duration::from_secs_f64(lock_wait));
            self.stats
                .decode_lock_wait
                .record(Duration::from_secs_f64(lock_wait));
            times.lock_wait_max = times.lock_wait_max.max(lock_wait);
            times.lock_acquisitions += 1;
            let count = latents.dim(0).unwrap_or(0);
            let error = match result {
                Ok(frames) if frames.len() == count => return Ok(frames),
                Ok(frames) => anyhow::anyhow!(
                    "generator decoded {} frames for {count} latents",
                    frames.len()
                ),
                Err(error) => error,
            };
            if count > 1 && self.batch_size > 1 && is_out_of_memory(&error) {
                let halved = self.batch_size / 2;
                log::warn!(
                    "{}",
                    events::DecodeOutOfMemory {
                        batch_size: self.batch_size,
                        retry_batch_size: halved,
                        error: format!("{error:#}"),
                    }
                );
                self.batch_size = halved;
                let frames = self.decode_split(latents, times);
                self.last_decode = None;
                return frames;
            }
            let event = events::GeneratorError {
                stage: "decode".into(),
                frames: Some(count),
                error: format!("{error:#}"),
                ..Default::default()
            };
            if !retry.failed(&self.control, &self.stats, event) {
                return Err(Ended::Stopped);
            }
        }
    }

    /// `latents` decoded in batches of the (just reduced) batch size.
    fn decode_split(
        &mut self,
        latents: &Tensor,
        times: &mut TransitionTimes,
    ) -> Result<Vec<Vec<u8>>, Ended> {
        let count = latents.dim(0)?;
        let mut frames = Vec::with_capacity(count);
        let mut start = 0;
        while start < count {
            let length = self.batch_size.max(1).min(count - start);
            let part = latents.narrow(0, start, length)?;
            frames.extend(self.decode(&part, false, times)?);
            start += length;
        }
        Ok(frames)
    }

    /// The size of a decoded frame: `expected`, or (a frame decoded just before the generator
    /// changed) another of the generator's sizes its bytes fit.
    fn size_of(&self, rgb: &[u8], expected: (u32, u32)) -> Result<(u32, u32), Ended> {
        let fits = |size: &(u32, u32)| rgb.len() == size.0 as usize * size.1 as usize * 3;
        std::iter::once(expected)
            .chain(self.sizes.iter().copied())
            .chain(std::iter::once(self.model.resolution()))
            .find(fits)
            .ok_or_else(|| {
                Ended::Failed(anyhow::anyhow!(
                    "the generator decoded a frame of {} bytes, which fits none of its sizes {:?}",
                    rgb.len(),
                    self.sizes
                ))
            })
    }

    /// Pushes decoded frames into the buffer (waiting while it is full); each is at `size` and
    /// at `fractions` of the way through the transition that starts at `self.walked`.
    fn push(
        &mut self,
        frames: Vec<Vec<u8>>,
        size: (u32, u32),
        fractions: &[f64],
        seq: &mut u64,
    ) -> Result<(), Ended> {
        self.stats
            .decoded_frames
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        for (rgb, fraction) in frames.into_iter().zip(fractions) {
            let (width, height) = self.size_of(&rgb, size)?;
            let frame = Arc::new(Frame {
                seq: *seq,
                width,
                height,
                rgb,
                at: self.walked + fraction,
            });
            *seq += 1;
            self.buffer.push(frame).map_err(|_| Ended::Stopped)?;
        }
        Ok(())
    }

    /// The ladder for this walk and generator: made anew (at its top rung) when the frames per
    /// transition, the fps or the generator changed (what it measured kept for the same
    /// generator).
    fn ensure_ladder(&mut self) {
        let live = &self.settings.live;
        let knobs = self.model.knobs();
        let mut ladder = self.adapt.ladder();
        if !ladder
            .as_ref()
            .is_some_and(|l| l.fits(live.frames_per_transition, live.fps, &knobs))
        {
            let bounds = AdaptConfig {
                enabled: self.adapt.enabled,
                ..self.bounds.clone()
            };
            self.sizes = knobs.sizes.clone();
            let now = self.stats.started.elapsed().as_secs_f64();
            let (frames, fps) = (live.frames_per_transition, live.fps);
            *ladder = Some(match ladder.take() {
                Some(old) => old.remade(frames, fps, knobs, &bounds, now),
                None => Ladder::new(frames, fps, knobs, &bounds, self.model.decoder_split(), now),
            });
        }
    }

    /// The ladder's rung now, its decode quality applied.
    fn rung(&mut self) -> Rung {
        let rung = self
            .adapt
            .ladder()
            .as_ref()
            .map(Ladder::rung)
            .expect("ensure_ladder runs first");
        if rung.quality != self.applied {
            self.model.set_decode_quality(rung.quality);
            self.applied = rung.quality;
        }
        rung
    }

    fn size_at(&self, quality: DecodeQuality) -> (u32, u32) {
        self.sizes
            .get(quality.size)
            .copied()
            .unwrap_or_else(|| self.model.resolution())
    }

    /// Latents to decode at once: the configured batch, or with adaptation as many as take
    /// about `BATCH_SECONDS` (one while the cost is unknown).
    fn batch_count(&self, quality: DecodeQuality) -> usize {
        let most = self.batch_size.max(1);
        if !self.adapt.enabled {
            return most;
        }
        let per_frame = self
            .adapt
            .ladder()
            .as_ref()
            .and_then(|ladder| ladder.seconds_per_frame(quality));
        adaptive_batch(per_frame, most)
    }

    /// A batch of `frames` at `quality` took `seconds` (`None`: retried, not a measurement):
    /// the ladder learns from it and may move, which is logged.
    fn after_batch(&mut self, quality: DecodeQuality, frames: usize, seconds: Option<f64>) {
        let now = self.stats.started.elapsed().as_secs_f64();
        let full_speed = self.adapt.speed() >= FULL_SPEED;
        let mut guard = self.adapt.ladder();
        let Some(ladder) = guard.as_mut() else {
            return;
        };
        if let Some(seconds) = seconds {
            ladder.observe_frames(quality, frames, seconds, now);
        }
        let change = ladder.decide(now, full_speed);
        self.adapt
            .set_headroom(ladder.headroom(ladder.index()).unwrap_or(0.0));
        // How long the next batch will take: playback spreads a thin buffer over two of them.
        if let Some(per_frame) = ladder.seconds_per_frame(ladder.rung().quality) {
            let count = adaptive_batch(Some(per_frame), self.batch_size.max(1));
            self.adapt.set_batch_seconds(count as f64 * per_frame);
        }
        if let Some(change) = change {
            let event = events::Adapt {
                from: ladder.label(change.from),
                to: ladder.label(change.to),
                rung: change.to,
                rungs: ladder.len(),
                reason: change.reason.into(),
                capacity_fps: change.capacity_fps,
                need_fps: change.need_fps,
                buffer_s: self.ahead_seconds(),
            };
            drop(guard);
            log::info!("{event}");
        }
    }

    /// Seconds of art decoded ahead of the screen, at the configured pace.
    fn ahead_seconds(&self) -> f64 {
        let newest = self.buffer.back().map_or(self.walked, |frame| frame.at);
        let live = &self.settings.live;
        ((newest - self.adapt.position()) * live.frames_per_transition as f64 / live.fps).max(0.0)
    }

    /// Frames 1..=N of the walk from `from` to `to`: the in-betweens in batches, then `to`.
    fn walk(&mut self, from: &Keyframe, to: &Keyframe, seq: &mut u64) -> Result<(), Ended> {
        self.stats.frames_from(*seq, &to.generator);
        self.ensure_ladder();
        let easing = self.settings.live.easing;
        let started = Instant::now();
        let mut rung = self.rung();
        let walk =
            match Transition::new(&from.latent, &to.latent, rung.frames_per_transition, easing) {
                Ok(walk) => walk,
                // Keyframes of two generators (a model's hand-over): their latents don't mix.
                Err(_) => return self.cross_fade(from, to, seq),
            };
        let mut times = TransitionTimes {
            slerp: started.elapsed(),
            ..TransitionTimes::default()
        };
        // The walk so far is `start` plus `taken` steps of the current rung's length; a new
        // rung walks the rest of the way in its own steps.
        let (mut start, mut taken, mut decoded) = (0.0, 0, 0);
        loop {
            let steps = rung.frames_per_transition.max(1) as f64;
            let count = self.batch_count(rung.quality);
            let fractions: Vec<f64> = (taken + 1..=taken + count)
                .map(|k| start + k as f64 / steps)
                .take_while(|&fraction| fraction < 1.0 - 0.5 / steps)
                .collect();
            if fractions.is_empty() {
                break;
            }
            let slerp_started = Instant::now();
            let latents = walk.latents_at(&fractions)?;
            times.slerp += slerp_started.elapsed();
            let frames = self.decode(&latents, false, &mut times)?;
            let seconds = self.last_decode;
            self.push(frames, self.size_at(rung.quality), &fractions, seq)?;
            taken += fractions.len();
            decoded += fractions.len();
            self.after_batch(rung.quality, fractions.len(), seconds);
            let next = self.rung();
            if next.frames_per_transition != rung.frames_per_transition {
                start += taken as f64 / steps;
                taken = 0;
            }
            rung = next;
        }
        let keyframe = self.decode(&to.latent.unsqueeze(0)?, true, &mut times)?;
        self.learn_keyframe_decode(rung.quality);
        let size = self.size_at(rung.quality);
        self.judge(to, &keyframe, size);
        self.push(keyframe, size, &[1.0], seq)?;
        self.walked += 1.0;
        self.log_timing(from, to, decoded + 1, &times);
        Ok(())
    }

    /// The last decode was a keyframe's at `quality`'s size.
    fn learn_keyframe_decode(&mut self, quality: DecodeQuality) {
        let now = self.stats.started.elapsed().as_secs_f64();
        if let (Some(seconds), Some(ladder)) = (self.last_decode, self.adapt.ladder().as_mut()) {
            ladder.observe_keyframe_decode(quality.size, seconds, now);
        }
    }

    /// Frames 1..=N from `from` to `to` blended picture to picture (their latents don't mix):
    /// the same length and easing as a walk, so a hand-over is an ordinary smooth transition.
    fn cross_fade(&mut self, from: &Keyframe, to: &Keyframe, seq: &mut u64) -> Result<(), Ended> {
        let frames = self.rung().frames_per_transition.max(1);
        let easing = self.settings.live.easing;
        let mut times = TransitionTimes::default();
        let size = self.size_at(self.applied);
        let first = self.decode(&from.latent.unsqueeze(0)?, true, &mut times)?;
        let last = self.decode(&to.latent.unsqueeze(0)?, true, &mut times)?;
        let (Some(a), Some(b)) = (first.first(), last.first()) else {
            return Ok(());
        };
        let (a_size, b_size) = (self.size_of(a, size)?, self.size_of(b, size)?);
        self.judge(to, &last, b_size);
        match resized(a, a_size, b_size) {
            Ok(a) => {
                let blend_started = Instant::now();
                let mut batch = Vec::with_capacity(self.batch_size.max(1));
                let mut fractions = Vec::with_capacity(batch.capacity());
                for step in 1..frames {
                    let fraction = step as f64 / frames as f64;
                    let mut out = vec![0; b.len()];
                    blend_into(&a, b, weight_of(ease(fraction, easing)), &mut out);
                    batch.push(out);
                    fractions.push(fraction);
                    if batch.len() == self.batch_size.max(1) {
                        self.push(std::mem::take(&mut batch), b_size, &fractions, seq)?;
                        fractions.clear();
                    }
                }
                self.push(batch, b_size, &fractions, seq)?;
                times.slerp = blend_started.elapsed();
            }
            Err(error) => log::warn!(
                "{}",
                events::GeneratorError {
                    stage: "decode".into(),
                    from: Some(from.index),
                    to: Some(to.index),
                    error: format!("{error:#} (cutting to the keyframe)"),
                    ..Default::default()
                }
            ),
        }
        self.push(last, b_size, &[1.0], seq)?;
        self.walked += 1.0;
        self.log_timing(from, to, frames, &times);
        Ok(())
    }

    /// Shows the walk's guard a decoded keyframe of `size`; passes on its re-anchor, if any.
    fn judge(&mut self, keyframe: &Keyframe, decoded: &[Vec<u8>], size: (u32, u32)) {
        if !self.model.guarded() {
            return;
        }
        let Some(rgb) = decoded.first() else {
            return;
        };
        let Ok((width, height)) = self.size_of(rgb, size) else {
            return;
        };
        let verdict = self.guard.observe(
            keyframe.index,
            keyframe.fresh,
            rgb,
            width as usize,
            height as usize,
        );
        if let Some(reanchor) = verdict {
            log::info!("{}", reanchor.event());
            self.stats.reanchors.fetch_add(1, Ordering::Relaxed);
            self.control.request_reanchor();
        }
    }

    fn log_timing(
        &mut self,
        from: &Keyframe,
        to: &Keyframe,
        frames: usize,
        times: &TransitionTimes,
    ) {
        self.stats
            .decode_time
            .record_many(times.decode, frames as u64);
        let level = self.buffer.level();
        let upscale = self.stats.upscale.snapshot();
        log::info!(
            "[TIMING] {}",
            events::Transition {
                from: from.index,
                to: to.index,
                frames,
                slerp_ms: times.slerp.as_secs_f64() * 1e3,
                decode_ms: times.decode.as_secs_f64() * 1e3,
                decode_ms_per_frame: times.decode.as_secs_f64() * 1e3 / frames as f64,
                upscale_ms_per_frame: upscale.mean_ms_since(self.upscale_mark),
                lock_wait_ms: times.lock_wait_max * 1e3,
                lock_acquisitions: times.lock_acquisitions,
                buffer_frames: level.frames,
                buffer_seconds: level.frames as f64 / self.settings.live.fps,
            }
        );
        self.upscale_mark = upscale;
    }

    pub(crate) fn run(mut self) -> anyhow::Result<()> {
        super::stage::yield_to_display();
        match self.decode_all() {
            Ok(()) | Err(Ended::Stopped) => Ok(()),
            Err(Ended::Failed(error)) => Err(error),
        }
    }

    fn decode_all(&mut self) -> Result<(), Ended> {
        let Ok(mut from) = self.input.recv() else {
            return Ok(());
        };
        let mut seq = 0u64;
        // The first picture: the first keyframe alone, before any transition.
        self.ensure_ladder();
        let quality = self.rung().quality;
        let mut times = TransitionTimes::default();
        let frames = self.decode(&from.latent.unsqueeze(0)?, true, &mut times)?;
        self.learn_keyframe_decode(quality);
        self.stats.decode_time.record_many(times.decode, 1);
        self.stats.frames_from(seq, &from.generator);
        let size = self.size_at(quality);
        self.judge(&from, &frames, size);
        self.push(frames, size, &[0.0], &mut seq)?;
        loop {
            let Ok(to) = self.input.recv() else {
                return Ok(());
            };
            if !self.control.wait_while_blanked() {
                return Err(Ended::Stopped);
            }
            if let Some(settings) = self.watcher.changed(&self.control) {
                self.guard.reconfigure(&settings.live.reanchor);
                self.settings = settings;
            }
            self.walk(&from, &to, &mut seq)?;
            from = to;
        }
    }
}
