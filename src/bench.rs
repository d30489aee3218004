//! `dreamframe bench`: measures, on this machine, the figures the display depends on: decode
//! time of the built-in generator, upscale + convert time to screen size per pixel format,
//! pacing jitter with the pipeline running (alone, and with every core also loaded by busy
//! threads), and the sustained fps with the buffer holding. Medians of repeated runs; runs that
//! are compared happen in this one process, side by side. `display`: the same for a real screen
//! (`bench-display`: the drm sink's cost per frame against fbdev's, and its flips' timing).

pub mod display;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::{Device, Tensor};

use crate::cli::BenchArgs;
use crate::config::{Config, Fit, Rotation, SinkKind, UpscaleFilter};
use crate::frame::Frame;
use crate::generator::cppn::CppnGenerator;
use crate::generator::stable_diffusion::conv::{self, ConvSetup};
use crate::generator::{keyframe_seed, Generator, KeyframeRequest};
use crate::pipeline::interpolation::transition;
use crate::render::pixel_format::PixelFormat;
use crate::render::Renderer;
use crate::service::status::Status;
use crate::sink::fbdev::FbdevSink;
use crate::sink::null::NullSink;
use crate::sink::{Geometry, Sink};

pub struct Measurement {
    pub name: String,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub runs: usize,
}

impl Measurement {
    /// One report line: name, median and p90 (`unit` is "ms" or "ms/frame").
    fn line(&self, unit: &str) -> String {
        format!(
            "  {:<58} median {:>9.3} {unit}  p90 {:>9.3} ms  ({} runs)",
            self.name, self.median_ms, self.p90_ms, self.runs
        )
    }
}

pub struct PipelineRun {
    pub name: String,
    pub status: Status,
}

pub struct BenchReport {
    pub args: BenchArgs,
    pub cores: usize,
    pub internal: (u32, u32),
    pub decode: Measurement,
    pub render: Vec<Measurement>,
    pub runs: Vec<PipelineRun>,
}

fn measure(
    name: String,
    runs: usize,
    per_run_items: usize,
    mut body: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Measurement> {
    body()?; // warm-up: caches, allocator, resizer coefficients
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            body().map(|_| started.elapsed().as_secs_f64() * 1e3 / per_run_items as f64)
        })
        .collect::<anyhow::Result<_>>()?;
    times.sort_by(f64::total_cmp);
    Ok(Measurement {
        name,
        median_ms: times[times.len() / 2],
        p90_ms: times[(times.len() * 9 / 10).min(times.len() - 1)],
        runs,
    })
}

/// Keeps every core busy with arithmetic until dropped.
struct CoreLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CoreLoad {
    fn start(threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 1.000_1f64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x * 1.000_000_1 + 1e-9);
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CoreLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A framebuffer in memory (tmpfs): the fbdev sink's mapping, locking and copy without a device.
fn memory_framebuffer(
    width: u32,
    height: u32,
    format: PixelFormat,
) -> anyhow::Result<(FbdevSink, std::path::PathBuf)> {
    let dir = Path::new("/dev/shm");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!(
        "dreamframe-bench-fb-{}-{}",
        std::process::id(),
        format.bits_per_pixel
    ));
    let mut var = framebuffer::VarScreeninfo {
        xres: width,
        yres: height,
        xres_virtual: width,
        yres_virtual: height,
        bits_per_pixel: format.bits_per_pixel,
        ..Default::default()
    };
    for (field, channel) in [
        (&mut var.red, format.red),
        (&mut var.green, format.green),
        (&mut var.blue, format.blue),
        (&mut var.transp, format.transp),
    ] {
        field.offset = channel.offset;
        field.length = channel.length;
    }
    let line_length = width * format.bytes_per_pixel() as u32;
    let fix = framebuffer::FixScreeninfo {
        line_length,
        smem_len: line_length * height,
        visual: 2, // FB_VISUAL_TRUECOLOR
        ..Default::default()
    };
    Ok((FbdevSink::over_file(&path, &var, &fix)?, path))
}

