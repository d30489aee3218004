//! `dreamframe bench-sd`: Stable Diffusion at real layout sizes with random weights at a trained
//! model's scale (no weights needed), on the CPU or a GPU: every conv setup of the patched
//! candle-core checked against an f32 reference on the CPU, the fast broadcast kernels against
//! upstream's, the fused group norm against candle-nn's and f16 attention against f32
//! (checks.rs), the host work per decode and UNet step, then VAE, TAESD, UNet-step, convolution
//! (convs.rs) and keyframe times per setup (median and spread after warm-ups); or, with
//! `--pipeline SECONDS`, the display's own `run` end to end with that model. Each line is printed
//! as soon as it is measured, so a run cut short keeps what it had. Runs on the main thread; fails with the
//! model's or candle's error, or when a check is above its bound (after every line).

use std::time::Duration;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};

use super::checks::{self, Comparison};
use super::convs;
use super::measure_with;
use crate::commands::cli::{BenchSdArgs, InBetweens, SdDtype};
use crate::config::{Config, SinkKind};
use crate::frame::pixel_format::PixelFormat;
use crate::frame::Geometry;
use crate::generator::stable_diffusion::attention;
use crate::generator::stable_diffusion::conv::{self, ConvSetup};
use crate::generator::stable_diffusion::group_norm;
use crate::generator::stable_diffusion::random::normal_tensor;
use crate::generator::stable_diffusion::StableDiffusionGenerator;
use crate::generator::{Generator, KeyframeRequest};
use crate::sink::null::NullSink;
use crate::stdout;

/// `dreamframe bench-sd`: with `--pipeline`, the display end to end; otherwise the checks, the
/// host work per call, then decode, UNet-step and keyframe times per setup.
pub(crate) fn run(args: &BenchSdArgs) -> anyhow::Result<()> {
    // Before the model is made: a build without cuDNN can't switch setups. With --pipeline the
    // last one named is the one it runs with.
    for setup in &args.conv {
        conv::set(*setup)?;
    }
    if let Some(seconds) = args.pipeline {
        return stdout::line(pipeline(args, seconds)?);
    }
    let model = random_model(args, None, true)?;
    // Every setup the build has, upstream's first, unless the command line names some.
    let setups: Vec<Option<ConvSetup>> = match (&args.conv[..], conv::counters()) {
        ([], Some(_)) => ConvSetup::ALL.map(Some).to_vec(),
        ([], None) => vec![None],
        (named, _) => named.iter().copied().map(Some).collect(),
    };
    let mut bench = SdBench {
        setups,
        only: &args.only,
        timing: (usize::from(args.warmups), usize::from(args.runs)),
        model,
        failures: vec![],
    };
    stdout::line(bench.heading(&args.preset))?;
    bench.check_against_reference(args)?;
    bench.check_broadcast()?;
    bench.check_group_norm()?;
    bench.check_attention()?;
    bench.host_work()?;
    bench.decode_and_step_times()?;
    bench.conv_shape_times()?;
    if let Some(error) = conv::broadcast_error() {
        stdout::line(format!("fast_broadcast unavailable: {error}"))?;
    }
    if let Some(error) = group_norm::fused_error() {
        stdout::line(format!("fused group norm unavailable: {error}"))?;
    }
    bench.keyframe_times()?;
    anyhow::ensure!(
        bench.failures.is_empty(),
        "{} check(s) above their bound: {}",
        bench.failures.len(),
        bench.failures.join("; ")
    );
    Ok(())
}

