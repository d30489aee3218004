//! The log analyzer behind `dreamframe-analyze LOG...`: reads dreamframe's `key=value` log lines
//! and reports where the time goes, in the manner of the earlier system's bottleneck report:
//! per-stage timing distributions, model lock contention, display rate, late frames, jitter,
//! buffer health with its depletion events, underruns and errors, the quality ladder's moves and
//! the art's speed (capacity-aware playback), then concrete recommendations, generation judged in
//! each `Period` (a run's start, a reload of the frame rate) against its own target; and charts fps,
//! buffer fill with the art's speed, and stage times over wall-clock time with plotters (SVG or
//! PNG), underruns, reloads and ladder moves marked.
//!
//! Inputs: log lines, streamed (`Analyzer::feed`): memory grows with the figures kept (a few
//! numbers per keyframe, transition and stats line, one per run start, underrun and reload), not
//! with the log's size. Rotated files are put in time order by their first line
//! (`order_by_first_time`). Outputs: a report string and a chart (`chart_svg`, `chart_png`,
//! `chart_to_file`), whose points drawn are bounded (`CHART_BINS`) and whose text uses a font
//! embedded in the binary (no system fonts needed), written whole or not at all
//! (`chart_to_file`). Runs on the caller's thread; lines it can't read (not our format, a number
//! that is not finite or beyond `MAX_FIGURE`, a line longer than `MAX_LINE_BYTES`, counted
//! once however long) are counted and skipped, never fatal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Read};
use std::path::Path;

use anyhow::Context as _;
use plotters::backend::{BitMapBackend, DrawingBackend, SVGBackend};
use plotters::chart::ChartBuilder;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::drawing::{DrawingArea, IntoDrawingArea};
use plotters::element::{DashedPathElement, PathElement, Rectangle, Text};
use plotters::series::{DashedLineSeries, LineSeries};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, FontStyle, IntoFont, RGBColor, TextStyle, WHITE};

use crate::events;

/// One log line: seconds since the Unix epoch, level, event, fields.
#[derive(Debug, Clone)]
pub struct Line {
    pub time: f64,
    pub level: String,
    pub event: String,
    pub fields: BTreeMap<String, String>,
}

/// The largest magnitude a figure in our logs can have: anything beyond is a damaged or forged
/// line.
pub use crate::events::MAX_FIGURE;
/// Lines longer than this are not ours (ours are at most a few KiB).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

use crate::events::figure;

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// "2026-11-27T06:32:54.820553336Z" as seconds since the epoch.
fn parse_time(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut time = time.splitn(3, ':');
    let hours: f64 = time.next()?.parse().ok()?;
    let minutes: f64 = time.next()?.parse().ok()?;
    let seconds: f64 = time.next()?.parse().ok()?;
    if !(0.0..24.0).contains(&hours)
        || !(0.0..60.0).contains(&minutes)
        || !(0.0..61.0).contains(&seconds)
    {
        return None;
    }
    Some(
        days_from_civil(year, month, day) as f64 * 86_400.0
            + hours * 3600.0
            + minutes * 60.0
            + seconds,
    )
}

/// `key=value` and `key="quoted value"` pairs of a log line (after the event name; the probe's
/// line parses the same way).
pub fn parse_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        let after = &rest[eq + 1..];
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            }
        };
        if !key.is_empty() {
            fields.insert(key, value);
        }
        rest = next;
    }
    fields
}

/// A quoted value (after its opening quote) with `\"`, `\\`, `\n` and `\u{1b}` unescaped,
/// and the text after its closing quote (see `events::quoted`).
fn unquote(text: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return (value, &text[at + 1..]),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((after_u, 'u')) => {
                    let code = text[after_u + 1..]
                        .strip_prefix('{')
                        .and_then(|rest| rest.split_once('}'))
                        .and_then(|(hex, _)| Some((hex.len(), u32::from_str_radix(hex, 16).ok()?)))
                        .and_then(|(len, code)| Some((len, char::from_u32(code)?)));
                    match code {
                        Some((len, c)) => {
                            value.push(c);
                            // Past "{hex}".
                            for _ in 0..len + 2 {
                                chars.next();
                            }
                        }
                        None => value.push('u'),
                    }
                }
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            c => value.push(c),
        }
    }
    (value, "")
}

/// One line of the log format, `TIME [LEVEL] EVENT key=value ...`; `None` for anything else.
pub fn parse_line(text: &str) -> Option<Line> {
    let (time, rest) = text.split_once(' ')?;
    let time = parse_time(time)?;
    let rest = rest.strip_prefix('[')?;
    let (level, rest) = rest.split_once("] ")?;
    // "[TIMING] transition ..." carries a tag before its event name.
    let rest = rest.strip_prefix("[TIMING] ").unwrap_or(rest);
    let (event, fields) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Line {
        time,
        level: level.to_string(),
        event: event.to_string(),
        fields: parse_fields(fields),
    })
}

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
    pub resolution_divisor_hint: Option<f64>,
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

fn capacity(frames: &[f64], decode_ms: &[f64], keyframe_ms: &[f64]) -> Option<f64> {
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

/// One line from `read_line`.
#[derive(Debug, PartialEq)]
pub enum LineRead {
    End,
    Text(String),
    /// Longer than `MAX_LINE_BYTES`: not ours, consumed to its end and counted once.
    TooLong,
}

/// Reads the next line from `reader`, holding at most `MAX_LINE_BYTES` of it.
pub fn read_line(reader: &mut impl std::io::BufRead) -> std::io::Result<LineRead> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(LineRead::End);
    }
    if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
        loop {
            let buffer = reader.fill_buf()?;
            if buffer.is_empty() {
                break;
            }
            match buffer.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    reader.consume(end + 1);
                    break;
                }
                None => {
                    let length = buffer.len();
                    reader.consume(length);
                }
            }
        }
        return Ok(LineRead::TooLong);
    }
    Ok(LineRead::Text(match String::from_utf8(line) {
        Ok(text) => text,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    }))
}

/// Reads `reader` line by line into `analyzer`, holding at most one line (of at most
/// `MAX_LINE_BYTES`) at a time.
pub fn feed_reader(
    analyzer: &mut Analyzer,
    reader: &mut impl std::io::BufRead,
) -> std::io::Result<()> {
    loop {
        match read_line(reader)? {
            LineRead::End => return Ok(()),
            LineRead::Text(text) => analyzer.feed(&text),
            LineRead::TooLong => analyzer.skip_unreadable(),
        }
    }
}

/// The time of the first line of ours in `text`, for putting rotated files in order.
pub fn first_time(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| parse_line(line).map(|l| l.time))
}

/// The analysis of whole texts (each a file's content), taken in time order of their first
/// lines.
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

