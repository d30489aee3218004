//! Writes status.json (which the `status` command reads): a snapshot of the running display for
//! people and scripts on the device, rewritten atomically (temp file + rename) every
//! `output.status-seconds`, so a reader never sees half a file. Built on the tokio thread from
//! the shared counters; written on tokio's blocking pool, never on the display path. A failed
//! write is logged and retried next time.
//!
//! Rates (frames shown and decoded per second) are over a window that belongs to each reader
//! (`RateWindow`): status.json's slides over the last `STATUS_RATE_WINDOW`, the `stats` log
//! line's covers the time since the previous line, so neither resets the other.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::frame::Geometry;
use crate::generator::ModelLock;
use crate::pipeline::adapt::{Adapt, AdaptStatus};
use crate::pipeline::control::Control;
use crate::pipeline::queue::FrameQueue;
use crate::pipeline::stats::PipelineStats;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub version: &'static str,
    pub updated_unix_s: u64,
    pub uptime_s: f64,
    pub seed: u64,
    /// The seed again as a string: it exceeds 2^53, where JSON readers such as jq round it.
    pub seed_text: String,
    /// The generator whose frames are on screen.
    pub generator: String,
    /// The model loading behind the built-in generator (`model_ready` when it takes over).
    pub generator_loading: Option<String>,
    /// Set when the display runs on something other than what was configured (a fallback).
    pub generator_note: Option<String>,
    pub sink: String,
    pub screen: Geometry,
    /// The display device as probed at start (the fbdev sink's framebuffer); null for others.
    pub framebuffer: Option<serde_json::Value>,
    /// The schedule period in force ("blank 23:00-07:00", "dim 0.30 21:00-23:00"), if any.
    pub schedule: Option<String>,
    pub internal_width: u32,
    pub internal_height: u32,
    pub state: &'static str,
    /// Seconds from the process start to the first frame on screen; null before.
    pub first_picture_s: Option<f64>,
    /// Seconds from the process start to the first picture after it that moved on (with
    /// adaptation: from the second decoded frame); null before.
    pub first_motion_s: Option<f64>,
    /// The art's speed: the share of its configured pace it moves at now (with adaptation;
    /// without, 1 while playing and 0 otherwise).
    pub animation_speed: f64,
    /// Where on the walk the screen is, in keyframe intervals from the first frame.
    pub walk_position: f64,
    /// The quality ladder (null without adaptation): the rung in use and its figures.
    pub adapt: Option<AdaptStatus>,
    pub target_fps: f64,
    /// New frames put on screen per second, over the reader's window (see `RateWindow`).
    pub achieved_fps: f64,
    pub frames_shown: u64,
    /// Seconds from start until playback began (the buffer reached start-seconds); null before.
    pub playing_since_s: Option<f64>,
    /// New frames shown since playback began.
    pub frames_shown_playing: u64,
    pub late_frames: u64,
    pub skipped_deadlines: u64,
    pub held_deadlines: u64,
    pub underruns: u64,
    pub underrun_frames: u64,
    pub buffer_frames: usize,
    pub buffer_capacity_frames: usize,
    pub buffer_seconds: f64,
    pub buffer_percentage: f64,
    pub buffer_megabytes: f64,
    pub jitter_p50_ms: f64,
    pub jitter_p99_ms: f64,
    pub jitter_max_ms: f64,
    /// Deadline to frame handed to the screen (after the blit, msync or vsync wait); on the drm
    /// sink, deadline (the vertical blank meant) to the page flip's completion.
    pub presented_p50_ms: f64,
    pub presented_p99_ms: f64,
    pub presented_max_ms: f64,
    /// Page flips completed (drm sink; 0 elsewhere): one per frame shown.
    pub flips: u64,
    /// Flips that missed their vertical blank (half a refresh late or more).
    pub flips_missed: u64,
    /// Refreshes each frame stays up on the drm sink (refresh / this = the fps shown); `None`
    /// on sinks without page flips.
    pub refreshes_per_frame: Option<u32>,
    pub model_lock_acquisitions: u64,
    pub model_lock_contended: u64,
    pub model_lock_avg_wait_ms: f64,
    pub model_lock_max_wait_ms: f64,
    /// "own" when the decoders have a lock of their own, "model" when they share the model's.
    pub decoder_lock: &'static str,
    /// The wait for that lock before each decode (p99: upper edge of a 1 us bucket).
    pub decode_lock_wait_p99_ms: f64,
    pub decode_lock_wait_max_ms: f64,
    pub keyframes: u64,
    pub keyframes_per_minute: f64,
    pub keyframe_ms: f64,
    pub decoded_frames: u64,
    /// Frames decoded per second, over the reader's window (see `RateWindow`).
    pub decode_fps: f64,
    pub decode_ms_per_frame: f64,
    pub upscale_ms_per_frame: f64,
    pub generator_errors: u64,
    /// The last generator error ("stage: error") and how long ago, if any.
    pub last_error: Option<String>,
    pub last_error_age_s: Option<f64>,
    /// Seconds since the last keyframe was made; null before the first.
    pub last_keyframe_age_s: Option<f64>,
    /// The display's process, and where its log and snapshot are (null: not written).
    pub pid: u32,
    pub log_file: Option<String>,
    pub snapshot_file: Option<String>,
    /// How often this file is rewritten: older than a few of these, the display is not running.
    pub status_interval_s: f64,
    /// Fresh keyframes asked for because the walk stagnated or degraded.
    pub reanchors: u64,
}

