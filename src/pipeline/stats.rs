//! Shared counters of the running pipeline: written by the stage threads with relaxed atomics
//! (no locks, no allocation, so the pacer may record), read by the status and log writers.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A fixed-bucket latency histogram: 1 us buckets up to 20 ms, one overflow bucket. Recording is
/// one atomic add, so the pacer thread can record every deadline.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max_ns: AtomicU64,
}

const BUCKET_NS: u64 = 1_000;
const BUCKETS: usize = 20_000;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub(crate) fn record(&self, value: Duration) {
        let ns = value.as_nanos().min(u64::MAX as u128) as u64;
        let index = ((ns / BUCKET_NS) as usize).min(BUCKETS);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The value below which `quantile` (0..=1) of the records lie, in milliseconds (upper bucket
    /// edge, so it never understates).
    pub(crate) fn quantile_ms(&self, quantile: f64) -> f64 {
        let total: u64 = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        if total == 0 {
            return 0.0;
        }
        let target = ((total as f64) * quantile).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= target {
                if index == BUCKETS {
                    return self.max_ms();
                }
                return (((index as u64 + 1) * BUCKET_NS) as f64 / 1e6).min(self.max_ms());
            }
        }
        self.max_ms()
    }

    pub(crate) fn max_ms(&self) -> f64 {
        self.max_ns.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Count, total and maximum of a repeated duration.
#[derive(Default)]
pub(crate) struct Timing {
    count: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TimingSnapshot {
    pub count: u64,
    pub total_ns: u64,
}

impl TimingSnapshot {
    /// Mean in milliseconds of the records between `earlier` and `self`.
    pub(crate) fn mean_ms_since(&self, earlier: TimingSnapshot) -> f64 {
        let count = self.count.saturating_sub(earlier.count);
        if count == 0 {
            0.0
        } else {
            self.total_ns.saturating_sub(earlier.total_ns) as f64 / count as f64 / 1e6
        }
    }
}

impl Timing {
    pub(crate) fn record(&self, value: Duration) {
        self.record_many(value, 1);
    }

    /// Records `count` events that took `value` together.
    pub(crate) fn record_many(&self, value: Duration, count: u64) {
        let ns = value.as_nanos() as u64;
        self.count.fetch_add(count, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns / count.max(1), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> TimingSnapshot {
        TimingSnapshot {
            count: self.count.load(Ordering::Relaxed),
            total_ns: self.total_ns.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn mean_ms(&self) -> f64 {
        self.snapshot().mean_ms_since(TimingSnapshot::default())
    }

    #[cfg(test)]
    pub(crate) fn max_ms(&self) -> f64 {
        self.max_ns.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// What playback is doing, for status.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PlaybackState {
    /// Filling the buffer before playback starts (the first frame is shown as a still).
    Buffering = 0,
    Playing = 1,
    /// The buffer ran dry; the underrun policy decides what is shown until it refills.
    Underrun = 2,
}

impl PlaybackState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PlaybackState::Buffering => "buffering",
            PlaybackState::Playing => "playing",
            PlaybackState::Underrun => "underrun",
        }
    }
}

/// Generator changes remembered for `generator_on_screen` (the buffer holds seconds: a few
/// changes at most can be between the decoder and the screen).
const GENERATOR_CHANGES_KEPT: usize = 8;

pub(crate) struct PipelineStats {
    pub started: Instant,
    // Pacer.
    /// Deadlines the pacer has reached.
    pub deadlines: AtomicU64,
    /// New frames put on screen (a held frame counts once).
    pub frames_shown: AtomicU64,
    /// Frames presented more than `LATE_THRESHOLD` after their deadline.
    pub late_frames: AtomicU64,
    /// Deadlines passed over because the pacer woke after the next one was already due.
    pub skipped_deadlines: AtomicU64,
    /// Deadlines where playback wanted a frame and none was ready (the last one stayed).
    pub held_deadlines: AtomicU64,
    /// Lateness of each deadline's wake-up against the deadline.
    pub lateness: Histogram,
    /// Deadline to the end of `present` (the frame handed to the screen), for new frames; on a
    /// sink that flips on the vertical blank, deadline to the flip's completion.
    pub presented_lateness: Histogram,
    /// Page flips completed (vertical-blank sinks): one per frame shown.
    pub flips: AtomicU64,
    /// Flips that completed half a refresh or more after their deadline (a vertical blank
    /// missed: the frame before stayed up a refresh longer).
    pub flips_missed: AtomicU64,
    /// Refreshes each frame stays on screen on a vertical-blank sink (0: not one).
    pub cadence: AtomicU32,
    /// 1 + sequence number of the frame on screen (0: nothing shown yet).
    pub shown_seq: AtomicU64,
    // Playback.
    state: AtomicU8,
    /// Times the buffer ran dry while playing.
    pub underruns: AtomicU64,
    /// Frames shown by the underrun policy (replayed or stretched) instead of new ones.
    pub underrun_frames: AtomicU64,
    pub upscale: Timing,
    // Producers.
    pub keyframes: AtomicU64,
    pub keyframe_time: Timing,
    pub decoded_frames: AtomicU64,
    /// Decode time per frame.
    pub decode_time: Timing,
    /// How long each decode waited for its lock (a keyframe in the way shows here).
    pub decode_lock_wait: Histogram,
    pub generator_errors: AtomicU64,
    /// Fresh keyframes the walk's guard asked for (`pipeline::guard`).
    pub reanchors: AtomicU64,
    /// Nanoseconds from `started` to the start of playback (0: not yet).
    playing_since_ns: AtomicU64,
    /// `frames_shown` when playback started.
    frames_shown_at_play: AtomicU64,
    /// Nanoseconds from the process start to the first frame on screen (0: not yet).
    first_picture_ns: AtomicU64,
    /// Nanoseconds from the process start to the first frame rendered that moves on from the
    /// first picture (0: not yet).
    first_motion_ns: AtomicU64,
    /// The pacer's deadline period in nanoseconds (a whole number of refreshes on a flipping
    /// screen; 0 until the pacer starts).
    pub pacer_period_ns: AtomicU64,
    /// Nanoseconds from `started` to the last keyframe made (0: none yet).
    last_keyframe_ns: AtomicU64,
    /// The last generator error and when it happened (for `dreamframe status`).
    last_error: Mutex<Option<(Instant, String)>>,
    /// Where each generator's frames begin: (first frame's sequence number, generator), oldest
    /// first, the last `GENERATOR_CHANGES_KEPT`.
    generator_changes: Mutex<std::collections::VecDeque<(u64, String)>>,
}

/// A frame presented later than this after its deadline counts as late.
pub(crate) const LATE_THRESHOLD: Duration = Duration::from_millis(2);

impl Default for PipelineStats {
    fn default() -> Self {
        // Time-to-first-picture counts from the process start; where `main` did not mark it
        // (tests, the bench), from here.
        crate::process_start();
        Self {
            started: Instant::now(),
            deadlines: AtomicU64::new(0),
            frames_shown: AtomicU64::new(0),
            late_frames: AtomicU64::new(0),
            skipped_deadlines: AtomicU64::new(0),
            held_deadlines: AtomicU64::new(0),
            lateness: Histogram::default(),
            presented_lateness: Histogram::default(),
            flips: AtomicU64::new(0),
            flips_missed: AtomicU64::new(0),
            cadence: AtomicU32::new(0),
            decode_lock_wait: Histogram::default(),
            shown_seq: AtomicU64::new(0),
            state: AtomicU8::new(PlaybackState::Buffering as u8),
            underruns: AtomicU64::new(0),
            underrun_frames: AtomicU64::new(0),
            upscale: Timing::default(),
            keyframes: AtomicU64::new(0),
            keyframe_time: Timing::default(),
            decoded_frames: AtomicU64::new(0),
            decode_time: Timing::default(),
            generator_errors: AtomicU64::new(0),
            reanchors: AtomicU64::new(0),
            playing_since_ns: AtomicU64::new(0),
            frames_shown_at_play: AtomicU64::new(0),
            first_picture_ns: AtomicU64::new(0),
            first_motion_ns: AtomicU64::new(0),
            pacer_period_ns: AtomicU64::new(0),
            last_keyframe_ns: AtomicU64::new(0),
            last_error: Mutex::new(None),
            generator_changes: Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

impl PipelineStats {
    pub(crate) fn state(&self) -> PlaybackState {
        match self.state.load(Ordering::Relaxed) {
            1 => PlaybackState::Playing,
            2 => PlaybackState::Underrun,
            _ => PlaybackState::Buffering,
        }
    }

    pub(crate) fn set_state(&self, state: PlaybackState) {
        if state == PlaybackState::Playing && self.playing_since_ns.load(Ordering::Relaxed) == 0 {
            self.frames_shown_at_play
                .store(self.frames_shown.load(Ordering::Relaxed), Ordering::Relaxed);
            self.playing_since_ns.store(
                self.started.elapsed().as_nanos().max(1) as u64,
                Ordering::Relaxed,
            );
        }
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Notes that a frame reached the screen; the first one sets time-to-first-picture.
    pub(crate) fn record_presented(&self) {
        if self.frames_shown.fetch_add(1, Ordering::Relaxed) == 0 {
            let since_start = crate::process_start().elapsed().as_nanos().max(1) as u64;
            self.first_picture_ns.store(since_start, Ordering::Relaxed);
        }
    }

    /// Seconds from the process start to the first frame on screen, once there was one.
    pub(crate) fn first_picture_s(&self) -> Option<f64> {
        let ns = self.first_picture_ns.load(Ordering::Relaxed);
        (ns > 0).then(|| ns as f64 / 1e9)
    }

    /// Notes that a picture moving on from the first one reached the screen (the first call
    /// sets time-to-first-motion).
    pub(crate) fn record_motion(&self) {
        if self.first_motion_ns.load(Ordering::Relaxed) == 0 {
            let since_start = crate::process_start().elapsed().as_nanos().max(1) as u64;
            self.first_motion_ns.store(since_start, Ordering::Relaxed);
        }
    }

    /// Seconds from the process start to the first frame that moved on, once there was one.
    pub(crate) fn first_motion_s(&self) -> Option<f64> {
        let ns = self.first_motion_ns.load(Ordering::Relaxed);
        (ns > 0).then(|| ns as f64 / 1e9)
    }

    /// A keyframe was made just now.
    pub(crate) fn keyframe_made(&self, took: Duration) {
        self.keyframes.fetch_add(1, Ordering::Relaxed);
        self.keyframe_time.record(took);
        let since_start = self.started.elapsed().as_nanos().max(1) as u64;
        self.last_keyframe_ns.store(since_start, Ordering::Relaxed);
    }

    /// Seconds since the last keyframe was made, once there was one.
    pub(crate) fn last_keyframe_age_s(&self) -> Option<f64> {
        let ns = self.last_keyframe_ns.load(Ordering::Relaxed);
        (ns > 0).then(|| (self.started.elapsed().as_nanos() as u64).saturating_sub(ns) as f64 / 1e9)
    }

    /// Frames from `first_seq` on are `generator`'s (the decoder says so at each keyframe).
    pub(crate) fn frames_from(&self, first_seq: u64, generator: &str) {
        let mut changes = self
            .generator_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if changes.back().is_some_and(|(_, last)| last == generator) {
            return;
        }
        if changes.len() == GENERATOR_CHANGES_KEPT {
            changes.pop_front();
        }
        changes.push_back((first_seq, generator.to_string()));
    }

    /// The generator whose frame is on screen now, once one is.
    pub(crate) fn generator_on_screen(&self) -> Option<String> {
        let shown = self.shown_seq.load(Ordering::Relaxed);
        let changes = self
            .generator_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        changes
            .iter()
            .rev()
            .find(|(first, _)| shown > *first)
            .map(|(_, generator)| generator.clone())
    }

    /// Counts a generator error and keeps its text as the last one.
    pub(crate) fn generator_failed(&self, error: String) {
        self.generator_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), error));
    }

    /// The last generator error and its age in seconds.
    pub(crate) fn last_error(&self) -> Option<(String, f64)> {
        let last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .map(|(at, error)| (error.clone(), at.elapsed().as_secs_f64()))
    }

    /// Seconds from start to the start of playback, once it has started.
    pub(crate) fn playing_since_s(&self) -> Option<f64> {
        let ns = self.playing_since_ns.load(Ordering::Relaxed);
        (ns > 0).then(|| ns as f64 / 1e9)
    }

    /// New frames shown since playback started.
    pub(crate) fn frames_shown_playing(&self) -> u64 {
        if self.playing_since_ns.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.frames_shown.load(Ordering::Relaxed)
            - self.frames_shown_at_play.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_bound_the_records_from_above() {
        let h = Histogram::default();
        for us in 1..=100 {
            h.record(Duration::from_micros(us * 10));
        }
        assert_eq!(h.count(), 100);
        let p50 = h.quantile_ms(0.5);
        assert!((0.5..=0.501).contains(&p50), "p50 {p50}");
        let p99 = h.quantile_ms(0.99);
        assert!((0.99..=0.991).contains(&p99), "p99 {p99}");
        assert_eq!(h.max_ms(), 1.0);
        h.record(Duration::from_secs(1));
        assert_eq!(
            h.quantile_ms(1.0),
            1000.0,
            "overflow bucket reports the max"
        );
    }

    #[test]
    fn timing_means_over_a_window() {
        let t = Timing::default();
        t.record(Duration::from_millis(2));
        let first = t.snapshot();
        t.record_many(Duration::from_millis(30), 10);
        assert_eq!(t.snapshot().mean_ms_since(first), 3.0);
        assert_eq!(t.max_ms(), 3.0);
    }
}
