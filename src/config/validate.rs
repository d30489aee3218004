//! Validation: a `RawConfig` (as serde read it) checked key by key into the typed `Config`,
//! every problem reported through the `Checker` with its position. One function per section.

use std::time::Duration;

use log::LevelFilter;

use super::diagnostics::Checker;
use super::raw::{self, RawConfig};
use super::types::*;
use super::FrameBudget;

fn validate_schedule(raw: &raw::RawSchedule, c: &mut Checker) -> Vec<Period> {
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

pub(super) fn validate(raw: &RawConfig, c: &mut Checker) -> Config {
    let display = validate_display(&raw.display, c);
    let divisor = c.range_u32(
        "interpolation.resolution-divisor",
        raw.interpolation.resolution_divisor,
        1,
        8,
    );
    let model = validate_model(raw, divisor, c);
    let prompts = validate_prompts(&raw.prompts, c);
    let buffer = validate_buffer(&raw.buffer, c);
    let output = validate_output(&raw.output, c);
    let log = validate_log(&raw.log, c);
    let schedule = validate_schedule(&raw.schedule, c);
    let (width, height) = model.frame_size(divisor);
    if let Err(why) = FrameBudget::plan(buffer.max_bytes, width as usize * height as usize * 3, 1) {
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
        cppn: CppnConfig {
            latent_size: c.range_u32("cppn.latent-size", raw.cppn.latent_size, 2, 256) as usize,
            hidden_units: c.range_u32("cppn.hidden-units", raw.cppn.hidden_units, 4, 128) as usize,
            layers: c.range_u32("cppn.layers", raw.cppn.layers, 1, 12) as usize,
            zoom: c.range_f64("cppn.zoom", raw.cppn.zoom, 0.1, 20.0),
        },
        warp: WarpConfig {
            octaves: c.range_u32("warp.octaves", raw.warp.octaves, 1, 8) as usize,
            warp: c.range_f64("warp.warp", raw.warp.warp, 0.0, 10.0),
            scale: c.range_f64("warp.scale", raw.warp.scale, 0.1, 20.0),
        },
        flame: FlameConfig {
            density: c.range_f64("flame.density", raw.flame.density, 0.25, 64.0),
            brightness: c.range_f64("flame.brightness", raw.flame.brightness, 0.1, 10.0),
        },
        prompts,
        keyframe: KeyframeConfig {
            drift: c.range_f64("keyframe.drift", raw.keyframe.drift, 0.0, 1.0),
            denoise: c.range_f64("keyframe.denoise", raw.keyframe.denoise, 0.0, 1.0),
        },
        reanchor: validate_reanchor(&raw.reanchor, c),
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
        adapt: validate_adapt(&raw.adapt, c),
        output,
        log,
    }
}

fn validate_adapt(a: &raw::RawAdapt, c: &mut Checker) -> AdaptConfig {
    let min_steps = c.range_u32_or_zero("adapt.min-steps", a.min_steps, 1, 200) as usize;
    AdaptConfig {
        enabled: a.enabled,
        min_frames_per_transition: c.range_u32(
            "adapt.min-frames-per-transition",
            a.min_frames_per_transition,
            1,
            10_000,
        ) as usize,
        min_resolution_scale: c.range_f64(
            "adapt.min-resolution-scale",
            a.min_resolution_scale,
            0.25,
            1.0,
        ),
        tiny_decoder: a.tiny_decoder,
        min_steps: (min_steps > 0).then_some(min_steps),
        settle: Duration::from_secs_f64(c.range_f64(
            "adapt.settle-seconds",
            a.settle_seconds,
            1.0,
            3600.0,
        )),
    }
}

fn validate_reanchor(r: &raw::RawReanchor, c: &mut Checker) -> ReanchorConfig {
    let mut share =
        |key: &str, value| c.range_f64(&format!("reanchor.{key}"), value, 0.0, 1.0) as f32;
    ReanchorConfig {
        enabled: r.enabled,
        min_novelty: share("min-novelty", r.min_novelty),
        min_contrast: share("min-contrast", r.min_contrast),
        min_colourfulness: share("min-colourfulness", r.min_colourfulness),
        min_detail: share("min-detail", r.min_detail),
        max_detail: share("max-detail", r.max_detail),
        max_clipped: share("max-clipped", r.max_clipped),
        history: c.range_u32("reanchor.history", r.history, 1, 1000) as usize,
        patience: c.range_u32("reanchor.patience", r.patience, 1, 1000),
    }
}

fn validate_display(d: &raw::RawDisplay, c: &mut Checker) -> DisplayConfig {
    DisplayConfig {
        sink: c.choice(
            "display.sink",
            &d.sink,
            &[
                ("auto", SinkKind::Auto),
                ("drm", SinkKind::Drm),
                ("fbdev", SinkKind::Fbdev),
                ("terminal", SinkKind::Terminal),
                ("null", SinkKind::Null),
            ],
            SinkKind::Auto,
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
        card: c.path("display.card", &d.card, true),
        mode: if d.mode.is_empty() {
            None
        } else if let Ok(mode) = d.mode.parse::<ModeRequest>() {
            Some(mode)
        } else {
            c.report_key(
                "display.mode",
                &format!("\"{}\"", d.mode),
                "allowed: \"\" (the screen's preferred mode), \"WIDTHxHEIGHT\" or \
                 \"WIDTHxHEIGHT@HZ\", e.g. \"1920x1080@60\" (sizes 1 to 16384, 1 to 1000 Hz)",
            );
            None
        },
        console: c.path("display.console", &d.console, true),
        terminal_size: {
            let columns = c.range_u32_or_zero(
                "display.terminal-columns",
                d.terminal_columns,
                8,
                TERMINAL_MAX_COLUMNS,
            );
            let rows = c.range_u32_or_zero(
                "display.terminal-rows",
                d.terminal_rows,
                4,
                TERMINAL_MAX_ROWS,
            );
            (columns > 0 && rows > 0).then_some((columns, rows))
        },
        realtime: d.realtime,
    }
}

fn validate_model(raw: &RawConfig, divisor: u32, c: &mut Checker) -> ModelConfig {
    let m = &raw.model;
    let kind = c.choice("model.kind", &m.kind, &ModelKind::NAMED, ModelKind::Cppn);
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
    ModelConfig {
        kind,
        size,
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
    }
}

fn validate_prompts(p: &raw::RawPrompts, c: &mut Checker) -> PromptsConfig {
    if p.themes.is_empty() {
        c.report_key(
            "prompts.themes",
            "[]",
            "needs at least one theme: [[prompts.themes]] with positive and negative",
        );
    }
    PromptsConfig {
        rotation_interval: c.range_u32(
            "prompts.rotation-interval",
            p.rotation_interval,
            1,
            1_000_000,
        ) as u64,
        themes: p
            .themes
            .iter()
            .enumerate()
            .map(|(index, t)| Theme {
                positive: t.positive.clone(),
                negative: t.negative.clone(),
                style: (!t.style.is_empty()).then(|| {
                    c.choice(
                        &format!("prompts.themes[{index}].style"),
                        &t.style,
                        &Style::NAMED,
                        Style::Cppn,
                    )
                }),
                palette: (!t.palette.is_empty()).then(|| {
                    c.choice(
                        &format!("prompts.themes[{index}].palette"),
                        &t.palette,
                        &ThemePalette::NAMED,
                        ThemePalette::Ember,
                    )
                }),
            })
            .collect(),
    }
}

fn validate_buffer(b: &raw::RawBuffer, c: &mut Checker) -> BufferConfig {
    let seconds = c.range_f64("buffer.seconds", b.seconds, 0.5, 3600.0);
    BufferConfig {
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
    }
}

fn validate_output(o: &raw::RawOutput, c: &mut Checker) -> OutputConfig {
    OutputConfig {
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
    }
}

fn validate_log(l: &raw::RawLog, c: &mut Checker) -> LogConfig {
    LogConfig {
        level: c.choice(
            "log.level",
            &l.level,
            &[
                ("error", LevelFilter::Error),
                ("warn", LevelFilter::Warn),
                ("info", LevelFilter::Info),
                ("debug", LevelFilter::Debug),
                ("trace", LevelFilter::Trace),
            ],
            LevelFilter::Info,
        ),
        file: c.path("log.file", &l.file, true),
        max_bytes: c.range_u32("log.max-kilobytes", l.max_kilobytes, 4, 4 * 1024 * 1024) as usize
            * 1024,
        files: c.range_u32("log.files", l.files, 1, 100) as usize,
    }
}