fn pipeline_run(
    name: &str,
    config: &Config,
    args: &BenchArgs,
    load: Option<usize>,
    realtime: bool,
    framebuffer: Option<PixelFormat>,
) -> anyhow::Result<PipelineRun> {
    let dir = std::env::temp_dir().join(format!("dreamframe-bench-{}", std::process::id()));
    let mut config = config.clone();
    config.output.dir = Some(dir.clone());
    config.output.snapshot_interval = None;
    config.display.realtime = realtime;
    let seed = 1;
    let generator = crate::generator::build(&config, seed)?;
    let mut framebuffer_file = None;
    let sink: Box<dyn Sink> = match framebuffer {
        Some(format) => {
            let (sink, path) = memory_framebuffer(args.width, args.height, format)?;
            framebuffer_file = Some(path);
            Box::new(sink)
        }
        None => Box::new(NullSink::new(Geometry::packed(
            args.width,
            args.height,
            PixelFormat::XRGB8888,
        ))),
    };
    let _load = load.map(CoreLoad::start);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let duration = Duration::from_secs_f64(args.seconds);
    let status = runtime.block_on(crate::run(config, sink, generator, seed, async move {
        tokio::time::sleep(duration).await
    }))?;
    let _ = std::fs::remove_dir_all(dir);
    if let Some(path) = framebuffer_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(PipelineRun {
        name: name.to_string(),
        status,
    })
}

pub fn run(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let mut config = Config::default();
    config.display.fps = args.fps;
    config.display.sink = SinkKind::Null;
    let (width, height) = config
        .model
        .size
        .unwrap_or(crate::config::CPPN_DEFAULT_SIZE);
    let (decode, frame) = measure_decode(&config, width, height)?;
    let render = measure_render(args, &frame)?;

    // The whole pipeline into a null sink: alone, then with every core loaded as well.
    config.buffer.start_seconds = 1.0;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runs = vec![
        pipeline_run("pipeline", &config, args, None, true, None)?,
        pipeline_run(
            &format!("pipeline + {cores} busy threads"),
            &config,
            args,
            Some(cores),
            true,
            None,
        )?,
        pipeline_run(
            &format!("pipeline + {cores} busy, realtime off"),
            &config,
            args,
            Some(cores),
            false,
            None,
        )?,
        pipeline_run(
            "pipeline -> fbdev XRGB8888 (memory)",
            &config,
            args,
            None,
            true,
            Some(PixelFormat::XRGB8888),
        )?,
        pipeline_run(
            "pipeline -> fbdev RGB565 (memory)",
            &config,
            args,
            None,
            true,
            Some(PixelFormat::RGB565),
        )?,
    ];
    Ok(BenchReport {
        args: args.clone(),
        cores,
        internal: (width, height),
        decode,
        render,
        runs,
    })
}

/// Decode: one batch of `decode.batch-size` in-between frames of the default CPPN; returns the
/// measurement and one decoded frame.
fn measure_decode(
    config: &Config,
    width: u32,
    height: u32,
) -> anyhow::Result<(Measurement, Frame)> {
    let mut generator = CppnGenerator::new(
        &config.cppn,
        width,
        height,
        1,
        config.keyframe.drift,
        Device::Cpu,
    )?;
    let requests: Vec<KeyframeRequest> = (0..2)
        .map(|index| KeyframeRequest {
            index,
            seed: keyframe_seed(1, index),
            previous: None,
        })
        .collect();
    let keys = generator.keyframes(&requests)?;
    let batch = config.decode.batch_size;
    let latents: Tensor = transition(&keys[0], &keys[1], batch, config.interpolation.easing)?;
    let mut frames = Vec::new();
    let decode = measure(
        format!("decode cppn {width}x{height}, batch {batch}"),
        15,
        batch,
        || {
            frames = generator.decode(&latents)?;
            Ok(())
        },
    )?;
    let frame = Frame {
        seq: 0,
        width,
        height,
        rgb: frames.pop().context("decode gave no frame")?,
        at: 0.0,
    };
    Ok((decode, frame))
}

