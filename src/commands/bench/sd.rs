//! `dreamframe bench-sd`: Stable Diffusion at real layout sizes with random weights (no weights
//! needed), on the CPU or a GPU: each conv setup of the patched candle-core checked against
//! upstream's per-call path (max abs error), the host work per decode and UNet step, VAE, TAESD,
//! UNet-step and keyframe times per setup; or, with `--pipeline SECONDS`, the display's own `run`
//! end to end with that model. Runs on the main thread; fails with the model's or candle's error.

use std::time::Duration;

use anyhow::Context;
use candle_core::{Device, Tensor};

use super::measure;
use crate::commands::cli::BenchSdArgs;
use crate::config::{Config, SinkKind};
use crate::frame::pixel_format::PixelFormat;
use crate::frame::Geometry;
use crate::generator::stable_diffusion::conv::{self, ConvSetup};
use crate::generator::stable_diffusion::StableDiffusionGenerator;
use crate::generator::{Generator, KeyframeRequest};
use crate::sink::null::NullSink;

/// `dreamframe bench-sd`: with `--pipeline`, the display end to end; otherwise each conv setup
/// checked against upstream's per-call path, the host work per call, then decode, UNet-step and
/// keyframe times per setup.
pub(crate) fn run(args: &BenchSdArgs) -> anyhow::Result<String> {
    // Before the model is made: a build without cuDNN can't switch setups. With --pipeline the
    // last one named is the one it runs with.
    for setup in &args.conv {
        conv::set(*setup)?;
    }
    if let Some(seconds) = args.pipeline {
        return pipeline(args, seconds);
    }
    let model = random_model(args)?;
    // Every setup the build has, upstream's first, unless the command line names some.
    let setups: Vec<Option<ConvSetup>> = match (&args.conv[..], conv::counters()) {
        ([], Some(_)) => ConvSetup::ALL.map(Some).to_vec(),
        ([], None) => vec![None],
        (named, _) => named.iter().copied().map(Some).collect(),
    };
    let mut bench = SdBench {
        lines: vec![],
        setups,
        only: &args.only,
        runs: usize::from(args.runs),
        model,
    };
    bench.lines.push(bench.heading(&args.preset));
    bench.check_against_per_call()?;
    bench.host_work()?;
    bench.decode_and_step_times()?;
    if let Some(error) = conv::broadcast_error() {
        bench
            .lines
            .push(format!("fast_broadcast unavailable: {error}"));
    }
    bench.keyframe_times()?;
    Ok(bench.lines.join("\n"))
}

/// One `bench-sd` run: the model, the conv setups compared, and the report's lines so far.
struct SdBench<'a> {
    lines: Vec<String>,
    setups: Vec<Option<ConvSetup>>,
    only: &'a [String],
    runs: usize,
    model: RandomModel,
}

