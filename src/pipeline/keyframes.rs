//! The keyframe stage: asks the generator for one keyframe latent after another, each drifting
//! from the previous, and hands them to the decoder.
//!
//! Inputs: the run seed. Outputs: `Keyframe`s on a bounded channel (it blocks when the decoder is
//! behind, which is the backpressure from the frame buffer). Runs on the "keyframes" thread and
//! takes the model lock once per keyframe. A generator error is logged and retried with backoff;
//! the display keeps playing what is buffered meanwhile. Ends when told to stop or when the
//! decoder has gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle_core::Tensor;

use std::path::PathBuf;

use crate::generator::{keyframe_seed, KeyframeRequest, ModelLock};
use crate::pipeline::stage::Backoff;
use crate::pipeline::stats::PipelineStats;
use crate::resume::ResumeState;

#[derive(Debug, Clone)]
pub struct Keyframe {
    pub index: u64,
    pub seed: u64,
    pub latent: Tensor,
}

pub struct KeyframeStage {
    pub model: Arc<ModelLock>,
    pub run_seed: u64,
    pub output: SyncSender<Keyframe>,
    pub stats: Arc<PipelineStats>,
    pub stop: Arc<AtomicBool>,
    /// Where the walk's state is saved every `resume::SAVE_EVERY` keyframes (`None`: never).
    pub resume_path: Option<PathBuf>,
    /// A saved state to continue from.
    pub resume_from: Option<ResumeState>,
    /// Themes from reloads; generation pauses while the screen is blanked.
    pub live: Arc<crate::pipeline::control::Live>,
    pub watcher: crate::pipeline::control::Watcher,
}

impl KeyframeStage {
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut previous: Option<Tensor> = None;
        let mut backoff = Backoff::default();
        let mut index = 0u64;
        let mut resumed = false;
        if let Some(state) = self.resume_from.take() {
            match state.latent(self.model.device()) {
                Ok(latent) => {
                    log::info!(
                        "resume next_index={} seed={} generator={}",
                        state.next_index,
                        state.seed,
                        state.generator
                    );
                    previous = Some(latent);
                    index = state.next_index;
                    resumed = true;
                }
                Err(error) => log::warn!("resume_unusable error=\"{error:#}\": starting fresh"),
            }
        }
        while !self.stop.load(Ordering::Relaxed) {
            if self.live.blanked() {
                std::thread::sleep(crate::pipeline::control::PAUSE_POLL);
                continue;
            }
            if let Some(settings) = self.watcher.changed(&self.live) {
                self.model.lock().0.reconfigure(&settings.prompts);
            }
            let request = KeyframeRequest {
                index,
                seed: keyframe_seed(self.run_seed, index),
                previous: previous.clone(),
            };
            let (mut model, lock_wait) = self.model.lock();
            let started = Instant::now();
            let generated = model.keyframes(std::slice::from_ref(&request));
            let label = model
                .keyframe_label(index)
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            drop(model);
            let elapsed = started.elapsed();
            match generated
                .and_then(|mut latents| latents.pop().context("generator returned no keyframe"))
            {
                Ok(latent) => {
                    backoff.reset();
                    resumed = false;
                    self.stats.keyframes.fetch_add(1, Ordering::Relaxed);
                    self.stats.keyframe_time.record(elapsed);
                    log::info!(
                        "keyframe index={index} seed={} generator={} ms={:.2} lock_wait_ms={:.3}{label}",
                        request.seed,
                        self.model.name(),
                        elapsed.as_secs_f64() * 1e3,
                        lock_wait * 1e3
                    );
                    previous = Some(latent.clone());
                    if let Some(path) = self
                        .resume_path
                        .as_deref()
                        .filter(|_| (index + 1) % crate::resume::SAVE_EVERY == 0)
                    {
                        let saved = ResumeState::capture(
                            self.model.name(),
                            self.run_seed,
                            index + 1,
                            &latent,
                        )
                        .and_then(|state| state.save(path));
                        if let Err(error) = saved {
                            log::warn!("resume_save_failed error=\"{error:#}\"");
                        }
                    }
                    let keyframe = Keyframe {
                        index,
                        seed: request.seed,
                        latent,
                    };
                    if self.output.send(keyframe).is_err() {
                        return Ok(()); // the decoder has ended
                    }
                    index += 1;
                }
                Err(error) if resumed => {
                    // The saved latent doesn't fit this generator (its settings changed).
                    log::warn!("resume_unusable index={index} error=\"{error:#}\": starting fresh");
                    previous = None;
                    index = 0;
                    resumed = false;
                }
                Err(error) => {
                    self.stats.generator_errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "generator_error stage=keyframe index={index} retry_in_s={} error=\"{error:#}\"",
                        backoff.next_delay().as_secs()
                    );
                    if !backoff.sleep(&self.stop) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
