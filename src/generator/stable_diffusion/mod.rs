//! Stable Diffusion behind the `Generator` seam: our UNet (unet.rs over unet_blocks.rs, with SDXL's
//! added conditioning; attention.rs), schedulers (scheduler.rs), tokenizer (tokenizer.rs), text
//! encoder (text_encoder.rs), VAE decoder (vae.rs) and TAESD (taesd.rs), each held to diffusers /
//! transformers by tests/reference.rs.
//!
//! Keyframes: the first by txt2img, each later one by img2img from the previous keyframe
//! (`keyframe.denoise` of the way back into noise), as diffusers' two pipelines make them, so
//! consecutive keyframes are related and the slerp between them morphs instead of
//! cross-fading. Prompts come from themes rotated every `prompts.rotation-interval` keyframes;
//! every keyframe's seed and theme are logged by the keyframe stage. All noise (the start, and
//! Euler ancestral's per step) comes from the keyframe's seed, so a logged seed reproduces it.
//! Decoding: keyframes through the full VAE; in-between frames through the tiny decoder (TAESD)
//! when enabled, else the VAE. `resolution_divisor` shrinks latents before decoding.
//! The adapt ladder (`Knobs`) may double the divisor once or twice, move in-betweens to TAESD
//! (loaded for it when its file is in the weights folder) and lower the keyframe steps to three
//! quarters or half.
//! Keyframes run on the keyframe thread under the model lock; the decoders (decoders.rs: VAE and
//! TAESD, on CUDA with a stream of their own) are split off to the decoder thread under their own
//! lock (`Generator::split_decoder`), so decoding never waits for a keyframe. Loading errors
//! name the file, tensor and shape; the caller decides whether to fall back to the built-in
//! generator. `conv` switches the patched candle's cuDNN conv setup for `bench-sd`; `random` makes
//! the trained-scale random weights it measures with, the same on every device and dtype.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod decoders;
pub(crate) mod group_norm;
pub(crate) mod preset;
pub(crate) mod random;
pub(crate) mod scheduler;
pub(crate) mod taesd;
pub(crate) mod text_encoder;
pub(crate) mod tokenizer;
pub(crate) mod unet;
mod unet_blocks;
pub(crate) mod vae;
pub(crate) mod weights;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context};
use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tokenizers::Tokenizer;

use super::{DecodeQuality, FrameDecoder, Generator, KeyframeRequest, Knobs};
pub(crate) use crate::config::{SchedulerKind, Theme};
use decoders::{decoder_device, ladder_divisors, Decoders};
use preset::Spec;
use random::random_var_builder;
use scheduler::Schedule;
use taesd::TinyDecoder;
use text_encoder::{TextConfig, TextEncoder};
use unet::{Added, UNet};
use vae::VaeDecoder;
use weights::{build_from, checked_var_builder, WeightFiles};

/// The parts of a Stable Diffusion model that have weights of their own.
#[derive(Debug, Clone, Copy)]
enum Component {
    Unet,
    Vae,
    TinyDecoder,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Unet => "UNet",
            Component::Vae => "VAE",
            Component::TinyDecoder => "tiny decoder",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SdOptions {
    pub spec: Spec,
    /// Generation size in pixels (a multiple of the VAE factor).
    pub size: (u32, u32),
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: SchedulerKind,
    /// img2img strength for every keyframe after the first.
    pub denoise: f64,
    pub themes: Vec<Theme>,
    pub rotation_interval: u64,
    pub resolution_divisor: u32,
    pub device: Device,
    pub dtype: DType,
}

/// Where text embeddings come from.
pub(crate) enum TextConditioning {
    /// Tokenizer and CLIP text encoder per encoder (SDXL has two).
    Clip(Vec<(Tokenizer, TextEncoder, TextConfig)>),
    /// The same embeddings for every theme, each [1, tokens, cross-attention dim]: for tests and
    /// benchmarks, where no CLIP weights exist. `negative` is used with guidance only. SDXL
    /// also takes pooled embeddings, [1, pooled] each: (negative, positive).
    Fixed {
        positive: Tensor,
        negative: Tensor,
        pooled: Option<(Tensor, Tensor)>,
    },
}

/// Whether the tiny decoder is loaded, and what for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TinyUse {
    No,
    /// `decode.tiny-decoder = true`: every in-between goes through it.
    InBetweens,
    /// Found in the weights folder: the adapt ladder may switch in-betweens to it.
    LadderOnly,
}

