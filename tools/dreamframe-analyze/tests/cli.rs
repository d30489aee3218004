//! `dreamframe-analyze` on logs of real runs of the binary, kept in tests/data/logs:
//! healthy-cppn-30fps.log (`dreamframe --sink null --seed 11 --duration 45`, defaults) and
//! stressed-512x288-60fps.log (the same with stressed-512x288-60fps.toml: a 512x288 built-in
//! generator against 60 fps and a 3 s buffer, so generation falls behind and the buffer runs dry),
//! written before capacity-aware playback; adapting-cppn-1024x576.log (`dreamframe --config
//! adapting-cppn-1024x576.toml --seed 11 --duration 75`: a 1024x576 built-in generator, so the
//! quality ladder steps down at once and climbs a rung 30 s later).

#![deny(unsafe_code)]

use std::path::Path;
use std::process::Command;

/// A file of the display's test data (tests/data at the workspace's top): the logs are real
/// runs of the display binary.
fn data(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(path)
}

fn analyze(logs: &[&str], chart: &Path) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dreamframe-analyze"))
        .arg("--chart")
        .arg(chart)
        .args(logs.iter().map(|log| data(&format!("logs/{log}"))))
        .output()
        .expect("dreamframe-analyze runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The count column of a report row.
fn count(report: &str, row: &str) -> usize {
    report
        .lines()
        .find(|line| line.trim_start().starts_with(row))
        .and_then(|line| {
            line[line.find(row).unwrap() + row.len()..]
                .split_whitespace()
                .next()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row {row:?} in:\n{report}"))
}

/// The contents of an SVG's `<text>` elements.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|element| {
            let content = element.split_once('>')?.1.split_once("</text>")?.0;
            Some(content.trim().to_string())
        })
        .collect()
}

fn lines_with(log: &str, needle: &str) -> Vec<String> {
    std::fs::read_to_string(data(&format!("logs/{log}")))
        .expect("log")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_healthy_log_has_no_bottleneck_and_its_stages_are_all_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let chart = dir.path().join("chart.svg");
    let log = "healthy-cppn-30fps.log";
    let (ok, report, stderr) = analyze(&[log], &chart);
    assert!(ok, "{stderr}");
    assert_eq!(
        count(&report, "keyframe"),
        lines_with(log, "] keyframe index=").len()
    );
    assert_eq!(
        count(&report, "decode"),
        lines_with(log, "[TIMING] transition").len()
    );
    assert!(
        report.contains("1 run(s)") && report.contains("generator cppn"),
        "{report}"
    );
    assert!(report.contains("Display (target 30.00 fps)"), "{report}");
    assert!(report.contains("underruns (buffer ran dry): 0"), "{report}");
    assert!(report.contains("1. No bottleneck"), "{report}");
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    let texts = svg_texts(&svg);
    for text in [
        "achieved fps",
        "target fps",
        "buffer fill",
        "decode",
        "upscale + convert",
        "frames per second",
        "ms per frame",
    ] {
        assert!(texts.iter().any(|t| t == text), "no {text:?} in {texts:?}");
    }
    // No underrun in a healthy run: no marker, nor its legend.
    assert!(
        !texts.iter().any(|t| t.starts_with("underrun")),
        "{texts:?}"
    );
    // Achieved fps: one point per stats line but the closing one (the legend's sample has two).
    let stats = lines_with(log, "] stats ").len();
    let fps_points = svg
        .lines()
        .filter(|l| l.contains("stroke=\"#1F77B4\"") && l.contains("<polyline"))
        .map(|l| l.matches(',').count())
        .max()
        .expect("fps line");
    assert_eq!(fps_points, stats - 1);
}

#[test]
fn the_chart_is_png_or_svg_by_its_extension_and_other_names_are_refused_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = "stressed-512x288-60fps.log";
    let png = dir.path().join("chart.png");
    let (ok, report, stderr) = analyze(&[log], &png);
    assert!(ok, "{stderr}");
    assert!(
        report.contains(&format!("Chart: {}", png.display())),
        "{report}"
    );
    let bytes = std::fs::read(&png).expect("chart written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    let svg = dir.path().join("chart.svg");
    let (ok, _, stderr) = analyze(&[log], &svg);
    assert!(ok, "{stderr}");
    let texts = svg_texts(&std::fs::read_to_string(&svg).expect("chart written"));
    let underruns = lines_with(log, "] underrun ").len();
    assert!(
        texts.contains(&format!("underrun ({underruns})")),
        "{texts:?}"
    );
    let jpeg = dir.path().join("chart.jpg");
    let (ok, report, stderr) = analyze(&[log], &jpeg);
    assert!(!ok && report.is_empty(), "{report}");
    assert!(
        stderr.contains(&jpeg.display().to_string()) && stderr.contains(".svg or .png"),
        "{stderr}"
    );
    assert!(!jpeg.exists());
}

