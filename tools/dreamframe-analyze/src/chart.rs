//! The chart: fps, buffer fill with the art's speed, and stage times over wall-clock time, drawn
//! with plotters (SVG or PNG, by the output's extension), underruns, reloads and ladder moves
//! marked. The points drawn are bounded (`CHART_BINS`) however long the log; the text uses a font
//! embedded in the binary (no system fonts needed; FONT.md); the file is written whole or not at
//! all (`chart_to_file`: a temporary file and a rename).
//!
//! Runs on the caller's thread; fails with an error naming the path when the chart can't be
//! drawn or written.

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

use crate::analysis::Analysis;

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
/// DejaVuSans-LICENSE beside this file), embedded so that the chart's text is laid out (both formats) and
/// drawn (PNG) the same on a box without fonts or fontconfig.
static CHART_FONT: &[u8] = include_bytes!("DejaVuSans.ttf");
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
            dreamframe::checked_fs::kind_of(meta.file_type())
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
    dreamframe::checked_fs::write_atomic(path, &bytes)
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
    use crate::analysis::analyze;
    use dreamframe::events;
    use dreamframe::events::parse::parse_time;

    /// The stressed real log (its buffer runs dry) with a reload and a rejected reload added
    /// between its lines, as a SIGHUP would log them.
    fn stressed_log_with_reloads() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/logs/stressed-512x288-60fps.log"
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
        // 1970 to 9909: the years a log line can carry.
        for days in (0..2_900_000).step_by(997) {
            let (year, month, day) = civil_from_days(days);
            let midnight = format!("{year:04}-{month:02}-{day:02}T00:00:00Z");
            assert_eq!(parse_time(&midnight), Some(days as f64 * 86_400.0));
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
