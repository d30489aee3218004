//! Configuration: one TOML file, read into `raw::RawConfig` by serde, then checked into the typed
//! `Config` the rest of the program uses.
//!
//! Inputs: the file's text and its origin (a path, or a name in tests). Output: a `Config`, or a
//! `ConfigError` that lists *every* problem of the file, each with `origin:line:column`, the key,
//! the value and what is allowed. Runs on whichever thread loads the config; it has no side
//! effects, so a failed load leaves the caller's running config untouched.

mod budget;
mod diagnostics;
mod raw;

use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use crate::generator::stable_diffusion::preset::Preset;
use crate::generator::stable_diffusion::{SchedulerKind, Theme};

pub use budget::FrameBudget;
use diagnostics::Checker;
pub use diagnostics::{ConfigError, ConfigProblem};
use raw::RawConfig;

/// Where finished frames are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Fbdev,
    Terminal,
    Null,
}

/// How the internal image is mapped onto a screen of another aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Whole image visible, black bars where the aspect ratios differ.
    Fit,
    /// Screen covered, the image's overhang cropped.
    Fill,
    /// Screen covered, the image distorted.
    Stretch,
}

/// Clockwise turn of the picture on the framebuffer, for screens mounted on their side or upside
/// down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    #[default]
    None,
    Clockwise90,
    Half,
    Clockwise270,
}

impl Rotation {
    pub fn degrees(self) -> u32 {
        match self {
            Rotation::None => 0,
            Rotation::Clockwise90 => 90,
            Rotation::Half => 180,
            Rotation::Clockwise270 => 270,
        }
    }

    /// Whether width and height trade places.
    pub fn is_quarter(self) -> bool {
        matches!(self, Rotation::Clockwise90 | Rotation::Clockwise270)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpscaleFilter {
    Nearest,
    Bilinear,
    CatmullRom,
    Lanczos3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Cppn,
    StableDiffusion,
    /// Fixed colour bars, to check a screen's colours and orientation.
    TestPattern,
}

/// Where a model runs. There is never a silent move from CUDA to the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeDevice {
    Cpu,
    Cuda(usize),
}

/// What happens when the configured model can't be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Show the built-in generator (and say so in the log and status.json).
    Cppn,
    /// Stop with the error.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Easing {
    Linear,
    Smoothstep,
}

/// What the display does when generation is slower than playback and the buffer runs dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderrunPolicy {
    /// Keep the last frame on screen until the buffer has refilled.
    Hold,
    /// Show each frame for longer as the buffer drains, so motion slows instead of stopping.
    SlowDown,
    /// Play recent frames backwards and forwards until the buffer has refilled.
    PingPong,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Seed of the whole run; `None` picks one at start (and logs it).
    pub seed: Option<u64>,
    pub display: DisplayConfig,
    pub model: ModelConfig,
    pub prompts: PromptsConfig,
    pub keyframe: KeyframeConfig,
    pub interpolation: InterpolationConfig,
    pub decode: DecodeConfig,
    pub buffer: BufferConfig,
    pub output: OutputConfig,
    pub log: LogConfig,
    /// Daily periods that dim or blank the display.
    pub schedule: Vec<crate::schedule::Period>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DisplayConfig {
    pub sink: SinkKind,
    pub fps: f64,
    pub fit: Fit,
    pub rotation: Rotation,
    pub upscale_filter: UpscaleFilter,
    pub framebuffer: PathBuf,
    /// The VT switched to graphics mode while the art is shown; `None` leaves the console alone.
    pub console: Option<PathBuf>,
    /// Terminal sink size in character cells; `None` asks the terminal.
    pub terminal_size: Option<(u32, u32)>,
    /// Run the pacer thread with real-time priority where permitted.
    pub realtime: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Internal resolution (cppn frames, or the Stable Diffusion generation size); `None` picks
    /// the model's own: 256x144 for cppn, the preset's native size for Stable Diffusion.
    pub size: Option<(u32, u32)>,
    pub cppn: CppnConfig,
    pub stable_diffusion: SdConfig,
    pub fallback: Fallback,
}

