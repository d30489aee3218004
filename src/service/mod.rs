//! The service: the tokio side of a running display. It starts the pipeline, then only
//! orchestrates: shutdown (signals, a duration), status.json, the periodic `stats` line,
//! snapshots, the night schedule, reloads and the systemd watchdog, each on its own timer in
//! `Service`. Any stage ending before shutdown is a failure: the others are stopped and the
//! error returned (the service manager restarts us). Runs on the tokio thread; blocking writes
//! go to tokio's blocking pool, never the display path.

pub(crate) mod reload;
pub(crate) mod schedule;
pub(crate) mod snapshot;
pub(crate) mod status_file;
pub(crate) mod watchdog;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;
use tokio::time::Interval;

use crate::checked_fs::write_atomic;
use crate::config::{resolve_output_dir, Config, Period, ScheduleAction};
use crate::events;
use crate::generator::Generator;
use crate::pipeline::Pipeline;
use crate::sink::Sink;
use status_file::{RateWindow, Status, StatusSource};
use watchdog::Notifier;

/// How long stages get to end after shutdown before we leave without them.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The `stats` log line comes this often.
const STATS_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often the night schedule is looked at (and at every reload).
const SCHEDULE_CHECK: Duration = Duration::from_secs(15);
/// A timer for a duty that is off.
const NEVER: Duration = Duration::from_secs(365 * 86_400);

/// Where the run writes status.json, snapshot.png and resume.json.
#[derive(Debug, Clone)]
pub(crate) struct OutputPaths {
    pub dir: PathBuf,
    pub status: PathBuf,
    pub snapshot: PathBuf,
    /// `None` when `output.resume` is off.
    pub resume: Option<PathBuf>,
    /// The log file (in `$LOGS_DIRECTORY` under systemd); `None` when `log.file` is off.
    pub log: Option<PathBuf>,
}

