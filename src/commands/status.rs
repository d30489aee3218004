//! `dreamframe status`: how the display is doing, for a person on SSH. Reads status.json from the
//! output folder the display uses (the same config lookup: `--config`, `--output-dir`; where
//! neither names a folder, the default one or the systemd service's, preferring a live display's,
//! and says which it read) and prints state, fps against target, a buffer gauge, generator,
//! keyframes, counts, errors, uptime and where the log and snapshot are. `--watch` redraws it,
//! `--json` prints the file, `--picture` draws the snapshot with the terminal sink's half blocks,
//! sized to the terminal.
//!
//! Whether the display runs: a live process holds the folder's lock (`output_lock`), and
//! status.json is younger than a few of its rewrite intervals. Inputs: the command line and
//! files; outputs: text on stdout. Runs on the main thread. Exit: 0 running, 3 not running
//! (LSB's "program is not running"), 1 running but status.json stale (stuck) or unreadable, 78
//! a bad config, 4 anything else that kept the report from being made or given (LSB's "unknown"):
//! no permission to read the folder ("can't tell"), stdout closed or full. Everything read from
//! the files is distrusted: text escaped, figures that no display writes shown as "?".

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::commands::cli::{Cli, StatusArgs};
use crate::config::{Fit, Rotation, UpscaleFilter};
use crate::frame::pixel_format::PixelFormat;
use crate::frame::Geometry;
use crate::launch::ConfigSource;
use crate::output_lock::OutputLock;
use crate::render::Renderer;

/// The systemd unit's `StateDirectory=dreamframe`: where the service writes status.json.
pub(crate) const SERVICE_STATE_DIR: &str = "/var/lib/dreamframe";
/// status.json is stale once older than this many of its rewrite intervals (and 10 s).
const STALE_INTERVALS: f64 = 3.0;
/// The largest status.json read (a real one is a few KiB).
const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// The largest snapshot read for `--picture`.
const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024;
/// The largest snapshot decoded for `--picture`: an 8K screen's pixels.
const MAX_SNAPSHOT_PIXELS: u64 = 7680 * 4320;

/// Exit statuses of `dreamframe status`.
pub(crate) const EXIT_RUNNING: u8 = 0;
pub(crate) const EXIT_STUCK: u8 = 1;
pub(crate) const EXIT_NOT_RUNNING: u8 = 3;
/// LSB's "status unknown": the report could not be made or given (stdout closed or full).
pub(crate) const EXIT_UNKNOWN: u8 = 4;

/// What the command found: the text to print and the exit status.
pub(crate) struct Report {
    pub text: String,
    pub exit: u8,
}

/// The output folder to read, and why it was chosen when there was a choice. A folder set by
/// `--output-dir` or `output.dir` is read as it is; otherwise the default folder (which depends
/// on who runs `status`) and the service's are both candidates, in this order: one whose lock a
/// live display holds; one that can't be looked at (permission: the service's, for a user
/// outside its group); one with a status.json; the default one.
fn output_dir(cli: &Cli) -> anyhow::Result<(PathBuf, Option<String>)> {
    let config = ConfigSource::of(cli).load()?;
    let dir = crate::service::OutputPaths::for_config(&config).dir;
    let service = PathBuf::from(SERVICE_STATE_DIR);
    if cli.output_dir.is_some() || config.output.dir.is_some() || dir == service {
        return Ok((dir, None));
    }
    Ok(choose_folder([dir, service]))
}

/// The better of the default folder and the service's (`output_dir`), with a note saying why.
fn choose_folder(candidates: [PathBuf; 2]) -> (PathBuf, Option<String>) {
    // Each folder looked at once: [live display, can't be looked at, has a status.json].
    let look = |c: &PathBuf| {
        let holder = OutputLock::holder(c);
        let status = c.join("status.json").try_exists();
        let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
        [
            matches!(holder, Ok(Some(_))),
            holder.as_ref().is_err_and(denied) || status.as_ref().is_err_and(denied),
            matches!(status, Ok(true)),
        ]
    };
    let looks = candidates.each_ref().map(look);
    let reasons = [
        "a display holds its lock",
        "it can't be looked at",
        "it has a status.json",
    ];
    for (rank, why) in reasons.into_iter().enumerate() {
        if let Some(found) = (0..2).find(|&i| looks[i][rank]).map(|i| &candidates[i]) {
            let other = candidates
                .iter()
                .find(|c| *c != found)
                .expect("two candidates");
            let note = format!(
                "reading {} ({why}; also looked at {})",
                found.display(),
                other.display()
            );
            return (found.clone(), Some(note));
        }
    }
    let [dir, _] = candidates;
    (dir, None)
}

