//! The config file exactly as serde reads it: every key optional, defaults filled in, unknown
//! keys rejected. Nothing here is checked for range; `super::validate` turns a `RawConfig` into
//! a typed `Config` and reports every problem at once. Numbers are read as `Number`, which takes
//! any number TOML can hold (negative, huge, whole or not), so that validation can say what is
//! allowed instead of serde's "expected u32".

use serde::de::Visitor;
use serde::{Deserialize, Deserializer};

/// A number as written in the file; range and wholeness are checked by validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    Whole(i128),
    Real(f64),
}

impl Number {
    pub(crate) fn is_zero(self) -> bool {
        match self {
            Number::Whole(n) => n == 0,
            Number::Real(x) => x == 0.0,
        }
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl Visitor<'_> for NumberVisitor {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Whole(v.into()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number::Whole(v.into()))
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Number, E> {
                Ok(Number::Whole(v))
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Number, E> {
                i128::try_from(v)
                    .map(Number::Whole)
                    .map_err(|_| E::custom("integer number overflowed"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number::Real(v))
            }
        }
        deserializer.deserialize_any(NumberVisitor)
    }
}

/// Top-level sections that are tables: `[[display]]` (an array of them) is a mistake worth
/// naming, which serde's own message ("expected f64, found map") does not.
pub(crate) const TABLE_SECTIONS: &[&str] = &[
    "display",
    "model",
    "cppn",
    "warp",
    "flame",
    "prompts",
    "keyframe",
    "reanchor",
    "interpolation",
    "decode",
    "buffer",
    "adapt",
    "output",
    "log",
    "schedule",
];

fn real(value: f64) -> Number {
    Number::Real(value)
}

fn whole(value: i128) -> Number {
    Number::Whole(value)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub seed: Option<Number>,
    pub display: RawDisplay,
    pub model: RawModel,
    pub cppn: RawCppn,
    pub warp: RawWarp,
    pub flame: RawFlame,
    pub prompts: RawPrompts,
    pub keyframe: RawKeyframe,
    pub reanchor: RawReanchor,
    pub interpolation: RawInterpolation,
    pub decode: RawDecode,
    pub buffer: RawBuffer,
    pub adapt: RawAdapt,
    pub output: RawOutput,
    pub log: RawLog,
    pub schedule: RawSchedule,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub periods: Vec<RawPeriod>,
}

/// Every key defaults (empty), so a period missing one is reported by validation with the
/// others, not as serde's lone "missing field".
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawPeriod {
    pub from: String,
    pub to: String,
    pub action: String,
    pub brightness: Number,
}

impl Default for RawPeriod {
    fn default() -> Self {
        Self {
            from: String::new(),
            to: String::new(),
            action: String::new(),
            brightness: real(1.0),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawDisplay {
    pub sink: String,
    pub fps: Number,
    pub fit: String,
    pub rotation: Number,
    pub upscale_filter: String,
    pub framebuffer: String,
    pub card: String,
    pub mode: String,
    pub console: String,
    pub terminal_columns: Number,
    pub terminal_rows: Number,
    pub realtime: bool,
}

impl Default for RawDisplay {
    fn default() -> Self {
        Self {
            sink: "auto".into(),
            fps: real(30.0),
            fit: "fill".into(),
            rotation: whole(0),
            upscale_filter: "catmull-rom".into(),
            framebuffer: "/dev/fb0".into(),
            card: String::new(),
            mode: String::new(),
            console: "/dev/tty0".into(),
            terminal_columns: whole(0),
            terminal_rows: whole(0),
            realtime: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawModel {
    pub kind: String,
    pub width: Number,
    pub height: Number,
    pub preset: String,
    pub weights_dir: String,
    pub device: String,
    pub fallback: String,
    pub steps: Option<Number>,
    pub guidance: Option<Number>,
    pub scheduler: String,
}

impl Default for RawModel {
    fn default() -> Self {
        Self {
            kind: "cppn".into(),
            width: whole(0),
            height: whole(0),
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
pub(crate) struct RawPrompts {
    pub rotation_interval: Number,
    pub themes: Vec<RawTheme>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawTheme {
    pub positive: String,
    pub negative: String,
    /// "" (none), "cppn", "warp" or "flame".
    pub style: String,
    /// "" (none) or a `ThemePalette` name.
    pub palette: String,
}

impl Default for RawPrompts {
    fn default() -> Self {
        let theme = |positive: &str| RawTheme {
            positive: positive.into(),
            negative: "text, watermark, signature, frame, blurry, low quality".into(),
            ..RawTheme::default()
        };
        Self {
            rotation_interval: whole(8),
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
pub(crate) struct RawCppn {
    pub latent_size: Number,
    pub hidden_units: Number,
    pub layers: Number,
    pub zoom: Number,
}

impl Default for RawCppn {
    fn default() -> Self {
        Self {
            latent_size: whole(16),
            hidden_units: whole(16),
            layers: whole(3),
            zoom: real(1.6),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawWarp {
    pub octaves: Number,
    pub warp: Number,
    pub scale: Number,
}

impl Default for RawWarp {
    fn default() -> Self {
        Self {
            octaves: whole(5),
            warp: real(2.0),
            scale: real(1.5),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawFlame {
    pub density: Number,
    pub brightness: Number,
}

impl Default for RawFlame {
    fn default() -> Self {
        Self {
            density: real(3.0),
            brightness: real(1.0),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawKeyframe {
    pub drift: Number,
    pub denoise: Number,
}

impl Default for RawKeyframe {
    fn default() -> Self {
        Self {
            drift: real(0.45),
            denoise: real(0.25),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawReanchor {
    pub enabled: bool,
    pub history: Number,
    pub patience: Number,
    pub min_novelty: Number,
    pub min_contrast: Number,
    pub min_colourfulness: Number,
    pub min_detail: Number,
    pub max_detail: Number,
    pub max_clipped: Number,
}

impl Default for RawReanchor {
    fn default() -> Self {
        Self {
            enabled: true,
            history: whole(8),
            patience: whole(2),
            min_novelty: real(0.004),
            min_contrast: real(0.03),
            min_colourfulness: real(0.0),
            min_detail: real(0.0),
            max_detail: real(0.15),
            max_clipped: real(0.6),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawInterpolation {
    pub frames_per_transition: Number,
    pub easing: String,
    pub resolution_divisor: Number,
}

impl Default for RawInterpolation {
    fn default() -> Self {
        Self {
            frames_per_transition: whole(90),
            easing: "linear".into(),
            resolution_divisor: whole(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawDecode {
    pub batch_size: Number,
    pub tiny_decoder: bool,
}

impl Default for RawDecode {
    fn default() -> Self {
        Self {
            batch_size: whole(10),
            tiny_decoder: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawBuffer {
    pub seconds: Number,
    pub start_seconds: Number,
    pub resume_seconds: Number,
    pub max_megabytes: Number,
    pub underrun: String,
}

impl Default for RawBuffer {
    fn default() -> Self {
        Self {
            seconds: real(30.0),
            start_seconds: real(10.0),
            resume_seconds: real(2.0),
            max_megabytes: whole(512),
            underrun: "ping-pong".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawAdapt {
    pub enabled: bool,
    pub min_frames_per_transition: Number,
    pub min_resolution_scale: Number,
    pub tiny_decoder: bool,
    pub min_steps: Number,
    pub settle_seconds: Number,
}

impl Default for RawAdapt {
    fn default() -> Self {
        Self {
            enabled: true,
            min_frames_per_transition: whole(10),
            min_resolution_scale: real(0.5),
            tiny_decoder: true,
            min_steps: whole(0),
            settle_seconds: real(30.0),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawOutput {
    pub dir: String,
    pub status_seconds: Number,
    pub snapshot_seconds: Number,
    pub resume: bool,
}

impl Default for RawOutput {
    fn default() -> Self {
        Self {
            dir: String::new(),
            status_seconds: real(1.0),
            snapshot_seconds: real(60.0),
            resume: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub(crate) struct RawLog {
    pub level: String,
    pub file: String,
    pub max_kilobytes: Number,
    pub files: Number,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            file: "dreamframe.log".into(),
            max_kilobytes: whole(10240),
            files: whole(5),
        }
    }
}