/// Keyframe step counts the adapt ladder may use: the configured count, three quarters and
/// half of it (rounded up, at least 1).
fn step_options(steps: usize) -> Vec<usize> {
    let mut options = vec![
        steps.max(1),
        (steps * 3).div_ceil(4).max(1),
        steps.div_ceil(2).max(1),
    ];
    options.dedup();
    options
}

pub(crate) struct StableDiffusionGenerator {
    options: SdOptions,
    /// What the adapt ladder may change (`Generator::knobs`), fixed at load.
    knobs: Knobs,
    name: String,
    text: TextConditioning,
    /// Per theme: [uncond; cond] when guidance is on, else [cond].
    embeddings: HashMap<usize, Conditioning>,
    /// Themes skipped by re-anchors (`next_theme`), added to the rotation's place.
    theme_offset: u64,
    unet: UNet,
    /// `None` once `split_decoder` has handed them to the pipeline.
    decoders: Option<Decoders>,
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        other => format!("{other:?}"),
    }
}

impl StableDiffusionGenerator {
    /// Loads every component from the weights folder; the tiny decoder for in-betweens when
    /// `tiny_decoder`, else (when `ladder_tiny`, and its file is there) for the adapt ladder.
    pub(crate) fn load(
        dir: &Path,
        options: SdOptions,
        tiny_decoder: bool,
        ladder_tiny: bool,
    ) -> anyhow::Result<Self> {
        let spec = &options.spec;
        let mut files = WeightFiles::locate(dir, spec, options.dtype == DType::F16, tiny_decoder)?;
        let tiny = if tiny_decoder {
            TinyUse::InBetweens
        } else if ladder_tiny {
            files.tiny_decoder = weights::optional_tiny_decoder(dir, spec);
            if files.tiny_decoder.is_some() {
                TinyUse::LadderOnly
            } else {
                TinyUse::No
            }
        } else {
            TinyUse::No
        };
        let configs: Vec<TextConfig> = spec.clip.iter().chain(spec.clip2.iter()).cloned().collect();
        let mut encoders = Vec::new();
        for ((tokenizer_folder, encoder_path), config) in files.text.iter().zip(configs) {
            let tokenizer = tokenizer::load(tokenizer_folder, &config.pad_token)?;
            // The text encoder runs once per theme: f32 keeps it exact and costs little.
            let encoder = build_from(
                encoder_path,
                DType::F32,
                &options.device,
                "text encoder",
                |vb| TextEncoder::new(vb, &config),
            )?;
            encoders.push((tokenizer, encoder, config));
        }
        let tiny_file = files.tiny_decoder.as_deref();
        let dtype = options.dtype;
        Self::assemble(
            options,
            TextConditioning::Clip(encoders),
            tiny,
            |component, device| {
                let file = match component {
                    Component::Unet => files.unet.as_path(),
                    Component::Vae => files.vae.as_path(),
                    Component::TinyDecoder => tiny_file.expect("asked for only when found"),
                };
                Ok((
                    checked_var_builder(file, dtype, device, component.name())?,
                    file.display().to_string(),
                ))
            },
        )
    }

    #[cfg(test)]
    /// Builds the generator from explicit UNet, VAE and tiny-decoder files (tests use tiny models).
    pub(crate) fn from_parts(
        options: SdOptions,
        text: TextConditioning,
        unet_file: &Path,
        vae_file: &Path,
        tiny_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let dtype = options.dtype;
        let tiny = if tiny_file.is_some() {
            TinyUse::InBetweens
        } else {
            TinyUse::No
        };
        Self::assemble(options, text, tiny, |component, device| {
            let file = match component {
                Component::Unet => unet_file,
                Component::Vae => vae_file,
                Component::TinyDecoder => tiny_file.expect("asked for only when given"),
            };
            Ok((
                checked_var_builder(file, dtype, device, component.name())?,
                file.display().to_string(),
            ))
        })
    }

