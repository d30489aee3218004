//! `dreamframe bench`: measures, on this machine, the figures the display depends on: decode
//! time of the built-in generator, upscale + convert time to screen size per pixel format,
//! pacing jitter with the pipeline running (alone, and with every core also loaded by busy
//! threads), and the sustained fps with the buffer holding. Medians of repeated runs; runs that
//! are compared happen in this one process, side by side. `display`: the same for a real screen
//! (`bench-display`: the drm sink's cost per frame against fbdev's, and its flips' timing);
//! `sd`: Stable Diffusion at real sizes (`bench-sd`), `checks` its correctness checks, `convs`
//! its convolutions timed alone.

pub(crate) mod checks;
pub(crate) mod convs;
pub(crate) mod display;
pub(crate) mod sd;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::Tensor;

use crate::commands::cli::BenchArgs;
use crate::config::{Config, Fit, ModelKind, Rotation, SinkKind, UpscaleFilter};
use crate::frame::pixel_format::PixelFormat;
use crate::frame::Frame;
use crate::frame::Geometry;
use crate::generator::builtin::{self, Style};
use crate::generator::interpolation::transition;
use crate::generator::{keyframe_seed, KeyframeRequest};
use crate::render::Renderer;
use crate::service::status_file::Status;
use crate::sink::fbdev::FbdevSink;
use crate::sink::null::NullSink;
use crate::sink::Sink;

pub struct Measurement {
    pub name: String,
    pub median_ms: f64,
    pub p90_ms: f64,
    /// The spread: fastest, 10th percentile, slowest.
    pub min_ms: f64,
    pub p10_ms: f64,
    pub max_ms: f64,
    pub runs: usize,
}

impl Measurement {
    /// bench-sd's fields, which tools/gpu-peer.py --join reads: "median_ms=.. min_ms=..
    /// p10_ms=.. p90_ms=.. max_ms=..".
    pub(crate) fn spread_fields(&self) -> String {
        format!(
            "median_ms={:.3} min_ms={:.3} p10_ms={:.3} p90_ms={:.3} max_ms={:.3}",
            self.median_ms, self.min_ms, self.p10_ms, self.p90_ms, self.max_ms
        )
    }

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

/// `runs` timed calls of `body` after one untimed warm-up, in ms per item.
fn measure(
    name: String,
    runs: usize,
    per_run_items: usize,
    body: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Measurement> {
    measure_with(name, 1, runs, per_run_items, body)
}

/// `runs` timed calls of `body` after `warmups` untimed ones (caches, allocator, resizer
/// coefficients, cuDNN's algorithm search), in ms per item.
fn measure_with(
    name: String,
    warmups: usize,
    runs: usize,
    per_run_items: usize,
    mut body: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Measurement> {
    for _ in 0..warmups {
        body()?;
    }
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            body().map(|_| started.elapsed().as_secs_f64() * 1e3 / per_run_items as f64)
        })
        .collect::<anyhow::Result<_>>()?;
    times.sort_by(f64::total_cmp);
    let at = |share: usize| times[(times.len() * share / 100).min(times.len() - 1)];
    Ok(Measurement {
        name,
        median_ms: times[times.len() / 2],
        p90_ms: at(90),
        min_ms: times[0],
        p10_ms: at(10),
        max_ms: times[times.len() - 1],
        runs: times.len(),
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
    config.model.kind = match args.style {
        Style::Cppn => ModelKind::Cppn,
        Style::Warp => ModelKind::Warp,
        Style::Flame => ModelKind::Flame,
    };
    let (width, height) = config.model.frame_size(1);
    let (decode, frame) = measure_decode(&config, args.style, width, height)?;
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

/// Decode: one batch of `decode.batch-size` in-between frames of the built-in `style` at the
/// shipped settings; returns the measurement and one decoded frame.
fn measure_decode(
    config: &Config,
    style: Style,
    width: u32,
    height: u32,
) -> anyhow::Result<(Measurement, Frame)> {
    let mut generator = builtin::build(style, config, 1)?;
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
        format!(
            "decode {} {width}x{height}, batch {batch}",
            generator.name()
        ),
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