#[test]
fn a_stressed_log_names_generation_as_the_bottleneck_and_counts_the_underruns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = "stressed-512x288-60fps.log";
    let (ok, report, stderr) = analyze(&[log], &dir.path().join("chart.svg"));
    assert!(ok, "{stderr}");
    let last_stats = lines_with(log, "] stats ").pop().expect("a stats line");
    let underruns = last_stats
        .split_whitespace()
        .find_map(|f| f.strip_prefix("underruns="))
        .expect("underruns field");
    assert!(
        report.contains(&format!("underruns (buffer ran dry): {underruns} at")),
        "{report}"
    );
    let recommendations = report
        .split("Recommendations")
        .nth(1)
        .expect("recommendations");
    assert!(
        recommendations.contains("1. Generation is the bottleneck"),
        "{report}"
    );
    assert!(recommendations.contains("model.width/height"), "{report}");
    assert!(
        recommendations.contains(&format!("ran dry {underruns} time(s)")),
        "{report}"
    );
    assert!(!recommendations.contains("No bottleneck"), "{report}");
}

#[test]
fn logs_of_two_runs_are_one_timeline_and_a_file_without_log_lines_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let chart = dir.path().join("chart.svg");
    let (ok, report, stderr) = analyze(
        &["stressed-512x288-60fps.log", "healthy-cppn-30fps.log"],
        &chart,
    );
    assert!(ok, "{stderr}");
    assert!(
        report.contains("2 file(s)") && report.contains("2 run(s)"),
        "{report}"
    );
    let (ok, _, stderr) = analyze(&["stressed-512x288-60fps.toml"], &chart);
    assert!(!ok);
    assert!(stderr.contains("no dreamframe log lines"), "{stderr}");
}

#[test]
fn standard_input_is_read_for_a_dash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = data("logs/healthy-cppn-30fps.log");
    let output = Command::new(env!("CARGO_BIN_EXE_dreamframe-analyze"))
        .arg("--chart")
        .arg(dir.path().join("chart.svg"))
        .arg("-")
        .stdin(std::fs::File::open(&log).expect("log"))
        .output()
        .expect("dreamframe-analyze runs");
    assert!(output.status.success());
    let from_stdin = String::from_utf8_lossy(&output.stdout).into_owned();
    let (_, from_file, _) = analyze(&["healthy-cppn-30fps.log"], &dir.path().join("c2.svg"));
    // The same figures; only the source's name differs.
    let figures = |report: &str| report.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        figures(&from_stdin).replace("chart.svg", "c2.svg"),
        figures(&from_file)
    );
}

