//! The decode stage: turns the walk from keyframe to keyframe into frames. The very first
//! keyframe is decoded alone and pushed at once, so it is on screen before any transition is
//! decoded. Then, for each next keyframe, the in-between latents are slerped a batch at a time
//! (`decode.batch-size`, fewer when frames are large; see `config::FrameBudget`), each batch is
//! decoded under one acquisition of the decoders' own lock (the model lock where the generator
//! keeps its decoders; each wait goes into `decode_lock_wait`) and pushed into the frame buffer
//! before the next is made; the transition ends with the new keyframe itself, through the
//! generator's best decoder. So nothing holds more than one batch of frames outside the buffer.
//! Each decoded keyframe is shown to the walk's guard (`guard`), whose re-anchor is logged,
//! counted and passed to the keyframe stage.
//!
//! Inputs: `Keyframe`s from the keyframe stage; transition length and easing from the settings
//! (read once per transition). Outputs: `Frame`s into the frame buffer, which blocks this thread
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

use super::control::{Control, Settings, Watcher};
use super::frame_buffer::{Frame, FrameBuffer};
use super::guard::WalkGuard;
use super::interpolation::Transition;
use super::keyframes::Keyframe;
use super::stage::Retry;
use super::stats::{PipelineStats, TimingSnapshot};
use crate::events;
use crate::generator::ModelLock;

pub struct DecodeStage {
    pub model: Arc<ModelLock>,
    pub input: Receiver<Keyframe>,
    pub buffer: Arc<FrameBuffer>,
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
}

/// Whether a decode failed for want of (GPU) memory, which a smaller batch may avoid.
fn is_out_of_memory(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let text = cause.to_string().to_ascii_lowercase();
        text.contains("out of memory") || text.contains("out_of_memory")
    })
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
        loop {
            if self.control.stopping() {
                return Err(Ended::Stopped);
            }
            let started = Instant::now();
            let (result, lock_wait) = self.model.decode(latents, keyframe);
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
                return self.decode_split(latents, times);
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

    /// Pushes decoded frames into the buffer (waiting while it is full).
    fn push(&mut self, frames: Vec<Vec<u8>>, seq: &mut u64) -> Result<(), Ended> {
        let (width, height) = self.model.resolution();
        self.stats
            .decoded_frames
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        for rgb in frames {
            let frame = Arc::new(Frame {
                seq: *seq,
                width,
                height,
                rgb,
            });
            *seq += 1;
            self.buffer.push(frame).map_err(|_| Ended::Stopped)?;
        }
        Ok(())
    }

    /// Frames 1..=N of the walk from `from` to `to`: the in-betweens in batches, then `to`.
    fn walk(&mut self, from: &Keyframe, to: &Keyframe, seq: &mut u64) -> Result<(), Ended> {
        self.stats.frames_from(*seq, &to.generator);
        let frames = self.settings.live.frames_per_transition.max(1);
        let easing = self.settings.live.easing;
        let started = Instant::now();
        let walk = match Transition::new(&from.latent, &to.latent, frames, easing) {
            Ok(walk) => walk,
            // Keyframes of two generators (a model's hand-over): their latents don't mix.
            Err(_) => return self.cross_fade(from, to, seq),
        };
        let mut times = TransitionTimes {
            slerp: started.elapsed(),
            ..TransitionTimes::default()
        };
        let mut step = 1;
        while step < frames {
            let count = self.batch_size.max(1).min(frames - step);
            let slerp_started = Instant::now();
            let latents = walk.latents(step..step + count)?;
            times.slerp += slerp_started.elapsed();
            let decoded = self.decode(&latents, false, &mut times)?;
            self.push(decoded, seq)?;
            step += count;
        }
        let keyframe = self.decode(&to.latent.unsqueeze(0)?, true, &mut times)?;
        self.judge(to, &keyframe);
        self.push(keyframe, seq)?;
        self.log_timing(from, to, frames, &times);
        Ok(())
    }

    /// Frames 1..=N from `from` to `to` blended picture to picture (their latents don't mix):
    /// the same length and easing as a walk, so a hand-over is an ordinary smooth transition.
    fn cross_fade(&mut self, from: &Keyframe, to: &Keyframe, seq: &mut u64) -> Result<(), Ended> {
        let frames = self.settings.live.frames_per_transition.max(1);
        let easing = self.settings.live.easing;
        let mut times = TransitionTimes::default();
        let first = self.decode(&from.latent.unsqueeze(0)?, true, &mut times)?;
        let last = self.decode(&to.latent.unsqueeze(0)?, true, &mut times)?;
        self.judge(to, &last);
        let (Some(a), Some(b)) = (first.first(), last.first()) else {
            return Ok(());
        };
        if a.len() == b.len() {
            let blend_started = Instant::now();
            let mut batch = Vec::with_capacity(self.batch_size.max(1));
            for step in 1..frames {
                let t = super::interpolation::ease(step as f64 / frames as f64, easing);
                let weight = (t * 256.0).round() as u32;
                batch.push(
                    a.iter()
                        .zip(b)
                        .map(|(&x, &y)| {
                            ((x as u32 * (256 - weight) + y as u32 * weight + 128) >> 8) as u8
                        })
                        .collect(),
                );
                if batch.len() == self.batch_size.max(1) {
                    self.push(std::mem::take(&mut batch), seq)?;
                }
            }
            self.push(batch, seq)?;
            times.slerp = blend_started.elapsed();
        } else {
            log::warn!(
                "{}",
                events::GeneratorError {
                    stage: "decode".into(),
                    from: Some(from.index),
                    to: Some(to.index),
                    error: format!(
                        "frames of {} and {} bytes can't be blended (cutting to the keyframe)",
                        a.len(),
                        b.len()
                    ),
                    ..Default::default()
                }
            );
        }
        self.push(last, seq)?;
        self.log_timing(from, to, frames, &times);
        Ok(())
    }

    /// Shows the walk's guard a decoded keyframe; passes on its re-anchor, if any.
    fn judge(&mut self, keyframe: &Keyframe, decoded: &[Vec<u8>]) {
        if !self.model.guarded() {
            return;
        }
        let (width, height) = self.model.resolution();
        let Some(rgb) = decoded.first() else {
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

    pub fn run(mut self) -> anyhow::Result<()> {
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
        let mut times = TransitionTimes::default();
        let frames = self.decode(&from.latent.unsqueeze(0)?, true, &mut times)?;
        self.stats.decode_time.record_many(times.decode, 1);
        self.stats.frames_from(seq, &from.generator);
        self.judge(&from, &frames);
        self.push(frames, &mut seq)?;
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