    /// Builds the generator with random weights of the real layout: for benchmarks of real-size
    /// models where no weights exist. Its pictures are noise.
    pub(crate) fn with_random_weights(
        options: SdOptions,
        text: TextConditioning,
        tiny_decoder: bool,
    ) -> anyhow::Result<Self> {
        let dtype = options.dtype;
        let tiny = if tiny_decoder {
            TinyUse::InBetweens
        } else {
            TinyUse::No
        };
        Self::assemble(options, text, tiny, |_, device| {
            Ok((
                random_var_builder(dtype, device),
                "random weights".to_string(),
            ))
        })
    }

    fn assemble(
        options: SdOptions,
        text: TextConditioning,
        tiny_use: TinyUse,
        weights: impl Fn(Component, &Device) -> anyhow::Result<(candle_nn::VarBuilder<'static>, String)>,
    ) -> anyhow::Result<Self> {
        let spec = &options.spec;
        let factor = spec.vae_factor();
        ensure!(
            options.size.0 % factor == 0 && options.size.1 % factor == 0,
            "size {}x{} is not a multiple of {factor}",
            options.size.0,
            options.size.1
        );
        ensure!(!options.themes.is_empty(), "at least one theme is needed");
        let decoder_device = decoder_device(&options.device)?;
        let build = |component: Component| -> anyhow::Result<_> {
            let device = match component {
                Component::Unet => &options.device,
                Component::Vae | Component::TinyDecoder => &decoder_device,
            };
            let (vb, source) = weights(component, device)?;
            let fit = move |e: candle_core::Error| {
                anyhow::anyhow!("{e}").context(format!(
                    "{} weights {source} do not fit the model",
                    component.name()
                ))
            };
            Ok((vb, fit))
        };
        let (vb, fit) = build(Component::Unet)?;
        let channels = spec.latent_channels();
        let unet =
            UNet::new(vb, channels, &spec.unet, spec.added, spec.attention_upcast).map_err(fit)?;
        let (vb, fit) = build(Component::Vae)?;
        // diffusers' `force_upcast` (SDXL's VAE overflows f16): the pipelines decode in f32.
        let vae_dtype = if spec.vae_upcast {
            DType::F32
        } else {
            options.dtype
        };
        let vae = VaeDecoder::new(vb.set_dtype(vae_dtype), &spec.vae).map_err(fit)?;
        let load_tiny = || -> anyhow::Result<TinyDecoder> {
            let (vb, fit) = build(Component::TinyDecoder)?;
            TinyDecoder::new(vb, channels).map_err(fit)
        };
        let tiny = match tiny_use {
            TinyUse::No => None,
            TinyUse::InBetweens => Some(load_tiny()?),
            // Only for the ladder: without it the display runs as configured.
            TinyUse::LadderOnly => load_tiny()
                .map_err(|error| {
                    log::warn!(
                        "{}",
                        crate::events::TinyDecoderUnavailable {
                            error: format!("{error:#}")
                        }
                    )
                })
                .ok(),
        };
        let latent = (
            (options.size.1 / factor) as usize,
            (options.size.0 / factor) as usize,
        );
        let knobs = Knobs {
            sizes: ladder_divisors(options.resolution_divisor, latent)
                .into_iter()
                .map(|d| (options.size.0 / d, options.size.1 / d))
                .collect(),
            tiny_decoder: tiny.is_some() && tiny_use == TinyUse::LadderOnly,
            steps: step_options(options.steps),
        };
        let decoders = Decoders {
            vae,
            use_tiny: tiny.is_some() && tiny_use == TinyUse::InBetweens,
            tiny_configured: tiny_use == TinyUse::InBetweens,
            tiny,
            device: decoder_device.clone(),
            dtype: options.dtype,
            vae_dtype,
            vae_scale: spec.vae_scale,
            resolution_divisor: options.resolution_divisor,
            configured_divisor: options.resolution_divisor,
        };
        let name = format!(
            "stable-diffusion/{}/{}",
            spec.name,
            device_name(&options.device)
        );
        Ok(Self {
            options,
            knobs,
            name,
            text,
            embeddings: HashMap::new(),
            theme_offset: 0,
            unet,
            decoders: Some(decoders),
        })
    }

    fn use_guidance(&self) -> bool {
        self.options.guidance > 1.0
    }

    fn latent_shape(&self) -> (usize, usize, usize) {
        let factor = self.options.spec.vae_factor();
        (
            self.options.spec.latent_channels(),
            (self.options.size.1 / factor) as usize,
            (self.options.size.0 / factor) as usize,
        )
    }

    fn theme_index(&self, keyframe: u64) -> usize {
        let place =
            (keyframe / self.options.rotation_interval.max(1)).wrapping_add(self.theme_offset);
        (place % self.options.themes.len() as u64) as usize
    }

    /// A theme's conditioning, computed once and kept.
    fn embeddings_for(&mut self, theme: usize) -> anyhow::Result<Conditioning> {
        if let Some(conditioning) = self.embeddings.get(&theme) {
            return Ok(conditioning.clone());
        }
        let guidance = self.use_guidance();
        let prompts = &self.options.themes[theme];
        let (positive, negative) = match &self.text {
            TextConditioning::Fixed {
                positive,
                negative,
                pooled,
            } => (
                Encoded {
                    text: positive.clone(),
                    pooled: pooled.as_ref().map(|(_, p)| p.clone()),
                },
                Encoded {
                    text: negative.clone(),
                    pooled: pooled.as_ref().map(|(n, _)| n.clone()),
                },
            ),
            TextConditioning::Clip(encoders) => {
                let positive = encode_prompt(encoders, &prompts.positive, &self.options.device)?;
                let negative = if !guidance {
                    positive.clone() // never used
                } else if prompts.negative.is_empty() && self.unet.takes_added() {
                    // StableDiffusionXLPipeline without a negative prompt: zeros
                    // (`force_zeros_for_empty_prompt`, set in every SDXL repo's model_index.json).
                    positive.zeros_like()?
                } else {
                    encode_prompt(encoders, &prompts.negative, &self.options.device)?
                };
                (positive, negative)
            }
        };
        let conditioning = self.conditioning(positive, negative)?;
        self.embeddings.insert(theme, conditioning.clone());
        Ok(conditioning)
    }

    /// The UNet's conditioning for a prompt pair: [negative; positive] when guidance is on,
    /// with SDXL's pooled embeddings and time ids (the generation size, uncropped, as both
    /// SDXL pipelines make them by default).
    fn conditioning(&self, positive: Encoded, negative: Encoded) -> anyhow::Result<Conditioning> {
        let guidance = self.use_guidance();
        let dtype = self.options.dtype;
        let both = |negative: &Tensor, positive: &Tensor| -> anyhow::Result<Tensor> {
            Ok(if guidance {
                Tensor::cat(&[negative, positive], 0)?
            } else {
                positive.clone()
            }
            .to_dtype(dtype)?)
        };
        let text = both(&negative.text, &positive.text)?;
        let added = if self.unet.takes_added() {
            let (Some(negative), Some(positive)) = (&negative.pooled, &positive.pooled) else {
                bail!(
                    "an SDXL UNet needs a pooled text embedding: the second text encoder gives none"
                );
            };
            let text_embeds = both(negative, positive)?;
            let (width, height) = self.options.size;
            let (h, w) = (height as f32, width as f32);
            let ids = Tensor::new(&[[h, w, 0.0, 0.0, h, w]], &self.options.device)?;
            // Kept in f32: the UNet turns them into sinusoids in f32.
            let time_ids = ids.repeat((text_embeds.dim(0)?, 1))?;
            Some(Added {
                text_embeds,
                time_ids,
            })
        } else {
            None
        };
        Ok(Conditioning { text, added })
    }

    fn schedule(&self) -> anyhow::Result<Schedule> {
        Schedule::new(
            self.options.scheduler,
            &self.options.spec.schedule,
            self.options.steps,
        )
    }

    /// One keyframe: txt2img from noise, or img2img from `previous` (a latent of [c, h, w]),
    /// with noise from the request's seed.
    fn keyframe(&mut self, request: &KeyframeRequest) -> anyhow::Result<Tensor> {
        let mut noise = SeededNoise::new(request.seed, &self.options.device);
        self.keyframe_with_noise(request, &mut noise)
    }

    /// One keyframe as `StableDiffusionPipeline` (txt2img) or `StableDiffusionImg2ImgPipeline`
    /// (img2img) makes it, every random draw taken from `noise` in the order diffusers draws:
    /// the starting noise, then one per step for Euler ancestral. Latents stay in f32 between
    /// steps (as diffusers upcasts in its schedulers); only the UNet runs in the model's dtype.
    pub(crate) fn keyframe_with_noise(
        &mut self,
        request: &KeyframeRequest,
        noise: &mut dyn NoiseSource,
    ) -> anyhow::Result<Tensor> {
        let embeddings = self.embeddings_for(self.theme_index(request.index))?;
        let schedule = self.schedule()?;
        let (c, h, w) = self.latent_shape();
        let shape = (1, c, h, w);
        let work = DType::F32;
        let start_noise = noise.next(shape)?.to_dtype(work)?;
        let (mut latents, start) = match &request.previous {
            None => ((start_noise * schedule.init_noise_sigma())?, 0),
            Some(previous) => {
                let start = schedule.img2img_start(self.options.denoise);
                let previous = previous.unsqueeze(0)?.to_dtype(work)?;
                (schedule.add_noise(&previous, &start_noise, start)?, start)
            }
        };
        let guidance = self.use_guidance();
        for (index, &timestep) in schedule.timesteps().iter().enumerate().skip(start) {
            let input = schedule
                .scale_model_input(&latents, index)?
                .to_dtype(self.options.dtype)?;
            let input = if guidance {
                Tensor::cat(&[&input, &input], 0)?
            } else {
                input
            };
            let prediction = self
                .unet
                .forward(
                    &input,
                    timestep,
                    &embeddings.text,
                    embeddings.added.as_ref(),
                )?
                .to_dtype(work)?;
            let prediction = if guidance {
                let halves = prediction.chunk(2, 0)?;
                (&halves[0] + ((&halves[1] - &halves[0])? * self.options.guidance)?)?
            } else {
                prediction
            };
            let step_noise = if schedule.step_takes_noise() {
                Some(noise.next(shape)?.to_dtype(work)?)
            } else {
                None
            };
            latents = schedule.step(&prediction, index, &latents, step_noise.as_ref())?;
        }
        Ok(latents.squeeze(0)?)
    }

    /// One UNet evaluation on `latents` with the first theme's embeddings (for benchmarks).
    pub(crate) fn unet_step(
        &mut self,
        latents: &Tensor,
        timestep: usize,
    ) -> anyhow::Result<Tensor> {
        let embeddings = self.embeddings_for(0)?;
        let input = if self.use_guidance() {
            Tensor::cat(&[latents, latents], 0)?
        } else {
            latents.clone()
        };
        Ok(self.unet.forward(
            &input,
            timestep as f64,
            &embeddings.text,
            embeddings.added.as_ref(),
        )?)
    }

    /// The decoders, unless the pipeline has taken them to hold under their own lock.
    fn decoders(&self) -> anyhow::Result<&Decoders> {
        self.decoders
            .as_ref()
            .context("the decoders were split off to their own lock")
    }

    /// Decodes through the full VAE whatever the tiny-decoder setting (`Decoders::decode_full`).
    pub(crate) fn decode_full(&self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        self.decoders()?.decode_full(latents)
    }

    /// Pictures before the conversion to u8 (`Decoders::decoded_images`).
    pub(crate) fn decoded_images(&self, latents: &Tensor, tiny: bool) -> anyhow::Result<Tensor> {
        self.decoders()?.decoded_images(latents, tiny)
    }
}

/// One prompt through the text encoders: their hidden states side by side [1, tokens, sum of
/// widths] and, for SDXL, the pooled embedding of the last encoder that has a projection
/// (StableDiffusionXLPipeline.encode_prompt keeps the last one).
fn encode_prompt(
    encoders: &[(Tokenizer, TextEncoder, TextConfig)],
    prompt: &str,
    device: &Device,
) -> anyhow::Result<Encoded> {
    let mut parts = Vec::new();
    let mut pooled = None;
    for (tokenizer, encoder, config) in encoders {
        let tokens =
            tokenizer::token_ids(tokenizer, &config.pad_token, config.max_positions, prompt)?;
        let tokens = Tensor::new(tokens.as_slice(), device)?.unsqueeze(0)?;
        let output = encoder.encode(&tokens)?;
        parts.push(output.hidden);
        pooled = output.pooled.or(pooled);
    }
    Ok(Encoded {
        text: Tensor::cat(&parts, D::Minus1)?,
        pooled,
    })
}

/// One prompt's embeddings: hidden states [1, tokens, dim], and SDXL's pooled one [1, pooled].
#[derive(Clone)]
struct Encoded {
    text: Tensor,
    pooled: Option<Tensor>,
}

impl Encoded {
    fn zeros_like(&self) -> candle_core::Result<Self> {
        Ok(Self {
            text: self.text.zeros_like()?,
            pooled: self.pooled.as_ref().map(Tensor::zeros_like).transpose()?,
        })
    }
}

/// What the UNet is conditioned on for one theme, batched as the UNet runs: [negative;
/// positive] with guidance, else [positive].
#[derive(Clone)]
struct Conditioning {
    text: Tensor,
    /// SDXL's added conditioning.
    added: Option<Added>,
}

/// Where a keyframe's random draws come from.
pub(crate) trait NoiseSource {
    /// Unit normal noise of `shape`.
    fn next(&mut self, shape: (usize, usize, usize, usize)) -> anyhow::Result<Tensor>;
}

/// Noise from a keyframe's seed (ChaCha8, so the same seed gives the same keyframe on any
/// machine and device): the starting noise first, then Euler ancestral's per-step draws.
pub(crate) struct SeededNoise {
    rng: ChaCha8Rng,
    device: Device,
}

impl SeededNoise {
    pub(crate) fn new(seed: u64, device: &Device) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device: device.clone(),
        }
    }
}