fn row(out: &mut String, name: &str, unit: &str, values: &[f64]) {
    match distribution(values) {
        Some(d) => {
            let _ = writeln!(
                out,
                "  {name:<34} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>10.2}  {unit}",
                d.count, d.p50, d.p90, d.p99, d.max
            );
        }
        None => {
            let _ = writeln!(out, "  {name:<34} {:>7}  (no data)", 0);
        }
    }
}

fn values(series: &[(f64, f64)]) -> Vec<f64> {
    series.iter().map(|(_, v)| *v).collect()
}

/// The report: figures, then what to change.
pub fn report(analysis: &Analysis, sources: &[String]) -> String {
    let mut out = String::new();
    let a = analysis;
    let _ = writeln!(
        out,
        "dreamframe-analyze: {} file(s), {} lines ({} unreadable), {} run(s), {:.0} s of log, generator {}",
        sources.len(),
        a.lines,
        a.unreadable,
        a.runs,
        a.span_s,
        if a.generators.is_empty() { "?".to_string() } else { a.generators.join(", ") }
    );
    report_stages(&mut out, a);
    let target = a.target_fps.unwrap_or(0.0);
    report_display(&mut out, a, target);
    report_buffer(&mut out, a);
    report_adapt(&mut out, a);
    let _ = writeln!(
        out,
        "\nEvents: generator errors {}, out-of-memory retries {}, vsync disabled {}, watchdog withheld {}, reloads {}, warnings {}, errors {}",
        a.generator_errors, a.out_of_memory, a.vsync_disabled, a.watchdog_withheld, a.reloads, a.warnings, a.errors
    );

    let _ = writeln!(out, "\nRecommendations");
    let fps = distribution(&values(&a.fps));
    let decode_fps = distribution(&a.decode_fps);
    let buffer = distribution(&values(&a.buffer_percentage));
    let recommendations = recommend(a, target, fps, decode_fps, buffer);
    for (i, text) in recommendations.iter().enumerate() {
        let _ = writeln!(out, "  {}. {text}", i + 1);
    }
    out
}

/// Per-stage timings and the model lock's waits.
fn report_stages(out: &mut String, a: &Analysis) {
    let _ = writeln!(out, "\nStage timing                               count        p50        p90        p99        max");
    row(out, "keyframe", "ms per keyframe", &a.keyframe_ms);
    row(out, "slerp", "ms per transition", &a.slerp_ms);
    row(out, "decode", "ms per frame", &a.decode_ms_per_frame);
    row(
        out,
        "upscale + convert",
        "ms per frame",
        &a.upscale_ms_per_frame,
    );

    let _ = writeln!(out, "\nModel lock");
    row(
        out,
        "wait before a keyframe",
        "ms",
        &a.keyframe_lock_wait_ms,
    );
    row(
        out,
        "wait before a transition's decode",
        "ms",
        &a.transition_lock_wait_ms,
    );
    let avg = distribution(&a.lock_avg_wait_ms).map_or(0.0, |d| d.max);
    let _ = writeln!(
        out,
        "  average wait (worst stats line) {avg:.2} ms, max wait {:.2} ms, contended acquisitions {}",
        a.lock_max_wait_ms, a.lock_contended
    );
}

/// What the display achieved against its target.
fn report_display(out: &mut String, a: &Analysis, target: f64) {
    let _ = writeln!(out, "\nDisplay (target {target:.2} fps)");
    row(out, "achieved fps (per stats line)", "fps", &values(&a.fps));
    row(out, "generated frames per second", "fps", &a.decode_fps);
    if let Some(capacity) = generation_capacity(a) {
        let _ = writeln!(
            out,
            "  generator capacity {capacity:.1} frames/s (decoding without waiting, one keyframe per transition) for {target:.1} fps shown"
        );
    }
    if a.periods.len() > 1 {
        for p in &a.periods {
            let _ = writeln!(
                out,
                "  {:>7.0}s to {:>7.0}s at {:>5.1} fps: generator capacity {}",
                p.start_s,
                p.end_s,
                p.target_fps,
                p.capacity()
                    .map_or("not measured (no transition)".to_string(), |c| format!(
                        "{c:.1} frames/s"
                    ))
            );
        }
    }
    row(out, "jitter p99 (per stats line)", "ms", &a.jitter_p99_ms);
    row(
        out,
        "presented p99 (per stats line)",
        "ms",
        &a.presented_p99_ms,
    );
    let _ = writeln!(out, "  late frames {}", a.late_frames);
}

/// How full the buffer was and when it ran dry.
fn report_buffer(out: &mut String, a: &Analysis) {
    let _ = writeln!(out, "\nBuffer");
    let low = a
        .buffer_percentage
        .iter()
        .filter(|(_, p)| *p < 10.0)
        .count();
    row(
        out,
        "fill (per stats line)",
        "%",
        &values(&a.buffer_percentage),
    );
    row(
        out,
        "seconds buffered (per stats line)",
        "s",
        &values(&a.buffer_seconds),
    );
    let _ = writeln!(
        out,
        "  stats lines below 10% full: {low} of {}; underruns (buffer ran dry): {}{}",
        a.buffer_percentage.len(),
        a.underruns,
        if a.underrun_times.is_empty() {
            String::new()
        } else {
            let times: Vec<String> = a
                .underrun_times
                .iter()
                .take(10)
                .map(|t| format!("{t:.0}s"))
                .collect();
            format!(
                " at {}{}",
                times.join(", "),
                if a.underrun_times.len() > 10 {
                    ", ..."
                } else {
                    ""
                }
            )
        }
    );
}

/// The quality ladder's moves and the art's speed.
fn report_adapt(out: &mut String, a: &Analysis) {
    let _ = writeln!(out, "\nAdaptation");
    if a.adapt_moves.is_empty() && a.animation_speed.is_empty() {
        let _ = writeln!(
            out,
            "  no adapt or art-speed figures (adapt.enabled = false, or a log from before adaptation)"
        );
        return;
    }
    row(
        out,
        "art speed, % of its pace (per stats line)",
        "%",
        &values(&a.animation_speed)
            .iter()
            .map(|s| s * 100.0)
            .collect::<Vec<_>>(),
    );
    let minutes = (a.span_s / 60.0).max(1.0 / 60.0);
    let _ = writeln!(
        out,
        "  ladder moves: {} ({:.2} a minute){}",
        a.adapt_moves.len(),
        a.adapt_moves.len() as f64 / minutes,
        a.adapt_moves.last().map_or(String::new(), |(_, m)| format!(
            "; last at rung {} of {}: {}",
            m.rung + 1,
            m.rungs,
            m.to
        ))
    );
    for (t, m) in a.adapt_moves.iter().take(12) {
        let _ = writeln!(
            out,
            "  {t:>7.0}s  {} -> {} ({}: {:.1} decoded frames/s for {:.1} needed, {:.1} s ahead)",
            m.from, m.to, m.reason, m.capacity_fps, m.need_fps, m.buffer_s
        );
    }
    if a.adapt_moves.len() > 12 {
        let _ = writeln!(out, "  ... {} more", a.adapt_moves.len() - 12);
    }
}