#[test]
fn forged_figures_are_skipped_not_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let healthy =
        std::fs::read_to_string(data("logs/healthy-cppn-30fps.log")).expect("healthy log");
    // Every stats line's figures replaced by NaN, infinity, 1e308 and 2^64.
    let forged: String = healthy
        .lines()
        .map(|line| {
            if line.contains("] stats ") {
                line.replace("fps=", "fps=NaN x=")
                    .replace("buffer_percentage=", "buffer_percentage=1e308 x=")
                    .replace("underruns=", "underruns=18446744073709551616 x=")
                    .replace("jitter_p99_ms=", "jitter_p99_ms=inf x=")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.path().join("forged.log");
    std::fs::write(&path, forged).unwrap();
    let chart = dir.path().join("chart.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_dreamframe-analyze"))
        .arg("--chart")
        .arg(&chart)
        .arg(&path)
        .output()
        .expect("dreamframe-analyze runs");
    assert!(output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    // The chart's words and numbers (its markup has long coordinates of its own).
    let chart = svg_texts(&std::fs::read_to_string(&chart).expect("chart")).join("\n");
    for text in [report.as_ref(), chart.as_str()] {
        let lower = text.to_lowercase();
        assert!(!lower.contains("nan") && !lower.contains("inf "), "{text}");
        assert!(
            !text
                .split(|c: char| !c.is_ascii_digit())
                .any(|n| n.len() > 15),
            "a huge number got through: {text}"
        );
    }
}

#[test]
fn the_quality_ladders_moves_and_the_arts_speed_are_reported_and_charted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let chart = dir.path().join("chart.svg");
    let log = "adapting-cppn-1024x576.log";
    let (ok, report, stderr) = analyze(&[log], &chart);
    assert!(ok, "{stderr}");
    let moves = lines_with(log, "] adapt from=");
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert!(report.contains("ladder moves: 2 ("), "{report}");
    assert!(
        report.contains("90 frames, 1024x576 -> 23 frames, 512x288 (capacity: 2.8 decoded frames/s for 30.0 needed"),
        "{report}"
    );
    assert!(
        report.contains("23 frames, 512x288 -> 30 frames, 512x288 (headroom: "),
        "{report}"
    );
    assert!(
        report.contains("last at rung 6 of 10: 30 frames, 512x288"),
        "{report}"
    );
    // One art-speed figure per stats line (the closing one too: it is not a rate).
    assert_eq!(
        count(&report, "art speed, % of its pace (per stats line)"),
        lines_with(log, "] stats ").len()
    );
    let texts = svg_texts(&std::fs::read_to_string(&chart).expect("chart written"));
    for text in ["art speed (% of its pace)", "quality ladder move (2)"] {
        assert!(texts.iter().any(|t| t == text), "no {text:?} in {texts:?}");
    }
    // A log from before adaptation says so rather than inventing figures.
    let (ok, old, stderr) = analyze(&["healthy-cppn-30fps.log"], &dir.path().join("old.svg"));
    assert!(ok, "{stderr}");
    assert!(old.contains("no adapt or art-speed figures"), "{old}");
}

fn analyzer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dreamframe-analyze"))
}

#[test]
fn a_file_named_twice_is_read_once_and_a_line_too_long_counts_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let healthy = data("logs/healthy-cppn-30fps.log");
    let lines = std::fs::read_to_string(&healthy).unwrap().lines().count();
    // The same file by two paths (one through a symlink): one file, its lines once.
    let link = dir.path().join("link.log");
    std::os::unix::fs::symlink(&healthy, &link).unwrap();
    let output = analyzer()
        .arg(&healthy)
        .arg(&link)
        .arg(&healthy)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains(&format!("1 file(s), {lines} lines (0 unreadable)")),
        "{report}"
    );
    // A 100 KiB line first (where the first timestamp is looked for) and one later.
    let long = "x".repeat(100 * 1024);
    let log = dir.path().join("long.log");
    let text = std::fs::read_to_string(&healthy).unwrap();
    std::fs::write(&log, format!("{long}\n{text}{long}\n")).unwrap();
    let output = analyzer().arg(&log).output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains(&format!("{} lines (2 unreadable)", lines + 2)),
        "{report}"
    );
}

#[test]
fn the_chart_is_drawn_only_when_asked_and_never_into_a_fifo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let healthy = data("logs/healthy-cppn-30fps.log");
    let output = analyzer()
        .arg(&healthy)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written into the current folder"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Chart: none drawn"));
    let fifo = dir.path().join("chart.svg");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let output = analyzer()
        .arg(&healthy)
        .arg("--chart")
        .arg(&fifo)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is a FIFO, not a regular file"), "{stderr}");
    // Over an old chart: the new one replaces it whole, no temporary file left.
    let chart = dir.path().join("old.svg");
    std::fs::write(&chart, "old").unwrap();
    let output = analyzer()
        .arg(&healthy)
        .arg("--chart")
        .arg(&chart)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(std::fs::read_to_string(&chart).unwrap().starts_with("<svg"));
    assert!(!dir.path().join("old.svg.tmp").exists());
}

#[test]
fn a_log_it_may_not_read_is_cant_tell_with_exit_4() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dreamframe.log");
    std::fs::copy(data("logs/healthy-cppn-30fps.log"), &log).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = analyzer();
    command.arg(&log);
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        command.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("can't tell: permission denied reading")
            && stderr.contains("join the dreamframe group"),
        "{stderr}"
    );
}
