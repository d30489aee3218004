//! What a log says, gathered: `Analyzer` takes lines one at a time (memory grows with the figures
//! kept, a few numbers per keyframe, transition and stats line, one per run start, underrun and
//! reload, not with the log's size) and `finish`es into an `Analysis`: per-stage timings, display
//! rate, buffer fill, underruns, reloads, the quality ladder's moves, and the `Period`s (a run's
//! start, a reload of the frame rate) each judged against its own target.
//!
//! Runs on the caller's thread; lines it can't read (not our format, a figure that is not finite
//! or beyond `MAX_FIGURE`) are counted and skipped, never fatal.

use dreamframe::events::parse::{parse_line, Line};
use dreamframe::events::{self, figure};

#[cfg(test)]
use crate::parse::first_time;
use crate::parse::MAX_LINE_BYTES;

/// p50, p90, p99, max and count of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distribution {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn distribution(values: &[f64]) -> Option<Distribution> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Some(Distribution {
        count: sorted.len(),
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: sorted[sorted.len() - 1],
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    })
}

/// What the log says, gathered.
#[derive(Debug, Default)]
pub struct Analysis {
    pub lines: usize,
    pub unreadable: usize,
    pub runs: usize,
    pub span_s: f64,
    pub generators: Vec<String>,
    pub target_fps: Option<f64>,
    pub keyframe_ms: Vec<f64>,
    pub keyframe_lock_wait_ms: Vec<f64>,
    pub decode_ms_per_frame: Vec<f64>,
    pub upscale_ms_per_frame: Vec<f64>,
    pub slerp_ms: Vec<f64>,
    pub transition_lock_wait_ms: Vec<f64>,
    pub frames_per_transition: Vec<f64>,
    /// Seconds since the epoch of the first line: the times below count from it.
    pub start_time: Option<f64>,
    /// Seconds (since the first line) at which each run started.
    pub run_start_times: Vec<f64>,
    /// From the `stats` lines: (seconds since the first line, value).
    pub fps: Vec<(f64, f64)>,
    pub target_fps_series: Vec<(f64, f64)>,
    pub buffer_percentage: Vec<(f64, f64)>,
    pub buffer_seconds: Vec<(f64, f64)>,
    pub stats_decode_ms: Vec<(f64, f64)>,
    pub stats_upscale_ms: Vec<(f64, f64)>,
    pub decode_fps: Vec<f64>,
    pub jitter_p99_ms: Vec<f64>,
    pub presented_p99_ms: Vec<f64>,
    pub lock_avg_wait_ms: Vec<f64>,
    pub lock_max_wait_ms: f64,
    pub lock_contended: f64,
    /// Per run, the last cumulative counters.
    pub late_frames: f64,
    pub underruns: f64,
    pub generator_errors: f64,
    /// Seconds (since the first line) at which the buffer ran dry.
    pub underrun_times: Vec<f64>,
    pub out_of_memory: usize,
    pub vsync_disabled: usize,
    pub watchdog_withheld: usize,
    pub reloads: usize,
    /// Seconds (since the first line) of each applied reload, and of each rejected one.
    pub reload_times: Vec<f64>,
    pub rejected_reload_times: Vec<f64>,
    pub warnings: usize,
    pub errors: usize,
    /// The quality ladder's moves: (seconds since the first line, the move).
    pub adapt_moves: Vec<(f64, events::Adapt)>,
    /// From the `stats` lines: the art's speed, a share of its configured pace.
    pub animation_speed: Vec<(f64, f64)>,
    /// The log cut where the target frame rate changed (run starts, reloads of display.fps).
    pub periods: Vec<Period>,
}

impl Analysis {
    /// The period lines at `t` belong to: the last one, or a first one for a log that begins
    /// mid-run.
    fn period(&mut self, t: f64) -> &mut Period {
        if self.periods.is_empty() {
            self.start_period(t, self.target_fps.unwrap_or(0.0));
        }
        let period = self.periods.last_mut().expect("one at least");
        period.end_s = period.end_s.max(t);
        period
    }

    /// A new period from `t` at `target` fps (a reload), unless the target stays the same.
    fn new_period(&mut self, t: f64, target: f64) {
        match self.periods.last_mut() {
            Some(last) if last.target_fps == target => {}
            // Nothing to judge in it yet: it simply has the new target.
            Some(last) if last.frames_per_transition.is_empty() && last.keyframe_ms.is_empty() => {
                last.target_fps = target;
            }
            _ => self.start_period(t, target),
        }
    }

    /// A period from `t` at `target` fps (0: not known yet).
    fn start_period(&mut self, t: f64, target: f64) {
        self.periods.push(Period {
            start_s: t,
            end_s: t,
            target_fps: target,
            ..Period::default()
        });
    }
}

