//! The validated configuration's types: what the rest of the program reads. Plain data with a
//! few helpers; no parsing, no I/O, and no dependency on any stage, sink or generator (they
//! depend on these).

use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use serde::Serialize;

/// Where finished frames are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// KMS when a card has a connected screen and we can drive it, else the framebuffer when
    /// it opens, else the terminal when stdout is one, else the errors: tear-free on modern
    /// Linux, art on a desktop or over SSH, and unchanged under systemd on fbdev-only boxes.
    Auto,
    /// KMS/DRM: dumb buffers and page flips on the vertical blank.
    Drm,
    Fbdev,
    Terminal,
    Null,
}

/// `display.mode`: a screen mode by size and, optionally, refresh rate ("1920x1080@60").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModeRequest {
    pub width: u32,
    pub height: u32,
    /// Hz; `None` takes the highest the screen offers at that size.
    pub refresh: Option<f64>,
}

impl std::fmt::Display for ModeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)?;
        match self.refresh {
            Some(hz) => write!(f, "@{hz}"),
            None => Ok(()),
        }
    }
}

impl std::str::FromStr for ModeRequest {
    type Err = ();

    /// "WIDTHxHEIGHT" or "WIDTHxHEIGHT@HZ" (HZ may have decimals: "59.94").
    fn from_str(text: &str) -> Result<Self, ()> {
        let (size, refresh) = match text.split_once('@') {
            Some((size, hz)) => (size, Some(hz)),
            None => (text, None),
        };
        let (width, height) = size.split_once('x').ok_or(())?;
        let number = |n: &str| -> Result<u32, ()> {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            n.parse().map_err(|_| ())
        };
        let (width, height) = (number(width)?, number(height)?);
        if !(1..=16384).contains(&width) || !(1..=16384).contains(&height) {
            return Err(());
        }
        let refresh = match refresh {
            Some(hz) => {
                let hz: f64 = hz.parse().map_err(|_| ())?;
                if !(1.0..=1000.0).contains(&hz) {
                    return Err(());
                }
                Some(hz)
            }
            None => None,
        };
        Ok(Self {
            width,
            height,
            refresh,
        })
    }
}

/// How the internal image is mapped onto a screen of another aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rotation {
    #[default]
    None,
    Clockwise90,
    Half,
    Clockwise270,
}

impl Fit {
    pub fn name(self) -> &'static str {
        match self {
            Fit::Fit => "fit",
            Fit::Fill => "fill",
            Fit::Stretch => "stretch",
        }
    }
}

impl Easing {
    pub fn name(self) -> &'static str {
        match self {
            Easing::Linear => "linear",
            Easing::Smoothstep => "smoothstep",
        }
    }
}

impl UnderrunPolicy {
    pub fn name(self) -> &'static str {
        match self {
            UnderrunPolicy::Hold => "hold",
            UnderrunPolicy::SlowDown => "slow-down",
            UnderrunPolicy::PingPong => "ping-pong",
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpscaleFilter {
    Nearest,
    Bilinear,
    CatmullRom,
    Lanczos3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Cppn,
    /// Domain-warped noise (`generator::builtin::warp`).
    Warp,
    /// Fractal flames (`generator::builtin::flame`).
    Flame,
    /// The built-in styles in turn, one per theme, cross-faded (`generator::builtin::mix`).
    Mix,
    StableDiffusion,
    /// Fixed colour bars, to check a screen's colours and orientation.
    TestPattern,
}

impl ModelKind {
    /// Every kind with its name in the config file.
    pub const NAMED: [(&'static str, ModelKind); 6] = [
        ("cppn", ModelKind::Cppn),
        ("warp", ModelKind::Warp),
        ("flame", ModelKind::Flame),
        ("mix", ModelKind::Mix),
        ("stable-diffusion", ModelKind::StableDiffusion),
        ("test-pattern", ModelKind::TestPattern),
    ];

    pub fn name(self) -> &'static str {
        name_in(&Self::NAMED, self)
    }
}

/// Where a model runs. There is never a silent move from CUDA to the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComputeDevice {
    Cpu,
    Cuda(usize),
}

/// What happens when the configured model can't be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// Show the built-in generator (and say so in the log and status.json).
    Cppn,
    /// Stop with the error.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Easing {
    Linear,
    Smoothstep,
}

