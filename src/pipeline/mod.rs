//! The display pipeline: four stage threads (keyframes, decoder, playback, pacer) from model to
//! screen, started, reconfigured and stopped as one.
//!
//! ```text
//! keyframes -> decoder -> queue -> playback (render) -> pacer -> sink
//! ```
//!
//! `Pipeline::spawn` sizes everything from the config and the generator's frame size
//! (`config::FrameBudget`, `control::Settings`), starts the threads and returns at once; the
//! first keyframe is on screen as soon as it is decoded. `reconfigure` applies a reload's live
//! settings to every stage (buffer capacity, thresholds, history and pace follow the fps).
//! `next_exit` reports a stage that ended: before `shutdown` any end is a failure. `shutdown`
//! stops the stages (stop flag, closed buffer) and waits for them a grace period; the pacer
//! dropping the sink restores the screen. Runs on the caller's (tokio) thread; the stages run on
//! their own named threads.

pub(crate) mod adapt;
pub(crate) mod control;
pub(crate) mod decoder;
pub(crate) mod guard;
pub(crate) mod keyframes;
pub(crate) mod pacer;
pub(crate) mod playback;
pub(crate) mod queue;
pub(crate) mod stage;
pub(crate) mod stats;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::config::{Config, FrameBudget};
use crate::events;
use crate::generator::{Generator, ModelLock};
use crate::render::Renderer;
use crate::sink::Sink;
use adapt::Adapt;
use control::{Control, LiveSettings, Settings, Watcher};
use decoder::DecodeStage;
use keyframes::KeyframeStage;
use pacer::Pacer;
use playback::{Playback, RecentFrames};
use queue::FrameQueue;
use stage::StageExit;
use stats::{PipelineStats, PlaybackState};

/// Screen buffers in circulation: one on screen, one ready, one being rendered.
const SCREEN_BUFFERS: usize = 3;
/// Keyframes made ahead of the decoder.
const KEYFRAMES_AHEAD: usize = 2;

pub(crate) struct Pipeline {
    pub control: Arc<Control>,
    pub stats: Arc<PipelineStats>,
    pub buffer: Arc<FrameQueue>,
    pub model: Arc<ModelLock>,
    /// Recently played frames (the snapshot comes from here).
    pub recent: Arc<RecentFrames>,
    /// Capacity-aware playback: the quality ladder, the art's speed and place.
    pub adapt: Arc<Adapt>,
    pub budget: FrameBudget,
    /// The config the stages started with: what a reload's restart-only keys are judged by.
    pub started_with: Config,
    exits: UnboundedReceiver<StageExit>,
    running: usize,
}

impl Pipeline {
    /// Starts the stages; `resume` is where the walk's place is saved (and read from).
    pub(crate) fn spawn(
        config: &Config,
        sink: Box<dyn Sink>,
        generator: Box<dyn Generator>,
        seed: u64,
        resume: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let model = Arc::new(ModelLock::new(generator));
        let (width, height) = model.resolution();
        let frame_bytes = width as usize * height as usize * 3;
        let budget = FrameBudget::plan(
            config.buffer.max_bytes,
            frame_bytes,
            config.decode.batch_size,
        )
        .map_err(|why| {
            anyhow!(
                "buffer.max-megabytes = {}: {why} ({width}x{height} frames)",
                config.buffer.max_bytes / (1024 * 1024)
            )
        })?;
        let settings = Settings::derive(config, &budget);
        let renderer = Renderer::new(
            sink.geometry(),
            (width, height),
            settings.live.fit,
            settings.live.rotation,
            config.display.upscale_filter,
        )
        .context("cannot render onto this screen")?;
        let (exit_tx, exits) = unbounded_channel();
        let pipeline = Self {
            buffer: Arc::new(FrameQueue::new(
                settings.buffer_frames,
                budget.buffer_bytes,
                frame_bytes,
            )),
            recent: Arc::new(RecentFrames::new(settings.recent_frames)),
            adapt: Arc::new(Adapt::new(config.adapt.enabled)),
            stats: Arc::new(PipelineStats::default()),
            control: Arc::new(Control::new(settings)),
            model,
            budget,
            started_with: config.clone(),
            exits,
            running: 0,
        };
        pipeline.log_start(&*sink, seed);
        pipeline.start_stages(sink, renderer, seed, resume, &exit_tx)
    }

    fn log_start(&self, sink: &dyn Sink, seed: u64) {
        let geometry = sink.geometry();
        let (internal_width, internal_height) = self.model.resolution();
        let settings = self.control.settings();
        log::info!(
            "{}",
            events::Start {
                version: env!("CARGO_PKG_VERSION").into(),
                generator: self.model.name(),
                seed,
                sink: sink.name().into(),
                width: geometry.width,
                height: geometry.height,
                stride: geometry.stride,
                format: geometry.format.to_string(),
                internal_width,
                internal_height,
                fps: settings.live.fps,
                frames_per_transition: settings.live.frames_per_transition,
                buffer_capacity_frames: self.buffer.level().capacity_frames,
                recent_frames: settings.recent_frames,
                decode_batch: self.budget.decode_batch,
                underrun_policy: self.started_with.buffer.underrun.name().into(),
            }
        );
    }