impl ModelConfig {
    /// The size of decoded frames this config asks for: the generation size (or the model's
    /// own), divided by the resolution divisor for Stable Diffusion.
    pub fn frame_size(&self, resolution_divisor: u32) -> (u32, u32) {
        match self.kind {
            ModelKind::StableDiffusion => {
                let (width, height) = self.size.unwrap_or(
                    crate::generator::stable_diffusion::preset::spec(self.stable_diffusion.preset)
                        .native_size,
                );
                let divisor = resolution_divisor.max(1);
                (width / divisor, height / divisor)
            }
            ModelKind::Cppn | ModelKind::TestPattern => self.size.unwrap_or(CPPN_DEFAULT_SIZE),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SdConfig {
    pub preset: Preset,
    pub weights_dir: PathBuf,
    pub device: ComputeDevice,
    /// `None`: the preset's default.
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    pub scheduler: SchedulerKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromptsConfig {
    pub rotation_interval: u64,
    pub themes: Vec<Theme>,
}

/// The built-in generator's internal resolution when none is configured.
pub const CPPN_DEFAULT_SIZE: (u32, u32) = (256, 144);
/// The largest Stable Diffusion generation size (either side).
pub const SD_MAX_SIZE: u32 = 2048;

#[derive(Debug, Clone, PartialEq)]
pub struct CppnConfig {
    pub latent_size: usize,
    pub hidden_units: usize,
    pub layers: usize,
    pub zoom: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyframeConfig {
    /// How far each keyframe moves away from the previous one, 0 (same) to 1 (unrelated).
    pub drift: f64,
    /// Stable Diffusion img2img strength from one keyframe to the next.
    pub denoise: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InterpolationConfig {
    pub frames_per_transition: usize,
    pub easing: Easing,
    /// Decoded frames are this many times smaller than the generation size (Stable Diffusion).
    pub resolution_divisor: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecodeConfig {
    pub batch_size: usize,
    /// Decode in-between frames with the tiny autoencoder (TAESD); keyframes keep the full VAE.
    pub tiny_decoder: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BufferConfig {
    pub seconds: f64,
    pub start_seconds: f64,
    pub resume_seconds: f64,
    pub max_bytes: usize,
    pub underrun: UnderrunPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    /// Folder for status.json, snapshot.png and the log; `None` picks one (see `resolve_dir`).
    pub dir: Option<PathBuf>,
    pub status_interval: Duration,
    /// `None` when snapshots are off.
    pub snapshot_interval: Option<Duration>,
    /// Save the generator's place and continue from it after a restart.
    pub resume: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: LevelFilter,
    /// Log file name, relative to the log folder unless absolute; `None` logs to stderr only.
    pub file: Option<PathBuf>,
    /// The file is rotated past this size...
    pub max_bytes: usize,
    /// ...keeping this many old files beside it.
    pub files: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_str("", "<built-in defaults>").expect("built-in defaults must be valid")
    }
}

/// The largest config file read: a real one is a few KiB; this leaves room for thousands of
/// themes while a runaway file (or /dev/zero behind a symlink) costs at most this much.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl Config {
    /// Reads and checks a config file: a regular file of at most `MAX_CONFIG_BYTES` in UTF-8.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = crate::files::read_regular(path, MAX_CONFIG_BYTES).map_err(|source| {
            ConfigError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let origin = path.display().to_string();
        match String::from_utf8(bytes) {
            Ok(text) => Config::from_str(&text, &origin),
            Err(error) => Err(diagnostics::not_utf8(
                &origin,
                error.as_bytes(),
                error.utf8_error(),
            )),
        }
    }

    /// Checks config text; `origin` names it in messages (a path, or a test's name).
    #[allow(clippy::should_implement_trait)] // needs the origin, so it can't be `FromStr`
    pub fn from_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let (raw, mut checker) = Checker::parse::<RawConfig>(text, origin)?;
        let config = validate(&raw, &mut checker);
        checker.finish()?;
        Ok(config)
    }
}

/// Folder for the log file: systemd's `$LOGS_DIRECTORY` when set, else the output folder.
pub fn resolve_log_dir(output_dir: &Path) -> PathBuf {
    match std::env::var_os("LOGS_DIRECTORY").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir.to_string_lossy().split(':').next().unwrap_or_default()),
        None => output_dir.to_path_buf(),
    }
}

/// Folder for status.json, the snapshot and the log: the configured one, else systemd's
/// `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/dreamframe`, else `~/.local/state/dreamframe`.
pub fn resolve_output_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    let env_dir = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env_dir("STATE_DIRECTORY") {
        // systemd may pass several colon-separated folders; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return PathBuf::from(first);
    }
    if let Some(dir) = env_dir("XDG_STATE_HOME") {
        return dir.join("dreamframe");
    }
    if let Some(home) = env_dir("HOME") {
        return home.join(".local/state/dreamframe");
    }
    PathBuf::from("/tmp/dreamframe")
}

fn validate_schedule(raw: &raw::RawSchedule, c: &mut Checker) -> Vec<crate::schedule::Period> {
    use crate::schedule::{parse_clock, Period, ScheduleAction};
    let mut periods = Vec::new();
    for (i, p) in raw.periods.iter().enumerate() {
        let key = |name: &str| format!("schedule.periods[{i}].{name}");
        let mut clock = |name: &str, value: &str| {
            let minute = parse_clock(value);
            if minute.is_none() {
                c.report_key(
                    &key(name),
                    value,
                    "allowed: a 24-hour local time \"HH:MM\", 00:00 to 23:59",
                );
            }
            minute
        };
        let (from, to) = (clock("from", &p.from), clock("to", &p.to));
        let action = match p.action.as_str() {
            "blank" => Some(ScheduleAction::Blank),
            "dim" => Some(ScheduleAction::Dim(c.range_f64(
                &key("brightness"),
                p.brightness,
                0.05,
                1.0,
            ))),
            _ => {
                c.report_key(
                    &key("action"),
                    &p.action,
                    "allowed values are \"dim\", \"blank\"",
                );
                None
            }
        };
        if let (Some(from), Some(to), Some(action)) = (from, to, action) {
            if from == to {
                c.report_key(
                    &key("to"),
                    &p.to,
                    "must differ from `from` (an empty period)",
                );
            } else {
                periods.push(Period { from, to, action });
            }
        }
    }
    periods
}

fn validate(raw: &RawConfig, c: &mut Checker) -> Config {
    let d = &raw.display;
    let display = DisplayConfig {
        sink: c.choice(
            "display.sink",
            &d.sink,
            &[
                ("fbdev", SinkKind::Fbdev),
                ("terminal", SinkKind::Terminal),
                ("null", SinkKind::Null),
            ],
            SinkKind::Fbdev,
        ),
        fps: c.range_f64("display.fps", d.fps, 1.0, 240.0),
        fit: c.choice(
            "display.fit",
            &d.fit,
            &[
                ("fit", Fit::Fit),
                ("fill", Fit::Fill),
                ("stretch", Fit::Stretch),
            ],
            Fit::Fill,
        ),
        rotation: match d.rotation {
            raw::Number::Whole(0) => Rotation::None,
            raw::Number::Whole(90) => Rotation::Clockwise90,
            raw::Number::Whole(180) => Rotation::Half,
            raw::Number::Whole(270) => Rotation::Clockwise270,
            _ => {
                c.report_key(
                    "display.rotation",
                    "",
                    "allowed values are 0, 90, 180, 270 (degrees clockwise)",
                );
                Rotation::None
            }
        },
        upscale_filter: c.choice(
            "display.upscale-filter",
            &d.upscale_filter,
            &[
                ("nearest", UpscaleFilter::Nearest),
                ("bilinear", UpscaleFilter::Bilinear),
                ("catmull-rom", UpscaleFilter::CatmullRom),
                ("lanczos3", UpscaleFilter::Lanczos3),
            ],
            UpscaleFilter::CatmullRom,
        ),
        framebuffer: c.non_empty_path("display.framebuffer", &d.framebuffer),
        console: c.path("display.console", &d.console, true),
        terminal_size: {
            let columns = c.range_u32_or_zero(
                "display.terminal-columns",
                d.terminal_columns,
                8,
                crate::sink::terminal::MAX_COLUMNS,
            );
            let rows = c.range_u32_or_zero(
                "display.terminal-rows",
                d.terminal_rows,
                4,
                crate::sink::terminal::MAX_ROWS,
            );
            (columns > 0 && rows > 0).then_some((columns, rows))
        },
        realtime: d.realtime,
    };

    let m = &raw.model;
    let kind = c.choice(
        "model.kind",
        &m.kind,
        &[
            ("cppn", ModelKind::Cppn),
            ("stable-diffusion", ModelKind::StableDiffusion),
            ("test-pattern", ModelKind::TestPattern),
        ],
        ModelKind::Cppn,
    );
    let divisor = c.range_u32(
        "interpolation.resolution-divisor",
        raw.interpolation.resolution_divisor,
        1,
        8,
    );
    let size = if m.width.is_zero() && m.height.is_zero() {
        None
    } else {
        let width = c.range_u32("model.width", m.width, 16, 4096);
        let height = c.range_u32("model.height", m.height, 16, 4096);
        if kind == ModelKind::StableDiffusion {
            for (key, value) in [("model.width", width), ("model.height", height)] {
                if value > SD_MAX_SIZE {
                    c.report_key(
                        key,
                        &value.to_string(),
                        &format!("too large for Stable Diffusion, allowed 16 to {SD_MAX_SIZE}: the VAE's attention grows with the fourth power of the size (at 2048x2048 it needs 17 GB for one frame); the picture is upscaled to the screen anyway"),
                    );
                }
            }
            let step = 8 * divisor;
            c.multiple_of(
                "model.width",
                width,
                step,
                "8 x interpolation.resolution-divisor",
            );
            c.multiple_of(
                "model.height",
                height,
                step,
                "8 x interpolation.resolution-divisor",
            );
        }
        Some((width, height))
    };
    let model = ModelConfig {
        kind,
        size,
        cppn: CppnConfig {
            latent_size: c.range_u32("cppn.latent-size", raw.cppn.latent_size, 2, 256) as usize,
            hidden_units: c.range_u32("cppn.hidden-units", raw.cppn.hidden_units, 4, 128) as usize,
            layers: c.range_u32("cppn.layers", raw.cppn.layers, 1, 12) as usize,
            zoom: c.range_f64("cppn.zoom", raw.cppn.zoom, 0.1, 20.0),
        },
        stable_diffusion: SdConfig {
            preset: c.choice(
                "model.preset",
                &m.preset,
                &[
                    ("sd-turbo", Preset::SdTurbo),
                    ("sd-1.5", Preset::Sd15),
                    ("sd-2.1", Preset::Sd21),
                    ("sdxl-turbo", Preset::SdxlTurbo),
                ],
                Preset::SdTurbo,
            ),
            weights_dir: c.non_empty_path("model.weights-dir", &m.weights_dir),
            device: c.device("model.device", &m.device),
            steps: m
                .steps
                .map(|steps| c.range_u32("model.steps", steps, 1, 200) as usize),
            guidance: m
                .guidance
                .map(|guidance| c.range_f64("model.guidance", guidance, 0.0, 30.0)),
            scheduler: c.choice(
                "model.scheduler",
                &m.scheduler,
                &[
                    ("ddim", SchedulerKind::Ddim),
                    ("euler-ancestral", SchedulerKind::EulerAncestral),
                ],
                SchedulerKind::Ddim,
            ),
        },
        fallback: c.choice(
            "model.fallback",
            &m.fallback,
            &[("cppn", Fallback::Cppn), ("none", Fallback::None)],
            Fallback::Cppn,
        ),
    };

    let p = &raw.prompts;
    if p.themes.is_empty() {
        c.report_key(
            "prompts.themes",
            "[]",
            "needs at least one theme: [[prompts.themes]] with positive and negative",
        );
    }
    let prompts = PromptsConfig {
        rotation_interval: c.range_u32(
            "prompts.rotation-interval",
            p.rotation_interval,
            1,
            1_000_000,
        ) as u64,
        themes: p
            .themes
            .iter()
            .map(|t| Theme {
                positive: t.positive.clone(),
                negative: t.negative.clone(),
            })
            .collect(),
    };

    let b = &raw.buffer;
    let seconds = c.range_f64("buffer.seconds", b.seconds, 0.5, 3600.0);
    let buffer = BufferConfig {
        seconds,
        start_seconds: c.range_f64_named(
            "buffer.start-seconds",
            b.start_seconds,
            0.0,
            seconds,
            "buffer.seconds",
        ),
        resume_seconds: c.range_f64_named(
            "buffer.resume-seconds",
            b.resume_seconds,
            0.0,
            seconds,
            "buffer.seconds",
        ),
        max_bytes: c.range_u32("buffer.max-megabytes", b.max_megabytes, 1, 1 << 20) as usize
            * 1024
            * 1024,
        underrun: c.choice(
            "buffer.underrun",
            &b.underrun,
            &[
                ("hold", UnderrunPolicy::Hold),
                ("slow-down", UnderrunPolicy::SlowDown),
                ("ping-pong", UnderrunPolicy::PingPong),
            ],
            UnderrunPolicy::PingPong,
        ),
    };

    let o = &raw.output;
    let output = OutputConfig {
        dir: c.path("output.dir", &o.dir, true),
        status_interval: Duration::from_secs_f64(c.range_f64(
            "output.status-seconds",
            o.status_seconds,
            0.1,
            3600.0,
        )),
        snapshot_interval: {
            let s = o.snapshot_seconds;
            if s.is_zero() {
                None
            } else {
                Some(Duration::from_secs_f64(c.range_f64(
                    "output.snapshot-seconds",
                    s,
                    1.0,
                    86400.0,
                )))
            }
        },
        resume: o.resume,
    };

    let log = LogConfig {
        level: c.choice(
            "log.level",
            &raw.log.level,
            &[
                ("error", LevelFilter::Error),
                ("warn", LevelFilter::Warn),
                ("info", LevelFilter::Info),
                ("debug", LevelFilter::Debug),
                ("trace", LevelFilter::Trace),
            ],
            LevelFilter::Info,
        ),
        file: c.path("log.file", &raw.log.file, true),
        max_bytes: c.range_u32(
            "log.max-kilobytes",
            raw.log.max_kilobytes,
            4,
            4 * 1024 * 1024,
        ) as usize
            * 1024,
        files: c.range_u32("log.files", raw.log.files, 1, 100) as usize,
    };

    let schedule = validate_schedule(&raw.schedule, c);
    let (width, height) = model.frame_size(divisor);
    if let Err(why) =
        FrameBudget::plan(buffer.max_bytes, width as usize * height as usize * 3, 1, 1)
    {
        c.report_key(
            "buffer.max-megabytes",
            &(buffer.max_bytes / (1024 * 1024)).to_string(),
            &format!("{why} ({width}x{height} frames)"),
        );
    }
    Config {
        seed: raw.seed.map(|seed| c.whole("seed", seed, 0, u64::MAX)),
        schedule,
        display,
        model,
        prompts,
        keyframe: KeyframeConfig {
            drift: c.range_f64("keyframe.drift", raw.keyframe.drift, 0.0, 1.0),
            denoise: c.range_f64("keyframe.denoise", raw.keyframe.denoise, 0.0, 1.0),
        },
        interpolation: InterpolationConfig {
            frames_per_transition: c.range_u32(
                "interpolation.frames-per-transition",
                raw.interpolation.frames_per_transition,
                1,
                10_000,
            ) as usize,
            easing: c.choice(
                "interpolation.easing",
                &raw.interpolation.easing,
                &[
                    ("linear", Easing::Linear),
                    ("smoothstep", Easing::Smoothstep),
                ],
                Easing::Linear,
            ),
            resolution_divisor: divisor,
        },
        decode: DecodeConfig {
            batch_size: c.range_u32("decode.batch-size", raw.decode.batch_size, 1, 1024) as usize,
            tiny_decoder: raw.decode.tiny_decoder,
        },
        buffer,
        output,
        log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_str(text, "test.toml") {
            Ok(_) => panic!("expected errors for {text:?}"),
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn empty_text_gives_the_documented_defaults() {
        let c = Config::from_str("", "empty").expect("empty config is valid");
        assert_eq!(c.display.sink, SinkKind::Fbdev);
        assert_eq!(c.display.fps, 30.0);
        assert_eq!(c.buffer.seconds, 30.0);
        assert_eq!(c.buffer.start_seconds, 10.0);
        assert_eq!(c.buffer.underrun, UnderrunPolicy::PingPong);
        assert_eq!(c.interpolation.frames_per_transition, 90);
        assert_eq!(c.seed, None);
        assert_eq!(c.output.snapshot_interval, Some(Duration::from_secs(60)));
    }

    #[test]
    fn shipped_config_file_is_valid_and_equals_the_defaults() {
        let text = include_str!("../../config/dreamframe.toml");
        let shipped =
            Config::from_str(text, "config/dreamframe.toml").expect("shipped config is valid");
        assert_eq!(
            shipped,
            Config::default(),
            "config/dreamframe.toml documents the defaults"
        );
    }

    #[test]
    fn every_problem_of_a_file_is_reported_with_line_and_column() {
        let text = "[display]\nfps = 0\nfsp = 3\nfit = \"zoom\"\n[buffer]\nseconds = \"long\"\n";
        let p = problems(text);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p.iter()
                .any(|m| m
                    .starts_with("test.toml:2:7: display.fps = 0: out of range, allowed 1 to 240")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("test.toml:3:1: display.fsp = 3: unknown key")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.contains(
                "display.fit = \"zoom\": allowed values are \"fit\", \"fill\", \"stretch\""
            )),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("test.toml:6:11: buffer.seconds = \"long\": wrong type")),
            "{p:#?}"
        );
    }

    #[test]
    fn cross_field_bounds_name_the_other_key() {
        let p = problems("[buffer]\nseconds = 5.0\nstart-seconds = 8.0\n");
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].contains(
                "buffer.start-seconds = 8.0: out of range, allowed 0 to 5 (buffer.seconds)"
            ),
            "{p:#?}"
        );
    }

    #[test]
    fn syntax_error_is_reported_with_position() {
        let p = problems("[display]\nfps = = 3\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("test.toml:2:"), "{p:#?}");
    }
}