/// What the display does when generation is slower than playback and the buffer runs dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnderrunPolicy {
    /// Keep the last frame on screen until the buffer has refilled.
    Hold,
    /// Show each frame for longer as the buffer drains, so motion slows instead of stopping.
    SlowDown,
    /// Play recent frames backwards and forwards until the buffer has refilled.
    PingPong,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// Seed of the whole run; `None` picks one at start (and logs it).
    pub seed: Option<u64>,
    pub display: DisplayConfig,
    pub model: ModelConfig,
    pub cppn: CppnConfig,
    pub warp: WarpConfig,
    pub flame: FlameConfig,
    pub prompts: PromptsConfig,
    pub keyframe: KeyframeConfig,
    pub reanchor: ReanchorConfig,
    pub interpolation: InterpolationConfig,
    pub decode: DecodeConfig,
    pub buffer: BufferConfig,
    pub adapt: AdaptConfig,
    pub output: OutputConfig,
    pub log: LogConfig,
    /// Daily periods that dim or blank the display.
    pub schedule: Vec<Period>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DisplayConfig {
    pub sink: SinkKind,
    pub fps: f64,
    pub fit: Fit,
    pub rotation: Rotation,
    pub upscale_filter: UpscaleFilter,
    pub framebuffer: PathBuf,
    /// The DRM card for the drm sink; `None`: the first card with a connected screen.
    pub card: Option<PathBuf>,
    /// The screen mode for the drm sink; `None`: the connector's preferred mode.
    pub mode: Option<ModeRequest>,
    /// The VT switched to graphics mode while the art is shown; `None` leaves the console alone.
    pub console: Option<PathBuf>,
    /// Terminal sink size in character cells; `None` asks the terminal.
    pub terminal_size: Option<(u32, u32)>,
    /// Run the pacer thread with real-time priority where permitted.
    pub realtime: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Internal resolution (cppn frames, or the Stable Diffusion generation size); `None` picks
    /// the model's own: 256x144 for cppn, 384x216 for warp, flame and mix, the preset's native size for
    /// Stable Diffusion.
    pub size: Option<(u32, u32)>,
    /// The Stable Diffusion keys (in the file they sit in [model] too).
    #[serde(flatten)]
    pub stable_diffusion: SdConfig,
    pub fallback: Fallback,
}

