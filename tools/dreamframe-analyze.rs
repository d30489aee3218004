//! `dreamframe-analyze LOG...`: the bottleneck report and chart for dreamframe's logs (see
//! `dreamframe::analyze`). Reads rotated files too (dreamframe.log.1, ...), in time order of
//! their first lines, and `-` for standard input; streams them, so memory does not grow with a
//! log's size. Prints the report on stdout and writes the chart (SVG or PNG, by the extension of
//! `--chart`). Exit 1 when a file can't be read (or is not a regular file), none has a log line,
//! or the chart's path does not end in .svg or .png.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use dreamframe::analyze::{
    chart_to_file, feed_reader, parse_line, report, Analyzer, ChartFormat, MAX_LINE_BYTES,
};

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
    /// (.svg, .png).
    #[arg(long, value_name = "PATH", default_value = "dreamframe-analyze.svg")]
    chart: PathBuf,
}

/// An opened log and the time of its first line of ours (for ordering rotated files).
struct Source {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    /// Lines read while looking for the first time, to be analysed first.
    head: Vec<String>,
    first_time: f64,
}

/// Lines read from a file's start while looking for its first timestamp.
const HEAD_LINES: usize = 100;

fn open(path: &Path) -> anyhow::Result<Source> {
    let mut reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = dreamframe::files::open_regular(path, u64::MAX)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Box::new(BufReader::new(file))
    };
    let mut head = Vec::new();
    let mut first_time = f64::MAX;
    let mut line = Vec::new();
    while head.len() < HEAD_LINES {
        line.clear();
        let read = std::io::Read::take(&mut reader, MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        if let Some(parsed) = parse_line(text.trim_end()) {
            first_time = parsed.time;
        }
        head.push(text);
        if first_time < f64::MAX || !line.ends_with(b"\n") {
            break;
        }
    }
    Ok(Source {
        path: path.to_path_buf(),
        reader,
        head,
        first_time,
    })
}

fn run(args: &Args) -> anyhow::Result<()> {
    // A chart path we can't write is refused before reading any log.
    ChartFormat::for_path(&args.chart)?;
    let mut sources = args
        .logs
        .iter()
        .map(|path| open(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    sources.sort_by(|a, b| a.first_time.total_cmp(&b.first_time));
    let mut analyzer = Analyzer::default();
    for source in &mut sources {
        for line in &source.head {
            analyzer.feed(line);
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
    let sources: Vec<String> = args.logs.iter().map(|p| p.display().to_string()).collect();
    // The chart first: a reader that leaves early (`| head -1`) must not cost it.
    chart_to_file(&analysis, &args.chart)?;
    dreamframe::stdout::write(&format!(
        "{}\nChart: {}\n",
        report(&analysis, &sources),
        args.chart.display()
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dreamframe-analyze: {error:#}");
            ExitCode::FAILURE
        }
    }
}