/// Frames per second the generator can make when it never waits, over the whole log
/// (`Period::capacity`).
pub fn generation_capacity(a: &Analysis) -> Option<f64> {
    capacity(
        &a.frames_per_transition,
        &a.decode_ms_per_frame,
        &a.keyframe_ms,
    )
}

/// The period whose generation falls furthest short of its own target: (its capacity, its
/// target, the period). `None` where no period has both.
fn tightest_period(a: &Analysis) -> Option<(f64, f64, &Period)> {
    a.periods
        .iter()
        .filter_map(|p| Some((p.capacity()?, p.target_fps, p)))
        .filter(|(_, target, _)| *target > 0.0)
        .min_by(|x, y| (x.0 / x.1).total_cmp(&(y.0 / y.1)))
}

fn recommend(
    a: &Analysis,
    target: f64,
    fps: Option<Distribution>,
    decode_fps: Option<Distribution>,
    buffer: Option<Distribution>,
) -> Vec<String> {
    let mut out = Vec::new();
    let upscale = distribution(&a.upscale_ms_per_frame);
    let keyframe = distribution(&a.keyframe_ms);
    let _ = decode_fps;
    // Each stretch is judged against the target it had; the one furthest short speaks.
    let tightest = tightest_period(a);
    let (generated, needed) = tightest.map_or((0.0, 0.0), |(c, t, _)| (c, t));
    let judged = a.periods.iter().filter(|p| p.capacity().is_some()).count();
    let when = match tightest {
        Some((_, _, p)) if judged > 1 => format!(
            " (from {:.0} s to {:.0} s of the log, at {:.1} fps)",
            p.start_s, p.end_s, p.target_fps
        ),
        _ => String::new(),
    };
    let decode = tightest.and_then(|(_, _, p)| distribution(&p.decode_ms_per_frame));
    let keyframe_of_period = tightest.and_then(|(_, _, p)| distribution(&p.keyframe_ms));
    let sd = a.generators.iter().any(|g| g.contains("stable"));
    let art_speed = distribution(&values(&a.animation_speed));
    let ladder = a.adapt_moves.last().map(|(_, m)| m);
    if let (Some(m), Some(speed), true) = (ladder, art_speed, generated < needed * 0.98) {
        // With adaptation the shortfall is absorbed: say what it costs, not that it stalls.
        if speed.p50 >= 0.95 {
            out.push(format!(
                "Generation makes {generated:.1} frames/s against {needed:.1} fps shown{when}; the quality ladder keeps the art at its full pace at rung {} of {} ({}). For the configured richness, lower model.width/height or display.fps, or run it on a faster machine.",
                m.rung + 1,
                m.rungs,
                m.to
            ));
        }
    } else if needed > 0.0 && generated > 0.0 && generated < needed * 0.98 {
        let mut text = format!(
            "Generation is the bottleneck{when}: the generator can make {generated:.1} frames/s (decode p50 {:.1} ms/frame, keyframe p50 {:.0} ms) against {needed:.1} fps shown. ",
            decode.map_or(0.0, |d| d.p50),
            keyframe_of_period.map_or(0.0, |k| k.p50)
        );
        if sd {
            text.push_str("Enable decode.tiny-decoder (TAESD), raise interpolation.resolution-divisor to 2, raise decode.batch-size, ");
        } else {
            text.push_str(
                "Lower model.width/height (the built-in generator's cost grows with its pixels), ",
            );
        }
        text.push_str("or lower display.fps to what is generated.");
        out.push(text);
    }
    if a.underruns > 0.0 {
        out.push(format!(
            "The buffer ran dry {} time(s): raise buffer.seconds and buffer.start-seconds so a slow stretch is covered, and look at the generation rate above.",
            a.underruns
        ));
    } else if buffer.is_some_and(|b| b.p50 < 20.0) {
        out.push("The buffer runs low most of the time (median below 20% full): raise buffer.seconds or lower the generation cost.".into());
    }
    let lock_wait = distribution(&a.keyframe_lock_wait_ms)
        .into_iter()
        .chain(distribution(&a.transition_lock_wait_ms))
        .map(|d| d.p90)
        .fold(0.0, f64::max);
    if let Some(k) = keyframe.filter(|k| k.p50 > 200.0) {
        if lock_wait > 100.0 {
            out.push(format!(
                "Keyframes (p50 {:.0} ms) hold the model lock while the decoder waits (p90 wait {lock_wait:.0} ms): raise interpolation.frames-per-transition so keyframes are rarer, or lower model.steps.",
                k.p50
            ));
        }
    }
    if let (Some(u), true) = (upscale, target > 0.0) {
        let budget = 1000.0 / target;
        if u.p90 > budget * 0.5 {
            out.push(format!(
                "Upscale + convert takes {:.1} ms/frame (p90), over half the {budget:.1} ms frame period: use display.upscale-filter = \"bilinear\", or a lower screen mode.",
                u.p90
            ));
        }
    }
    if let Some(j) = distribution(&a.jitter_p99_ms).filter(|j| j.p90 > 1.0) {
        out.push(format!(
            "Pacing jitter p99 reaches {:.1} ms: keep display.realtime = true and grant the pacer real-time priority (LimitRTPRIO in the unit, or CAP_SYS_NICE).",
            j.p90
        ));
    }
    if fps.is_some_and(|f| target > 0.0 && f.p50 < target * 0.95) && a.underruns == 0.0 {
        out.push("Achieved fps is below target without underruns: the pacer is being delayed; check CPU load and display.realtime.".into());
    }
    let last_move = a.adapt_moves.last().map(|(_, m)| m);
    let slow_art = distribution(&values(&a.animation_speed)).filter(|s| s.p50 < 0.9);
    if let (Some(m), Some(speed)) = (last_move, slow_art) {
        if m.rung + 1 == m.rungs {
            out.push(format!(
                "The ladder reached its lowest rung ({}) and the art still moves at {:.0}% of its pace (median): lower the bounds in [adapt] (min-frames-per-transition, min-resolution-scale, min-steps), enable adapt.tiny-decoder, or lower display.fps.",
                m.to,
                speed.p50 * 100.0
            ));
        }
    }
    let minutes = a.span_s / 60.0;
    if minutes >= 5.0 && a.adapt_moves.len() as f64 / minutes > 1.0 {
        out.push(format!(
            "The quality ladder moved {:.1} times a minute: the machine's speed varies (other work?); raise adapt.settle-seconds to settle it.",
            a.adapt_moves.len() as f64 / minutes
        ));
    }
    if a.out_of_memory > 0 {
        out.push(format!(
            "{} out-of-memory retries: lower decode.batch-size.",
            a.out_of_memory
        ));
    }
    if a.generator_errors > 0.0 {
        out.push(format!(
            "{} generator errors: see the generator_error lines for the cause.",
            a.generator_errors
        ));
    }
    if out.is_empty() {
        out.push(match tightest {
            Some(_) => format!(
                "No bottleneck: generation keeps ahead of the display ({generated:.1} frames/s made for {needed:.1} fps{}) and the buffer never ran dry.",
                if judged > 1 { " where it was shortest" } else { "" }
            ),
            None => "Nothing to judge: the log has no transition line with a frame rate to hold it against (a run that ended before its first transition, or a log of only starts and reloads).".to_string(),
        });
    }
    out
}