/// What status.json needs of the sink, taken before it moves to the pacer thread.
pub(crate) struct SinkInfo {
    pub name: String,
    pub screen: Geometry,
    pub device: Option<serde_json::Value>,
}

impl SinkInfo {
    pub(crate) fn of(sink: &dyn crate::sink::Sink) -> Self {
        Self {
            name: sink.name().into(),
            screen: sink.geometry(),
            device: sink.device_report(),
        }
    }
}

/// Where the display's files are, for status.json (`dreamframe status` prints them).
#[derive(Debug, Clone, Default)]
pub(crate) struct FilesInfo {
    pub log: Option<std::path::PathBuf>,
    pub snapshot: Option<std::path::PathBuf>,
    pub status_interval_s: f64,
}

/// What status.json is made from.
pub(crate) struct StatusSource {
    pub files: FilesInfo,
    pub stats: Arc<PipelineStats>,
    pub buffer: Arc<FrameQueue>,
    pub model: Arc<ModelLock>,
    /// The target fps, from the settings in force.
    pub control: Arc<Control>,
    pub adapt: Arc<Adapt>,
    pub seed: u64,
    pub sink: String,
    pub screen: Geometry,
    pub framebuffer: Option<serde_json::Value>,
    /// The schedule's period in force, as a label.
    pub schedule: Option<String>,
}

/// How far back status.json's rates look.
pub(crate) const STATUS_RATE_WINDOW: Duration = Duration::from_secs(10);

/// One reader's window for rates: counts sampled at each read, rates over the samples up to
/// `span` old (or since the start, for a young run).
pub(crate) struct RateWindow {
    span: Duration,
    /// (when, frames shown, frames decoded), oldest first.
    samples: VecDeque<(Instant, u64, u64)>,
}

impl RateWindow {
    pub(crate) fn new(span: Duration, started: Instant) -> Self {
        Self {
            span,
            samples: VecDeque::from([(started, 0, 0)]),
        }
    }

    /// (shown, decoded) per second from the oldest sample in the window to now.
    fn rates(&mut self, now: Instant, shown: u64, decoded: u64) -> (f64, f64) {
        // Keep exactly one sample at least `span` old as the window's start.
        while self.samples.len() > 1 && now.duration_since(self.samples[1].0) >= self.span {
            self.samples.pop_front();
        }
        let (since, shown_before, decoded_before) =
            *self.samples.front().expect("the window keeps its start");
        let seconds = now.duration_since(since).as_secs_f64().max(1e-6);
        self.samples.push_back((now, shown, decoded));
        (
            shown.saturating_sub(shown_before) as f64 / seconds,
            decoded.saturating_sub(decoded_before) as f64 / seconds,
        )
    }
}

