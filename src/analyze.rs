//! The log analyzer behind `dreamframe-analyze LOG...`: reads dreamframe's `key=value` log lines
//! and reports where the time goes, in the manner of the earlier system's bottleneck report:
//! per-stage timing distributions, model lock contention, display rate, late frames, jitter,
//! buffer health with its depletion events, underruns and errors, then concrete recommendations;
//! and draws an SVG chart of fps, buffer fill and stage times over time.
//!
//! Inputs: log lines, streamed (`Analyzer::feed`): memory grows with the figures kept (a few
//! numbers per keyframe, transition and stats line), not with the log's size. Rotated files are
//! put in time order by their first line (`order_by_first_time`). Outputs: a report string and
//! an SVG string. Runs on the caller's thread; lines it can't read (not our format, a number
//! that is not finite or beyond `MAX_FIGURE`, a line longer than `MAX_LINE_BYTES`) are counted
//! and skipped, never fatal.

use std::collections::BTreeMap;

use crate::events;
use std::fmt::Write as _;
use std::io::{BufRead, Read};

/// One log line: seconds since the Unix epoch, level, event, fields.
#[derive(Debug, Clone)]
pub struct Line {
    pub time: f64,
    pub level: String,
    pub event: String,
    pub fields: BTreeMap<String, String>,
}

/// The largest magnitude a figure in our logs can have (frame counters over decades at 240 fps
/// stay below 1e12): anything beyond is a damaged or forged line.
pub const MAX_FIGURE: f64 = 1e12;
/// Lines longer than this are not ours (ours are at most a few KiB).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A figure worth keeping: finite and within `MAX_FIGURE`.
fn figure(value: f64) -> Option<f64> {
    (value.is_finite() && value.abs() <= MAX_FIGURE).then_some(value)
}

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

/// A quoted value (after its opening quote) with `\"`, `\\` and `\n` unescaped, and the
/// text after its closing quote (see `events::quoted`).
fn unquote(text: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return (value, &text[at + 1..]),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
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
    /// From the `stats` lines: (seconds since the first line, value).
    pub fps: Vec<(f64, f64)>,
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
    pub warnings: usize,
    pub errors: usize,
    pub resolution_divisor_hint: Option<f64>,
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
                self.finished.late += self.current.late;
                self.finished.underruns += self.current.underruns;
                self.finished.errors += self.current.errors;
                self.finished.contended += self.current.contended;
                self.current = PerRun::default();
                if !analysis.generators.contains(&start.generator) {
                    analysis.generators.push(start.generator);
                }
                analysis.target_fps = figure(start.fps).or(analysis.target_fps);
            }
            events::Keyframe::NAME => {
                if let Some(keyframe) = events::Keyframe::read(fields) {
                    analysis.keyframe_ms.extend(figure(keyframe.ms));
                    analysis
                        .keyframe_lock_wait_ms
                        .extend(figure(keyframe.lock_wait_ms));
                }
            }
            events::Transition::NAME => {
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
            events::Reload::NAME => analysis.reloads += 1,
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
        push(&mut analysis.buffer_percentage, stats.buffer_percentage);
        push(&mut analysis.buffer_seconds, stats.buffer_seconds);
        push(&mut analysis.stats_decode_ms, stats.decode_ms_per_frame);
        push(&mut analysis.stats_upscale_ms, stats.upscale_ms_per_frame);
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
        analysis.target_fps = figure(stats.target_fps).or(analysis.target_fps);
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
        analysis.late_frames = self.finished.late + self.current.late;
        analysis.underruns = self.finished.underruns + self.current.underruns;
        analysis.generator_errors = self.finished.errors + self.current.errors;
        analysis.lock_contended = self.finished.contended + self.current.contended;
        analysis
    }
}

