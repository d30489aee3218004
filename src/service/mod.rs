//! `run`: wires the stages together, supervises them and shuts them down.
//!
//! Threads: "keyframes" -> "decoder" -> frame buffer -> "playback" -> "pacer" -> sink. This
//! function runs on tokio, which only orchestrates: the shutdown future (signals, a duration),
//! status.json, snapshots and the periodic stats log line, and the stage threads' exits. Any
//! stage ending before shutdown is a failure: the others are stopped and the error returned
//! (the service manager restarts us). Shutdown sets the stop flag and closes the frame buffer;
//! every stage then ends within a poll interval, and the pacer dropping the sink restores the
//! console.

pub mod schedule;
pub mod snapshot;
pub mod status;
pub mod watchdog;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use crate::config::{resolve_output_dir, Config, FrameBudget};
use crate::files::write_atomic;
use crate::generator::{Generator, ModelLock};
use crate::pipeline::control::{needs_restart, Live, LiveSettings, Watcher};
use crate::pipeline::decoder::DecodeStage;
use crate::pipeline::frame_buffer::FrameBuffer;
use crate::pipeline::keyframes::KeyframeStage;
use crate::pipeline::pacer::Pacer;
use crate::pipeline::playback::{Playback, PlaybackSettings, RecentFrames, MIN_PING_PONG_FRAMES};
use crate::pipeline::stats::PipelineStats;
use crate::render::Renderer;
use crate::service::status::{Status, StatusSource};
use crate::sink::Sink;

/// Screen buffers in circulation: one on screen, one ready, one being rendered.
const SCREEN_BUFFERS: usize = 3;
/// How long stages get to end after shutdown before we leave without them.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The `stats` log line comes this often.
const STATS_LOG_INTERVAL: Duration = Duration::from_secs(10);

type StageExit = (&'static str, anyhow::Result<()>);

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn spawn_stage(
    name: &'static str,
    exits: &UnboundedSender<StageExit>,
    body: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    let exits = exits.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
                Err(anyhow!(
                    "thread panicked: {}",
                    panic_message(panic.as_ref())
                ))
            });
            let _ = exits.send((name, result));
        })
        .with_context(|| format!("cannot start the {name} thread"))?;
    Ok(())
}

/// Runs a blocking write on tokio's blocking pool unless the previous one is still going (a
/// stuck disk must not pile up writes).
fn write_in_background(slot: &mut Option<JoinHandle<()>>, write: impl FnOnce() + Send + 'static) {
    if slot.as_ref().is_some_and(|handle| !handle.is_finished()) {
        return;
    }
    *slot = Some(tokio::task::spawn_blocking(write));
}

/// Where the run writes status.json and snapshot.png.
#[derive(Debug, Clone)]
pub struct OutputPaths {
    pub dir: PathBuf,
    pub status: PathBuf,
    pub snapshot: PathBuf,
    /// `None` when `output.resume` is off.
    pub resume: Option<PathBuf>,
}

impl OutputPaths {
    pub fn for_config(config: &Config) -> Self {
        let dir = resolve_output_dir(config.output.dir.as_deref());
        Self {
            dir: dir.clone(),
            status: dir.join("status.json"),
            snapshot: dir.join("snapshot.png"),
            resume: config
                .output
                .resume
                .then(|| dir.join(crate::resume::FILE_NAME)),
        }
    }
}