/// Upscale + convert to screen size per pixel format, then the same with the blit into a
/// memory-backed framebuffer through the fbdev sink, and the blit alone.
fn measure_render(args: &BenchArgs, frame: &Frame) -> anyhow::Result<Vec<Measurement>> {
    let (width, height) = (frame.width, frame.height);
    let mut render = Vec::new();
    for (label, format) in [
        ("XRGB8888 32bpp", PixelFormat::XRGB8888),
        ("RGB888 24bpp", PixelFormat::RGB888),
        ("RGB565 16bpp", PixelFormat::RGB565),
    ] {
        let geometry = Geometry::packed(args.width, args.height, format);
        let mut renderer = Renderer::new(
            geometry,
            (width, height),
            Fit::Fill,
            Rotation::None,
            UpscaleFilter::CatmullRom,
        )?;
        let mut out = vec![0u8; geometry.frame_bytes()];
        let size = format!("{width}x{height} -> {}x{} {label}", args.width, args.height);
        render.push(measure(format!("upscale+convert {size}"), 60, 1, || {
            renderer.render(frame, &mut out)
        })?);
        // The sink's mapping only now: the render figure above is taken as before it existed.
        let (mut sink, path) = memory_framebuffer(args.width, args.height, format)?;
        anyhow::ensure!(
            sink.geometry() == geometry,
            "memory framebuffer has another layout"
        );
        render.push(measure(
            format!("upscale+convert+blit {size} (fbdev, memory)"),
            60,
            1,
            || {
                renderer.render(frame, &mut out)?;
                sink.present(&out)
            },
        )?);
        render.push(measure(
            format!("blit alone {}x{} {label}", args.width, args.height),
            60,
            1,
            || sink.present(&out),
        )?);
        drop(sink);
        let _ = std::fs::remove_file(path);
    }

    Ok(render)
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dreamframe bench: {} cores, internal {}x{}, screen {}x{}, {} fps, {} s per pipeline run", self.cores, self.internal.0, self.internal.1, self.args.width, self.args.height, self.args.fps, self.args.seconds)?;
        for m in std::iter::once(&self.decode).chain(&self.render) {
            writeln!(f, "{}", m.line("ms/frame"))?;
        }
        for run in &self.runs {
            let s = &run.status;
            let playing_s = s.playing_since_s.map_or(0.0, |since| s.uptime_s - since);
            let sustained = if playing_s > 0.0 {
                s.frames_shown_playing as f64 / playing_s
            } else {
                0.0
            };
            writeln!(
                f,
                "  {:<32} sustained {:>6.2} fps over {:.1} s playing | jitter p50 {:.3} ms p99 {:.3} ms max {:.3} ms | presented p50 {:.3} p99 {:.3} max {:.3} ms | late {} skipped {} held {} underruns {} | buffer {:.1} s ({:.0}%) at end | decode {:.2} ms/frame, upscale {:.2} ms/frame",
                run.name,
                sustained,
                playing_s,
                s.jitter_p50_ms,
                s.jitter_p99_ms,
                s.jitter_max_ms,
                s.presented_p50_ms,
                s.presented_p99_ms,
                s.presented_max_ms,
                s.late_frames,
                s.skipped_deadlines,
                s.held_deadlines,
                s.underruns,
                s.buffer_seconds,
                s.buffer_percentage,
                s.decode_ms_per_frame,
                s.upscale_ms_per_frame
            )?;
        }
        Ok(())
    }
}

/// `dreamframe bench-sd`: Stable Diffusion at real layout sizes with random weights.
/// A Stable Diffusion generator of `args.preset`'s real size with random weights on
/// `args.device`, with its spec, device, dtype and image size.
struct RandomModel {
    sd: crate::generator::stable_diffusion::StableDiffusionGenerator,
    spec: crate::generator::stable_diffusion::preset::Spec,
    device: Device,
    dtype: candle_core::DType,
    size: (u32, u32),
}