impl NoiseSource for SeededNoise {
    fn next(&mut self, shape: (usize, usize, usize, usize)) -> anyhow::Result<Tensor> {
        let count = shape.0 * shape.1 * shape.2 * shape.3;
        let values: Vec<f32> = (0..count)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect();
        Ok(Tensor::from_vec(values, shape, &self.device)?)
    }
}

impl Generator for StableDiffusionGenerator {
    fn name(&self) -> &str {
        &self.name
    }

    fn device(&self) -> &Device {
        &self.options.device
    }

    fn resolution(&self) -> (u32, u32) {
        let d = self.options.resolution_divisor.max(1);
        (self.options.size.0 / d, self.options.size.1 / d)
    }

    fn keyframes(&mut self, requests: &[KeyframeRequest]) -> anyhow::Result<Vec<Tensor>> {
        let mut latents: Vec<Tensor> = Vec::with_capacity(requests.len());
        for request in requests {
            // A request without a previous keyframe drifts from the one made just before it.
            let mut request = request.clone();
            if request.previous.is_none() {
                request.previous = latents.last().cloned();
            }
            latents.push(self.keyframe(&request)?);
        }
        // The decoder thread reads these on its own stream: on CUDA the work that made them is
        // on this thread's stream, which candle does not order against the other's.
        self.options.device.synchronize()?;
        Ok(latents)
    }

