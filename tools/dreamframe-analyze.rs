//! `dreamframe-analyze LOG...`: the bottleneck report and chart for dreamframe's logs (see
//! `dreamframe::analyze`). Reads rotated files too (dreamframe.log.1, ...); prints the report on
//! stdout and writes the SVG chart. Exit 1 when no file can be read or none has a log line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use dreamframe::analyze::{analyze, chart, report};

#[derive(Debug, Parser)]
#[command(
    name = "dreamframe-analyze",
    version,
    about = "Where a dreamframe display spends its time: per-stage timings, lock contention, buffer health, late frames and underruns, with recommendations and a chart"
)]
struct Args {
    /// Log files (dreamframe.log and its rotated siblings, in any order).
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// Where the SVG chart of fps, buffer fill and stage times goes.
    #[arg(long, value_name = "PATH", default_value = "dreamframe-analyze.svg")]
    chart: PathBuf,
}

fn run(args: &Args) -> anyhow::Result<()> {
    let mut texts = Vec::new();
    for path in &args.logs {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    let analysis = analyze(&texts);
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
    print!("{}", report(&analysis, &sources));
    std::fs::write(&args.chart, chart(&analysis))
        .with_context(|| format!("cannot write the chart to {}", args.chart.display()))?;
    println!("\nChart: {}", args.chart.display());
    Ok(())
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