/// Runs `dreamframe status` and returns its exit status.
pub(crate) fn run(cli: &Cli, args: &StatusArgs) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    let (dir, choice) = output_dir(cli)?;
    let clear = args.watch && std::io::stdout().is_terminal();
    loop {
        let mut text = String::new();
        if clear {
            text.push_str("\x1b[H\x1b[2J");
        }
        let report = if args.json {
            // stdout stays JSON: the folder's choice goes to stderr.
            if let Some(choice) = &choice {
                // A note only: a stderr that can't take it must not end the report.
                let _ = writeln!(std::io::stderr(), "dreamframe: {choice}");
            }
            json(&dir)
        } else {
            let mut report = report(&dir, SystemTime::now());
            if let Some(choice) = &choice {
                report.text.push_str(&format!("  ({choice})\n"));
            }
            if args.picture {
                report.text = format!("{}\n{}", picture(&dir, terminal_size()), report.text);
            }
            report
        };
        text.push_str(&report.text);
        crate::stdout::write(&text)?;
        if !args.watch {
            return Ok(report.exit);
        }
        std::thread::sleep(Duration::from_secs_f64(args.interval));
        if !clear {
            crate::stdout::write("\n")?;
        }
    }
}

/// The terminal's size in cells: stdout's, else `$COLUMNS` x `$LINES`, else 80x24.
fn terminal_size() -> (u32, u32) {
    let env = |name: &str| std::env::var(name).ok()?.trim().parse::<u32>().ok();
    crate::sys::tty::size(libc::STDOUT_FILENO)
        .filter(|&(columns, rows)| columns > 0 && rows > 1)
        .or_else(|| Some((env("COLUMNS")?, env("LINES")?)))
        .unwrap_or((80, 24))
}

/// status.json as it is, or why there is none.
fn json(dir: &Path) -> Report {
    let path = dir.join("status.json");
    match crate::checked_fs::read_regular(&path, MAX_STATUS_BYTES) {
        Ok(bytes) => Report {
            text: String::from_utf8_lossy(&bytes).trim_end().to_string() + "\n",
            exit: liveness(
                dir,
                serde_json::from_slice(&bytes).ok().as_ref(),
                SystemTime::now(),
            )
            .1,
        },
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => can_t_tell(&path),
        Err(error) => Report {
            text: format!("dreamframe: cannot read {}: {error}\n", path.display()),
            exit: EXIT_NOT_RUNNING,
        },
    }
}

/// What a person without read access to the service's files is told: not "not running".
fn can_t_tell(path: &Path) -> Report {
    Report {
        text: format!(
            "dreamframe: can't tell: permission denied reading {}; {}\n",
            path.display(),
            crate::checked_fs::PERMISSION_HINT
        ),
        exit: EXIT_UNKNOWN,
    }
}

/// A figure from status.json as a display could have written it (`events::figure`): a corrupt
/// or hand-made file must not print 200 digits.
fn sane(value: Option<&Value>) -> Option<f64> {
    value?.as_f64().and_then(crate::events::figure)
}

/// `value` with `decimals` decimals, or "?" where status.json holds no sane figure.
fn figure(value: Option<f64>, decimals: usize) -> String {
    value.map_or("?".to_string(), |v| format!("{v:.decimals$}"))
}

/// How far in the future status.json may claim to be written (clocks of a box and its NTP
/// server disagree a little) before its age is not believed.
const FUTURE_SLACK_S: f64 = 60.0;