    fn decode_keyframe(&mut self, latent: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        self.decode_full(latent)
    }

    fn split_decoder(&mut self) -> Option<Box<dyn FrameDecoder>> {
        self.decoders
            .take()
            .map(|decoders| Box::new(decoders) as Box<dyn FrameDecoder>)
    }

    fn knobs(&self) -> Knobs {
        self.knobs.clone()
    }

    fn set_decode_quality(&mut self, quality: DecodeQuality) {
        if let Some(decoders) = self.decoders.as_mut() {
            decoders.set_decode_quality(quality);
        }
    }

    fn set_steps(&mut self, steps: usize) {
        self.options.steps = steps.max(1);
    }

    /// New themes from a reload: the text embeddings of the old ones are dropped (they are
    /// made again, per theme, when first needed). The model stays loaded.
    fn reconfigure(&mut self, prompts: &crate::config::PromptsConfig) {
        if prompts.themes.is_empty() {
            return; // validation never lets this through; keep the old themes if it did
        }
        if self.options.themes != prompts.themes {
            self.options.themes = prompts.themes.clone();
            self.embeddings.clear();
        }
        self.options.rotation_interval = prompts.rotation_interval;
    }

    fn next_theme(&mut self) {
        self.theme_offset = self.theme_offset.wrapping_add(1);
    }

