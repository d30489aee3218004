//! Command-line arguments. Parsed by clap; checked against the config in `main`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::SinkKind;

#[derive(Debug, Parser)]
#[command(
    name = "dreamframe",
    version,
    about = "An always-on generative-art display for a Linux box with a screen"
)]
pub struct Cli {
    /// Config file (TOML); without it the built-in defaults are used.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Check a config file, print every problem, and exit (0: valid, 78: invalid).
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
    /// Show the art here instead of the configured sink.
    #[arg(long, value_enum)]
    pub sink: Option<SinkArg>,
    /// Seed of the run (overrides the config's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many seconds (default: run until SIGTERM/SIGINT).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Folder for status.json, snapshot.png and the log (overrides `output.dir`).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SinkArg {
    Fbdev,
    Terminal,
    Null,
}

impl From<SinkArg> for SinkKind {
    fn from(arg: SinkArg) -> Self {
        match arg {
            SinkArg::Fbdev => SinkKind::Fbdev,
            SinkArg::Terminal => SinkKind::Terminal,
            SinkArg::Null => SinkKind::Null,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe the framebuffer and the console and print what they support (driver, sizes, pixel
    /// layout, panning, vsync, VT mode), then exit; the display keeps what it showed.
    Probe(ProbeArgs),
    /// Measure decode, upscale+convert, pacing jitter and sustained fps on this machine.
    Bench(BenchArgs),
    /// Measure Stable Diffusion at real sizes with random weights: VAE and tiny-decoder ms/frame,
    /// UNet step and keyframe ms (meant for a GPU: `--features cuda,cudnn`).
    BenchSd(BenchSdArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchSdArgs {
    /// Model layout: sd-turbo, sd-1.5, sd-2.1 or sdxl-turbo.
    #[arg(long, default_value = "sd-1.5")]
    pub preset: String,
    /// "cpu" or "cuda:N".
    #[arg(long, default_value = "cuda:0")]
    pub device: String,
    /// Square image size in pixels (default: the preset's native size).
    #[arg(long)]
    pub size: Option<u32>,
    /// Timed repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds for each timed run (jitter, sustained fps).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Screen width to upscale to.
    #[arg(long, default_value_t = 1920)]
    pub width: u32,
    /// Screen height to upscale to.
    #[arg(long, default_value_t = 1080)]
    pub height: u32,
    /// Display rate for the jitter and sustained runs.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            seconds: 10.0,
            width: 1920,
            height: 1080,
            fps: 30.0,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Framebuffer device (default: the config's display.framebuffer).
    #[arg(long, value_name = "PATH")]
    pub framebuffer: Option<PathBuf>,
    /// Virtual terminal whose mode to report (default: the config's display.console).
    #[arg(long, value_name = "PATH")]
    pub console: Option<PathBuf>,
}