/// A stretch of the log under one target frame rate: from a run's start, or from a reload that
/// changed `display.fps`. Generation is judged against each period's own target.
#[derive(Debug, Default, Clone)]
pub struct Period {
    /// Seconds since the first line.
    pub start_s: f64,
    pub end_s: f64,
    /// 0 until a line says it (a log that begins after its run's start).
    pub target_fps: f64,
    pub keyframe_ms: Vec<f64>,
    pub decode_ms_per_frame: Vec<f64>,
    pub frames_per_transition: Vec<f64>,
}

impl Period {
    /// Frames per second the generator makes when it never waits: one transition's frames over
    /// their decode time plus one keyframe (both hold the same model). `None` before a
    /// transition was logged.
    pub fn capacity(&self) -> Option<f64> {
        capacity(
            &self.frames_per_transition,
            &self.decode_ms_per_frame,
            &self.keyframe_ms,
        )
    }
}

pub fn capacity(frames: &[f64], decode_ms: &[f64], keyframe_ms: &[f64]) -> Option<f64> {
    let frames = distribution(frames)?.p50;
    let decode = distribution(decode_ms)?.p50;
    let keyframe = distribution(keyframe_ms).map_or(0.0, |k| k.p50);
    let cost_ms = frames * decode + keyframe;
    (cost_ms > 0.0).then(|| frames * 1000.0 / cost_ms)
}

/// Cumulative counters restart with each run: sum each run's last value.
#[derive(Default)]
struct PerRun {
    late: f64,
    underruns: f64,
    errors: f64,
    contended: f64,
}

/// Reads log lines one at a time, in time order, into an `Analysis`.
#[derive(Default)]
pub struct Analyzer {
    analysis: Analysis,
    first_time: Option<f64>,
    last_time: f64,
    finished: PerRun,
    current: PerRun,
    /// A stats line held back until the next line shows whether it closed its run.
    pending_stats: Option<Line>,
}

impl Analyzer {
    /// One line of log text, with or without its line break (a line that is not ours is
    /// counted as unreadable).
    pub fn feed(&mut self, raw: &str) {
        let raw = raw.trim_end_matches(['\n', '\r']);
        if raw.trim().is_empty() {
            return;
        }
        self.analysis.lines += 1;
        if raw.len() > MAX_LINE_BYTES {
            self.analysis.unreadable += 1;
            return;
        }
        match parse_line(raw) {
            Some(line) => self.line(line),
            None => self.analysis.unreadable += 1,
        }
    }

    /// Counts a line that could not be read at all (too long, not text).
    pub fn skip_unreadable(&mut self) {
        self.analysis.lines += 1;
        self.analysis.unreadable += 1;
    }

    fn line(&mut self, line: Line) {
        // Rates on a stats line cover the time since the previous one: the extra line written
        // at shutdown, just before `stopped`, covers a moment and its rates mean nothing.
        if let Some(stats) = self.pending_stats.take() {
            let closing = line.event == "stopped";
            self.record(stats, closing);
        }
        if line.event == "stats" {
            self.pending_stats = Some(line);
        } else {
            self.record(line, false);
        }
    }

    fn record(&mut self, line: Line, closing: bool) {
        let first = *self.first_time.get_or_insert(line.time);
        self.last_time = self.last_time.max(line.time);
        let t = line.time - first;
        let analysis = &mut self.analysis;
        match line.level.as_str() {
            "WARN" => analysis.warnings += 1,
            "ERROR" => analysis.errors += 1,
            _ => {}
        }
        let fields = &line.fields;
        match line.event.as_str() {
            events::Start::NAME => {
                let Some(start) = events::Start::read(fields) else {
                    return;
                };
                analysis.runs += 1;
                analysis.run_start_times.push(t);
                self.finished.late += self.current.late;
                self.finished.underruns += self.current.underruns;
                self.finished.errors += self.current.errors;
                self.finished.contended += self.current.contended;
                self.current = PerRun::default();
                if !analysis.generators.contains(&start.generator) {
                    analysis.generators.push(start.generator);
                }
                analysis.target_fps = figure(start.fps).or(analysis.target_fps);
                let target = analysis.target_fps.unwrap_or(0.0);
                analysis.start_period(t, target);
            }
            events::Keyframe::NAME => {
                if let Some(keyframe) = events::Keyframe::read(fields) {
                    analysis.keyframe_ms.extend(figure(keyframe.ms));
                    analysis.period(t).keyframe_ms.extend(figure(keyframe.ms));
                    analysis
                        .keyframe_lock_wait_ms
                        .extend(figure(keyframe.lock_wait_ms));
                }
            }
            events::Transition::NAME => {
                let time = t;
                if let Some(t) = events::Transition::read(fields) {
                    analysis
                        .decode_ms_per_frame
                        .extend(figure(t.decode_ms_per_frame));
                    // 0 before the first frame was upscaled.
                    analysis
                        .upscale_ms_per_frame
                        .extend(figure(t.upscale_ms_per_frame).filter(|v| *v > 0.0));
                    analysis.slerp_ms.extend(figure(t.slerp_ms));
                    analysis
                        .transition_lock_wait_ms
                        .extend(figure(t.lock_wait_ms));
                    analysis.frames_per_transition.push(t.frames as f64);
                    let decode = figure(t.decode_ms_per_frame);
                    let frames = t.frames as f64;
                    let period = analysis.period(time);
                    period.decode_ms_per_frame.extend(decode);
                    period.frames_per_transition.push(frames);
                }
            }
            events::Stats::NAME => {
                if let Some(stats) = events::Stats::read(fields) {
                    self.stats(t, &stats, closing);
                }
            }
            events::Underrun::NAME => analysis.underrun_times.push(t),
            events::DecodeOutOfMemory::NAME => analysis.out_of_memory += 1,
            events::VsyncDisabled::NAME => analysis.vsync_disabled += 1,
            events::WatchdogWithheld::NAME => analysis.watchdog_withheld += 1,
            events::Reload::NAME => {
                analysis.reloads += 1;
                analysis.reload_times.push(t);
                if let Some(fps) = events::Reload::read(fields).and_then(|r| figure(r.fps)) {
                    analysis.target_fps = Some(fps);
                    analysis.new_period(t, fps);
                }
            }
            events::ReloadRejected::NAME => analysis.rejected_reload_times.push(t),
            events::Adapt::NAME => {
                if let Some(adapt) = events::Adapt::read(fields) {
                    analysis.adapt_moves.push((t, adapt));
                }
            }
            _ => {}
        }
    }