    fn keyframe_label(&self, index: u64) -> Option<(u64, &str)> {
        let theme = self.theme_index(index);
        Some((theme as u64, &self.options.themes[theme].positive))
    }

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        match self.decoders.as_mut() {
            Some(decoders) => decoders.decode(latents),
            None => bail!("the decoders were split off to their own lock"),
        }
    }
}

/// The candle device and dtype for a configured device: f16 on CUDA, f32 on the CPU.
pub(crate) fn compute_device(
    device: crate::config::ComputeDevice,
) -> anyhow::Result<(Device, DType)> {
    match device {
        crate::config::ComputeDevice::Cpu => Ok((Device::Cpu, DType::F32)),
        crate::config::ComputeDevice::Cuda(index) => {
            if !cfg!(feature = "cuda") {
                bail!(
                    "model.device = \"cuda:{index}\" but this build has no CUDA support: rebuild with \
                     `cargo build --release --features cuda,cudnn` (dreamframe never moves a CUDA model to the CPU by itself)"
                );
            }
            let device = Device::new_cuda(index)
                .with_context(|| format!("cannot open CUDA device {index}"))?;
            Ok((device, DType::F16))
        }
    }
}

/// The name the configured model will have once loaded (what its walk is saved under).
pub(crate) fn configured_name(config: &crate::config::Config) -> String {
    let sd = &config.model.stable_diffusion;
    let device = match sd.device {
        crate::config::ComputeDevice::Cpu => "cpu",
        crate::config::ComputeDevice::Cuda(_) => "cuda",
    };
    format!("stable-diffusion/{}/{device}", sd.preset.name())
}