/// One `bench-sd` run: the model, the conv setups compared, (warm-ups, timed runs) per
/// measurement, and the checks that failed so far.
struct SdBench<'a> {
    setups: Vec<Option<ConvSetup>>,
    only: &'a [String],
    timing: (usize, usize),
    model: RandomModel,
    failures: Vec<String>,
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
            "dreamframe bench-sd: preset {preset} ({:?}), random weights at trained scale, {}x{}, device {device:?} {dtype:?}, {} steps, guidance {}, {} warm-ups then median of {}, conv setups: {}",
            spec.schedule.prediction,
            size.0,
            size.1,
            self.model.steps,
            spec.default_guidance,
            self.timing.0,
            self.timing.1,
            self.setups
                .iter()
                .map(|s| s.map_or("default", ConvSetup::name))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Correctness first: each setup's outputs against an f32 model of the same weights on the
    /// CPU (the path tests/reference.rs holds to diffusers), on the same inputs: VAE, TAESD and a
    /// UNet step, their largest error over the reference's spread held to `checks::BOUND`.
    fn check_against_reference(&mut self, args: &BenchSdArgs) -> anyhow::Result<()> {
        if !wanted(self.only, "check") {
            return Ok(());
        }
        let size = args.check_size.map_or(self.model.size, |s| (s, s));
        let outputs = |model: &mut RandomModel| {
            let (one, four) = (model.latents_of(1, size)?, model.latents_of(4, size)?);
            anyhow::Ok([
                model.sd.decoded_images(&one, false)?,
                model.sd.decoded_images(&four, true)?,
                model.sd.unet_step(&one, 500)?,
            ])
        };
        let reference = {
            let mut cpu = random_model(args, Some((Device::Cpu, DType::F32)), true)?;
            outputs(&mut cpu).context("the f32 reference on the CPU")?
        };
        for setup in self.setups.clone() {
            if let Some(setup) = setup {
                conv::set(setup)?;
            }
            let got = outputs(&mut self.model).with_context(|| {
                format!(
                    "the {:?} model on {:?}",
                    self.model.dtype, self.model.device
                )
            })?;
            for ((name, got), want) in ["vae_b1", "taesd_b4", "unet_step"]
                .into_iter()
                .zip(&got)
                .zip(&reference)
            {
                let comparison = Comparison::of(got, want)?;
                let setup = setup.map_or("default", ConvSetup::name);
                stdout::line(format!(
                    "check {name} setup={setup} vs=f32-cpu size={}x{} {}",
                    size.0, size.1, comparison
                ))?;
                if !comparison.within_bound() {
                    self.failures.push(format!("{name} setup={setup}"));
                }
            }
        }
        Ok(())
    }

    /// The patched candle's broadcast kernels against upstream's and the CPU's on varied
    /// layouts (CUDA builds on a GPU only).
    fn check_broadcast(&mut self) -> anyhow::Result<()> {
        if !wanted(self.only, "broadcast_check") {
            return Ok(());
        }
        if self.model.device.is_cpu() || conv::counters().is_none() {
            if !self.only.is_empty() {
                stdout::line(
                    "broadcast_check: needs a CUDA build (--features cuda,cudnn) and a GPU",
                )?;
            }
            return Ok(());
        }
        for dtype in [DType::F32, DType::F16] {
            let summary = checks::broadcast(&self.model.device, dtype)?;
            for failure in &summary.failures {
                stdout::line(format!("broadcast_check FAIL {failure}"))?;
                self.failures.push(format!("broadcast {failure}"));
            }
            stdout::line(format!("broadcast_check {summary}"))?;
        }
        Ok(())
    }

    /// The fused group norm against candle-nn's on this device, in the model's dtype and f32.
    fn check_group_norm(&mut self) -> anyhow::Result<()> {
        if !wanted(self.only, "group_norm_check") {
            return Ok(());
        }
        let mut dtypes = vec![self.model.dtype];
        if self.model.dtype != DType::F32 {
            dtypes.push(DType::F32);
        }
        for dtype in dtypes {
            let (lines, ok) = checks::group_norm(&self.model.device, dtype)?;
            for line in lines {
                stdout::line(line)?;
            }
            if !ok {
                self.failures.push(format!("group_norm {dtype:?}"));
            }
        }
        Ok(())
    }

    /// Whether `--only` leaves GPU-only `key` in and the model is on a GPU; on the CPU, says
    /// `why_not` where `--only` named parts.
    fn on_gpu(&self, key: &str, why_not: &str) -> anyhow::Result<bool> {
        if !wanted(self.only, key) {
            return Ok(false);
        }
        if self.model.device.is_cpu() {
            if !self.only.is_empty() {
                stdout::line(format!("{key}: {why_not}"))?;
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Attention with f16 scores (an f16 model's on the GPU) against f32, at the shapes the UNet
    /// and VAE attend over (GPU only: the CPU keeps f32 scores).
    fn check_attention(&mut self) -> anyhow::Result<()> {
        if !self.on_gpu("attention_check", "the CPU keeps f32 scores; needs a GPU")? {
            return Ok(());
        }
        let (lines, ok) = checks::attention(&self.model.device, self.model.dtype)?;
        for line in lines {
            stdout::line(line)?;
        }
        if !ok {
            self.failures.push("attention".into());
        }
        Ok(())
    }

    /// Host work per call, after a warm-up call has built whatever is cached.
    fn host_work(&mut self) -> anyhow::Result<()> {
        if conv::counters().is_none() || !wanted(self.only, "host_work") {
            return Ok(());
        }
        let input = self.model.latents(1)?;
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
                stdout::line(format!(
                    "host_work {key} setup={} conv_calls={} descriptor_sets={} algorithm_searches={} workspace_allocations={}",
                    setup.name(),
                    spent.calls,
                    spent.descriptor_sets,
                    spent.algorithm_searches,
                    spent.workspace_allocations
                ))?;
            }
        }
        Ok(())
    }

    /// VAE decodes (64x64, the fixed cost, then the model's size at batch 1, 4 and 10 in one
    /// call each, and the ten one at a time), TAESD and one UNet step, per setup.
    fn decode_and_step_times(&mut self) -> anyhow::Result<()> {
        let tiny_input = self.model.latents_of(1, (64, 64))?;
        let batches = [1, 4, 10].map(|batch| (batch, self.model.latents(batch)));
        let (ten, one) = (self.model.latents(10)?, self.model.latents(1)?);
        let (setups, only, timing) = (&self.setups[..], self.only, self.timing);
        let RandomModel { sd, device, .. } = &mut self.model;
        // The fixed cost: a 64x64 picture is almost no GPU work.
        compare_setups(setups, ("vae_64px_b1", only), timing, 1, || {
            sd.decode_full(&tiny_input)?;
            sync(device)
        })?;
        for (batch, input) in batches {
            let input = input?;
            compare_setups(
                setups,
                (&format!("vae_b{batch}"), only),
                timing,
                batch,
                || {
                    sd.decode_full(&input)?;
                    sync(device)
                },
            )?;
        }
        // The same decode with candle-nn's op-composed group norms: what fusing them gained.
        compare_setups(setups, ("vae_b1_candle_norm", only), timing, 1, || {
            group_norm::set_fused(false);
            let decoded = sd.decode_full(&one).and_then(|_| sync(device));
            group_norm::set_fused(true);
            decoded
        })?;
        // The same ten latents one at a time, as decode_full went before its batch-correct VAE.
        compare_setups(setups, ("vae_b10_singly", only), timing, 10, || {
            for i in 0..ten.dim(0)? {
                sd.decode_full(&ten.narrow(0, i, 1)?)?;
            }
            sync(device)
        })?;
        compare_setups(setups, ("taesd_b10", only), timing, 10, || {
            sd.decode(&ten)?;
            sync(device)
        })?;
        compare_setups(setups, ("unet_step", only), timing, 1, || {
            sd.unet_step(&one, 500)?;
            sync(device)
        })?;
        // The same step with candle-nn's group norms and f32 attention scores (as
        // candle-transformers' UNet has them): what those two levers gained. A model whose config
        // upcasts attention (the SD 2.x presets) has f32 scores in both.
        compare_setups(setups, ("unet_step_unfused", only), timing, 1, || {
            group_norm::set_fused(false);
            attention::set_upcast(true);
            let stepped = sd.unet_step(&one, 500).and_then(|_| sync(device));
            group_norm::set_fused(true);
            attention::set_upcast(false);
            stepped
        })
    }

    /// The heaviest convolutions alone (convs.rs), on a GPU: on the CPU they would take minutes.
    fn conv_shape_times(&mut self) -> anyhow::Result<()> {
        if !self.on_gpu("conv_shapes", "needs a GPU (minutes of work on the CPU)")? {
            return Ok(());
        }
        convs::time(
            &self.model.device,
            self.model.dtype,
            self.timing,
            &convs::CONV_SHAPES,
        )
    }

    /// Whole keyframes, txt2img and img2img: many UNet steps each, so with the last setup only.
    fn keyframe_times(&mut self) -> anyhow::Result<()> {
        let only = self.only;
        if !wanted(only, "keyframe_txt2img") && !wanted(only, "keyframe_img2img") {
            return Ok(());
        }
        let last = &self.setups[self.setups.len() - 1..];
        // One warm-up at most: a keyframe is many UNet steps, each warm after the first.
        let timing = (self.timing.0.min(1), self.timing.1.min(5));
        let RandomModel { sd, device, .. } = &mut self.model;
        let request = |index, seed, previous| KeyframeRequest {
            index,
            seed,
            previous,
        };
        let first = sd.keyframes(&[request(0, 1, None)])?.remove(0);
        compare_setups(last, ("keyframe_txt2img", only), timing, 1, || {
            sd.keyframes(&[request(0, 2, None)])?;
            sync(device)
        })?;
        compare_setups(last, ("keyframe_img2img", only), timing, 1, || {
            sd.keyframes(&[request(1, 3, Some(first.clone()))])?;
            sync(device)
        })
    }
}

fn sync(device: &Device) -> anyhow::Result<()> {
    device.synchronize().map_err(anyhow::Error::from)
}

/// A Stable Diffusion generator of `args.preset`'s real size with random weights, with its spec,
/// device, dtype and image size.
struct RandomModel {
    sd: crate::generator::stable_diffusion::StableDiffusionGenerator,
    spec: crate::generator::stable_diffusion::preset::Spec,
    device: Device,
    dtype: DType,
    size: (u32, u32),
    /// Keyframe steps (`--steps`, else the preset's).
    steps: usize,
}

impl RandomModel {
    /// Latents of `batch` pictures of `(width, height)`: N(0, 1), the same for every model of
    /// any device and dtype.
    fn latents_of(&self, batch: usize, (width, height): (u32, u32)) -> anyhow::Result<Tensor> {
        let factor = self.spec.vae_factor() as usize;
        let shape = (
            batch,
            self.spec.latent_channels(),
            height as usize / factor,
            width as usize / factor,
        );
        let name = format!("bench-sd latents {batch}x{width}x{height}");
        Ok(normal_tensor(
            &name,
            shape,
            (0.0, 1.0),
            self.dtype,
            &self.device,
        )?)
    }

    /// Latents of `batch` pictures of the model's size.
    fn latents(&self, batch: usize) -> anyhow::Result<Tensor> {
        self.latents_of(batch, self.size)
    }
}

/// The model `args` describe: on `place` (device and dtype) if given, else on `args.device` in
/// `args.dtype` (default: f16 on CUDA, f32 on the CPU); `tiny` loads the tiny decoder for the
/// in-betweens.
fn random_model(
    args: &BenchSdArgs,
    place: Option<(Device, DType)>,
    tiny: bool,
) -> anyhow::Result<RandomModel> {
    use crate::generator::stable_diffusion::{
        compute_device, preset, SchedulerKind, SdOptions, TextConditioning, Theme,
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
    let (device, dtype) = match place {
        Some(place) => place,
        None => {
            let device = match args.device.as_str() {
                "cpu" => crate::config::ComputeDevice::Cpu,
                other => crate::config::ComputeDevice::Cuda(
                    other
                        .strip_prefix("cuda:")
                        .and_then(|n| n.parse().ok())
                        .with_context(|| format!("device {other:?}: use cpu or cuda:N"))?,
                ),
            };
            let (device, default) = compute_device(device)?;
            let dtype = match args.dtype {
                None => default,
                Some(SdDtype::F16) => DType::F16,
                Some(SdDtype::Bf16) => DType::BF16,
                Some(SdDtype::F32) => DType::F32,
            };
            (device, dtype)
        }
    };
    let spec = preset::spec(preset);
    let size = args.size.map_or(spec.native_size, |s| (s, s));
    let steps = args.steps.map_or(spec.default_steps, usize::from);
    let cross = spec.unet.cross_attention_dim;
    let text = |name: &str, width: usize| {
        normal_tensor(
            &format!("bench-sd {name}"),
            (1, width),
            (0.0, 1.0),
            DType::F32,
            &device,
        )
    };
    // SDXL's pooled embedding: what add_embedding takes beside the six time ids.
    let pooled = match spec.added {
        Some(added) => {
            let width = added.input_dim - 6 * added.time_embed_dim;
            Some((
                text("pooled negative", width)?,
                text("pooled positive", width)?,
            ))
        }
        None => None,
    };
    let text = TextConditioning::Fixed {
        positive: text("text positive", 77 * cross)?.reshape((1, 77, cross))?,
        negative: text("text negative", 77 * cross)?.reshape((1, 77, cross))?,
        pooled,
    };
    let options = SdOptions {
        size,
        steps,
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
    let sd = StableDiffusionGenerator::with_random_weights(options, text, tiny)?;
    Ok(RandomModel {
        sd,
        spec,
        device,
        dtype,
        size,
        steps,
    })
}

/// Runs `body` once per conv setup (the build's own path where there is no choice) and prints a
/// `key setup=... median_ms=...` line each with the spread, then the speed-up of the last setup
/// over the first. `timing`: (warm-ups, timed runs).
fn compare_setups(
    setups: &[Option<ConvSetup>],
    (key, only): (&str, &[String]),
    (warmups, runs): (usize, usize),
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
        let m = measure_with(key.to_string(), warmups, runs, items, &mut body)?;
        stdout::line(format!(
            "{key} setup={} {} warmups={warmups} runs={} per={}",
            setup.map_or("default", ConvSetup::name),
            m.spread_fields(),
            m.runs,
            if items > 1 { "frame" } else { "call" }
        ))?;
        medians.push((setup.map_or("default", ConvSetup::name), m.median_ms));
    }
    if let (Some(first), Some(last)) = (medians.first(), medians.last()) {
        if medians.len() > 1 {
            stdout::line(format!(
                "{key} speedup {}/{}={:.2}x",
                first.0,
                last.0,
                first.1 / last.1
            ))?;
        }
    }
    Ok(())
}

/// Whether `--only` leaves `key` in (everything when it names nothing).
fn wanted(only: &[String], key: &str) -> bool {
    only.is_empty() || only.iter().any(|k| k == key)
}

/// `bench-sd --pipeline SECONDS`: the display's own `run` with the random-weight model of the
/// preset: keyframes by img2img every transition, in-betweens through the tiny decoder or the
/// full VAE (`--inbetweens`), upscaled to `--screen` at `--fps` into the null sink, playing from
/// `--start-seconds` of buffer, the quality ladder off unless `--adapt`. The `stats` lines on
/// stderr show the buffer over time; the summary is the final status: whether every deadline
/// got a new frame, how late frames were, and what the decoder sustained.
fn pipeline(args: &BenchSdArgs, seconds: f64) -> anyhow::Result<String> {
    crate::logging::init(log::LevelFilter::Info, None, 0, 0)?;
    let tiny = args.inbetweens == InBetweens::Tiny;
    let RandomModel { sd, size, .. } = random_model(args, None, tiny)?;
    let mut config = Config::default();
    config.display.fps = args.fps;
    config.display.sink = SinkKind::Null;
    config.model.size = Some(size);
    config.decode.tiny_decoder = tiny;
    config.adapt.enabled = args.adapt;
    config.buffer.start_seconds = args.start_seconds.min(config.buffer.seconds);
    let dir = std::env::temp_dir().join(format!("dreamframe-bench-sd-{}", std::process::id()));
    config.output.dir = Some(dir.clone());
    config.output.snapshot_interval = None;
    let (width, height) = args.screen;
    let sink = NullSink::new(Geometry::packed(width, height, PixelFormat::XRGB8888));
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
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let status = status?;
    let playing_s = status
        .playing_since_s
        .map_or(0.0, |since| status.uptime_s - since);
    let adapt = status.adapt.as_ref().map_or("off".to_string(), |a| {
        format!(
            "rung {}/{} {} changes={}",
            a.rung, a.rungs, a.label, a.changes
        )
    });
    Ok(format!(
        "pipeline preset={} seconds={seconds} screen={width}x{height} target_fps={} \
         inbetweens={} start_seconds={} first_picture_s={} playing_s={playing_s:.1} \
         frames_shown_playing={} fps_while_playing={:.2} held_deadlines={} skipped_deadlines={} \
         late_frames={} lateness_p50_ms={:.3} lateness_p99_ms={:.3} lateness_max_ms={:.3} \
         underruns={} underrun_frames={} buffer_frames={}/{} keyframes={} keyframe_ms={:.1} \
         decode_ms_per_frame={:.2} decode_fps={:.1} decoder_lock={} decode_lock_wait_p99_ms={:.3} \
         decode_lock_wait_max_ms={:.3} model_lock_max_wait_ms={:.3} generator_errors={} \
         adapt=\"{adapt}\"",
        args.preset,
        status.target_fps,
        if tiny { "tiny" } else { "full" },
        config.buffer.start_seconds,
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
        status.late_frames,
        status.jitter_p50_ms,
        status.jitter_p99_ms,
        status.jitter_max_ms,
        status.underruns,
        status.underrun_frames,
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