/// One line on whether the display runs, and the exit status that goes with it.
fn liveness(dir: &Path, status: Option<&Value>, now: SystemTime) -> (String, u8) {
    let lock = dir.join(crate::output_lock::LOCK_FILE_NAME);
    let holder = OutputLock::holder(dir);
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let updated = status.and_then(|s| sane(s.get("updated_unix_s")));
    // Written in the future (a clock set back, or a forged file): there is no age to judge by.
    let age = updated
        .map(|updated| now_s - updated)
        .filter(|age| *age > -FUTURE_SLACK_S);
    // The config's range for output.status-seconds.
    let interval = status
        .and_then(|s| sane(s.get("status_interval_s")))
        .filter(|i| (0.1..=3600.0).contains(i))
        .unwrap_or(2.0);
    let stale_after = (interval * STALE_INTERVALS).max(10.0);
    let stale = age.is_none_or(|age| age > stale_after);
    let written = match (updated, age) {
        (None, _) => "never".to_string(),
        (Some(_), None) => "in the future (was the clock changed?)".to_string(),
        (Some(_), Some(age)) => format!("{} ago", duration(age.max(0.0))),
    };
    let every = duration(interval);
    let lock = lock.display();
    match holder {
        Ok(Some(pid)) if !stale => (format!("running (PID {pid})"), EXIT_RUNNING),
        Ok(Some(pid)) => (
            format!(
                "STUCK? PID {pid} holds {lock} but status.json was last written {written} (every {every}): the display may be hung"
            ),
            EXIT_STUCK,
        ),
        Ok(None) if status.is_some() => (
            format!(
                "NOT RUNNING: no process holds {lock} (status.json was last written {written}; the figures below are from then)"
            ),
            EXIT_NOT_RUNNING,
        ),
        Ok(None) => (
            format!("NOT RUNNING: no process holds {lock}"),
            EXIT_NOT_RUNNING,
        ),
        // No permission to look at the lock (another user's folder): judge by the file's age.
        Err(error) if !stale => (
            format!("running (status.json written {written}; cannot look at {lock}: {error})"),
            EXIT_RUNNING,
        ),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => (
            format!(
                "can't tell: permission denied reading {lock}, and status.json was last written {written}; {}",
                crate::checked_fs::PERMISSION_HINT
            ),
            EXIT_UNKNOWN,
        ),
        Err(error) => (
            format!(
                "NOT RUNNING: status.json was last written {written} (every {every}), and {lock} can't be looked at ({error})"
            ),
            EXIT_NOT_RUNNING,
        ),
    }
}

/// "1 h 02 min", "3 min 05 s", "4.2 s".
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".to_string();
    }
    let whole = seconds as u64;
    match whole {
        0..=59 => format!("{seconds:.1} s"),
        60..=3599 => format!("{} min {:02} s", whole / 60, whole % 60),
        3600..=86_399 => format!("{} h {:02} min", whole / 3600, whole % 3600 / 60),
        _ => format!("{} d {:02} h", whole / 86_400, whole % 86_400 / 3600),
    }
}

/// A 20-cell gauge of `percent`.
fn gauge(percent: f64) -> String {
    let filled = ((percent.clamp(0.0, 100.0) / 5.0).round()) as usize;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(20 - filled))
}

/// The person's view of `dir`'s status.json at `now`.
pub(crate) fn report(dir: &Path, now: SystemTime) -> Report {
    let path = dir.join("status.json");
    let bytes = crate::checked_fs::read_regular(&path, MAX_STATUS_BYTES);
    if let Err(error) = &bytes {
        if error.kind() == std::io::ErrorKind::PermissionDenied {
            return can_t_tell(&path);
        }
    }
    let status: Result<Value, String> = bytes
        .map_err(|error| error.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|error| error.to_string()));
    let status = match status {
        Ok(status) => status,
        Err(error) => return unreadable(dir, &path, &error, now),
    };
    let (line, exit) = liveness(dir, Some(&status), now);
    let fields = Fields(&status);
    let mut rows = Rows::default();
    let state = fields.text("state").unwrap_or_else(|| "unknown".into());
    // The state is news only from a running display; otherwise it is one of the old figures.
    let mut text = if exit == EXIT_RUNNING {
        format!("dreamframe: {line}; {state}\n")
    } else {
        rows.add("last state", state);
        format!("dreamframe: {line}\n")
    };
    picture_rows(&fields, &mut rows);
    work_rows(&fields, &mut rows);
    setup_rows(&fields, &path, &mut rows);
    text.push_str(&rows.0);
    Report { text, exit }
}