impl OutputPaths {
    pub(crate) fn for_config(config: &Config) -> Self {
        let dir = resolve_output_dir(config.output.dir.as_deref());
        Self {
            status: dir.join("status.json"),
            snapshot: dir.join("snapshot.png"),
            resume: config
                .output
                .resume
                .then(|| dir.join(crate::resume::FILE_NAME)),
            log: config
                .log
                .file
                .as_ref()
                .map(|file| crate::config::resolve_log_dir(&dir).join(file)),
            dir,
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

/// `run`, taking new (already validated) configs from `reloads`: the live settings apply at
/// once, without reloading the model or blanking the screen; restart-only changes are logged.
pub async fn run_with_reloads(
    config: Config,
    sink: Box<dyn Sink>,
    generator: Box<dyn Generator>,
    seed: u64,
    shutdown: impl Future<Output = ()>,
    mut reloads: UnboundedReceiver<Config>,
) -> anyhow::Result<Status> {
    let paths = OutputPaths::for_config(&config);
    if let Err(error) = crate::checked_fs::create_folder(&paths.dir) {
        log::warn!(
            "{}",
            events::OutputDirUnavailable {
                path: paths.dir.display().to_string(),
                error: error.to_string(),
            }
        );
    }
    let sink_info = status_file::SinkInfo::of(&*sink);
    let mut pipeline = Pipeline::spawn(&config, sink, generator, seed, paths.resume.clone())?;
    let mut status = StatusSource::new(&pipeline, sink_info, seed);
    status.files = status_file::FilesInfo {
        log: paths.log.clone(),
        snapshot: config
            .output
            .snapshot_interval
            .map(|_| paths.snapshot.clone()),
        status_interval_s: config.output.status_interval.as_secs_f64(),
    };
    let mut service = Service::new(&config, &pipeline, status, paths);
    tokio::pin!(shutdown);
    let failure = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            exit = pipeline.next_exit() => break Some(exit),
            _ = service.status_timer.tick() => service.write_status(),
            _ = service.stats_timer.tick() => service.log_stats(),
            Some(new) = reloads.recv() => service.reload(&pipeline, &new),
            _ = service.schedule_timer.tick() => service.follow_schedule(),
            _ = service.watchdog_timer.tick() => service.feed_watchdog(),
            _ = service.snapshot_timer.tick() => service.write_snapshot(),
        }
    };
    if failure.is_none() {
        log::info!("{}", events::ShutdownRequested {});
    }
    let at_shutdown = service.status.collect(&mut service.status_window);
    service.notifier.send("STOPPING=1");
    let late_failure = pipeline.shutdown(STOP_GRACE).await;
    service.finish();
    let cause = match (failure, late_failure) {
        // A stage that ended cleanly before shutdown did so because a neighbour went away (its
        // channel closed): the neighbour's error, arriving a moment later, is the cause.
        (Some((_, Ok(()))), Some((name, error))) | (None, Some((name, error))) => {
            Some((name, Err(error)))
        }
        (first, _) => first,
    };
    match cause {
        Some((name, result)) => Err(stage_failure(name, result)),
        None => Ok(at_shutdown),
    }
}

/// A stage's end before shutdown, as the run's error (an early clean end is one too).
fn stage_failure(name: &str, result: anyhow::Result<()>) -> anyhow::Error {
    let error = result
        .err()
        .unwrap_or_else(|| anyhow::anyhow!("stage ended unexpectedly"));
    log::error!(
        "{}",
        events::StageFailed {
            stage: name.into(),
            error: format!("{error:#}"),
        }
    );
    error.context(format!("the {name} stage stopped"))
}

/// An interval whose first tick comes after one period (not at once).
fn timer(period: Duration) -> Interval {
    after_a_pause_once(tokio::time::interval_at(
        tokio::time::Instant::now() + period,
        period,
    ))
}

/// A timer whose first tick is at once.
fn timer_now(period: Duration) -> Interval {
    after_a_pause_once(tokio::time::interval(period))
}

/// Ticks missed while the process was stopped (SIGSTOP, a suspended VM) or starved come as one,
/// then a whole period: tokio's default would fire them all at once (two identical `stats`
/// lines at the same instant after SIGCONT).
fn after_a_pause_once(mut interval: Interval) -> Interval {
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// The duties of the tokio side while the pipeline runs, each with its timer and state.
struct Service {
    status: StatusSource,
    /// status.json's rate window and the stats line's (see `status_file::RateWindow`).
    status_window: RateWindow,
    stats_window: RateWindow,
    status_timer: Interval,
    stats_timer: Interval,
    snapshot_timer: Interval,
    schedule_timer: Interval,
    watchdog_timer: Interval,
    status_write: PeriodicWrite,
    snapshot_write: PeriodicWrite,
    notifier: Notifier,
    ready_sent: bool,
    /// The first snapshot.png is still to come (snapshots on, no frame written yet).
    first_snapshot_pending: bool,
    deadlines_at_last_ping: u64,
    schedule_now: Option<Period>,
    recent: std::sync::Arc<crate::pipeline::playback::RecentFrames>,
    stats: std::sync::Arc<crate::pipeline::stats::PipelineStats>,
    control: std::sync::Arc<crate::pipeline::control::Control>,
}

impl Service {
    fn new(config: &Config, pipeline: &Pipeline, status: StatusSource, paths: OutputPaths) -> Self {
        let mut schedule_timer = timer_now(SCHEDULE_CHECK);
        schedule_timer.reset_immediately();
        let status_write = PeriodicWrite::new(&paths.status, status_write_failed);
        let snapshot_write = PeriodicWrite::new(&paths.snapshot, snapshot_write_failed);
        Self {
            status_window: status.window(status_file::STATUS_RATE_WINDOW),
            stats_window: status.window(STATS_LOG_INTERVAL),
            status,
            status_timer: timer_now(config.output.status_interval),
            stats_timer: timer(STATS_LOG_INTERVAL),
            snapshot_timer: timer_now(config.output.snapshot_interval.unwrap_or(NEVER)),
            schedule_timer,
            watchdog_timer: timer_now(Notifier::watchdog_interval().unwrap_or(NEVER)),
            status_write,
            snapshot_write,
            notifier: Notifier::from_env(),
            ready_sent: false,
            first_snapshot_pending: config.output.snapshot_interval.is_some(),
            deadlines_at_last_ping: 0,
            schedule_now: None,
            recent: std::sync::Arc::clone(&pipeline.recent),
            stats: std::sync::Arc::clone(&pipeline.stats),
            control: std::sync::Arc::clone(&pipeline.control),
        }
    }

    /// status.json now; the first time a frame is on screen, READY=1 and `first_picture`; the
    /// first snapshot.png as soon as there is a frame to take it from (not `snapshot-seconds`
    /// later: someone checking a new display over SSH sees the picture at once).
    fn write_status(&mut self) {
        let status = self.status.collect(&mut self.status_window);
        if !self.ready_sent && status.frames_shown > 0 {
            self.notifier.send("READY=1");
            self.ready_sent = true;
            log::info!(
                "{}",
                events::FirstPicture {
                    after_s: status.first_picture_s.unwrap_or_default(),
                }
            );
            log::info!(
                "{}",
                events::Ready {
                    frames_shown: status.frames_shown,
                    notify: self.notifier.is_active(),
                }
            );
        }
        // The first frame may reach the screen before it reaches the replay history the
        // snapshot is taken from: try again every status tick until it is written.
        if self.first_snapshot_pending && status.frames_shown > 0 {
            self.write_snapshot();
        }
        match serde_json::to_vec_pretty(&status) {
            Ok(json) => self
                .status_write
                .in_background(move |path| Ok(write_atomic(path, &json)?)),
            Err(error) => log::warn!(
                "{}",
                events::StatusEncodeFailed {
                    error: error.to_string()
                }
            ),
        }
    }

    fn log_stats(&mut self) {
        let status = self.status.collect(&mut self.stats_window);
        log::info!("{}", status.stats_event());
    }

    fn reload(&mut self, pipeline: &Pipeline, new: &Config) {
        reload::apply(pipeline, new);
        self.schedule_timer.reset_immediately();
    }

    /// The schedule's period now: dim through the brightness, blank through the control.
    fn follow_schedule(&mut self) {
        let periods = self.control.settings().live.schedule.clone();
        let active = schedule::active(&periods, schedule::local_minute_of_day()).copied();
        if active == self.schedule_now {
            return;
        }
        let action = active.map_or("none".to_string(), |p| p.label());
        log::info!("{}", events::Schedule { action });
        let (blank, brightness) = match active.map(|p| p.action) {
            Some(ScheduleAction::Blank) => (true, 1.0),
            Some(ScheduleAction::Dim(factor)) => (false, factor),
            None => (false, 1.0),
        };
        self.control.set_brightness(brightness);
        self.control.set_blanked(blank);
        self.status.schedule = active.map(|p| p.label());
        self.schedule_now = active;
    }

    /// WATCHDOG=1 only while the pacer keeps reaching deadlines.
    fn feed_watchdog(&mut self) {
        if Notifier::watchdog_interval().is_none() {
            return;
        }
        let deadlines = self.stats.deadlines.load(Ordering::Relaxed);
        if deadlines > self.deadlines_at_last_ping {
            self.notifier.send("WATCHDOG=1");
            self.deadlines_at_last_ping = deadlines;
        } else {
            log::warn!("{}", events::WatchdogWithheld { deadlines });
        }
    }

    /// snapshot.png of the frame on screen, if there is one to take it from yet.
    fn write_snapshot(&mut self) {
        let shown = self.stats.shown_seq.load(Ordering::Relaxed);
        // Playing frames are in the replay history; the start-up still stays at the buffer's
        // front until playback starts.
        let on_screen = shown.checked_sub(1).and_then(|seq| {
            self.recent
                .find(seq)
                .or_else(|| self.status.buffer.front().filter(|frame| frame.seq == seq))
        });
        let Some(frame) = on_screen else {
            return;
        };
        self.first_snapshot_pending = false;
        self.snapshot_write
            .in_background(move |path| snapshot::write_png(&frame, path));
    }

    /// The final status.json and log lines, after the stages stopped.
    fn finish(&mut self) {
        let final_status = self.status.collect(&mut self.status_window);
        if let Ok(json) = serde_json::to_vec_pretty(&final_status) {
            self.status_write.now(|path| Ok(write_atomic(path, &json)?));
        }
        self.log_stats();
        log::info!(
            "{}",
            events::Stopped {
                frames_shown: final_status.frames_shown,
                uptime_s: final_status.uptime_s,
            }
        );
    }
}

/// Runs a blocking write on tokio's blocking pool unless the previous one is still going (a
/// stuck disk must not pile up writes).
/// A file rewritten again and again (status.json, snapshot.png) on tokio's blocking pool, one
/// write at a time: while one is under way the next is skipped. A run of failures (a full disk)
/// is logged once, at its first, and its end once, with how many writes failed: never a line at
/// every tick.
struct PeriodicWrite {
    path: PathBuf,
    running: Option<JoinHandle<()>>,
    failures: std::sync::Arc<AtomicU64>,
    failed_event: fn(&Path, &anyhow::Error) -> String,
}

impl PeriodicWrite {
    fn new(path: &Path, failed_event: fn(&Path, &anyhow::Error) -> String) -> Self {
        Self {
            path: path.to_path_buf(),
            running: None,
            failures: std::sync::Arc::default(),
            failed_event,
        }
    }

    fn in_background(&mut self, write: impl FnOnce(&Path) -> anyhow::Result<()> + Send + 'static) {
        if self
            .running
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
        {
            return;
        }
        let (path, failures, failed_event) = (
            self.path.clone(),
            std::sync::Arc::clone(&self.failures),
            self.failed_event,
        );
        self.running = Some(tokio::task::spawn_blocking(move || {
            note_write(&path, &failures, failed_event, write(&path));
        }));
    }

    /// On this thread (the last write, after the stages stopped).
    fn now(&self, write: impl FnOnce(&Path) -> anyhow::Result<()>) {
        note_write(
            &self.path,
            &self.failures,
            self.failed_event,
            write(&self.path),
        );
    }
}

fn note_write(
    path: &Path,
    failures: &AtomicU64,
    failed_event: fn(&Path, &anyhow::Error) -> String,
    written: anyhow::Result<()>,
) {
    if let Some((level, line)) = judge_write(path, failures, failed_event, written) {
        log::log!(level, "{line}");
    }
}

/// The line a write's outcome deserves, if any: the first failure of a run, or the first
/// success after one.
fn judge_write(
    path: &Path,
    failures: &AtomicU64,
    failed_event: fn(&Path, &anyhow::Error) -> String,
    written: anyhow::Result<()>,
) -> Option<(log::Level, String)> {
    match written {
        Ok(()) => {
            let failed_writes = failures.swap(0, Ordering::Relaxed);
            (failed_writes > 0).then(|| {
                let recovered = events::OutputWriteRecovered {
                    path: path.display().to_string(),
                    failed_writes,
                };
                (log::Level::Info, recovered.to_string())
            })
        }
        Err(error) => (failures.fetch_add(1, Ordering::Relaxed) == 0)
            .then(|| (log::Level::Warn, failed_event(path, &error))),
    }
}

fn status_write_failed(path: &Path, error: &anyhow::Error) -> String {
    events::StatusWriteFailed {
        path: path.display().to_string(),
        error: format!("{error:#}"),
    }
    .to_string()
}

fn snapshot_write_failed(path: &Path, error: &anyhow::Error) -> String {
    events::SnapshotWriteFailed {
        path: path.display().to_string(),
        error: format!("{error:#}"),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_missed_during_a_stop_come_as_one() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut stats = timer(Duration::from_secs(2));
            // The process stopped for two and a half periods (this thread blocked, as SIGSTOP
            // would): two ticks were missed.
            std::thread::sleep(Duration::from_secs(5));
            stats.tick().await;
            // A burst would give the second missed tick at once; it comes a period later.
            let second = tokio::time::timeout(Duration::from_millis(500), stats.tick()).await;
            assert!(second.is_err(), "a second tick right after the stop");
        });
    }

    #[test]
    fn a_run_of_failed_writes_is_said_once_and_its_end_once_with_the_count() {
        let path = Path::new("/full/status.json");
        let failures = AtomicU64::new(0);
        let mut lines = Vec::new();
        let mut write = |ok: bool| {
            let written = if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("No space left on device"))
            };
            lines.extend(judge_write(path, &failures, status_write_failed, written));
        };
        write(true);
        for _ in 0..42 {
            write(false);
        }
        write(true);
        write(true);
        write(false);
        let lines: Vec<String> = lines
            .into_iter()
            .map(|(level, line)| format!("{level} {line}"))
            .collect();
        assert_eq!(
            lines,
            [
                "WARN status_write_failed path=/full/status.json error=\"No space left on device\" (said once until it can be written again)",
                "INFO output_write_recovered path=/full/status.json failed_writes=42",
                "WARN status_write_failed path=/full/status.json error=\"No space left on device\" (said once until it can be written again)",
            ]
        );
    }
}