fn random_model(args: &crate::cli::BenchSdArgs) -> anyhow::Result<RandomModel> {
    use crate::generator::stable_diffusion::{
        compute_device, preset, SchedulerKind, SdOptions, StableDiffusionGenerator,
        TextConditioning, Theme,
    };
    let preset = match args.preset.as_str() {
        "sd-turbo" => preset::Preset::SdTurbo,
        "sd-1.5" => preset::Preset::Sd15,
        "sd-2.1" => preset::Preset::Sd21,
        "sdxl-turbo" => preset::Preset::SdxlTurbo,
        other => {
            anyhow::bail!("unknown preset {other:?}: allowed sd-turbo, sd-1.5, sd-2.1, sdxl-turbo")
        }
    };
    let device = match args.device.as_str() {
        "cpu" => crate::config::ComputeDevice::Cpu,
        other => crate::config::ComputeDevice::Cuda(
            other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("device {other:?}: use cpu or cuda:N"))?,
        ),
    };
    let (device, dtype) = compute_device(device)?;
    let spec = preset::spec(preset);
    let size = args.size.map_or(spec.native_size, |s| (s, s));
    let cross = spec.unet.cross_attention_dim;
    let text = TextConditioning::Fixed {
        positive: Tensor::randn(0f32, 1.0, (1, 77, cross), &device)?,
        negative: Tensor::randn(0f32, 1.0, (1, 77, cross), &device)?,
    };
    let options = SdOptions {
        size,
        steps: spec.default_steps,
        guidance: spec.default_guidance,
        scheduler: SchedulerKind::Ddim,
        denoise: 0.25,
        themes: vec![Theme {
            positive: String::new(),
            negative: String::new(),
        }],
        rotation_interval: 8,
        resolution_divisor: 1,
        device: device.clone(),
        dtype,
        spec: spec.clone(),
    };
    let sd = StableDiffusionGenerator::with_random_weights(options, text, true)?;
    Ok(RandomModel {
        sd,
        spec,
        device,
        dtype,
        size,
    })
}

/// Runs `body` once per conv setup (the build's own path where there is no choice) and adds a
/// `key setup=... median_ms=...` line each, then the speed-up of the last setup over the first.
fn compare_setups(
    lines: &mut Vec<String>,
    setups: &[Option<ConvSetup>],
    (key, only): (&str, &[String]),
    runs: usize,
    items: usize,
    mut body: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if !wanted(only, key) {
        return Ok(());
    }
    let mut medians = Vec::new();
    for setup in setups {
        if let Some(setup) = setup {
            conv::set(*setup)?;
        }
        let m = measure(key.to_string(), runs, items, &mut body)?;
        lines.push(format!(
            "{key} setup={} median_ms={:.3} p90_ms={:.3} runs={runs} per={}",
            setup.map_or("default", ConvSetup::name),
            m.median_ms,
            m.p90_ms,
            if items > 1 { "frame" } else { "call" }
        ));
        medians.push((setup.map_or("default", ConvSetup::name), m.median_ms));
    }
    if let (Some(first), Some(last)) = (medians.first(), medians.last()) {
        if medians.len() > 1 {
            lines.push(format!(
                "{key} speedup {}/{}={:.2}x",
                first.0,
                last.0,
                first.1 / last.1
            ));
        }
    }
    Ok(())
}

/// Whether `--only` leaves `key` in (everything when it names nothing).
fn wanted(only: &[String], key: &str) -> bool {
    only.is_empty() || only.iter().any(|k| k == key)
}