/// The report on a status.json that is missing or can't be parsed: whether a display runs, and
/// why there are no figures.
fn unreadable(dir: &Path, path: &Path, error: &str, now: SystemTime) -> Report {
    let (line, exit) = liveness(dir, None, now);
    // Running but with no readable status: stuck.
    let exit = if exit == EXIT_RUNNING {
        EXIT_STUCK
    } else {
        exit
    };
    Report {
        text: format!(
            "dreamframe: {line}\n  cannot read {}: {error}\n  (a display writes it there once started; another folder: --config or --output-dir)\n",
            path.display()
        ),
        exit,
    }
}

/// status.json's fields, read defensively: figures only when sane, text escaped (an error
/// naming a hostile file name must not reach the terminal as escape sequences).
struct Fields<'a>(&'a Value);

impl Fields<'_> {
    fn number(&self, key: &str) -> Option<f64> {
        sane(self.0.get(key))
    }

    fn text(&self, key: &str) -> Option<String> {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .map(crate::logging::one_line)
    }

    fn count(&self, key: &str) -> u64 {
        self.0.get(key).and_then(Value::as_u64).unwrap_or(0)
    }

    fn count_at(&self, pointer: &str) -> Option<u64> {
        self.0.pointer(pointer).and_then(Value::as_u64)
    }
}

/// The report's rows, `label value` aligned.
#[derive(Default)]
struct Rows(String);

impl Rows {
    fn add(&mut self, label: &str, value: String) {
        self.0.push_str(&format!("  {label:<10} {value}\n"));
    }
}

/// What the screen shows: frame rate, buffer, the art's speed, the quality rung.
fn picture_rows(fields: &Fields, rows: &mut Rows) {
    rows.add(
        "fps",
        format!(
            "{} of {} target{}",
            figure(fields.number("achieved_fps"), 1),
            figure(fields.number("target_fps"), 0),
            fields
                .text("schedule")
                .map_or(String::new(), |s| format!(" (schedule: {s})"))
        ),
    );
    let percentage = fields.number("buffer_percentage");
    rows.add(
        "buffer",
        format!(
            "{} {:>3}%  {} s ({} of {} frames)",
            gauge(percentage.unwrap_or(0.0)),
            figure(percentage, 0),
            figure(fields.number("buffer_seconds"), 1),
            fields.count("buffer_frames"),
            fields.count("buffer_capacity_frames")
        ),
    );
    rows.add(
        "motion",
        format!(
            "{}% of the configured pace{}",
            figure(
                fields.number("animation_speed").map(|speed| 100.0 * speed),
                0
            ),
            fields
                .number("first_motion_s")
                .map_or(" (not moving yet)".to_string(), |s| format!(
                    ", moving since {s:.1} s after start"
                ))
        ),
    );
    rows.add("quality", quality(fields.0));
}

/// What the display has done: the generator, keyframes, frames, errors.
fn work_rows(fields: &Fields, rows: &mut Rows) {
    let generator = fields.text("generator").unwrap_or_else(|| "unknown".into());
    rows.add(
        "generator",
        match fields.text("generator_note") {
            Some(note) => format!("{generator} ({note})"),
            None => generator,
        },
    );
    let last = match fields.0.get("last_keyframe_age_s") {
        None | Some(Value::Null) => "none yet".to_string(),
        Some(age) => format!("the last {} ago", duration(sane(Some(age)).unwrap_or(-1.0))),
    };
    rows.add(
        "keyframes",
        format!(
            "{}, {last} ({} a minute, {} ms each)",
            fields.count("keyframes"),
            figure(fields.number("keyframes_per_minute"), 1),
            figure(fields.number("keyframe_ms"), 0)
        ),
    );
    rows.add(
        "frames",
        format!(
            "{} shown; late {}, held {}, skipped {}, underruns {} ({} frames)",
            fields.count("frames_shown"),
            fields.count("late_frames"),
            fields.count("held_deadlines"),
            fields.count("skipped_deadlines"),
            fields.count("underruns"),
            fields.count("underrun_frames")
        ),
    );
    rows.add(
        "errors",
        format!(
            "generator {}; re-anchors {}",
            fields.count("generator_errors"),
            fields.count("reanchors")
        ),
    );
    if let Some(error) = fields.text("last_error") {
        let age = fields.number("last_error_age_s").unwrap_or(-1.0);
        rows.add("last error", format!("{} ago: {error}", duration(age)));
    }
}