/// The chart's file formats, chosen by the output path's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartFormat {
    Svg,
    Png,
}

impl ChartFormat {
    /// The format for `path`'s extension (`.svg` or `.png`, in any case); for anything else an
    /// error that names the path and the extensions allowed.
    pub fn for_path(path: &Path) -> anyhow::Result<Self> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("svg") => Ok(Self::Svg),
            Some("png") => Ok(Self::Png),
            _ => anyhow::bail!(
                "cannot write the chart to {}: its name must end in .svg or .png (the format follows the extension)",
                path.display()
            ),
        }
    }
}

/// The chart's size: pixels of the PNG, user units of the SVG.
pub const CHART_SIZE: (u32, u32) = (1280, 960);
/// Time bins across the chart: a line draws at most two points (the lowest and the highest) per
/// bin and run, and a kind of marker at most one line per bin, however long the log.
pub const CHART_BINS: usize = 1000;

/// DejaVu Sans (Debian's fonts-dejavu-core 2.37; Bitstream Vera licence, in
/// analyze/DejaVuSans-LICENSE), embedded so that the chart's text is laid out (both formats) and
/// drawn (PNG) the same on a box without fonts or fontconfig.
static CHART_FONT: &[u8] = include_bytes!("analyze/DejaVuSans.ttf");
const CHART_FONT_FAMILY: &str = "sans-serif";

/// Gives plotters the embedded font under the family the chart names (once per process). The
/// SVG backend needs it too: it writes `<text>` for the viewer's fonts but measures text for
/// the layout of axes and legends.
fn register_chart_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(CHART_FONT_FAMILY, FontStyle::Normal, CHART_FONT).is_ok()
    });
    anyhow::ensure!(registered, "the chart's embedded font could not be read");
    Ok(())
}

/// Whether `path` can take the chart: its extension says a format, and it is a regular file or
/// nothing yet (a FIFO would block the writer, a device would swallow the chart). Checked before
/// any log is read.
pub fn check_chart_path(path: &Path) -> anyhow::Result<ChartFormat> {
    let format = ChartFormat::for_path(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => anyhow::bail!(
            "cannot write the chart to {}: it is {}, not a regular file",
            path.display(),
            crate::files::kind_of(meta.file_type())
        ),
        _ => Ok(format),
    }
}

/// Writes the chart to `path`, as SVG or PNG by its extension (checked before any drawing),
/// through a temporary file beside it and a rename: a reader never sees half a chart, and a
/// failed write leaves the old one.
pub fn chart_to_file(analysis: &Analysis, path: &Path) -> anyhow::Result<()> {
    let bytes = match check_chart_path(path)? {
        ChartFormat::Svg => chart_svg(analysis)?.into_bytes(),
        ChartFormat::Png => chart_png(analysis)?,
    };
    crate::files::write_atomic(path, &bytes)
        .with_context(|| format!("cannot write the chart to {}", path.display()))
}

/// The chart as an SVG document.
pub fn chart_svg(analysis: &Analysis) -> anyhow::Result<String> {
    register_chart_font()?;
    let mut svg = String::new();
    draw_chart(
        SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area(),
        analysis,
    )?;
    Ok(svg)
}

/// The chart as a PNG file's bytes (drawn in memory, encoded by the `image` crate).
pub fn chart_png(analysis: &Analysis) -> anyhow::Result<Vec<u8>> {
    register_chart_font()?;
    let (width, height) = CHART_SIZE;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    draw_chart(
        BitMapBackend::with_buffer(&mut pixels, CHART_SIZE).into_drawing_area(),
        analysis,
    )?;
    let image = image::RgbImage::from_raw(width, height, pixels)
        .context("the chart's pixels do not fill its size")?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("cannot encode the chart as PNG")?;
    Ok(png)
}

/// Days since 1970-01-01 as a civil date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds since the epoch as a UTC date and time of day, to the second.
fn utc(time: f64) -> ((i64, i64, i64), (i64, i64, i64)) {
    let seconds = time.floor() as i64;
    let of_day = seconds.rem_euclid(86_400);
    (
        civil_from_days(seconds.div_euclid(86_400)),
        (of_day / 3600, of_day / 60 % 60, of_day % 60),
    )
}

fn utc_date(time: f64) -> String {
    let ((year, month, day), _) = utc(time);
    format!("{year:04}-{month:02}-{day:02}")
}

fn utc_time(time: f64) -> String {
    let (_, (hours, minutes, seconds)) = utc(time);
    format!("{hours:02}:{minutes:02}:{seconds:02}")
}

/// A length of time in the unit that reads best: "45 s", "12.5 min", "5.2 h", "2.3 days".
fn duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else if seconds < 2.0 * 86_400.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} days", seconds / 86_400.0)
    }
}

/// Tick steps of the time axis, in seconds, up to a day (longer ones are 1, 2, 5, 10... days).
const TIME_STEPS: [f64; 18] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    10_800.0, 21_600.0, 43_200.0, 86_400.0,
];

/// A wall-clock time axis (seconds since the epoch, UTC), ticked at round times of day and
/// labelled HH:MM:SS, with the date in the labels when the chart spans more than one day.
#[derive(Debug, Clone)]
struct TimeAxis {
    range: std::ops::Range<f64>,
}

impl TimeAxis {
    /// The log's span (at least ten seconds).
    fn of(analysis: &Analysis) -> Self {
        let start = analysis.start_time.unwrap_or(0.0);
        Self {
            range: start..start + analysis.span_s.max(10.0),
        }
    }

    fn multi_day(&self) -> bool {
        utc_date(self.range.start) != utc_date(self.range.end)
    }

    /// The axis' description: the clock, and the date(s).
    fn description(&self) -> String {
        let (first, last) = (utc_date(self.range.start), utc_date(self.range.end));
        if first == last {
            format!("time of day (UTC) on {first}")
        } else {
            format!("date and time of day (UTC), {first} to {last}")
        }
    }