/// Reads `reader` line by line into `analyzer`, holding at most one line (of at most
/// `MAX_LINE_BYTES`) at a time.
pub fn feed_reader(
    analyzer: &mut Analyzer,
    reader: &mut impl std::io::BufRead,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            // Too long to be ours: skip to the end of it.
            analyzer.skip_unreadable();
            loop {
                let buffer = reader.fill_buf()?;
                if buffer.is_empty() {
                    return Ok(());
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
            continue;
        }
        match std::str::from_utf8(&line) {
            Ok(text) => analyzer.feed(text),
            Err(_) => analyzer.feed(&String::from_utf8_lossy(&line)),
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

/// Frames per second the generator can make when it never waits: one transition's frames over
/// their decode time plus one keyframe (both hold the same model).
pub fn generation_capacity(a: &Analysis) -> Option<f64> {
    let frames = distribution(&a.frames_per_transition)?.p50;
    let decode = distribution(&a.decode_ms_per_frame)?.p50;
    let keyframe = distribution(&a.keyframe_ms).map_or(0.0, |k| k.p50);
    let cost_ms = frames * decode + keyframe;
    (cost_ms > 0.0).then(|| frames * 1000.0 / cost_ms)
}

fn recommend(
    a: &Analysis,
    target: f64,
    fps: Option<Distribution>,
    decode_fps: Option<Distribution>,
    buffer: Option<Distribution>,
) -> Vec<String> {
    let mut out = Vec::new();
    let decode = distribution(&a.decode_ms_per_frame);
    let upscale = distribution(&a.upscale_ms_per_frame);
    let keyframe = distribution(&a.keyframe_ms);
    let _ = decode_fps;
    let generated = generation_capacity(a).unwrap_or(0.0);
    let sd = a.generators.iter().any(|g| g.contains("stable"));
    if target > 0.0 && generated > 0.0 && generated < target * 0.98 {
        let mut text = format!(
            "Generation is the bottleneck: the generator can make {generated:.1} frames/s (decode p50 {:.1} ms/frame, keyframe p50 {:.0} ms) against {target:.1} fps shown. ",
            decode.map_or(0.0, |d| d.p50),
            keyframe.map_or(0.0, |k| k.p50)
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
        out.push(format!(
            "No bottleneck: generation keeps ahead of the display ({generated:.1} frames/s made for {target:.1} fps) and the buffer never ran dry."
        ));
    }
    out
}

/// A chart panel: title, top of the scale, and its series (name, colour, points).
type Panel<'a> = (&'a str, f64, Vec<(&'a str, &'a str, &'a [(f64, f64)])>);

/// An SVG chart: achieved and target fps, buffer fill, and stage times over time.
pub fn chart(analysis: &Analysis) -> String {
    const WIDTH: f64 = 900.0;
    const PANEL: f64 = 160.0;
    const LEFT: f64 = 60.0;
    const TOP: f64 = 30.0;
    let span = analysis.span_s.max(1.0);
    let x = |t: f64| LEFT + t / span * (WIDTH - LEFT - 20.0);
    let mut svg = String::new();
    let height = TOP + 3.0 * (PANEL + 40.0);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="13">dreamframe: fps, buffer fill and stage times over {span:.0} s</text>"#
    );
    let target = analysis.target_fps.unwrap_or(0.0);
    let decode = analysis.stats_decode_ms.clone();
    let upscale = analysis.stats_upscale_ms.clone();
    let fps_max = values(&analysis.fps)
        .into_iter()
        .fold(target, f64::max)
        .max(1.0)
        * 1.1;
    let stage_max = values(&decode)
        .into_iter()
        .chain(values(&upscale))
        .fold(1.0, f64::max)
        * 1.1;
    let target_line: Vec<(f64, f64)> = if target > 0.0 {
        vec![(0.0, target), (span, target)]
    } else {
        Vec::new()
    };
    let panels: [Panel; 3] = [
        (
            "fps",
            fps_max,
            vec![
                ("achieved", "#1f77b4", &analysis.fps),
                ("target", "#999999", &target_line),
            ],
        ),
        (
            "buffer fill %",
            100.0,
            vec![("buffer", "#2ca02c", &analysis.buffer_percentage)],
        ),
        (
            "ms per frame",
            stage_max,
            vec![
                ("decode", "#d62728", &decode),
                ("upscale+convert", "#9467bd", &upscale),
            ],
        ),
    ];
    for (index, (title, max, series)) in panels.iter().enumerate() {
        let top = TOP + index as f64 * (PANEL + 40.0) + 10.0;
        let y = |v: f64| top + PANEL - (v / max).clamp(0.0, 1.0) * PANEL;
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#cccccc"/>"##,
            WIDTH - LEFT - 20.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="4" y="{}">{max:.0}</text><text x="4" y="{}">0</text>"#,
            top + 10.0,
            top + PANEL
        );
        let _ = writeln!(svg, r#"<text x="{LEFT}" y="{}">{title}</text>"#, top - 3.0);
        for (i, (name, colour, points)) in series.iter().enumerate() {
            let path: Vec<String> = points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            if !path.is_empty() {
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                    path.join(" ")
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" fill="{colour}">{name}</text>"#,
                WIDTH - 200.0 + i as f64 * 90.0,
                top - 3.0
            );
        }
        if index == 1 {
            for t in &analysis.underrun_times {
                let _ = writeln!(
                    svg,
                    r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1}" stroke="#ff7f0e" stroke-dasharray="3,2"/>"##,
                    x(*t),
                    top + PANEL
                );
            }
        }
    }
    let bottom = TOP + 3.0 * (PANEL + 40.0) - 15.0;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{bottom}">0 s</text><text x="{}" y="{bottom}">{span:.0} s</text>"#,
        WIDTH - 60.0
    );
    svg.push_str("</svg>\n");
    svg
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
        let svg = chart(&analysis);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // fps, target, buffer fill, decode and upscale (zeros here, but on every stats line).
        assert_eq!(svg.matches("<polyline").count(), 5, "{svg}");
    }
}
