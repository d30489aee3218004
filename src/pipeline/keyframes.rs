//! The keyframe stage: asks the generator for one keyframe latent after another, each drifting
//! from the previous, and hands them to the decoder.
//!
//! Inputs: the run seed, a saved place to resume from, themes from reloads. Outputs:
//! `Keyframe`s on a bounded channel (it blocks when the decoder is behind, which is the
//! backpressure from the frame queue) and resume.json every `resume::SAVE_EVERY` keyframes.
//! Runs on the "keyframes" thread and takes the model lock once per keyframe; pauses while the
//! schedule blanks the screen. When the walk's guard asks (`Control::take_reanchor`), the next
//! keyframe is made fresh, with the generator's next theme. While a model loads behind the
//! generator (`generator::handover`) the walk is neither resumed nor saved; the saved walk
//! continues from the model's first keyframe. A generator error is logged and retried with
//! backoff while the display plays what is buffered; a resumed latent that doesn't fit the
//! generator means a fresh start, with a warning naming the keys that shape the latent. Ends when told to stop or when the decoder has gone.

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle_core::Tensor;

use super::adapt::Adapt;
use super::control::{Control, Watcher};
use super::stage::Retry;
use super::stats::PipelineStats;
use crate::events;
use crate::generator::{keyframe_seed, KeyframeRequest, ModelLock};
use crate::resume::ResumeState;

#[derive(Debug, Clone)]
pub(crate) struct Keyframe {
    pub index: u64,
    pub latent: Tensor,
    /// Made from nothing (the first keyframe, or a re-anchor), not drifted from the previous.
    pub fresh: bool,
    /// The generator that made it (another one after a model's hand-over).
    pub generator: String,
}

pub(crate) struct KeyframeStage {
    pub model: Arc<ModelLock>,
    pub run_seed: u64,
    pub output: SyncSender<Keyframe>,
    pub stats: Arc<PipelineStats>,
    pub control: Arc<Control>,
    pub watcher: Watcher,
    /// Where the walk's state is saved every `resume::SAVE_EVERY` keyframes (`None`: never).
    pub resume_path: Option<PathBuf>,
    /// A saved state to continue from.
    pub resume_from: Option<ResumeState>,
    /// The quality ladder: keyframe steps to use, and what keyframes cost.
    pub adapt: Arc<Adapt>,
    /// The steps the generator was last told to use.
    pub steps: Option<usize>,
}

/// The walk so far: the next index and the keyframe to drift from.
struct Walk {
    index: u64,
    previous: Option<Tensor>,
    /// The walk continues a saved one and has not produced a keyframe yet.
    resumed: bool,
}

/// Why a saved walk did not fit, for a person: which keys shape the latent, then the cause.
fn unfitting_resume(generator: &str, shape: Option<Vec<usize>>, error: &anyhow::Error) -> String {
    let keys = if generator.starts_with("stable-diffusion") {
        "model.preset, model.width or model.height"
    } else {
        "cppn.latent-size"
    };
    format!(
        "the saved walk's latent (shape {shape:?}) does not fit {generator}: {keys} changed since it was saved, or another version of dreamframe saved it; starting a fresh walk ({error:#})"
    )
}

impl KeyframeStage {
    /// The saved walk to continue, if there is one that fits; else `current` goes on.
    fn start(&mut self, current: Walk) -> Walk {
        let Some(state) = self.resume_from.take() else {
            return current;
        };
        match state.latent(&self.model.device()) {
            Ok(latent) => {
                log::info!(
                    "{}",
                    events::Resume {
                        next_index: state.next_index,
                        seed: state.seed,
                        generator: state.generator.clone(),
                    }
                );
                Walk {
                    index: state.next_index,
                    previous: Some(latent),
                    resumed: true,
                }
            }
            Err(error) => {
                log::warn!(
                    "{}",
                    events::ResumeUnusable {
                        index: None,
                        error: format!("{error:#}"),
                    }
                );
                current
            }
        }
    }