/// Runs the display until `shutdown` completes or a stage fails; returns the status as it was
/// when shutdown was requested (status.json gets the one after the stages stopped).
pub async fn run(
    config: Config,
    sink: Box<dyn Sink>,
    generator: Box<dyn Generator>,
    seed: u64,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Status> {
    let (_keep_open, reloads) = unbounded_channel();
    run_with_reloads(config, sink, generator, seed, shutdown, reloads).await
}

/// How often the night schedule is looked at (and at every reload).
const SCHEDULE_CHECK: Duration = Duration::from_secs(15);

/// `run`, taking new (already validated) configs from `reloads`: themes, fps, transitions,
/// schedule, fit and rotation apply at once, without reloading the model or blanking the screen;
/// changes that need a restart are logged and left alone.
pub async fn run_with_reloads(
    config: Config,
    sink: Box<dyn Sink>,
    generator: Box<dyn Generator>,
    seed: u64,
    shutdown: impl Future<Output = ()>,
    mut reloads: UnboundedReceiver<Config>,
) -> anyhow::Result<Status> {
    let paths = OutputPaths::for_config(&config);
    if let Some(dir) = paths.status.parent() {
        if let Err(error) = std::fs::create_dir_all(dir) {
            log::warn!(
                "output_dir_unavailable path={} error=\"{error}\"",
                dir.display()
            );
        }
    }
    let geometry = sink.geometry();
    let sink_description = sink.describe();
    let sink_name = sink.name().to_string();
    let framebuffer_report = sink.framebuffer_report();
    let fps = config.display.fps;
    let stats = Arc::new(PipelineStats::default());
    let model = Arc::new(ModelLock::new(generator));
    let (width, height) = model.resolution();
    let frame_bytes = width as usize * height as usize * 3;
    // One second of history: ping-pong sways over it, and resuming (which waits for the walk to
    // come back to the newest frame) takes at most that long.
    let budget = FrameBudget::plan(
        config.buffer.max_bytes,
        frame_bytes,
        (fps as usize).max(MIN_PING_PONG_FRAMES),
        config.decode.batch_size,
    )
    .map_err(|why| {
        anyhow!(
            "buffer.max-megabytes = {}: {why} ({width}x{height} frames)",
            config.buffer.max_bytes / (1024 * 1024)
        )
    })?;
    let frames_by_time = (config.buffer.seconds * fps).ceil() as usize;
    let buffer = Arc::new(FrameBuffer::new(
        frames_by_time,
        budget.buffer_bytes,
        frame_bytes,
    ));
    let renderer = Renderer::new(
        geometry,
        (width, height),
        config.display.fit,
        config.display.rotation,
        config.display.upscale_filter,
    )
    .context("cannot render onto this screen")?;
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::new(LiveSettings::from_config(&config)));
    let watcher = || Watcher::new(&live);

    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(SCREEN_BUFFERS);
    for _ in 0..SCREEN_BUFFERS {
        let mut pixels = vec![0; geometry.frame_bytes()];
        renderer.clear(&mut pixels);
        pool_tx
            .send(pixels)
            .expect("pool channel has room for every screen buffer");
    }
    let (ready_tx, ready_rx) = sync_channel(1);
    let (keyframe_tx, keyframe_rx) = sync_channel(2);
    let recent = Arc::new(RecentFrames::new(budget.recent_frames));
    let (exit_tx, mut exit_rx) = unbounded_channel::<StageExit>();

    log::info!(
        "start version={} generator={} seed={seed} {sink_description} internal_width={width} internal_height={height} fps={fps} frames_per_transition={} buffer_capacity_frames={} recent_frames={} decode_batch={} underrun_policy={:?}",
        env!("CARGO_PKG_VERSION"),
        model.name(),
        config.interpolation.frames_per_transition,
        buffer.level().capacity_frames,
        budget.recent_frames,
        budget.decode_batch,
        config.buffer.underrun,
    );

    let stage = KeyframeStage {
        model: Arc::clone(&model),
        run_seed: seed,
        output: keyframe_tx,
        stats: Arc::clone(&stats),
        stop: Arc::clone(&stop),
        resume_from: paths
            .resume
            .as_deref()
            .and_then(|path| crate::resume::usable(path, model.name(), seed)),
        resume_path: paths.resume.clone(),
        live: Arc::clone(&live),
        watcher: watcher(),
    };
    spawn_stage("keyframes", &exit_tx, move || stage.run())?;
    let stage = DecodeStage {
        model: Arc::clone(&model),
        input: keyframe_rx,
        buffer: Arc::clone(&buffer),
        frames_per_transition: config.interpolation.frames_per_transition,
        easing: config.interpolation.easing,
        batch_size: budget.decode_batch,
        fps,
        upscale_mark: stats.upscale.snapshot(),
        stats: Arc::clone(&stats),
        stop: Arc::clone(&stop),
        live: Arc::clone(&live),
        watcher: watcher(),
    };
    spawn_stage("decoder", &exit_tx, move || stage.run())?;
    let playback = Playback {
        settings: PlaybackSettings {
            fps,
            start_frames: (config.buffer.start_seconds * fps).ceil() as usize,
            resume_frames: (config.buffer.resume_seconds * fps).ceil() as usize,
            policy: config.buffer.underrun,
        },
        buffer: Arc::clone(&buffer),
        renderer,
        pool: pool_rx,
        ready: ready_tx,
        recent: Arc::clone(&recent),
        stats: Arc::clone(&stats),
        live: Arc::clone(&live),
        watcher: watcher(),
    };
    spawn_stage("playback", &exit_tx, move || playback.run())?;
    let pacer = Pacer {
        period: Duration::from_secs_f64(1.0 / fps),
        ready: ready_rx,
        pool: pool_tx,
        sink,
        realtime: config.display.realtime,
        stats: Arc::clone(&stats),
        stop: Arc::clone(&stop),
        live: Arc::clone(&live),
        watcher: watcher(),
    };
    spawn_stage("pacer", &exit_tx, move || pacer.run())?;
    drop(exit_tx);
    let mut running = 4;

    let mut status = StatusSource::new(
        Arc::clone(&stats),
        Arc::clone(&buffer),
        Arc::clone(&model),
        seed,
        sink_name,
        geometry,
        fps,
    );
    status.framebuffer = framebuffer_report;
    let mut status_tick = tokio::time::interval(config.output.status_interval);
    let mut stats_log_tick = tokio::time::interval(STATS_LOG_INTERVAL);
    stats_log_tick.tick().await; // the first tick is immediate; the first line comes after 10 s
    let mut snapshot_tick = tokio::time::interval(
        config
            .output
            .snapshot_interval
            .unwrap_or(Duration::from_secs(3600)),
    );
    let mut status_write: Option<JoinHandle<()>> = None;
    let mut snapshot_write: Option<JoinHandle<()>> = None;
    // A stage that fails makes its neighbours end too (their channels close): the first real
    // error is the cause, an early clean exit only a symptom.
    let mut failure: Option<(anyhow::Error, bool)> = None;
    let mut notifier = crate::service::watchdog::Notifier::from_env();
    let mut ready_sent = false;
    let watchdog_interval = crate::service::watchdog::Notifier::watchdog_interval();
    let mut watchdog_tick =
        tokio::time::interval(watchdog_interval.unwrap_or(Duration::from_secs(3600)));
    let mut deadlines_at_last_ping = 0;
    // Restart-only keys are judged against what the stages were started with, not the last
    // reload (whose restart-only changes never took effect).
    let started_with = config.clone();
    let mut schedule = config.schedule.clone();
    let mut schedule_tick = tokio::time::interval(SCHEDULE_CHECK);
    let mut schedule_now: Option<crate::service::schedule::Period> = None;
    let mut status_window = status.window(crate::service::status::STATUS_RATE_WINDOW);
    let mut stats_window = status.window(STATS_LOG_INTERVAL);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => {
                log::info!("shutdown requested");
                break;
            }
            Some((name, result)) = exit_rx.recv() => {
                running -= 1;
                record_exit(&mut failure, name, result);
                break;
            }
            _ = status_tick.tick() => {
                let last_status = status.collect(&mut status_window);
                if !ready_sent && last_status.frames_shown > 0 {
                    notifier.send("READY=1");
                    ready_sent = true;
                    log::info!("first_picture after_s={:.3}", last_status.first_picture_s.unwrap_or_default());
                    log::info!("ready frames_shown={} notify={}", last_status.frames_shown, notifier.is_active());
                }
                let path = paths.status.clone();
                match serde_json::to_vec_pretty(&last_status) {
                    Ok(json) => write_in_background(&mut status_write, move || {
                        if let Err(error) = write_atomic(&path, &json) {
                            log::warn!("status_write_failed path={} error=\"{error}\"", path.display());
                        }
                    }),
                    Err(error) => log::warn!("status_encode_failed error=\"{error}\""),
                }
            }
            _ = stats_log_tick.tick() => log::info!("{}", status.collect(&mut stats_window).log_line()),
            Some(new) = reloads.recv() => {
                let restart = needs_restart(&started_with, &new);
                if !restart.is_empty() {
                    log::warn!("reload_needs_restart keys=\"{}\": these keep their running values until a restart", restart.join(", "));
                }
                let settings = LiveSettings::from_config(&new);
                log::info!(
                    "reload applied=true fps={} fit={:?} rotation={} frames_per_transition={} easing={:?} themes={} schedule_periods={}",
                    settings.fps,
                    settings.fit,
                    settings.rotation.degrees(),
                    settings.frames_per_transition,
                    settings.easing,
                    settings.prompts.themes.len(),
                    settings.schedule.len()
                );
                status.target_fps = settings.fps;
                schedule = settings.schedule.clone();
                live.update(settings);
                schedule_tick.reset_immediately();
            }
            _ = schedule_tick.tick() => {
                let active = crate::service::schedule::active(&schedule, crate::service::schedule::local_minute_of_day()).copied();
                if active != schedule_now {
                    match &active {
                        Some(period) => log::info!("schedule action=\"{}\"", period.label()),
                        None => log::info!("schedule action=none"),
                    }
                    let (blank, brightness) = match active.map(|p| p.action) {
                        Some(crate::service::schedule::ScheduleAction::Blank) => (true, 1.0),
                        Some(crate::service::schedule::ScheduleAction::Dim(factor)) => (false, factor),
                        None => (false, 1.0),
                    };
                    live.set_brightness(brightness);
                    live.set_blanked(blank);
                    status.schedule = active.map(|p| p.label());
                    schedule_now = active;
                }
            }
            _ = watchdog_tick.tick(), if watchdog_interval.is_some() => {
                // Only a pacer that keeps reaching deadlines keeps the watchdog quiet.
                let deadlines = stats.deadlines.load(Ordering::Relaxed);
                if deadlines > deadlines_at_last_ping {
                    notifier.send("WATCHDOG=1");
                    deadlines_at_last_ping = deadlines;
                } else {
                    log::warn!("watchdog_withheld deadlines={deadlines}: the pacer is not presenting");
                }
            }
            _ = snapshot_tick.tick(), if config.output.snapshot_interval.is_some() => {
                let shown = stats.shown_seq.load(Ordering::Relaxed);
                if let Some(frame) = shown.checked_sub(1).and_then(|seq| recent.find(seq)) {
                    let path = paths.snapshot.clone();
                    write_in_background(&mut snapshot_write, move || {
                        if let Err(error) = crate::service::snapshot::write_png(&frame, &path) {
                            log::warn!("snapshot_write_failed error=\"{error:#}\"");
                        }
                    });
                }
            }
        }
    }

    // Figures as they were while running, before the stages wind down.
    let at_shutdown = status.collect(&mut status_window);
    notifier.send("STOPPING=1");
    stop.store(true, Ordering::Relaxed);
    buffer.close();
    let grace = tokio::time::sleep(STOP_GRACE);
    tokio::pin!(grace);
    while running > 0 {
        tokio::select! {
            exit = exit_rx.recv() => match exit {
                Some((name, result)) => {
                    running -= 1;
                    if failure.is_some() || result.is_err() {
                        record_exit(&mut failure, name, result);
                    }
                }
                None => break,
            },
            _ = &mut grace => {
                log::warn!("stages_still_running count={running} after_s={}: leaving them", STOP_GRACE.as_secs());
                break;
            }
        }
    }
    let final_status = status.collect(&mut stats_window);
    if let Ok(json) = serde_json::to_vec_pretty(&status.collect(&mut status_window)) {
        if let Err(error) = write_atomic(&paths.status, &json) {
            log::warn!(
                "status_write_failed path={} error=\"{error}\"",
                paths.status.display()
            );
        }
    }
    log::info!("{}", final_status.log_line());
    log::info!(
        "stopped frames_shown={} uptime_s={:.1}",
        final_status.frames_shown,
        final_status.uptime_s
    );
    match failure {
        Some((error, _)) => Err(error),
        None => Ok(at_shutdown),
    }
}

/// Keeps the most telling stage exit: the first error, else the first unexpected clean exit.
fn record_exit(
    failure: &mut Option<(anyhow::Error, bool)>,
    name: &str,
    result: anyhow::Result<()>,
) {
    let (error, is_error) = match result {
        Err(error) => (error, true),
        Ok(()) => (anyhow!("stage ended unexpectedly"), false),
    };
    log::error!("stage_failed stage={name} error=\"{error:#}\"");
    if failure
        .as_ref()
        .is_none_or(|(_, was_error)| is_error && !was_error)
    {
        *failure = Some((error.context(format!("the {name} stage stopped")), is_error));
    }
}
