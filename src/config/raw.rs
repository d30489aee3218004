//! The config file exactly as serde reads it: every key optional, defaults filled in, unknown
//! keys rejected. Nothing here is checked for range; `super::validate` turns a `RawConfig` into
//! a typed `Config` and reports every problem at once.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawConfig {
    pub seed: Option<u64>,
    pub display: RawDisplay,
    pub model: RawModel,
    pub cppn: RawCppn,
    pub prompts: RawPrompts,
    pub keyframe: RawKeyframe,
    pub interpolation: RawInterpolation,
    pub decode: RawDecode,
    pub buffer: RawBuffer,
    pub output: RawOutput,
    pub log: RawLog,
    pub schedule: RawSchedule,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawSchedule {
    pub periods: Vec<RawPeriod>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawPeriod {
    pub from: String,
    pub to: String,
    pub action: String,
    #[serde(default = "full_brightness")]
    pub brightness: f64,
}

fn full_brightness() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawDisplay {
    pub sink: String,
    pub fps: f64,
    pub fit: String,
    pub rotation: u32,
    pub upscale_filter: String,
    pub framebuffer: String,
    pub console: String,
    pub terminal_columns: u32,
    pub terminal_rows: u32,
    pub realtime: bool,
}

impl Default for RawDisplay {
    fn default() -> Self {
        Self {
            sink: "fbdev".into(),
            fps: 30.0,
            fit: "fill".into(),
            rotation: 0,
            upscale_filter: "catmull-rom".into(),
            framebuffer: "/dev/fb0".into(),
            console: "/dev/tty0".into(),
            terminal_columns: 0,
            terminal_rows: 0,
            realtime: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawModel {
    pub kind: String,
    pub width: u32,
    pub height: u32,
    pub preset: String,
    pub weights_dir: String,
    pub device: String,
    pub fallback: String,
    pub steps: Option<u32>,
    pub guidance: Option<f64>,
    pub scheduler: String,
}

impl Default for RawModel {
    fn default() -> Self {
        Self {
            kind: "cppn".into(),
            width: 0,
            height: 0,
            preset: "sd-turbo".into(),
            weights_dir: "/var/lib/dreamframe/models/sd-turbo".into(),
            device: "cpu".into(),
            fallback: "cppn".into(),
            steps: None,
            guidance: None,
            scheduler: "ddim".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawPrompts {
    pub rotation_interval: u32,
    pub themes: Vec<RawTheme>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawTheme {
    pub positive: String,
    pub negative: String,
}

impl Default for RawPrompts {
    fn default() -> Self {
        let theme = |positive: &str| RawTheme {
            positive: positive.into(),
            negative: "text, watermark, signature, frame, blurry, low quality".into(),
        };
        Self {
            rotation_interval: 8,
            themes: vec![
                theme("flowing liquid colours, abstract organic forms, iridescent, intricate, high detail"),
                theme("a dreamlike landscape of glowing coral and nebulae, soft light, painterly"),
                theme("ink and watercolour clouds unfolding, luminous gradients, abstract art"),
            ],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawCppn {
    pub latent_size: u32,
    pub hidden_units: u32,
    pub layers: u32,
    pub zoom: f64,
}

impl Default for RawCppn {
    fn default() -> Self {
        Self {
            latent_size: 16,
            hidden_units: 16,
            layers: 3,
            zoom: 1.6,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawKeyframe {
    pub drift: f64,
    pub denoise: f64,
}

impl Default for RawKeyframe {
    fn default() -> Self {
        Self {
            drift: 0.45,
            denoise: 0.25,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawInterpolation {
    pub frames_per_transition: u32,
    pub easing: String,
    pub resolution_divisor: u32,
}

impl Default for RawInterpolation {
    fn default() -> Self {
        Self {
            frames_per_transition: 90,
            easing: "linear".into(),
            resolution_divisor: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawDecode {
    pub batch_size: u32,
    pub tiny_decoder: bool,
}

impl Default for RawDecode {
    fn default() -> Self {
        Self {
            batch_size: 10,
            tiny_decoder: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawBuffer {
    pub seconds: f64,
    pub start_seconds: f64,
    pub resume_seconds: f64,
    pub max_megabytes: u32,
    pub underrun: String,
}

impl Default for RawBuffer {
    fn default() -> Self {
        Self {
            seconds: 30.0,
            start_seconds: 10.0,
            resume_seconds: 2.0,
            max_megabytes: 512,
            underrun: "ping-pong".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawOutput {
    pub dir: String,
    pub status_seconds: f64,
    pub snapshot_seconds: f64,
    pub resume: bool,
}

impl Default for RawOutput {
    fn default() -> Self {
        Self {
            dir: String::new(),
            status_seconds: 1.0,
            snapshot_seconds: 60.0,
            resume: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RawLog {
    pub level: String,
    pub file: String,
    pub max_kilobytes: u32,
    pub files: u32,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            file: "dreamframe.log".into(),
            max_kilobytes: 10240,
            files: 5,
        }
    }
}