impl StatusSource {
    pub(crate) fn new(pipeline: &crate::pipeline::Pipeline, sink: SinkInfo, seed: u64) -> Self {
        Self {
            stats: Arc::clone(&pipeline.stats),
            buffer: Arc::clone(&pipeline.buffer),
            model: Arc::clone(&pipeline.model),
            control: Arc::clone(&pipeline.control),
            adapt: Arc::clone(&pipeline.adapt),
            seed,
            sink: sink.name,
            screen: sink.screen,
            framebuffer: sink.device,
            schedule: None,
            files: FilesInfo::default(),
        }
    }

    /// A rate window of `span` starting at the run's start.
    pub(crate) fn window(&self, span: Duration) -> RateWindow {
        RateWindow::new(span, self.stats.started)
    }

    /// The status now; rates are over `window`.
    pub(crate) fn collect(&self, window: &mut RateWindow) -> Status {
        let s = &self.stats;
        let now = Instant::now();
        let shown = s.frames_shown.load(Ordering::Relaxed);
        let decoded = s.decoded_frames.load(Ordering::Relaxed);
        let (achieved_fps, decode_fps) = window.rates(now, shown, decoded);
        let target_fps = self.control.settings().live.fps;
        let level = self.buffer.level();
        let uptime = now.duration_since(s.started).as_secs_f64();
        let lock = self.model.stats.summary();
        let (internal_width, internal_height) = self.model.resolution();
        let keyframes = s.keyframes.load(Ordering::Relaxed);
        let last_error = s.last_error();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            updated_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            uptime_s: uptime,
            seed: self.seed,
            seed_text: self.seed.to_string(),
            generator: s.generator_on_screen().unwrap_or_else(|| self.model.name()),
            generator_loading: self.model.loading(),
            generator_note: self.model.note(),
            sink: self.sink.clone(),
            screen: self.screen,
            framebuffer: self.framebuffer.clone(),
            schedule: self.schedule.clone(),
            internal_width,
            internal_height,
            state: s.state().name(),
            first_picture_s: s.first_picture_s(),
            first_motion_s: s.first_motion_s(),
            animation_speed: if self.adapt.enabled {
                self.adapt.speed()
            } else if s.state() == crate::pipeline::stats::PlaybackState::Playing {
                1.0
            } else {
                0.0
            },
            walk_position: self.adapt.position(),
            adapt: self.adapt.enabled.then(|| self.adapt.status()).flatten(),
            target_fps,
            achieved_fps,
            frames_shown: shown,
            playing_since_s: s.playing_since_s(),
            frames_shown_playing: s.frames_shown_playing(),
            late_frames: s.late_frames.load(Ordering::Relaxed),
            skipped_deadlines: s.skipped_deadlines.load(Ordering::Relaxed),
            held_deadlines: s.held_deadlines.load(Ordering::Relaxed),
            underruns: s.underruns.load(Ordering::Relaxed),
            underrun_frames: s.underrun_frames.load(Ordering::Relaxed),
            buffer_frames: level.frames,
            buffer_capacity_frames: level.capacity_frames,
            buffer_seconds: level.frames as f64 / target_fps,
            buffer_percentage: 100.0 * level.frames as f64 / level.capacity_frames.max(1) as f64,
            buffer_megabytes: level.bytes as f64 / (1024.0 * 1024.0),
            jitter_p50_ms: s.lateness.quantile_ms(0.5),
            jitter_p99_ms: s.lateness.quantile_ms(0.99),
            jitter_max_ms: s.lateness.max_ms(),
            presented_p50_ms: s.presented_lateness.quantile_ms(0.5),
            presented_p99_ms: s.presented_lateness.quantile_ms(0.99),
            presented_max_ms: s.presented_lateness.max_ms(),
            flips: s.flips.load(Ordering::Relaxed),
            flips_missed: s.flips_missed.load(Ordering::Relaxed),
            refreshes_per_frame: Some(s.cadence.load(Ordering::Relaxed)).filter(|&n| n > 0),
            model_lock_acquisitions: lock.acquisitions,
            model_lock_contended: lock.contended,
            model_lock_avg_wait_ms: lock.avg_wait_ms,
            model_lock_max_wait_ms: lock.max_wait_ms,
            decoder_lock: if self.model.decoder_split() {
                "own"
            } else {
                "model"
            },
            decode_lock_wait_p99_ms: s.decode_lock_wait.quantile_ms(0.99),
            decode_lock_wait_max_ms: s.decode_lock_wait.max_ms(),
            keyframes,
            keyframes_per_minute: if uptime > 0.0 {
                keyframes as f64 * 60.0 / uptime
            } else {
                0.0
            },
            keyframe_ms: s.keyframe_time.mean_ms(),
            decoded_frames: decoded,
            decode_fps,
            decode_ms_per_frame: s.decode_time.mean_ms(),
            upscale_ms_per_frame: s.upscale.mean_ms(),
            generator_errors: s.generator_errors.load(Ordering::Relaxed),
            reanchors: s.reanchors.load(Ordering::Relaxed),
            last_error: last_error.as_ref().map(|(error, _)| error.clone()),
            last_error_age_s: last_error.map(|(_, age)| age),
            last_keyframe_age_s: s.last_keyframe_age_s(),
            pid: std::process::id(),
            log_file: self.files.log.as_ref().map(|p| p.display().to_string()),
            snapshot_file: self
                .files
                .snapshot
                .as_ref()
                .map(|p| p.display().to_string()),
            status_interval_s: self.files.status_interval_s,
        }
    }
}