/// Largest absolute difference between two tensors of the same shape.
fn max_abs_difference(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok(
        (a.to_dtype(candle_core::DType::F32)? - b.to_dtype(candle_core::DType::F32)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?,
    )
}

/// `bench-sd --pipeline SECONDS`: the display's own `run` with the random-weight model of the
/// preset: keyframes by img2img every transition, in-betweens through the tiny decoder, upscaled
/// to 1920x1080 at 60 fps into the null sink. The `stats` lines on stderr show the buffer over
/// time; the summary is the final status.
fn run_sd_pipeline(args: &crate::cli::BenchSdArgs, seconds: f64) -> anyhow::Result<String> {
    crate::logging::init(log::LevelFilter::Info, None, 0, 0)?;
    let RandomModel { sd, size, .. } = random_model(args)?;
    let mut config = Config::default();
    config.display.fps = 60.0;
    config.display.sink = SinkKind::Null;
    config.model.size = Some(size);
    config.output.dir =
        Some(std::env::temp_dir().join(format!("dreamframe-bench-sd-{}", std::process::id())));
    config.output.snapshot_interval = None;
    let sink = NullSink::new(Geometry::packed(1920, 1080, PixelFormat::XRGB8888));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let duration = Duration::from_secs_f64(seconds);
    let status = runtime.block_on(crate::run(
        config.clone(),
        Box::new(sink),
        Box::new(sd),
        1,
        async move { tokio::time::sleep(duration).await },
    ))?;
    if let Some(dir) = &config.output.dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let playing_s = status
        .playing_since_s
        .map_or(0.0, |since| status.uptime_s - since);
    Ok(format!(
        "pipeline preset={} seconds={seconds} screen=1920x1080 target_fps={} first_picture_s={} \
         playing_s={playing_s:.1} frames_shown_playing={} fps_while_playing={:.2} \
         held_deadlines={} skipped_deadlines={} underruns={} buffer_frames={}/{} keyframes={} \
         keyframe_ms={:.1} decode_ms_per_frame={:.2} decode_fps={:.1} decoder_lock={} \
         decode_lock_wait_p99_ms={:.3} decode_lock_wait_max_ms={:.3} model_lock_max_wait_ms={:.3} \
         generator_errors={}",
        args.preset,
        status.target_fps,
        status
            .first_picture_s
            .map_or("none".to_string(), |s| format!("{s:.2}")),
        status.frames_shown_playing,
        if playing_s > 0.0 {
            status.frames_shown_playing as f64 / playing_s
        } else {
            0.0
        },
        status.held_deadlines,
        status.skipped_deadlines,
        status.underruns,
        status.buffer_frames,
        status.buffer_capacity_frames,
        status.keyframes,
        status.keyframe_ms,
        status.decode_ms_per_frame,
        status.decode_fps,
        status.decoder_lock,
        status.decode_lock_wait_p99_ms,
        status.decode_lock_wait_max_ms,
        status.model_lock_max_wait_ms,
        status.generator_errors,
    ))
}

pub fn run_sd(args: &crate::cli::BenchSdArgs) -> anyhow::Result<String> {
    // Before the model is made: a build without cuDNN can't switch setups. With --pipeline the
    // last one named is the one it runs with.
    for setup in &args.conv {
        conv::set(*setup)?;
    }
    if let Some(seconds) = args.pipeline {
        return run_sd_pipeline(args, seconds);
    }
    let RandomModel {
        mut sd,
        spec,
        device,
        dtype,
        size,
    } = random_model(args)?;
    let (steps, guidance) = (spec.default_steps, spec.default_guidance);
    let factor = spec.vae_factor() as usize;
    let latents_of = |batch: usize, (width, height): (u32, u32)| {
        Tensor::randn(
            0f32,
            1.0,
            (
                batch,
                spec.latent_channels(),
                height as usize / factor,
                width as usize / factor,
            ),
            &device,
        )?
        .to_dtype(dtype)
    };
    let latents = |batch: usize| latents_of(batch, size);
    let runs = usize::from(args.runs);
    // Every setup the build has, upstream's first, unless the command line names some.
    let setups: Vec<Option<ConvSetup>> = match (&args.conv[..], conv::counters()) {
        ([], Some(_)) => ConvSetup::ALL.map(Some).to_vec(),
        ([], None) => vec![None],
        (named, _) => named.iter().copied().map(Some).collect(),
    };
    let mut lines = vec![format!(
        "dreamframe bench-sd: preset {} ({:?}), random weights, {}x{}, device {:?} {:?}, {} steps, guidance {}, median of {runs}, conv setups: {}",
        args.preset,
        spec.schedule.prediction,
        size.0,
        size.1,
        device,
        dtype,
        steps,
        guidance,
        setups.iter().map(|s| s.map_or("default", ConvSetup::name)).collect::<Vec<_>>().join(", ")
    )];
    let sync = |d: &Device| d.synchronize().map_err(anyhow::Error::from);

    // Correctness first: every cached setup against upstream's per-call path, same inputs.
    let only = &args.only[..];
    if setups.len() > 1 && setups[0] == Some(ConvSetup::PerCall) && wanted(only, "check") {
        let one = latents(1)?;
        let ten = latents(10)?;
        let outputs = |sd: &mut crate::generator::stable_diffusion::StableDiffusionGenerator| {
            anyhow::Ok([
                sd.decoded_images(&one, false)?,
                sd.decoded_images(&ten, true)?,
                sd.unet_step(&one, 500)?,
            ])
        };
        conv::set(ConvSetup::PerCall)?;
        let reference = outputs(&mut sd)?;
        for setup in setups.iter().skip(1).flatten() {
            conv::set(*setup)?;
            let got = outputs(&mut sd)?;
            for ((name, a), b) in ["vae_b1", "taesd_b10", "unet_step"]
                .iter()
                .zip(&got)
                .zip(&reference)
            {
                lines.push(format!(
                    "check {name} setup={} vs=per-call max_abs_error={:.5}",
                    setup.name(),
                    max_abs_difference(a, b)?
                ));
            }
        }
    }

    // Host work per call, after a warm-up call has built whatever is cached.
    if conv::counters().is_some() && wanted(only, "host_work") {
        let input = latents(1)?;
        for setup in setups.iter().flatten() {
            conv::set(*setup)?;
            for (key, run) in [("vae_b1", 0), ("unet_step", 1)] {
                let mut once = || -> anyhow::Result<()> {
                    if run == 0 {
                        sd.decode_full(&input)?;
                    } else {
                        sd.unet_step(&input, 500)?;
                    }
                    sync(&device)
                };
                once()?;
                let before = conv::counters().unwrap_or_default();
                once()?;
                let spent = conv::counters().unwrap_or_default() - before;
                lines.push(format!(
                    "host_work {key} setup={} conv_calls={} descriptor_sets={} algorithm_searches={} workspace_allocations={}",
                    setup.name(),
                    spent.calls,
                    spent.descriptor_sets,
                    spent.algorithm_searches,
                    spent.workspace_allocations
                ));
            }
        }
    }

    // The fixed cost: a 64x64 picture is almost no GPU work.
    let tiny_input = latents_of(1, (64, 64))?;
    compare_setups(&mut lines, &setups, ("vae_64px_b1", only), runs, 1, || {
        sd.decode_full(&tiny_input)?;
        sync(&device)
    })?;
    for batch in [1, 4, 10] {
        let input = latents(batch)?;
        compare_setups(
            &mut lines,
            &setups,
            (&format!("vae_b{batch}"), only),
            runs,
            batch,
            || {
                sd.decode_full(&input)?;
                sync(&device)
            },
        )?;
    }
    let input = latents(10)?;
    compare_setups(&mut lines, &setups, ("taesd_b10", only), runs, 10, || {
        sd.decode(&input)?;
        sync(&device)
    })?;
    let input = latents(1)?;
    compare_setups(&mut lines, &setups, ("unet_step", only), runs, 1, || {
        sd.unet_step(&input, 500)?;
        sync(&device)
    })?;

    if let Some(error) = conv::broadcast_error() {
        lines.push(format!("fast_broadcast unavailable: {error}"));
    }
    // Whole keyframes take many UNet steps: measured with the last setup only.
    let last = &setups[setups.len() - 1..];
    if !wanted(only, "keyframe_txt2img") && !wanted(only, "keyframe_img2img") {
        return Ok(lines.join("\n"));
    }
    let first = sd
        .keyframes(&[KeyframeRequest {
            index: 0,
            seed: 1,
            previous: None,
        }])?
        .remove(0);
    compare_setups(
        &mut lines,
        last,
        ("keyframe_txt2img", only),
        runs,
        1,
        || {
            sd.keyframes(&[KeyframeRequest {
                index: 0,
                seed: 2,
                previous: None,
            }])?;
            sync(&device)
        },
    )?;
    compare_setups(
        &mut lines,
        last,
        ("keyframe_img2img", only),
        runs,
        1,
        || {
            sd.keyframes(&[KeyframeRequest {
                index: 1,
                seed: 3,
                previous: Some(first.clone()),
            }])?;
            sync(&device)
        },
    )?;
    Ok(lines.join("\n"))
}