    /// The smallest round step that gives at most `ticks` ticks.
    fn step(&self, ticks: usize) -> Option<f64> {
        if ticks == 0 {
            return None;
        }
        let span = self.range.end - self.range.start;
        let fits = |step: f64| span / step < ticks as f64;
        TIME_STEPS.into_iter().find(|step| fits(*step)).or_else(|| {
            let mut days = 1.0;
            loop {
                for factor in [1.0, 2.0, 5.0] {
                    if fits(days * factor * 86_400.0) {
                        return Some(days * factor * 86_400.0);
                    }
                }
                days *= 10.0;
            }
        })
    }
}

impl Ranged for TimeAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let Some(step) = self.step(hint.max_num_points()) else {
            return Vec::new();
        };
        let first = (self.range.start / step).ceil() as i64;
        let last = (self.range.end / step).floor() as i64;
        (first..=last).map(|k| k as f64 * step).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

impl ValueFormatter<f64> for TimeAxis {
    fn format_ext(&self, value: &f64) -> String {
        if self.multi_day() {
            let date = utc_date(*value);
            let time = utc_time(*value);
            // "MM-DD HH:MM", with the seconds when the ticks are that close.
            let time = if self.range.end - self.range.start > 3600.0 {
                &time[..5]
            } else {
                &time[..]
            };
            format!("{} {time}", &date[5..])
        } else {
            utc_time(*value)
        }
    }
}

/// Where `times` (seconds since the first line) fall in the chart's bins: one wall-clock time
/// per bin that has any, so a long log's thousands of markers draw as at most `CHART_BINS` lines.
fn chart_marks(times: &[f64], start: f64, axis: &TimeAxis) -> Vec<f64> {
    let mut bins: Vec<(usize, f64)> = times
        .iter()
        .map(|t| (chart_bin(start + t, axis), start + t))
        .collect();
    bins.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    bins.dedup_by_key(|(bin, _)| *bin);
    bins.into_iter().map(|(_, time)| time).collect()
}

fn chart_bin(time: f64, axis: &TimeAxis) -> usize {
    let fraction = (time - axis.range.start) / (axis.range.end - axis.range.start);
    (fraction * CHART_BINS as f64).clamp(0.0, CHART_BINS as f64) as usize
}

/// `points` (seconds since the first line, value) as wall-clock lines: a new line where a run
/// started (no line across a restart), and at most two points per bin and run (the lowest and
/// the highest, in time order), so spikes stay visible and the points drawn stay bounded.
fn chart_lines(
    points: &[(f64, f64)],
    start: f64,
    axis: &TimeAxis,
    run_starts: &[f64],
) -> Vec<Vec<(f64, f64)>> {
    let key = |t: f64| {
        let run = run_starts.partition_point(|s| *s <= t);
        (run, chart_bin(start + t, axis))
    };
    let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut run = None;
    let mut rest = points;
    while let Some(&(t, _)) = rest.first() {
        let group_key = key(t);
        let length = rest
            .iter()
            .take_while(|(t, _)| key(*t) == group_key)
            .count();
        let (group, after) = rest.split_at(length);
        rest = after;
        if run != Some(group_key.0) {
            run = Some(group_key.0);
            lines.push(Vec::new());
        }
        let by_value = |a: &&(f64, f64), b: &&(f64, f64)| a.1.total_cmp(&b.1);
        let (Some(low), Some(high)) =
            (group.iter().min_by(by_value), group.iter().max_by(by_value))
        else {
            continue;
        };
        let (first, second) = if low.0 <= high.0 {
            (low, high)
        } else {
            (high, low)
        };
        if let Some(line) = lines.last_mut() {
            line.push((start + first.0, first.1));
            if second != first {
                line.push((start + second.0, second.1));
            }
        }
    }
    lines
}

/// A line of a chart panel: its legend, colour and points (already binned).
struct ChartLine {
    name: String,
    colour: RGBColor,
    lines: Vec<Vec<(f64, f64)>>,
    /// A reference (the target), drawn dashed under the measured lines.
    reference: bool,
}

/// Vertical marks in every panel: underruns, reloads.
struct ChartMarks {
    name: String,
    colour: RGBColor,
    width: u32,
    count: usize,
    times: Vec<f64>,
}

struct ChartPanel {
    title: &'static str,
    unit: &'static str,
    top: f64,
    lines: Vec<ChartLine>,
}

fn drawing<T, E: std::fmt::Display>(result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|error| anyhow::anyhow!("cannot draw the chart: {error}"))
}

/// The top of a panel's scale: a tenth above the highest value, and at least `floor`.
fn chart_top(lines: &[ChartLine], floor: f64) -> f64 {
    lines
        .iter()
        .flat_map(|line| line.lines.iter().flatten())
        .map(|(_, value)| *value)
        .fold(floor, f64::max)
        * 1.1
}

/// The panels: fps achieved against target, buffer fill, stage times per frame.
fn chart_panels(analysis: &Analysis, axis: &TimeAxis) -> Vec<ChartPanel> {
    let start = analysis.start_time.unwrap_or(0.0);
    let runs = &analysis.run_start_times;
    let line = |name: &str, colour: RGBColor, points: &[(f64, f64)]| ChartLine {
        name: name.to_string(),
        colour,
        lines: chart_lines(points, start, axis, runs),
        reference: false,
    };
    let reference = |name: &str, points: &[(f64, f64)]| ChartLine {
        reference: true,
        ..line(name, RGBColor(0x55, 0x55, 0x55), points)
    };
    // Logs written before stats lines carried their target: the start line's, across the chart.
    let target: Vec<(f64, f64)> = match (analysis.target_fps_series.is_empty(), analysis.target_fps)
    {
        (true, Some(fps)) => vec![(0.0, fps), (axis.range.end - start, fps)],
        _ => analysis.target_fps_series.clone(),
    };
    let period: Vec<(f64, f64)> = target
        .iter()
        .filter(|(_, fps)| *fps > 0.0)
        .map(|(t, fps)| (*t, 1000.0 / fps))
        .collect();
    let fps = vec![
        line("achieved fps", RGBColor(0x1f, 0x77, 0xb4), &analysis.fps),
        reference("target fps", &target),
    ];
    let speed: Vec<(f64, f64)> = analysis
        .animation_speed
        .iter()
        .map(|(t, s)| (*t, s * 100.0))
        .collect();
    let buffer = vec![
        line(
            "buffer fill",
            RGBColor(0x2c, 0xa0, 0x2c),
            &analysis.buffer_percentage,
        ),
        line(
            "art speed (% of its pace)",
            RGBColor(0x17, 0xbe, 0xcf),
            &speed,
        ),
    ];
    let stages = vec![
        line(
            "decode",
            RGBColor(0x94, 0x67, 0xbd),
            &analysis.stats_decode_ms,
        ),
        line(
            "upscale + convert",
            RGBColor(0x8c, 0x56, 0x4b),
            &analysis.stats_upscale_ms,
        ),
        reference("frame period (1000 / target fps)", &period),
    ];
    vec![
        ChartPanel {
            title: "Frames per second: achieved against target",
            unit: "frames per second",
            top: chart_top(&fps, 1.0),
            lines: fps,
        },
        ChartPanel {
            title: "Buffer fill and the art's speed",
            unit: "%",
            top: chart_top(&buffer, 100.0),
            lines: buffer,
        },
        ChartPanel {
            title: "Stage times per frame",
            unit: "ms per frame",
            top: chart_top(&stages, 1.0),
            lines: stages,
        },
    ]
}