impl Status {
    /// The periodic `stats` log event (the same names as in status.json).
    pub fn stats_event(&self) -> crate::events::Stats {
        crate::events::Stats {
            state: self.state.into(),
            achieved_fps: self.achieved_fps,
            target_fps: self.target_fps,
            frames_shown: self.frames_shown,
            late_frames: self.late_frames,
            skipped_deadlines: self.skipped_deadlines,
            held_deadlines: self.held_deadlines,
            underruns: self.underruns,
            underrun_frames: self.underrun_frames,
            buffer_frames: self.buffer_frames,
            buffer_seconds: self.buffer_seconds,
            buffer_percentage: self.buffer_percentage,
            jitter_p50_ms: self.jitter_p50_ms,
            jitter_p99_ms: self.jitter_p99_ms,
            jitter_max_ms: self.jitter_max_ms,
            presented_p99_ms: self.presented_p99_ms,
            model_lock_avg_wait_ms: self.model_lock_avg_wait_ms,
            model_lock_max_wait_ms: self.model_lock_max_wait_ms,
            model_lock_contended: self.model_lock_contended,
            decode_lock_wait_p99_ms: Some(self.decode_lock_wait_p99_ms),
            decode_fps: self.decode_fps,
            decode_ms_per_frame: self.decode_ms_per_frame,
            upscale_ms_per_frame: self.upscale_ms_per_frame,
            generator_errors: self.generator_errors,
            animation_speed: Some(self.animation_speed),
            adapt_rung: self.adapt.as_ref().map(|adapt| adapt.rung),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_window_measures_its_own_span() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut sliding = RateWindow::new(Duration::from_secs(10), start);
        let mut other = RateWindow::new(Duration::from_secs(10), start);
        // 30 frames shown per second throughout; decoding came in one burst of 100 at 5 s.
        for second in 1..=20 {
            let decoded = if second >= 5 { 100 } else { 0 };
            let (fps, decode_fps) = sliding.rates(at(second), 30 * second, decoded);
            assert!((fps - 30.0).abs() < 1e-9, "{second}: {fps}");
            if second <= 10 {
                assert!((decode_fps - decoded as f64 / second as f64).abs() < 1e-9);
            } else if second >= 15 {
                assert_eq!(decode_fps, 0.0, "the burst left the window at {second}");
            }
        }
        // A reader sampling rarely is not disturbed by the frequent one.
        let (fps, decode_fps) = other.rates(at(20), 600, 100);
        assert_eq!((fps, decode_fps), (30.0, 5.0));
        assert!(
            sliding.samples.len() <= 12,
            "bounded: {}",
            sliding.samples.len()
        );
    }
}
