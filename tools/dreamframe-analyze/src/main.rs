//! `dreamframe-analyze LOG...`: the bottleneck report and chart for dreamframe's logs. Reads
//! rotated files too (dreamframe.log.1, ...), in time order of their first lines, and `-` for
//! standard input; streams them, so memory does not grow with a log's size; a file named twice
//! (by any path) is read once. Prints the report on stdout and, with `--chart PATH`, writes the
//! chart (SVG or PNG, by the extension; through a temporary file and a rename). Exit 1 when a file
//! can't be read (or is not a regular file), none has a log line, or the chart's path does not
//! end in .svg or .png or is not a regular file; 4 when permission to read a log is denied (the
//! service's log is for root and the `dreamframe` group: "can't tell").
//!
//! Its own crate in the workspace, split along its four jobs: `parse` (reading lines),
//! `analysis` (gathering figures), `report` (the text) and `chart` (plotters and the embedded
//! font, which only the analyzer needs). The log format comes from the display's library
//! (`dreamframe::events`), so a renamed field can't silently break it.

#![deny(unsafe_code)]

mod analysis;
mod chart;
mod parse;
mod report;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use dreamframe::events::parse::parse_line;

use crate::analysis::Analyzer;
use crate::chart::{chart_to_file, check_chart_path};
use crate::parse::{feed_reader, read_line, LineRead};
use crate::report::report;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "dreamframe-analyze",
    version,
    about = "Where a dreamframe display spends its time: per-stage timings, lock contention, buffer health, late frames and underruns, with recommendations and a chart"
)]
struct Args {
    /// Log files (dreamframe.log and its rotated siblings, in any order); `-` reads standard
    /// input.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// Where the chart of fps, buffer fill and stage times goes: SVG or PNG, by the extension
    /// (.svg, .png). Without it no chart is drawn.
    #[arg(long, value_name = "PATH")]
    chart: Option<PathBuf>,
}

/// An opened log and the time of its first line of ours (for ordering rotated files).
struct Source {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    /// Lines read while looking for the first time, to be analysed first (`None`: too long).
    head: Vec<Option<String>>,
    first_time: f64,
}

/// Lines read from a file's start while looking for its first timestamp.
const HEAD_LINES: usize = 100;

/// Why a log could not be read: permission (exit 4, "can't tell") or anything else (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("can't tell: permission denied reading {0}; {hint}", hint = dreamframe::checked_fs::PERMISSION_HINT)]
struct PermissionDenied(String);

fn open(path: &Path) -> anyhow::Result<Source> {
    let cannot_read = |error: std::io::Error| -> anyhow::Error {
        if error.kind() == std::io::ErrorKind::PermissionDenied {
            PermissionDenied(path.display().to_string()).into()
        } else {
            anyhow::Error::new(error).context(format!("cannot read {}", path.display()))
        }
    };
    let mut reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = dreamframe::checked_fs::open_regular(path, u64::MAX).map_err(cannot_read)?;
        Box::new(BufReader::new(file))
    };
    let mut head = Vec::new();
    let mut first_time = f64::MAX;
    while head.len() < HEAD_LINES && first_time == f64::MAX {
        match read_line(&mut reader).map_err(cannot_read)? {
            LineRead::End => break,
            LineRead::TooLong => head.push(None),
            LineRead::Text(text) => {
                if let Some(parsed) = parse_line(text.trim_end()) {
                    first_time = parsed.time;
                }
                head.push(Some(text));
            }
        }
    }
    Ok(Source {
        path: path.to_path_buf(),
        reader,
        head,
        first_time,
    })
}

/// `paths` without repeats: a file named twice (`log log`, `./log`, a link to it) is read once.
fn distinct(paths: &[PathBuf]) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    paths
        .iter()
        .filter(|path| match std::fs::metadata(path) {
            Ok(meta) if path.as_path() != Path::new("-") => seen.insert((meta.dev(), meta.ino())),
            // Standard input, or a path `open` will say is unreadable.
            _ => true,
        })
        .cloned()
        .collect()
}

fn run(args: &Args) -> anyhow::Result<()> {
    // A chart path we can't write is refused before reading any log.
    if let Some(chart) = &args.chart {
        check_chart_path(chart)?;
    }
    let logs = distinct(&args.logs);
    let mut sources = logs
        .iter()
        .map(|path| open(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    sources.sort_by(|a, b| a.first_time.total_cmp(&b.first_time));
    let mut analyzer = Analyzer::default();
    for source in &mut sources {
        for line in &source.head {
            match line {
                Some(text) => analyzer.feed(text),
                None => analyzer.skip_unreadable(),
            }
        }
        feed_reader(&mut analyzer, &mut source.reader)
            .with_context(|| format!("cannot read {}", source.path.display()))?;
    }
    let analysis = analyzer.finish();
    if analysis.lines == analysis.unreadable {
        bail!(
            "no dreamframe log lines in {} (expected `TIME [LEVEL] event key=value ...`)",
            args.logs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let sources: Vec<String> = logs.iter().map(|p| p.display().to_string()).collect();
    // The chart first: a reader that leaves early (`| head -1`) must not cost it.
    let chart = match &args.chart {
        Some(path) => {
            chart_to_file(&analysis, path)?;
            path.display().to_string()
        }
        None => "none drawn (--chart PATH.svg or PATH.png draws one)".to_string(),
    };
    dreamframe::stdout::write(&format!(
        "{}\nChart: {chart}\n",
        report(&analysis, &sources)
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dreamframe-analyze: {error:#}");
            if error.downcast_ref::<PermissionDenied>().is_some() {
                ExitCode::from(4)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The man page and completions the package ships for this command (tools/debian), kept
    /// equal to the definitions above; `DREAMFRAME_REGENERATE=1 cargo test -p dreamframe-analyze
    /// generated` writes them again.
    #[test]
    fn generated_man_page_and_completions_match_the_definitions() {
        use clap::CommandFactory;
        dreamframe::testing::check_generated_docs(
            super::Args::command(),
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../debian"),
        );
    }
}