impl ModelConfig {
    /// The size of decoded frames this config asks for: the generation size (or the model's
    /// own), divided by the resolution divisor for Stable Diffusion.
    pub fn frame_size(&self, resolution_divisor: u32) -> (u32, u32) {
        match self.kind {
            ModelKind::StableDiffusion => {
                let (width, height) = self
                    .size
                    .unwrap_or(self.stable_diffusion.preset.native_size());
                let divisor = resolution_divisor.max(1);
                (width / divisor, height / divisor)
            }
            ModelKind::Warp | ModelKind::Mix => self.size.unwrap_or(WARP_DEFAULT_SIZE),
            ModelKind::Flame => self.size.unwrap_or(FLAME_DEFAULT_SIZE),
            ModelKind::Cppn | ModelKind::TestPattern => self.size.unwrap_or(CPPN_DEFAULT_SIZE),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SdConfig {
    pub preset: Preset,
    pub weights_dir: PathBuf,
    pub device: ComputeDevice,
    /// `None`: the preset's default.
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    pub scheduler: SchedulerKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PromptsConfig {
    pub rotation_interval: u64,
    pub themes: Vec<Theme>,
}

/// The built-in generator's internal resolution when none is configured.
pub const CPPN_DEFAULT_SIZE: (u32, u32) = (256, 144);
/// The warp style's internal resolution when none is configured: it costs half what the CPPN
/// does per pixel, so it spends the same time on 2.25 times the pixels, and its fine detail
/// holds up better at screen size.
pub const WARP_DEFAULT_SIZE: (u32, u32) = (384, 216);
/// The flame style's: its cost is in points, so in pixels at a given density, and it costs
/// about what the warp does per pixel.
pub const FLAME_DEFAULT_SIZE: (u32, u32) = (384, 216);
/// The largest Stable Diffusion generation size (either side).
pub const SD_MAX_SIZE: u32 = 2048;
/// The largest terminal the terminal sink draws, in character cells: a terminal reporting more
/// (a bogus `stty rows 3000 cols 3000`) is drawn at this size.
pub const TERMINAL_MAX_COLUMNS: u32 = 500;
pub const TERMINAL_MAX_ROWS: u32 = 250;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CppnConfig {
    pub latent_size: usize,
    pub hidden_units: usize,
    pub layers: usize,
    pub zoom: f64,
}

/// The `warp` style: domain-warped noise.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct WarpConfig {
    /// Layers of noise, each twice as fine as the last.
    pub octaves: usize,
    /// How far the fields push each other.
    pub warp: f64,
    /// How much of the noise plane the screen shows.
    pub scale: f64,
}

/// The `flame` style: fractal flames.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FlameConfig {
    /// Points plotted per pixel: more is smoother and slower.
    pub density: f64,
    /// Multiplies the log-density brightness.
    pub brightness: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KeyframeConfig {
    /// How far each keyframe moves away from the previous one, 0 (same) to 1 (unrelated).
    pub drift: f64,
    /// Stable Diffusion img2img strength from one keyframe to the next.
    pub denoise: f64,
}

/// When the walk is re-anchored (see `pipeline::guard`): thresholds on each decoded keyframe.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReanchorConfig {
    pub enabled: bool,
    /// Keyframes remembered for novelty.
    pub history: usize,
    /// Keyframes running a check must fail before a re-anchor.
    pub patience: u32,
    pub min_novelty: f32,
    pub min_contrast: f32,
    pub min_colourfulness: f32,
    pub min_detail: f32,
    pub max_detail: f32,
    pub max_clipped: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InterpolationConfig {
    pub frames_per_transition: usize,
    pub easing: Easing,
    /// Decoded frames are this many times smaller than the generation size (Stable Diffusion).
    pub resolution_divisor: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DecodeConfig {
    pub batch_size: usize,
    /// Decode in-between frames with the tiny autoencoder (TAESD); keyframes keep the full VAE.
    pub tiny_decoder: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BufferConfig {
    pub seconds: f64,
    pub start_seconds: f64,
    pub resume_seconds: f64,
    pub max_bytes: usize,
    pub underrun: UnderrunPolicy,
}

/// Capacity-aware playback (`pipeline::adapt`): how far the quality ladder may go down.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AdaptConfig {
    /// Off: playback as before adaptation existed (a still until `buffer.start-seconds` are
    /// buffered, one decoded frame per display period, nothing lowered).
    pub enabled: bool,
    /// The ladder never decodes fewer frames per transition than this (nor more than
    /// `interpolation.frames-per-transition`).
    pub min_frames_per_transition: usize,
    /// The smallest internal resolution, as a share of the configured width and height.
    pub min_resolution_scale: f64,
    /// Stable Diffusion: the ladder may decode in-betweens with the tiny decoder (when its file
    /// is in the weights folder) while the full VAE can't keep up.
    pub tiny_decoder: bool,
    /// Stable Diffusion: the fewest keyframe steps the ladder may use; `None`: half the
    /// configured steps (at least 1).
    pub min_steps: Option<usize>,
    /// The ladder climbs a rung at most once per this long (longer for a rung that failed).
    pub settle: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct OutputConfig {
    /// Folder for status.json, snapshot.png and the log; `None` picks one (see `resolve_dir`).
    pub dir: Option<PathBuf>,
    pub status_interval: Duration,
    /// `None` when snapshots are off.
    pub snapshot_interval: Option<Duration>,
    /// Save the generator's place and continue from it after a restart.
    pub resume: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LogConfig {
    pub level: LevelFilter,
    /// Log file name, relative to the log folder unless absolute; `None` logs to stderr only.
    pub file: Option<PathBuf>,
    /// The file is rotated past this size...
    pub max_bytes: usize,
    /// ...keeping this many old files beside it.
    pub files: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Theme {
    pub positive: String,
    pub negative: String,
    /// The built-in style this theme shows with model.kind = "mix"; `None`: the styles in turn.
    pub style: Option<Style>,
    /// The built-in styles' palette for this theme; `None`: one named by a word of `positive`,
    /// if any, leans the palette (`generator::builtin::themes`).
    pub palette: Option<ThemePalette>,
}

/// The built-in styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Style {
    Cppn,
    Warp,
    Flame,
}

impl Style {
    /// Every style with its name in the config file and on the command line, in the order
    /// "mix" takes them.
    pub const NAMED: [(&'static str, Style); 3] = [
        ("cppn", Style::Cppn),
        ("warp", Style::Warp),
        ("flame", Style::Flame),
    ];

    pub fn name(self) -> &'static str {
        name_in(&Self::NAMED, self)
    }
}

/// `value`'s name in a table of names.
fn name_in<T: PartialEq>(named: &[(&'static str, T)], value: T) -> &'static str {
    named
        .iter()
        .find(|(_, each)| *each == value)
        .map_or("", |(name, _)| name)
}

/// The palettes a theme can give the built-in styles (`generator::builtin::themes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThemePalette {
    Ember,
    Ocean,
    Forest,
    Dusk,
    Ice,
    Desert,
    Night,
    Ink,
    Aurora,
}

impl ThemePalette {
    /// Every palette with its name in the config file.
    pub const NAMED: [(&'static str, ThemePalette); 9] = [
        ("ember", ThemePalette::Ember),
        ("ocean", ThemePalette::Ocean),
        ("forest", ThemePalette::Forest),
        ("dusk", ThemePalette::Dusk),
        ("ice", ThemePalette::Ice),
        ("desert", ThemePalette::Desert),
        ("night", ThemePalette::Night),
        ("ink", ThemePalette::Ink),
        ("aurora", ThemePalette::Aurora),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// DDIM with eta 0: no noise after the start.
    Ddim,
    /// Euler ancestral: fresh noise each step, drawn from the keyframe's seed.
    EulerAncestral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// stabilityai/sd-turbo: the SD 2.1 architecture distilled for 1-4 steps, no guidance.
    SdTurbo,
    /// runwayml/stable-diffusion-v1-5.
    Sd15,
    /// stabilityai/stable-diffusion-2-1 (768 px, v-prediction).
    Sd21,
    /// stabilityai/sdxl-turbo: SDXL distilled for 1-4 steps, no guidance, two text encoders.
    SdxlTurbo,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::SdTurbo => "sd-turbo",
            Preset::Sd15 => "sd-1.5",
            Preset::Sd21 => "sd-2.1",
            Preset::SdxlTurbo => "sdxl-turbo",
        }
    }

    /// The size the model was trained at (its generation size unless `model.width`/`height`
    /// say otherwise).
    pub fn native_size(self) -> (u32, u32) {
        match self {
            Preset::Sd21 => (768, 768),
            Preset::SdTurbo | Preset::Sd15 | Preset::SdxlTurbo => (512, 512),
        }
    }
}

/// What a period does to the display.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleAction {
    /// Picture brightness multiplied by this factor (0.05 to 1).
    Dim(f64),
    /// Screen powered down, generation paused.
    Blank,
}

/// A daily period; `to` before `from` runs over midnight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Period {
    /// Minutes after local midnight.
    pub from: u32,
    pub to: u32,
    pub action: ScheduleAction,
}

pub const MINUTES_PER_DAY: u32 = 24 * 60;

/// "HH:MM" (24-hour) as minutes after midnight.
pub fn parse_clock(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

pub fn format_clock(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

impl Period {
    pub fn contains(&self, minute: u32) -> bool {
        if self.from <= self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }

    /// For logs and status.json: "blank 23:00-07:00" or "dim 0.30 22:00-23:00".
    pub fn label(&self) -> String {
        let span = format!("{}-{}", format_clock(self.from), format_clock(self.to));
        match self.action {
            ScheduleAction::Blank => format!("blank {span}"),
            ScheduleAction::Dim(factor) => format!("dim {factor:.2} {span}"),
        }
    }
}