impl SdBench<'_> {
    fn heading(&self, preset: &str) -> String {
        let RandomModel {
            spec,
            device,
            dtype,
            size,
            ..
        } = &self.model;
        format!(
            "dreamframe bench-sd: preset {preset} ({:?}), random weights, {}x{}, device {device:?} {dtype:?}, {} steps, guidance {}, median of {}, conv setups: {}",
            spec.schedule.prediction,
            size.0,
            size.1,
            spec.default_steps,
            spec.default_guidance,
            self.runs,
            self.setups
                .iter()
                .map(|s| s.map_or("default", ConvSetup::name))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Random latents of `batch` pictures of `(width, height)`.
    fn latents_of(&self, batch: usize, (width, height): (u32, u32)) -> anyhow::Result<Tensor> {
        let RandomModel {
            spec,
            device,
            dtype,
            ..
        } = &self.model;
        let factor = spec.vae_factor() as usize;
        let shape = (
            batch,
            spec.latent_channels(),
            height as usize / factor,
            width as usize / factor,
        );
        Ok(Tensor::randn(0f32, 1.0, shape, device)?.to_dtype(*dtype)?)
    }

    /// Random latents of `batch` pictures of the model's size.
    fn latents(&self, batch: usize) -> anyhow::Result<Tensor> {
        self.latents_of(batch, self.model.size)
    }

    /// Correctness first: every cached setup against upstream's per-call path, same inputs.
    fn check_against_per_call(&mut self) -> anyhow::Result<()> {
        let setups = &self.setups;
        if !(setups.len() > 1
            && setups[0] == Some(ConvSetup::PerCall)
            && wanted(self.only, "check"))
        {
            return Ok(());
        }
        let (one, ten) = (self.latents(1)?, self.latents(10)?);
        let outputs = |sd: &mut StableDiffusionGenerator| {
            anyhow::Ok([
                sd.decoded_images(&one, false)?,
                sd.decoded_images(&ten, true)?,
                sd.unet_step(&one, 500)?,
            ])
        };
        conv::set(ConvSetup::PerCall)?;
        let reference = outputs(&mut self.model.sd)?;
        for setup in self.setups.iter().skip(1).flatten() {
            conv::set(*setup)?;
            let got = outputs(&mut self.model.sd)?;
            for ((name, a), b) in ["vae_b1", "taesd_b10", "unet_step"]
                .iter()
                .zip(&got)
                .zip(&reference)
            {
                self.lines.push(format!(
                    "check {name} setup={} vs=per-call max_abs_error={:.5}",
                    setup.name(),
                    max_abs_difference(a, b)?
                ));
            }
        }
        Ok(())
    }

    /// Host work per call, after a warm-up call has built whatever is cached.
    fn host_work(&mut self) -> anyhow::Result<()> {
        if conv::counters().is_none() || !wanted(self.only, "host_work") {
            return Ok(());
        }
        let input = self.latents(1)?;
        let RandomModel { sd, device, .. } = &mut self.model;
        for setup in self.setups.iter().flatten() {
            conv::set(*setup)?;
            for (key, run) in [("vae_b1", 0), ("unet_step", 1)] {
                let mut once = || -> anyhow::Result<()> {
                    if run == 0 {
                        sd.decode_full(&input)?;
                    } else {
                        sd.unet_step(&input, 500)?;
                    }
                    sync(device)
                };
                once()?;
                let before = conv::counters().unwrap_or_default();
                once()?;
                let spent = conv::counters().unwrap_or_default() - before;
                self.lines.push(format!(
                    "host_work {key} setup={} conv_calls={} descriptor_sets={} algorithm_searches={} workspace_allocations={}",
                    setup.name(),
                    spent.calls,
                    spent.descriptor_sets,
                    spent.algorithm_searches,
                    spent.workspace_allocations
                ));
            }
        }
        Ok(())
    }

    /// VAE decodes (64x64, the fixed cost, then the model's size at batch 1, 4 and 10, and the
    /// ten one at a time), TAESD and one UNet step, per setup.
    fn decode_and_step_times(&mut self) -> anyhow::Result<()> {
        let tiny_input = self.latents_of(1, (64, 64))?;
        let batches = [1, 4, 10].map(|batch| (batch, self.latents(batch)));
        let (ten, one) = (self.latents(10)?, self.latents(1)?);
        let (setups, only, runs) = (&self.setups[..], self.only, self.runs);
        let RandomModel { sd, device, .. } = &mut self.model;
        let lines = &mut self.lines;
        // The fixed cost: a 64x64 picture is almost no GPU work.
        compare_setups(lines, setups, ("vae_64px_b1", only), runs, 1, || {
            sd.decode_full(&tiny_input)?;
            sync(device)
        })?;
        for (batch, input) in batches {
            let input = input?;
            compare_setups(
                lines,
                setups,
                (&format!("vae_b{batch}"), only),
                runs,
                batch,
                || {
                    sd.decode_full(&input)?;
                    sync(device)
                },
            )?;
        }
        // The same ten latents one at a time, as decode_full went before its batch-correct VAE.
        compare_setups(lines, setups, ("vae_b10_singly", only), runs, 10, || {
            for i in 0..ten.dim(0)? {
                sd.decode_full(&ten.narrow(0, i, 1)?)?;
            }
            sync(device)
        })?;
        compare_setups(lines, setups, ("taesd_b10", only), runs, 10, || {
            sd.decode(&ten)?;
            sync(device)
        })?;
        compare_setups(lines, setups, ("unet_step", only), runs, 1, || {
            sd.unet_step(&one, 500)?;
            sync(device)
        })
    }

    /// Whole keyframes, txt2img and img2img: many UNet steps each, so with the last setup only.
    fn keyframe_times(&mut self) -> anyhow::Result<()> {
        let only = self.only;
        if !wanted(only, "keyframe_txt2img") && !wanted(only, "keyframe_img2img") {
            return Ok(());
        }
        let last = &self.setups[self.setups.len() - 1..];
        let runs = self.runs;
        let RandomModel { sd, device, .. } = &mut self.model;
        let request = |index, seed, previous| KeyframeRequest {
            index,
            seed,
            previous,
        };
        let first = sd.keyframes(&[request(0, 1, None)])?.remove(0);
        compare_setups(
            &mut self.lines,
            last,
            ("keyframe_txt2img", only),
            runs,
            1,
            || {
                sd.keyframes(&[request(0, 2, None)])?;
                sync(device)
            },
        )?;
        compare_setups(
            &mut self.lines,
            last,
            ("keyframe_img2img", only),
            runs,
            1,
            || {
                sd.keyframes(&[request(1, 3, Some(first.clone()))])?;
                sync(device)
            },
        )
    }
}

fn sync(device: &Device) -> anyhow::Result<()> {
    device.synchronize().map_err(anyhow::Error::from)
}

/// A Stable Diffusion generator of `args.preset`'s real size with random weights on
/// `args.device`, with its spec, device, dtype and image size.
struct RandomModel {
    sd: crate::generator::stable_diffusion::StableDiffusionGenerator,
    spec: crate::generator::stable_diffusion::preset::Spec,
    device: Device,
    dtype: candle_core::DType,
    size: (u32, u32),
}

fn random_model(args: &BenchSdArgs) -> anyhow::Result<RandomModel> {
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
    // SDXL's pooled embedding: what add_embedding takes beside the six time ids.
    let pooled = match spec.added {
        Some(added) => {
            let width = added.input_dim - 6 * added.time_embed_dim;
            Some((
                Tensor::randn(0f32, 1.0, (1, width), &device)?,
                Tensor::randn(0f32, 1.0, (1, width), &device)?,
            ))
        }
        None => None,
    };
    let text = TextConditioning::Fixed {
        positive: Tensor::randn(0f32, 1.0, (1, 77, cross), &device)?,
        negative: Tensor::randn(0f32, 1.0, (1, 77, cross), &device)?,
        pooled,
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
            style: None,
            palette: None,
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
fn pipeline(args: &BenchSdArgs, seconds: f64) -> anyhow::Result<String> {
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
