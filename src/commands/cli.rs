//! Command-line arguments. Parsed by clap; every number is checked here, before anything runs,
//! so a bad argument is refused at once (exit 2) naming the flag and what is allowed.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::SinkKind;

#[derive(Debug, Parser)]
#[command(
    name = "dreamframe",
    version,
    about = "An always-on generative-art display for a Linux box with a screen"
)]
pub(crate) struct Cli {
    /// Config file (TOML); without it the built-in defaults are used.
    #[arg(long, value_name = "PATH", global = true)]
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
    #[arg(long, value_name = "SECONDS", value_parser = run_seconds, allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Folder for status.json, snapshot.png and the log (overrides `output.dir`).
    #[arg(long, value_name = "DIR", global = true)]
    pub output_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SinkArg {
    Auto,
    Drm,
    Fbdev,
    Terminal,
    Null,
}

impl From<SinkArg> for SinkKind {
    fn from(arg: SinkArg) -> Self {
        match arg {
            SinkArg::Auto => SinkKind::Auto,
            SinkArg::Drm => SinkKind::Drm,
            SinkArg::Fbdev => SinkKind::Fbdev,
            SinkArg::Terminal => SinkKind::Terminal,
            SinkArg::Null => SinkKind::Null,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Probe the DRM cards (connectors and their modes, planes and their formats, whether we
    /// could be master), the framebuffer and the console and print what they support (driver,
    /// sizes, pixel layout, panning, vsync, VT mode), then exit; the display keeps what it showed.
    Probe(ProbeArgs),
    /// Show how the running display is doing (from status.json in its output folder): state,
    /// fps, buffer, generator, errors, uptime. Exit 0: running; 3: not running; 1: stuck.
    Status(StatusArgs),
    /// Measure decode, upscale+convert, pacing jitter and sustained fps on this machine.
    Bench(BenchArgs),
    /// Measure Stable Diffusion at real sizes with random weights: VAE and tiny-decoder ms/frame,
    /// UNet step and keyframe ms (meant for a GPU: `--features cuda,cudnn`).
    BenchSd(BenchSdArgs),
    /// Measure the drm sink on this machine's screen: copy + flip cost per frame against the
    /// fbdev copy, and flip-to-deadline lateness and missed flips at each `--fps` (needs the
    /// screen to itself: stop the display first).
    BenchDisplay(BenchDisplayArgs),
    /// Render the built-in styles' keyframes to PNG files, plus a contact sheet, to see the art
    /// without a screen (uses the config's [model] size and style sections).
    Gallery(GalleryArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GalleryArgs {
    /// Folder for the PNG files (made if missing; files of the same names are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Styles, comma-separated (default: every built-in style).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub styles: Vec<crate::generator::builtin::Style>,
    /// Seeds per style, 1 to 64: this many, counting up from --seed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keyframes written per style and seed, 1 to 64.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub keyframes: u64,
    /// Keyframes of the walk between two written ones, 1 to 10000 (at the shipped transition
    /// of 90 frames at 30 fps, 20 is a minute).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub every: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchDisplayArgs {
    /// Seconds for each paced run, 1 to 3600.
    #[arg(long, default_value_t = 10.0, value_parser = bench_seconds, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Display rates for the paced runs, 1 to 240 each.
    #[arg(long, value_delimiter = ',', default_value = "30,60", value_parser = bench_fps, allow_negative_numbers = true)]
    pub fps: Vec<f64>,
    /// Frames for the cost per frame, 10 to 10000.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(10..=10000))]
    pub frames: u64,
    /// DRM card (default: the config's display.card, else the first with a screen).
    #[arg(long, value_name = "PATH")]
    pub card: Option<PathBuf>,
    /// Framebuffer for the fbdev comparison (default: the config's display.framebuffer).
    #[arg(long, value_name = "PATH")]
    pub framebuffer: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StatusArgs {
    /// Refresh every `--interval` seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch, 0.2 to 3600.
    #[arg(long, default_value_t = 2.0, value_parser = status_interval, allow_negative_numbers = true)]
    pub interval: f64,
    /// Print status.json itself.
    #[arg(long, conflicts_with = "picture")]
    pub json: bool,
    /// Show the current snapshot in the terminal, sized to it, above the summary.
    #[arg(long)]
    pub picture: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchSdArgs {
    /// Model layout: sd-turbo, sd-1.5, sd-2.1 or sdxl-turbo.
    #[arg(long, default_value = "sd-1.5", value_parser = sd_preset)]
    pub preset: String,
    /// "cpu" or "cuda:N".
    #[arg(long, default_value = "cuda:0", value_parser = sd_device)]
    pub device: String,
    /// Square image size in pixels, a multiple of 8 (default: the preset's native size).
    #[arg(long, value_parser = sd_size)]
    pub size: Option<u32>,
    /// Timed repetitions of each measurement (median and spread are reported).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub runs: u16,
    /// Untimed calls before each measurement's timed ones (0 to 100).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=100))]
    pub warmups: u16,
    /// The model's number type: f16, bf16 or f32 (default: f16 on CUDA, f32 on the CPU).
    #[arg(long, value_enum)]
    pub dtype: Option<SdDtype>,
    /// Square size of the pictures `check` compares (default: --size); the f32 reference runs on
    /// the CPU, where 512 takes a while.
    #[arg(long, value_parser = sd_size)]
    pub check_size: Option<u32>,
    /// cuDNN conv setups to compare, comma-separated (default: all the build has, per-call
    /// first); with --pipeline, the one to run with.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub conv: Vec<crate::generator::stable_diffusion::conv::ConvSetup>,
    /// Instead of the measurements: run dreamframe's own pipeline this many seconds (1 to 3600)
    /// with the random-weight model (img2img keyframes), into the null sink, logging to stderr,
    /// and print the final status.
    #[arg(long, value_parser = bench_seconds, allow_negative_numbers = true)]
    pub pipeline: Option<f64>,
    /// --pipeline: the screen's size, WIDTHxHEIGHT (16x16 to 7680x4320).
    #[arg(long, default_value = "1920x1080", value_parser = screen_size)]
    pub screen: (u32, u32),
    /// --pipeline: display rate, 1 to 240.
    #[arg(long, default_value_t = 60.0, value_parser = bench_fps, allow_negative_numbers = true)]
    pub fps: f64,
    /// --pipeline: what decodes the in-between frames: tiny (TAESD) or full (the VAE).
    #[arg(long, value_enum, default_value = "tiny")]
    pub inbetweens: InBetweens,
    /// Keyframe steps, for the keyframe timings and --pipeline (default: the preset's).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub steps: Option<u16>,
    /// --pipeline: seconds of frames buffered before playback starts (buffer.start-seconds).
    #[arg(long, default_value_t = 1.0, value_parser = start_seconds, allow_negative_numbers = true)]
    pub start_seconds: f64,
    /// --pipeline: let capacity-aware playback lower the quality (off: the quality asked for is
    /// held, and a model too slow for it shows as underruns).
    #[arg(long)]
    pub adapt: bool,
    /// Only these parts, comma-separated (e.g. to profile one): check, broadcast_check,
    /// group_norm_check, attention_check, host_work, vae_64px_b1, vae_b1, vae_b4, vae_b10,
    /// vae_b1_candle_norm (candle-nn's group norms instead of the fused ones), vae_b10_singly (the
    /// same ten latents one at a time), taesd_b10, unet_step, unet_step_unfused (candle-nn's group
    /// norms and f32 attention scores), conv_shapes (the heaviest convolutions alone, NCHW and
    /// channels-last input, on a GPU), keyframe_txt2img, keyframe_img2img.
    #[arg(long, value_delimiter = ',', value_parser = [
        "check", "broadcast_check", "group_norm_check", "attention_check", "host_work",
        "vae_64px_b1", "vae_b1", "vae_b4", "vae_b10", "vae_b1_candle_norm", "vae_b10_singly",
        "taesd_b10", "unet_step", "unet_step_unfused", "conv_shapes", "keyframe_txt2img",
        "keyframe_img2img",
    ])]
    pub only: Vec<String>,
}

/// `bench-sd --dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SdDtype {
    F16,
    Bf16,
    F32,
}

/// `bench-sd --inbetweens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InBetweens {
    Tiny,
    Full,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds for each timed run (jitter, sustained fps), 1 to 3600.
    #[arg(long, default_value_t = 10.0, value_parser = bench_seconds, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Screen width to upscale to, 16 to 7680.
    #[arg(long, default_value_t = 1920, value_parser = clap::value_parser!(u32).range(16..=7680))]
    pub width: u32,
    /// Screen height to upscale to, 16 to 4320.
    #[arg(long, default_value_t = 1080, value_parser = clap::value_parser!(u32).range(16..=4320))]
    pub height: u32,
    /// Display rate for the jitter and sustained runs, 1 to 240.
    #[arg(long, default_value_t = 30.0, value_parser = bench_fps, allow_negative_numbers = true)]
    pub fps: f64,
    /// The built-in style to decode and play, at its shipped settings.
    #[arg(long, value_enum, default_value = "cppn")]
    pub style: crate::generator::builtin::Style,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            seconds: 10.0,
            width: 1920,
            height: 1080,
            fps: 30.0,
            style: crate::generator::builtin::Style::Cppn,
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ProbeArgs {
    /// DRM card (default: the config's display.card, else every card under /dev/dri).
    #[arg(long, value_name = "PATH")]
    pub card: Option<PathBuf>,
    /// Framebuffer device (default: the config's display.framebuffer).
    #[arg(long, value_name = "PATH")]
    pub framebuffer: Option<PathBuf>,
    /// Virtual terminal whose mode to report (default: the config's display.console).
    #[arg(long, value_name = "PATH")]
    pub console: Option<PathBuf>,
}

/// The longest `--duration`: ten years, far past any real run, and well inside what a `Duration`
/// holds.
pub(crate) const MAX_RUN_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;

/// A finite number within `low..=high` (what = the allowed range in words).
fn number_in(text: &str, low: f64, high: f64, what: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number: {what}"))?;
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(format!("out of range: {what}"))
    }
}

fn run_seconds(text: &str) -> Result<f64, String> {
    number_in(
        text,
        0.001,
        MAX_RUN_SECONDS,
        "seconds greater than 0, at most 315360000 (ten years)",
    )
}

fn status_interval(text: &str) -> Result<f64, String> {
    number_in(text, 0.2, 3600.0, "seconds from 0.2 to 3600")
}

fn bench_seconds(text: &str) -> Result<f64, String> {
    number_in(text, 1.0, 3600.0, "seconds from 1 to 3600")
}

fn start_seconds(text: &str) -> Result<f64, String> {
    number_in(text, 0.0, 3600.0, "seconds from 0 to 3600")
}

/// `WIDTHxHEIGHT` within what the display supports.
fn screen_size(text: &str) -> Result<(u32, u32), String> {
    let what = "WIDTHxHEIGHT, from 16x16 to 7680x4320, as in 3840x2160";
    let (width, height) = text
        .trim()
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("expected {what}"))?;
    if (16..=7680).contains(&width) && (16..=4320).contains(&height) {
        Ok((width, height))
    } else {
        Err(format!("out of range: {what}"))
    }
}

fn bench_fps(text: &str) -> Result<f64, String> {
    number_in(text, 1.0, 240.0, "frames per second from 1 to 240")
}

/// The presets `bench-sd` knows: a usage error (exit 2) for anything else.
pub(crate) const SD_PRESETS: [&str; 4] = ["sd-turbo", "sd-1.5", "sd-2.1", "sdxl-turbo"];

fn sd_preset(text: &str) -> Result<String, String> {
    if SD_PRESETS.contains(&text) {
        Ok(text.to_string())
    } else {
        Err(format!("allowed: {}", SD_PRESETS.join(", ")))
    }
}

fn sd_device(text: &str) -> Result<String, String> {
    let cuda = text
        .strip_prefix("cuda:")
        .is_some_and(|n| n.parse::<u32>().is_ok());
    if text == "cpu" || cuda {
        Ok(text.to_string())
    } else {
        Err("allowed: cpu, cuda:N (N a device number, as in cuda:0)".to_string())
    }
}

fn sd_size(text: &str) -> Result<u32, String> {
    let what = "pixels from 64 to 2048, a multiple of 8";
    let size: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number: {what}"))?;
    if (64..=2048).contains(&size) && size % 8 == 0 {
        Ok(size)
    } else {
        Err(format!("out of range: {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn refused(args: &[&str]) -> String {
        let error = Cli::try_parse_from(args).expect_err("must be refused");
        assert_eq!(error.kind(), ErrorKind::ValueValidation, "{error}");
        assert_eq!(error.exit_code(), 2);
        error.to_string()
    }

    #[test]
    fn numbers_that_cannot_work_are_refused_naming_the_flag() {
        for bad in ["1e309", "nan", "inf", "-1", "0", "18446744073709551616e9"] {
            let message = refused(&["dreamframe", "--duration", bad]);
            assert!(message.contains("--duration"), "{message}");
            assert!(message.contains("ten years"), "{message}");
        }
        let message = refused(&["dreamframe", "--duration=-1"]);
        assert!(message.contains("--duration"), "{message}");
        for (flag, bad) in [
            ("--seconds", "nan"),
            ("--seconds", "1e309"),
            ("--seconds", "-1"),
            ("--fps", "0"),
            ("--fps", "nan"),
            ("--width", "0"),
            ("--height", "0"),
        ] {
            let message = refused(&["dreamframe", "bench", flag, bad]);
            assert!(message.contains(flag), "{message}");
        }
        let message = refused(&["dreamframe", "bench-sd", "--size", "100"]);
        assert!(message.contains("multiple of 8"), "{message}");
        refused(&["dreamframe", "bench-sd", "--runs", "0"]);
        for bad in [
            "0x1080",
            "1920x",
            "1920*1080",
            "7681x100",
            "-1x5",
            "99999999999x1",
        ] {
            let message = refused(&["dreamframe", "bench-sd", &format!("--screen={bad}")]);
            assert!(message.contains("7680x4320"), "{message}");
        }
        refused(&["dreamframe", "bench-sd", "--start-seconds", "nan"]);
        refused(&["dreamframe", "bench-sd", "--warmups", "101"]);
    }

    #[test]
    fn sensible_numbers_pass() {
        let cli = Cli::try_parse_from(["dreamframe", "--duration", "2.5"]).unwrap();
        assert_eq!(cli.duration, Some(2.5));
        let cli =
            Cli::try_parse_from(["dreamframe", "bench", "--seconds", "2", "--fps", "60"]).unwrap();
        match cli.command {
            Some(Command::Bench(args)) => assert_eq!((args.seconds, args.fps), (2.0, 60.0)),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["dreamframe", "bench-sd", "--screen", "3840x2160"]).unwrap();
        match cli.command {
            Some(Command::BenchSd(args)) => {
                assert_eq!(args.screen, (3840, 2160));
                assert_eq!((args.runs, args.warmups, args.fps), (20, 3, 60.0));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The man pages and shell completions the package ships (tools/debian/man, .../completions),
/// made by clap_mangen and clap_complete from the definitions above (`dreamframe-analyze` checks
/// its own). After changing a flag, `DREAMFRAME_REGENERATE=1 cargo test generated` writes them
/// again.
#[cfg(test)]
mod generated {
    use clap::CommandFactory;
    use std::path::PathBuf;

    use crate::testing::{check_generated_docs, generated_docs};

    #[test]
    fn generated_man_pages_and_completions_match_the_definitions() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/debian");
        check_generated_docs(super::Cli::command(), &root);
    }

    #[test]
    fn every_command_has_a_page_and_each_shell_its_script() {
        let files = generated_docs(super::Cli::command());
        let names: Vec<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
        for wanted in [
            "man/dreamframe.1",
            "man/dreamframe-status.1",
            "man/dreamframe-probe.1",
            "completions/bash/dreamframe",
            "completions/zsh/_dreamframe",
            "completions/fish/dreamframe.fish",
        ] {
            assert!(names.contains(&wanted), "{wanted} in {names:?}");
        }
        let (_, page) = files
            .iter()
            .find(|(path, _)| path == "man/dreamframe-status.1")
            .unwrap();
        let page = String::from_utf8(page.clone()).unwrap();
        assert!(page.contains("dreamframe\\-status"), "{page}");
        assert!(page.contains("\\-\\-json"), "{page}");
    }
}