    /// One keyframe from the generator, with its time, lock wait and theme.
    fn generate(
        &mut self,
        walk: &mut Walk,
    ) -> (KeyframeRequest, anyhow::Result<Tensor>, events::Keyframe) {
        let lock = Arc::clone(&self.model);
        let (mut model, lock_wait) = lock.lock();
        // A model loaded behind the generator takes over here; a saved walk then continues
        // (at once where nothing loads) from this very keyframe.
        model.prepare();
        self.model.refresh(model.as_ref());
        if self.resume_from.is_some() && !self.model.warming_up() {
            let current = std::mem::replace(
                walk,
                Walk {
                    index: 0,
                    previous: None,
                    resumed: false,
                },
            );
            *walk = self.start(current);
        }
        let request = KeyframeRequest {
            index: walk.index,
            seed: keyframe_seed(self.run_seed, walk.index),
            previous: walk.previous.clone(),
        };
        // The ladder's keyframe steps, where it has lowered them.
        let steps = self.adapt.steps();
        if let Some(count) = steps.filter(|_| steps != self.steps) {
            model.set_steps(count);
        }
        self.steps = steps;
        let started = Instant::now();
        let generated = model
            .keyframes(std::slice::from_ref(&request))
            .and_then(|mut latents| latents.pop().context("generator returned no keyframe"));
        if generated.is_ok() {
            self.adapt.observe_keyframe(
                steps,
                started.elapsed().as_secs_f64(),
                self.stats.started.elapsed().as_secs_f64(),
            );
        }
        let label = model.keyframe_label(walk.index);
        self.model.refresh(model.as_ref());
        let event = events::Keyframe {
            index: walk.index,
            seed: request.seed,
            generator: self.model.name(),
            ms: started.elapsed().as_secs_f64() * 1e3,
            lock_wait_ms: lock_wait * 1e3,
            theme: label.map(|(theme, _)| theme),
            prompt: label.map(|(_, prompt)| events::logged_prompt(prompt)),
        };
        (request, generated, event)
    }

    fn save_every_few(&self, next_index: u64, latent: &Tensor) {
        // Not while a model loads: the interim walk must not overwrite the model's saved one.
        let Some(path) = self
            .resume_path
            .as_deref()
            .filter(|_| next_index % crate::resume::SAVE_EVERY == 0 && !self.model.warming_up())
        else {
            return;
        };
        let saved = ResumeState::capture(&self.model.name(), self.run_seed, next_index, latent)
            .and_then(|state| state.save(path));
        if let Err(error) = saved {
            log::warn!(
                "{}",
                events::ResumeSaveFailed {
                    error: format!("{error:#}")
                }
            );
        }
    }

    pub(crate) fn run(mut self) -> anyhow::Result<()> {
        super::stage::yield_to_display();
        let mut walk = Walk {
            index: 0,
            previous: None,
            resumed: false,
        };
        let mut retry = Retry::default();
        while self.control.wait_while_blanked() {
            if let Some(settings) = self.watcher.changed(&self.control) {
                self.model.lock().0.reconfigure(&settings.live.prompts);
            }
            if self.control.take_reanchor() {
                // The walk's guard judged it stagnant or degraded: start afresh, next theme.
                walk.previous = None;
                self.model.lock().0.next_theme();
            }
            let (request, generated, event) = self.generate(&mut walk);
            match generated {
                Ok(latent) => {
                    retry.succeeded();
                    self.stats
                        .keyframe_made(std::time::Duration::from_secs_f64(event.ms / 1e3));
                    log::info!("{event}");
                    self.save_every_few(walk.index + 1, &latent);
                    walk = Walk {
                        index: walk.index + 1,
                        previous: Some(latent.clone()),
                        resumed: false,
                    };
                    let keyframe = Keyframe {
                        index: request.index,
                        latent,
                        fresh: request.previous.is_none(),
                        generator: event.generator.clone(),
                    };
                    if self.output.send(keyframe).is_err() {
                        return Ok(()); // the decoder has ended
                    }
                }
                Err(error) if walk.resumed => {
                    // The saved latent doesn't fit this generator (its settings changed).
                    let shape = walk.previous.as_ref().map(|l| l.dims().to_vec());
                    log::warn!(
                        "{}",
                        events::ResumeUnusable {
                            index: Some(walk.index),
                            error: unfitting_resume(&self.model.name(), shape, &error),
                        }
                    );
                    walk = Walk {
                        index: 0,
                        previous: None,
                        resumed: false,
                    };
                }
                Err(error) => {
                    let event = events::GeneratorError {
                        stage: "keyframe".into(),
                        index: Some(walk.index),
                        error: format!("{error:#}"),
                        ..Default::default()
                    };
                    if !retry.failed(&self.control, &self.stats, event) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