/// Loads the Stable Diffusion model the config describes.
pub(crate) fn load_configured(
    config: &crate::config::Config,
) -> anyhow::Result<StableDiffusionGenerator> {
    let sd = &config.model.stable_diffusion;
    let spec = preset::spec(sd.preset);
    let (device, dtype) = compute_device(sd.device)?;
    let options = SdOptions {
        size: config.model.size.unwrap_or(spec.native_size),
        steps: sd.steps.unwrap_or(spec.default_steps),
        guidance: sd.guidance.unwrap_or(spec.default_guidance),
        scheduler: sd.scheduler,
        denoise: config.keyframe.denoise,
        themes: config.prompts.themes.clone(),
        rotation_interval: config.prompts.rotation_interval,
        resolution_divisor: config.interpolation.resolution_divisor,
        device,
        dtype,
        spec,
    };
    log::info!(
        "{}",
        crate::events::Model {
            kind: "stable-diffusion".into(),
            preset: sd.preset.name().into(),
            weights_dir: sd.weights_dir.display().to_string(),
            device: format!("{:?}", sd.device),
            dtype: format!("{dtype:?}"),
            width: options.size.0,
            height: options.size.1,
            steps: options.steps,
            guidance: options.guidance,
            tiny_decoder: config.decode.tiny_decoder,
        }
    );
    StableDiffusionGenerator::load(
        &sd.weights_dir,
        options,
        config.decode.tiny_decoder,
        config.adapt.enabled && config.adapt.tiny_decoder,
    )
}