fn chart_marks_of(analysis: &Analysis, axis: &TimeAxis) -> Vec<ChartMarks> {
    let start = analysis.start_time.unwrap_or(0.0);
    let marks = |name: &str, colour: RGBColor, width: u32, times: &[f64]| ChartMarks {
        name: name.to_string(),
        colour,
        width,
        count: times.len(),
        times: chart_marks(times, start, axis),
    };
    vec![
        marks(
            "underrun",
            RGBColor(0xd6, 0x27, 0x28),
            1,
            &analysis.underrun_times,
        ),
        marks(
            "reload",
            RGBColor(0xff, 0x7f, 0x0e),
            2,
            &analysis.reload_times,
        ),
        marks(
            "reload rejected",
            RGBColor(0xe3, 0x77, 0xc2),
            2,
            &analysis.rejected_reload_times,
        ),
        marks(
            "quality ladder move",
            RGBColor(0x7f, 0x7f, 0x7f),
            1,
            &analysis
                .adapt_moves
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>(),
        ),
    ]
}

/// The chart: a title, then three panels on one wall-clock time axis, each with labelled axes
/// and a legend, underruns, reloads and ladder moves marked across all three.
fn draw_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    analysis: &Analysis,
) -> anyhow::Result<()> {
    let axis = TimeAxis::of(analysis);
    let panels = chart_panels(analysis, &axis);
    let marks = chart_marks_of(analysis, &axis);
    drawing(root.fill(&WHITE))?;
    let (first, last) = (axis.range.start, axis.range.start + analysis.span_s);
    let last = if utc_date(first) == utc_date(last) {
        utc_time(last)
    } else {
        format!("{} {}", utc_date(last), utc_time(last))
    };
    let mut title = format!(
        "dreamframe: fps, buffer fill, art speed and stage times, {} {} to {last} UTC ({})",
        utc_date(first),
        utc_time(first),
        duration(analysis.span_s)
    );
    if analysis.fps.is_empty() && analysis.buffer_percentage.is_empty() {
        title.push_str(": no stats figures in the log");
    }
    let body = drawing(root.titled(&title, (CHART_FONT_FAMILY, 20)))?;
    let areas = body.split_evenly((panels.len(), 1));
    let last = panels.len() - 1;
    for (index, (area, panel)) in areas.iter().zip(&panels).enumerate() {
        draw_panel(area, &axis, panel, &marks, index == last)?;
    }
    drawing(root.present())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    axis: &TimeAxis,
    panel: &ChartPanel,
    marks: &[ChartMarks],
    bottom: bool,
) -> anyhow::Result<()> {
    // The legend has a column of its own, right of the plot, so it never hides a line.
    const LEGEND_WIDTH: u32 = 260;
    let (plot, legend) =
        area.split_horizontally(area.dim_in_pixel().0.saturating_sub(LEGEND_WIDTH));
    let mut chart = drawing(
        ChartBuilder::on(&plot)
            .caption(panel.title, (CHART_FONT_FAMILY, 16))
            .margin(6)
            .x_label_area_size(if bottom { 48 } else { 26 })
            .y_label_area_size(70)
            .build_cartesian_2d(axis.clone(), 0.0..panel.top),
    )?;
    let decimals = if panel.top >= 20.0 {
        0
    } else if panel.top >= 2.0 {
        1
    } else {
        2
    };
    let y_label = |value: &f64| format!("{value:.decimals$}");
    let description = axis.description();
    let mut mesh = chart.configure_mesh();
    mesh.x_labels(if axis.multi_day() { 8 } else { 12 })
        .y_labels(6)
        .y_label_formatter(&y_label)
        .y_desc(panel.unit)
        .label_style((CHART_FONT_FAMILY, 13))
        .axis_desc_style((CHART_FONT_FAMILY, 14))
        .light_line_style(RGBColor(0xf2, 0xf2, 0xf2));
    if bottom {
        mesh.x_desc(&description);
    }
    drawing(mesh.draw())?;
    // Markers under the lines, reference lines (dashed) under the measured ones.
    let marks: Vec<&ChartMarks> = marks.iter().filter(|mark| mark.count > 0).collect();
    for mark in &marks {
        let style = mark.colour.mix(0.85).stroke_width(mark.width);
        let top = panel.top;
        drawing(
            chart.draw_series(
                mark.times
                    .iter()
                    .map(|t| PathElement::new(vec![(*t, 0.0), (*t, top)], style)),
            ),
        )?;
    }
    for reference in [true, false] {
        for line in panel.lines.iter().filter(|l| l.reference == reference) {
            let style = line.colour.stroke_width(2);
            for part in &line.lines {
                if reference {
                    drawing(chart.draw_series(DashedLineSeries::new(
                        part.iter().copied(),
                        8,
                        5,
                        style,
                    )))?;
                } else {
                    drawing(chart.draw_series(LineSeries::new(part.iter().copied(), style)))?;
                }
            }
        }
    }
    // The legend: a sample and a name for each line and kind of marker, level with the plot.
    let top = chart.plotting_area().get_pixel_range().1.start - legend.get_base_pixel().1;
    let rows = panel.lines.len() + marks.len();
    let row = |index: usize| top + 14 + 20 * index as i32;
    let right = LEGEND_WIDTH as i32 - 8;
    drawing(legend.draw(&Rectangle::new(
        [(4, top), (right, row(rows) - 6)],
        WHITE.filled(),
    )))?;
    drawing(legend.draw(&Rectangle::new(
        [(4, top), (right, row(rows) - 6)],
        RGBColor(0xbb, 0xbb, 0xbb).stroke_width(1),
    )))?;
    let text = TextStyle::from((CHART_FONT_FAMILY, 13).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (index, line) in panel.lines.iter().enumerate() {
        let y = row(index);
        let style = line.colour.stroke_width(2);
        let sample = vec![(12, y), (40, y)];
        if line.reference {
            drawing(legend.draw(&DashedPathElement::new(sample, 8, 5, style)))?;
        } else {
            drawing(legend.draw(&PathElement::new(sample, style)))?;
        }
        drawing(legend.draw(&Text::new(line.name.as_str(), (48, y), text.clone())))?;
    }
    for (index, mark) in marks.iter().enumerate() {
        let y = row(panel.lines.len() + index);
        let style = mark.colour.mix(0.85).stroke_width(mark.width);
        drawing(legend.draw(&PathElement::new(vec![(26, y - 7), (26, y + 7)], style)))?;
        let name = format!("{} ({})", mark.name, mark.count);
        drawing(legend.draw(&Text::new(name, (48, y), text.clone())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_times_and_fields_parse() {
        let line = parse_line(
            "2026-11-27T06:32:56.596500462Z [INFO] [TIMING] transition from=0 to=1 frames=90 decode_ms_per_frame=19.723 note=\"a \\\"b\\\"\"",
        )
        .expect("a log line");
        assert_eq!(line.event, "transition");
        assert_eq!(line.fields["decode_ms_per_frame"], "19.723");
        assert_eq!(line.fields["note"], "a \"b\"");
        assert_eq!(parse_time("1970-01-02T00:00:01Z"), Some(86_401.0));
        assert_eq!(parse_time("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert!(parse_line("not a log line").is_none());
    }

    #[test]
    fn counters_add_up_over_restarts_and_generation_below_target_is_named() {
        let at = |time: &str, event: &dyn std::fmt::Display| format!("{time} [INFO] {event}\n");
        let start = events::Start {
            generator: "cppn".into(),
            fps: 30.0,
            ..Default::default()
        };
        let stats =
            |achieved_fps, late_frames, underruns, decode_fps, buffer_percentage| events::Stats {
                achieved_fps,
                target_fps: 30.0,
                late_frames,
                underruns,
                decode_fps,
                buffer_percentage,
                buffer_seconds: buffer_percentage / 10.0,
                jitter_p99_ms: 0.1,
                ..Default::default()
            };
        let transition = events::Transition {
            frames: 30,
            decode_ms_per_frame: 80.0,
            upscale_ms_per_frame: 3.0,
            ..Default::default()
        };
        let underrun = events::Underrun {
            policy: "ping-pong".into(),
            buffer_frames: 0,
            recent_frames: 30,
        };
        let log = [
            at("2026-01-01T00:00:00Z", &start),
            at("2026-01-01T00:00:03Z", &format!("[TIMING] {transition}")),
            at("2026-01-01T00:00:10Z", &stats(20.0, 2, 1, 12.0, 5.0)),
            at("2026-01-01T00:00:11Z", &underrun),
            at("2026-01-01T00:01:00Z", &start),
            at("2026-01-01T00:01:10Z", &stats(25.0, 3, 2, 14.0, 4.0)),
        ]
        .concat();
        let analysis = analyze(&[log.to_string()]);
        assert_eq!(
            (analysis.runs, analysis.late_frames, analysis.underruns),
            (2, 5.0, 3.0)
        );
        assert_eq!(analysis.underrun_times, vec![11.0]);
        let text = report(&analysis, &["x".into()]);
        assert!(
            text.contains("Generation is the bottleneck: the generator can make 12.5 frames/s"),
            "{text}"
        );
        assert!(text.contains("model.width/height"), "{text}");
        assert!(text.contains("ran dry 3 time(s)"), "{text}");
        let svg = chart_svg(&analysis).expect("a chart");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("achieved fps") && svg.contains("underrun (1)"),
            "{svg}"
        );
    }

    #[test]
    fn each_stretch_is_judged_against_its_own_target_and_a_start_alone_is_not_judged() {
        let at = |time: &str, event: &dyn std::fmt::Display| format!("{time} [INFO] {event}\n");
        let start = events::Start {
            generator: "cppn".into(),
            fps: 30.0,
            ..Default::default()
        };
        let text = report(&analyze(&[at("2026-01-01T00:00:00Z", &start)]), &[]);
        assert!(text.contains("Nothing to judge"), "{text}");
        assert!(!text.contains("No bottleneck"), "{text}");

        // 41 ms a frame: 24.4 frames/s, short of 30 fps; then a reload to 12 fps, met.
        let transition = events::Transition {
            frames: 30,
            decode_ms_per_frame: 41.0,
            ..Default::default()
        };
        let reload = events::Reload {
            applied: true,
            fps: 12.0,
            ..Default::default()
        };
        let mut log = at("2026-01-01T00:00:00Z", &start);
        for second in (5..45).step_by(5) {
            log += &at(&format!("2026-01-01T00:00:{second:02}Z"), &transition);
        }
        log += &at("2026-01-01T00:00:45Z", &reload);
        for second in (50..60).step_by(5) {
            log += &at(&format!("2026-01-01T00:00:{second:02}Z"), &transition);
        }
        let analysis = analyze(&[log]);
        assert_eq!(analysis.periods.len(), 2);
        let text = report(&analysis, &[]);
        assert!(
            text.contains(
                "Generation is the bottleneck (from 0 s to 40 s of the log, at 30.0 fps): the generator can make 24.4 frames/s"
            ),
            "{text}"
        );
        assert!(!text.contains("No bottleneck"), "{text}");
    }

    /// The stressed real log (its buffer runs dry) with a reload and a rejected reload added
    /// between its lines, as a SIGHUP would log them.
    fn stressed_log_with_reloads() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/logs/stressed-512x288-60fps.log"
        );
        let log = std::fs::read_to_string(path).expect("the stressed log");
        let lines: Vec<&str> = log.lines().collect();
        let time_of = |line: &str| line.split(' ').next().unwrap().to_string();
        let reload = events::Reload {
            applied: true,
            fps: 60.0,
            ..Default::default()
        };
        let rejected = events::ReloadRejected {
            error: "config.toml: unknown key".into(),
        };
        let (at, later) = (lines.len() / 3, 2 * lines.len() / 3);
        let mut out = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            out.push(line.to_string());
            if index == at {
                out.push(format!("{} [INFO] {reload}", time_of(line)));
            }
            if index == later {
                out.push(format!("{} [ERROR] {rejected}", time_of(line)));
            }
        }
        out.join("\n") + "\n"
    }

    /// The SVG's `<text>` elements' contents.
    fn svg_texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|element| {
                let content = element.split_once('>')?.1.split_once("</text>")?.0;
                Some(content.trim().to_string())
            })
            .collect()
    }

    /// Lines of the SVG drawn in `colour` (plotters writes it as upper-case hex).
    fn drawn_in<'a>(svg: &'a str, colour: &str) -> Vec<&'a str> {
        svg.lines()
            .filter(|line| line.contains(&format!("stroke=\"{colour}\"")))
            .collect()
    }

    #[test]
    fn the_svg_chart_has_legends_labelled_axes_wall_clock_ticks_and_markers() {
        let log = stressed_log_with_reloads();
        let analysis = analyze(std::slice::from_ref(&log));
        let underruns = log.matches("] underrun ").count();
        assert!(underruns > 0);
        assert_eq!(analysis.underrun_times.len(), underruns);
        assert_eq!(analysis.reload_times.len(), 1);
        assert_eq!(analysis.rejected_reload_times.len(), 1);
        assert_eq!(analysis.run_start_times, vec![0.0]);
        let svg = chart_svg(&analysis).expect("a chart");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let texts = svg_texts(&svg);
        for text in [
            // The legends.
            "achieved fps",
            "target fps",
            "buffer fill",
            "decode",
            "upscale + convert",
            "frame period (1000 / target fps)",
            &format!("underrun ({underruns})"),
            "reload (1)",
            "reload rejected (1)",
            // The axes' descriptions, and ticks in wall-clock time (the log starts 12:39:15).
            "frames per second",
            "%",
            "ms per frame",
            "time of day (UTC) on 2026-11-28",
            "12:39:20",
            "12:39:40",
        ] {
            assert!(texts.iter().any(|t| t == text), "no {text:?} in {texts:?}");
        }
        // Markers in each of the three panels, and their legend's sample.
        let marks = |colour| drawn_in(&svg, colour).len();
        let underrun_bins = chart_marks(
            &analysis.underrun_times,
            analysis.start_time.unwrap(),
            &TimeAxis::of(&analysis),
        )
        .len();
        assert_eq!(marks("#D62728"), 3 * underrun_bins + 3, "{svg}");
        assert_eq!(marks("#FF7F0E"), 3 + 3, "{svg}");
        assert_eq!(marks("#E377C2"), 3 + 3, "{svg}");
        // Every stats line but the closing one is a point of the achieved fps line.
        let stats = log.matches("] stats ").count();
        let longest = drawn_in(&svg, "#1F77B4")
            .iter()
            .map(|line| line.matches(',').count())
            .max();
        assert_eq!(longest, Some(stats - 1), "{svg}");
    }

    #[test]
    fn the_png_chart_decodes_at_its_size_with_the_lines_drawn() {
        let analysis = analyze(&[stressed_log_with_reloads()]);
        let png = chart_png(&analysis).expect("a chart");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .expect("a PNG")
            .to_rgb8();
        assert_eq!(image.dimensions(), CHART_SIZE);
        let drawn = |colour: [u8; 3]| image.pixels().filter(|p| p.0 == colour).count();
        // Achieved fps, buffer fill, and text.
        assert!(drawn([0x1f, 0x77, 0xb4]) > 100);
        assert!(drawn([0x2c, 0xa0, 0x2c]) > 100);
        assert!(drawn([0, 0, 0]) > 1000);
    }

    #[test]
    fn the_format_follows_the_extension_and_anything_else_is_refused_up_front() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let analysis = analyze(&[stressed_log_with_reloads()]);
        for (name, signature) in [("chart.svg", &b"<svg"[..]), ("CHART.PNG", &b"\x89PNG"[..])] {
            let path = dir.path().join(name);
            chart_to_file(&analysis, &path).expect("written");
            assert!(
                std::fs::read(&path).unwrap().starts_with(signature),
                "{name}"
            );
        }
        for name in ["chart.jpg", "chart", "chart.svg.txt"] {
            let path = dir.path().join(name);
            let error = chart_to_file(&analysis, &path).unwrap_err().to_string();
            assert!(
                error.contains(&path.display().to_string()) && error.contains(".svg or .png"),
                "{error}"
            );
            assert!(!path.exists());
        }
    }

    #[test]
    fn an_empty_analysis_still_charts() {
        let empty = Analysis::default();
        let svg = chart_svg(&empty).expect("a chart");
        assert!(
            svg.starts_with("<svg") && svg.contains("no stats figures"),
            "{svg}"
        );
        let png = chart_png(&empty).expect("a chart");
        assert!(png.starts_with(b"\x89PNG"));
        // Only a start line: no stats.
        let analysis =
            analyze(&["2026-01-01T00:00:00Z [INFO] start generator=cppn fps=30\n".into()]);
        assert!(chart_svg(&analysis).is_ok() && chart_png(&analysis).is_ok());
    }

    #[test]
    fn a_long_log_draws_a_bounded_number_of_points_with_dated_ticks() {
        let start = parse_time("2026-11-28T00:00:00Z").unwrap();
        let seconds = 200_000;
        let analysis = Analysis {
            start_time: Some(start),
            span_s: seconds as f64,
            run_start_times: vec![0.0, 100_000.5],
            fps: (0..seconds).map(|t| (t as f64, (t % 60) as f64)).collect(),
            buffer_percentage: (0..seconds).map(|t| (t as f64, 50.0)).collect(),
            underrun_times: (0..seconds).step_by(3).map(|t| t as f64).collect(),
            ..Default::default()
        };
        let svg = chart_svg(&analysis).expect("a chart");
        let points: usize = drawn_in(&svg, "#1F77B4")
            .iter()
            .map(|line| line.matches(',').count())
            .sum();
        // Two per bin, the run's start splitting one bin, and the legend's sample.
        assert!(points <= 2 * CHART_BINS + 4, "{points}");
        assert!(drawn_in(&svg, "#D62728").len() <= 3 * (CHART_BINS + 1) + 3);
        // A line per run.
        assert_eq!(drawn_in(&svg, "#1F77B4").len(), 2 + 1);
        let texts = svg_texts(&svg);
        for text in [
            "date and time of day (UTC), 2026-11-28 to 2026-11-30",
            "11-29 00:00",
            "11-29 12:00",
        ] {
            assert!(texts.iter().any(|t| t == text), "no {text:?} in {texts:?}");
        }
    }

    #[test]
    fn civil_dates_round_trip_and_lines_split_at_run_starts() {
        for days in (-800_000..3_000_000).step_by(997) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
        let time = parse_time("2026-11-28T12:39:15.77Z").unwrap();
        assert_eq!(
            (utc_date(time), utc_time(time)),
            ("2026-11-28".into(), "12:39:15".into())
        );
        let axis = TimeAxis { range: 0.0..100.0 };
        let points = [(1.0, 1.0), (2.0, 2.0), (10.0, 3.0), (11.0, 4.0)];
        assert_eq!(
            chart_lines(&points, 0.0, &axis, &[0.0, 5.0]),
            vec![vec![(1.0, 1.0), (2.0, 2.0)], vec![(10.0, 3.0), (11.0, 4.0)]]
        );
        assert_eq!(axis.key_points(6), vec![0.0, 30.0, 60.0, 90.0]);
    }
}