    /// The four stage threads, wired: keyframes -> decoder -> buffer -> playback -> pacer.
    fn start_stages(
        mut self,
        sink: Box<dyn Sink>,
        renderer: Renderer,
        seed: u64,
        resume: Option<PathBuf>,
        exits: &UnboundedSender<StageExit>,
    ) -> anyhow::Result<Self> {
        let control = &self.control;
        let settings = control.settings();
        let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(SCREEN_BUFFERS);
        for _ in 0..SCREEN_BUFFERS {
            let mut pixels = vec![0; sink.geometry().frame_bytes()];
            renderer.clear(&mut pixels);
            pool_tx
                .send(pixels)
                .expect("the pool channel has room for every screen buffer");
        }
        let (ready_tx, ready_rx) = sync_channel(1);
        let (keyframe_tx, keyframe_rx) = sync_channel(KEYFRAMES_AHEAD);
        let keyframes = KeyframeStage {
            model: Arc::clone(&self.model),
            run_seed: seed,
            output: keyframe_tx,
            stats: Arc::clone(&self.stats),
            control: Arc::clone(control),
            watcher: Watcher::new(control),
            resume_from: resume
                .as_deref()
                .and_then(|path| crate::resume::usable(path, &self.model.settled_name(), seed)),
            resume_path: resume,
            adapt: Arc::clone(&self.adapt),
            steps: None,
        };
        let decoder = DecodeStage {
            model: Arc::clone(&self.model),
            input: keyframe_rx,
            buffer: Arc::clone(&self.buffer),
            batch_size: self.budget.decode_batch,
            upscale_mark: self.stats.upscale.snapshot(),
            guard: guard::WalkGuard::new(settings.live.reanchor.clone()),
            stats: Arc::clone(&self.stats),
            control: Arc::clone(control),
            watcher: Watcher::new(control),
            settings: Arc::clone(&settings),
            adapt: Arc::clone(&self.adapt),
            bounds: self.started_with.adapt.clone(),
            applied: Default::default(),
            sizes: Vec::new(),
            walked: 0.0,
            last_decode: None,
        };
        let playback = Playback {
            buffer: Arc::clone(&self.buffer),
            renderer,
            pool: pool_rx,
            ready: ready_tx,
            recent: Arc::clone(&self.recent),
            stats: Arc::clone(&self.stats),
            control: Arc::clone(control),
            watcher: Watcher::new(control),
            settings: Arc::clone(&settings),
            policy: self.started_with.buffer.underrun,
            state: PlaybackState::Buffering,
            adapt: Arc::clone(&self.adapt),
            sized: Vec::new(),
            blended: None,
            scratch: Vec::new(),
            shown_first: false,
            budget: Default::default(),
            pictures: 0,
        };
        let pacer = Pacer {
            period: settings.period,
            ready: ready_rx,
            pool: pool_tx,
            sink,
            realtime: self.started_with.display.realtime,
            stats: Arc::clone(&self.stats),
            control: Arc::clone(control),
            watcher: Watcher::new(control),
        };
        let started = [
            stage::spawn("keyframes", exits, move || keyframes.run()),
            stage::spawn("decoder", exits, move || decoder.run()),
            stage::spawn("playback", exits, move || playback.run()),
            stage::spawn("pacer", exits, move || pacer.run()),
        ];
        self.running = started.iter().filter(|result| result.is_ok()).count();
        if let Some(Err(error)) = started.into_iter().find(Result::is_err) {
            // Those that did start end at once: nothing feeds them or takes their frames.
            self.control.stop();
            self.buffer.close();
            return Err(error);
        }
        Ok(self)
    }

    /// Applies a reload's live settings: the counts that follow from them are derived again
    /// (with the budget and buffer seconds the pipeline started with) and every stage takes
    /// them up at its next natural point. Returns the settings now in force.
    pub(crate) fn reconfigure(&self, live: &LiveSettings) -> Arc<Settings> {
        let mut config = self.started_with.clone();
        live.apply_to(&mut config);
        let settings = Settings::derive(&config, &self.budget);
        self.buffer.set_max_frames(settings.buffer_frames);
        self.recent.set_capacity(settings.recent_frames);
        self.control.update(settings);
        self.control.settings()
    }

    /// The next stage to end (name and result). Before `shutdown`, any end is a failure.
    pub(crate) async fn next_exit(&mut self) -> StageExit {
        match self.exits.recv().await {
            Some(exit) => {
                self.running -= 1;
                exit
            }
            None => std::future::pending().await,
        }
    }

    /// Stops the stages and waits up to `grace` for them; returns the first error among those
    /// that ended meanwhile.
    pub(crate) async fn shutdown(
        &mut self,
        grace: Duration,
    ) -> Option<(&'static str, anyhow::Error)> {
        self.control.stop();
        self.buffer.close();
        let mut first_error = None;
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        while self.running > 0 {
            tokio::select! {
                exit = self.exits.recv() => match exit {
                    Some((name, result)) => {
                        self.running -= 1;
                        if let (Err(error), None) = (result, &first_error) {
                            first_error = Some((name, error));
                        }
                    }
                    None => break,
                },
                _ = &mut deadline => {
                    log::warn!(
                        "{}",
                        events::StagesStillRunning {
                            count: self.running,
                            after_s: grace.as_secs(),
                        }
                    );
                    break;
                }
            }
        }
        first_error
    }
}