/// How it is set up: uptime, screen and sizes, where its files are.
fn setup_rows(fields: &Fields, path: &Path, rows: &mut Rows) {
    rows.add(
        "uptime",
        duration(fields.number("uptime_s").unwrap_or(-1.0)),
    );
    let internal = (
        fields.count("internal_width"),
        fields.count("internal_height"),
    );
    let decoded = (
        fields.count_at("/adapt/width"),
        fields.count_at("/adapt/height"),
    );
    rows.add(
        "screen",
        format!(
            "{} {}x{} from {}x{}{}",
            fields.text("sink").unwrap_or_default(),
            fields.count_at("/screen/width").unwrap_or(0),
            fields.count_at("/screen/height").unwrap_or(0),
            internal.0,
            internal.1,
            match decoded {
                (Some(w), Some(h)) if (w, h) != internal => format!(" (decoded at {w}x{h} now)"),
                _ => String::new(),
            }
        ),
    );
    rows.add(
        "log",
        fields
            .text("log_file")
            .unwrap_or_else(|| "off (log.file)".into()),
    );
    rows.add(
        "snapshot",
        fields
            .text("snapshot_file")
            .unwrap_or_else(|| "off (output.snapshot-seconds)".into()),
    );
    rows.add("status", path.display().to_string());
}

/// The adapt ladder's rung, for the "quality" row.
fn quality(status: &Value) -> String {
    let Some(adapt) = status.get("adapt").filter(|a| !a.is_null()) else {
        return "as configured (adapt.enabled = false)".into();
    };
    let number = |key: &str| sane(adapt.get(key));
    let capacity = number("capacity_fps").map_or("not measured yet".to_string(), |fps| {
        format!(
            "this machine decodes {fps:.1} frames/s there, needs {}",
            figure(number("need_fps"), 1)
        )
    });
    format!(
        "rung {} of {}: {} ({capacity}; {} moves)",
        adapt
            .get("rung")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .saturating_add(1),
        adapt.get("rungs").and_then(Value::as_u64).unwrap_or(0),
        crate::logging::one_line(adapt.get("label").and_then(Value::as_str).unwrap_or("?")),
        adapt.get("changes").and_then(Value::as_u64).unwrap_or(0),
    )
}

/// The snapshot drawn in half blocks, fitted into `size` cells (one row kept for the prompt).
pub(crate) fn picture(dir: &Path, size: (u32, u32)) -> String {
    match draw_snapshot(&dir.join("snapshot.png"), size) {
        Ok(text) => text,
        Err(error) => format!("(no picture: {error:#})\n"),
    }
}