    fn stats(&mut self, t: f64, stats: &events::Stats, closing: bool) {
        let analysis = &mut self.analysis;
        let push = |series: &mut Vec<(f64, f64)>, value: f64| {
            series.extend(figure(value).map(|value| (t, value)));
        };
        if !closing {
            push(&mut analysis.fps, stats.achieved_fps);
            analysis.decode_fps.extend(figure(stats.decode_fps));
        }
        push(&mut analysis.target_fps_series, stats.target_fps);
        push(&mut analysis.buffer_percentage, stats.buffer_percentage);
        push(&mut analysis.buffer_seconds, stats.buffer_seconds);
        push(&mut analysis.stats_decode_ms, stats.decode_ms_per_frame);
        push(&mut analysis.stats_upscale_ms, stats.upscale_ms_per_frame);
        if let Some(speed) = stats.animation_speed {
            push(&mut analysis.animation_speed, speed);
        }
        analysis.jitter_p99_ms.extend(figure(stats.jitter_p99_ms));
        analysis
            .presented_p99_ms
            .extend(figure(stats.presented_p99_ms));
        analysis
            .lock_avg_wait_ms
            .extend(figure(stats.model_lock_avg_wait_ms));
        analysis.lock_max_wait_ms = analysis
            .lock_max_wait_ms
            .max(figure(stats.model_lock_max_wait_ms).unwrap_or(0.0));
        if let Some(target) = figure(stats.target_fps).filter(|fps| *fps > 0.0) {
            analysis.target_fps = Some(target);
            // The first target a log that began mid-run learns of.
            let period = analysis.period(t);
            if period.target_fps == 0.0 {
                period.target_fps = target;
            }
        }
        let count = |value: u64| figure(value as f64);
        let current = &mut self.current;
        current.late = count(stats.late_frames).unwrap_or(current.late);
        current.underruns = count(stats.underruns).unwrap_or(current.underruns);
        current.errors = count(stats.generator_errors).unwrap_or(current.errors);
        current.contended = count(stats.model_lock_contended).unwrap_or(current.contended);
    }

    pub fn finish(mut self) -> Analysis {
        if let Some(stats) = self.pending_stats.take() {
            self.record(stats, false);
        }
        let mut analysis = self.analysis;
        analysis.span_s = self.first_time.map_or(0.0, |first| self.last_time - first);
        analysis.start_time = self.first_time;
        analysis.late_frames = self.finished.late + self.current.late;
        analysis.underruns = self.finished.underruns + self.current.underruns;
        analysis.generator_errors = self.finished.errors + self.current.errors;
        analysis.lock_contended = self.finished.contended + self.current.contended;
        analysis
    }
}

/// The analysis of whole texts (each a file's content), taken in time order of their first
/// lines (the tests' way in; the binary streams files).
#[cfg(test)]
pub fn analyze(texts: &[String]) -> Analysis {
    let mut ordered: Vec<&String> = texts.iter().collect();
    ordered.sort_by(|a, b| {
        first_time(a)
            .unwrap_or(f64::MAX)
            .total_cmp(&first_time(b).unwrap_or(f64::MAX))
    });
    let mut analyzer = Analyzer::default();
    for text in ordered {
        for line in text.lines() {
            analyzer.feed(line);
        }
    }
    analyzer.finish()
}