fn draw_snapshot(path: &Path, (columns, rows): (u32, u32)) -> anyhow::Result<String> {
    use crate::config::{TERMINAL_MAX_COLUMNS, TERMINAL_MAX_ROWS};
    let bytes = crate::checked_fs::read_regular(path, MAX_SNAPSHOT_BYTES)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .context("cannot read the snapshot")
    };
    // A snapshot is one screen: anything bigger is not ours, and decoding it would cost
    // seconds and gigabytes at every `--watch` interval for a picture drawn at terminal size.
    let (width, height) = reader()?
        .into_dimensions()
        .with_context(|| format!("cannot decode {}", path.display()))?;
    if u64::from(width) * u64::from(height) > MAX_SNAPSHOT_PIXELS {
        bail!(
            "{} is {width}x{height}, more pixels than the largest screen (7680x4320)",
            path.display()
        );
    }
    let mut reader = reader()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_SNAPSHOT_PIXELS * 4 + 16 * 1024 * 1024);
    reader.limits(limits);
    let image = reader
        .decode()
        .with_context(|| format!("cannot decode {}", path.display()))?
        .into_rgb8();
    let columns = columns.clamp(1, TERMINAL_MAX_COLUMNS);
    let rows = rows.clamp(2, TERMINAL_MAX_ROWS);
    let geometry = Geometry::packed(columns, (rows - 1).max(1) * 2, PixelFormat::BGR888);
    let (width, height) = image.dimensions();
    let frame = crate::frame::Frame {
        seq: 0,
        width,
        height,
        rgb: image.into_raw(),
        at: 0.0,
    };
    let mut renderer = Renderer::new(
        geometry,
        (width, height),
        Fit::Fit,
        Rotation::None,
        UpscaleFilter::Bilinear,
    )?;
    let mut pixels = vec![0; geometry.frame_bytes()];
    renderer.clear(&mut pixels);
    renderer.render(&frame, &mut pixels)?;
    let mut text = String::new();
    crate::sink::terminal::encode_half_block_lines(&geometry, &pixels, &mut text);
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_gauges_read_at_a_glance() {
        assert_eq!(duration(4.24), "4.2 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3725.0), "1 h 02 min");
        assert_eq!(duration(90_000.0), "1 d 01 h");
        assert_eq!(gauge(50.0), "[##########----------]");
        assert_eq!(gauge(250.0), "[####################]");
        assert_eq!(gauge(-3.0), "[--------------------]");
    }

    #[test]
    fn a_snapshot_larger_than_a_screen_is_refused_before_it_is_decoded() {
        // A real 8x8 PNG whose header then claims 11000x11000 (as a 470 KB all-zero file
        // would): only the header may be read.
        let mut png = Vec::new();
        image::RgbImage::new(8, 8)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        // Signature (8), IHDR length (4), "IHDR" (4), width, height, ..., CRC over type+data.
        png[16..20].copy_from_slice(&11_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&11_000u32.to_be_bytes());
        let crc = png_crc(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snapshot.png"), &png).unwrap();
        let drawn = picture(dir.path(), (80, 24));
        assert!(
            drawn.contains("is 11000x11000, more pixels than the largest screen"),
            "{drawn}"
        );
    }

    /// PNG's chunk CRC (CRC-32, ISO 3309), for forging a header above.
    fn png_crc(bytes: &[u8]) -> u32 {
        let mut crc = u32::MAX;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn status_reads_the_folder_of_a_live_display_before_an_old_runs_and_says_which() {
        let (home, service) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let candidates = || [home.path().to_path_buf(), service.path().to_path_buf()];
        assert_eq!(
            choose_folder(candidates()),
            (home.path().to_path_buf(), None)
        );
        // An old terminal run left status.json at home; the service runs.
        std::fs::write(home.path().join("status.json"), "{}").unwrap();
        std::fs::write(service.path().join("status.json"), "{}").unwrap();
        assert_eq!(choose_folder(candidates()).0, home.path());
        let _running = OutputLock::acquire(service.path()).unwrap();
        let (chosen, note) = choose_folder(candidates());
        assert_eq!(chosen, service.path());
        let note = note.expect("the choice is said");
        assert!(
            note.contains("a display holds its lock")
                && note.contains(&*home.path().to_string_lossy()),
            "{note}"
        );
    }

    #[test]
    fn a_folder_without_a_display_says_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let seen = report(dir.path(), SystemTime::now());
        assert_eq!(seen.exit, EXIT_NOT_RUNNING);
        assert!(seen.text.contains("NOT RUNNING"), "{}", seen.text);
        assert!(seen.text.contains("cannot read"), "{}", seen.text);
        // A stale file with nobody holding the lock: not running, figures from then.
        let old = serde_json::json!({"updated_unix_s": 1_000, "status_interval_s": 2.0,
            "state": "playing", "generator": "cppn", "achieved_fps": 30.0, "target_fps": 30.0});
        std::fs::write(dir.path().join("status.json"), old.to_string()).unwrap();
        let seen = report(dir.path(), SystemTime::now());
        assert_eq!(seen.exit, EXIT_NOT_RUNNING);
        assert!(
            seen.text.contains("NOT RUNNING: no process holds"),
            "{}",
            seen.text
        );
        assert!(seen.text.contains("30.0 of 30 target"), "{}", seen.text);
        // The lock held but the file old: stuck.
        let _lock = OutputLock::acquire(dir.path()).unwrap();
        let seen = report(dir.path(), SystemTime::now());
        assert_eq!(seen.exit, EXIT_STUCK);
        assert!(seen.text.contains("STUCK?"), "{}", seen.text);
    }
}
