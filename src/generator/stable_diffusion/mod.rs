//! Stable Diffusion behind the `Generator` seam (candle-transformers).
//!
//! Keyframes: the first by txt2img, each later one by img2img from the previous keyframe
//! (`keyframe.denoise` of the way back into noise), so consecutive keyframes are related and the
//! slerp between them morphs instead of cross-fading. Prompts come from themes rotated every
//! `prompts.rotation-interval` keyframes; every keyframe's seed and theme are logged by the
//! keyframe stage. Noise comes from our own seeded RNG, and the default DDIM scheduler is
//! deterministic, so a logged seed reproduces its keyframe.
//! Decoding: keyframes through the full VAE; in-between frames through the tiny decoder (TAESD)
//! when enabled, else the VAE. `resolution_divisor` shrinks latents before decoding.
//! Runs on the keyframe and decoder threads under the model lock. Loading errors name the file,
//! tensor and shape; the caller decides whether to fall back to the built-in generator.

pub mod preset;
pub mod taesd;
pub mod weights;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_transformers::models::stable_diffusion::clip::{
    ClipTextTransformer, Config as ClipConfig,
};
use candle_transformers::models::stable_diffusion::schedulers::{
    Scheduler, SchedulerConfig, TimestepSpacing,
};
use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use candle_transformers::models::stable_diffusion::{ddim, euler_ancestral_discrete};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tokenizers::Tokenizer;

use super::{Generator, KeyframeRequest};
pub use crate::config::{SchedulerKind, Theme};
use preset::Spec;
use taesd::TinyDecoder;
use weights::{build_from, checked_var_builder, random_var_builder, WeightFiles};

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
pub struct SdOptions {
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
pub enum TextConditioning {
    /// Tokenizer and CLIP text encoder per encoder (SDXL has two).
    Clip(Vec<(Tokenizer, ClipTextTransformer, ClipConfig)>),
    /// The same embedding for every prompt, [1, tokens, cross-attention dim]: for tests, where no
    /// CLIP weights exist.
    Fixed(Tensor),
}

pub struct StableDiffusionGenerator {
    options: SdOptions,
    name: String,
    text: TextConditioning,
    /// Per theme: [uncond; cond] when guidance is on, else [cond].
    embeddings: HashMap<usize, Tensor>,
    unet: UNet2DConditionModel,
    vae: AutoEncoderKL,
    tiny: Option<TinyDecoder>,
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        other => format!("{other:?}"),
    }
}

impl StableDiffusionGenerator {
    /// Loads every component from the weights folder.
    pub fn load(dir: &Path, options: SdOptions, tiny_decoder: bool) -> anyhow::Result<Self> {
        let spec = &options.spec;
        let files = WeightFiles::locate(dir, spec, options.dtype == DType::F16, tiny_decoder)?;
        let configs: Vec<ClipConfig> = spec.clip.iter().chain(spec.clip2.iter()).cloned().collect();
        let mut encoders = Vec::new();
        for ((tokenizer_path, encoder_path), config) in files.text.iter().zip(configs) {
            let tokenizer = Tokenizer::from_file(tokenizer_path)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("cannot read tokenizer {}", tokenizer_path.display()))?;
            // The text encoder runs once per theme: f32 keeps it exact and costs little.
            let encoder = build_from(
                encoder_path,
                DType::F32,
                &options.device,
                "text encoder",
                |vb| ClipTextTransformer::new(vb, &config),
            )?;
            encoders.push((tokenizer, encoder, config));
        }
        Self::from_parts(
            options,
            TextConditioning::Clip(encoders),
            &files.unet,
            &files.vae,
            files.tiny_decoder.as_deref(),
        )
    }

    /// Builds the generator from explicit UNet, VAE and tiny-decoder files (tests use tiny models).
    pub fn from_parts(
        options: SdOptions,
        text: TextConditioning,
        unet_file: &Path,
        vae_file: &Path,
        tiny_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let (device, dtype) = (options.device.clone(), options.dtype);
        Self::assemble(options, text, tiny_file.is_some(), |component| {
            let file = match component {
                Component::Unet => unet_file,
                Component::Vae => vae_file,
                Component::TinyDecoder => tiny_file.expect("asked for only when given"),
            };
            Ok((
                checked_var_builder(file, dtype, &device, component.name())?,
                file.display().to_string(),
            ))
        })
    }

    /// Builds the generator with random weights of the real layout: for benchmarks of real-size
    /// models where no weights exist. Its pictures are noise.
    pub fn with_random_weights(
        options: SdOptions,
        text: TextConditioning,
        tiny_decoder: bool,
    ) -> anyhow::Result<Self> {
        let (device, dtype) = (options.device.clone(), options.dtype);
        Self::assemble(options, text, tiny_decoder, |_| {
            Ok((
                random_var_builder(dtype, &device),
                "random weights".to_string(),
            ))
        })
    }

    fn assemble(
        options: SdOptions,
        text: TextConditioning,
        tiny_decoder: bool,
        weights: impl Fn(Component) -> anyhow::Result<(candle_nn::VarBuilder<'static>, String)>,
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
        let build = |component: Component| -> anyhow::Result<_> {
            let (vb, source) = weights(component)?;
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
        let unet = UNet2DConditionModel::new(vb, channels, channels, false, spec.unet.clone())
            .map_err(fit)?;
        let (vb, fit) = build(Component::Vae)?;
        let vae = AutoEncoderKL::new(vb, 3, 3, spec.vae.clone()).map_err(fit)?;
        let tiny = if tiny_decoder {
            let (vb, fit) = build(Component::TinyDecoder)?;
            Some(TinyDecoder::new(vb, channels).map_err(fit)?)
        } else {
            None
        };
        let name = format!(
            "stable-diffusion/{}/{}",
            spec.name,
            device_name(&options.device)
        );
        Ok(Self {
            options,
            name,
            text,
            embeddings: HashMap::new(),
            unet,
            vae,
            tiny,
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
        ((keyframe / self.options.rotation_interval.max(1)) % self.options.themes.len() as u64)
            as usize
    }

    /// Text embeddings for a theme, computed once and kept.
    fn embeddings_for(&mut self, theme: usize) -> anyhow::Result<Tensor> {
        if let Some(embedding) = self.embeddings.get(&theme) {
            return Ok(embedding.clone());
        }
        let guidance = self.use_guidance();
        let prompts = &self.options.themes[theme];
        let embedding = match &self.text {
            TextConditioning::Fixed(fixed) => {
                if guidance {
                    Tensor::cat(&[&fixed.zeros_like()?, fixed], 0)?
                } else {
                    fixed.clone()
                }
            }
            TextConditioning::Clip(encoders) => {
                let encode = |prompt: &str| -> anyhow::Result<Tensor> {
                    let mut parts = Vec::new();
                    for (tokenizer, encoder, config) in encoders {
                        let tokens = tokenize(tokenizer, config, prompt)?;
                        let tokens =
                            Tensor::new(tokens.as_slice(), &self.options.device)?.unsqueeze(0)?;
                        parts.push(encoder.forward(&tokens)?);
                    }
                    Ok(Tensor::cat(&parts, D::Minus1)?)
                };
                let cond = encode(&prompts.positive)?;
                if guidance {
                    Tensor::cat(&[&encode(&prompts.negative)?, &cond], 0)?
                } else {
                    cond
                }
            }
        }
        .to_dtype(self.options.dtype)?;
        self.embeddings.insert(theme, embedding.clone());
        Ok(embedding)
    }

    fn scheduler(&self) -> anyhow::Result<Box<dyn Scheduler>> {
        let spec = &self.options.spec;
        let spacing = if spec.trailing_timesteps {
            TimestepSpacing::Trailing
        } else {
            TimestepSpacing::Leading
        };
        Ok(match self.options.scheduler {
            SchedulerKind::Ddim => ddim::DDIMSchedulerConfig {
                prediction_type: spec.prediction,
                timestep_spacing: spacing,
                ..Default::default()
            }
            .build(self.options.steps)?,
            SchedulerKind::EulerAncestral => {
                euler_ancestral_discrete::EulerAncestralDiscreteSchedulerConfig {
                    prediction_type: spec.prediction,
                    timestep_spacing: spacing,
                    ..Default::default()
                }
                .build(self.options.steps)?
            }
        })
    }

    fn noise(&self, seed: u64) -> anyhow::Result<Tensor> {
        let (c, h, w) = self.latent_shape();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values: Vec<f32> = (0..c * h * w)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        Ok(
            Tensor::from_vec(values, (1, c, h, w), &self.options.device)?
                .to_dtype(self.options.dtype)?,
        )
    }

    /// One keyframe: txt2img from noise, or img2img from `previous` (a latent of [c, h, w]).
    fn keyframe(&mut self, request: &KeyframeRequest) -> anyhow::Result<Tensor> {
        let embeddings = self.embeddings_for(self.theme_index(request.index))?;
        let mut scheduler = self.scheduler()?;
        let timesteps = scheduler.timesteps().to_vec();
        let noise = self.noise(request.seed)?;
        let (mut latents, start) = match &request.previous {
            None => ((noise * scheduler.init_noise_sigma())?, 0),
            Some(previous) => {
                // At least one step, or img2img would return the previous keyframe unchanged.
                let steps = ((timesteps.len() as f64 * self.options.denoise).round() as usize)
                    .clamp(1, timesteps.len());
                let start = timesteps.len() - steps;
                let previous = previous.unsqueeze(0)?.to_dtype(self.options.dtype)?;
                (
                    scheduler.add_noise(&previous, noise, timesteps[start])?,
                    start,
                )
            }
        };
        let guidance = self.use_guidance();
        for &timestep in &timesteps[start..] {
            let input = if guidance {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(input, timestep)?;
            let prediction = self.unet.forward(&input, timestep as f64, &embeddings)?;
            let prediction = if guidance {
                let halves = prediction.chunk(2, 0)?;
                (&halves[0] + ((&halves[1] - &halves[0])? * self.options.guidance)?)?
            } else {
                prediction
            };
            latents = scheduler.step(&prediction, timestep, &latents)?;
        }
        Ok(latents.squeeze(0)?)
    }

    /// Latents shrunk by the resolution divisor (average pooling keeps their statistics).
    fn shrink(&self, latents: &Tensor) -> anyhow::Result<Tensor> {
        let divisor = self.options.resolution_divisor as usize;
        Ok(if divisor > 1 {
            latents.avg_pool2d(divisor)?
        } else {
            latents.clone()
        })
    }

    /// [n, 3, H, W] in [0, 1] -> packed RGB8 images.
    fn to_rgb8(images: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let images = (images.clamp(0.0, 1.0)? * 255.0)?
            .round()?
            .to_dtype(DType::U8)?
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .to_device(&Device::Cpu)?;
        let n = images.dim(0)?;
        let flat = images.flatten_all()?.to_vec1::<u8>()?;
        let per_image = flat.len() / n.max(1);
        Ok(flat.chunks_exact(per_image).map(<[u8]>::to_vec).collect())
    }

    /// One UNet evaluation on `latents` with the first theme's embeddings (for benchmarks).
    pub fn unet_step(&mut self, latents: &Tensor, timestep: usize) -> anyhow::Result<Tensor> {
        let embeddings = self.embeddings_for(0)?;
        let input = if self.use_guidance() {
            Tensor::cat(&[latents, latents], 0)?
        } else {
            latents.clone()
        };
        Ok(self.unet.forward(&input, timestep as f64, &embeddings)?)
    }

    /// Decodes through the full VAE whatever the tiny-decoder setting.
    pub fn decode_full(&self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        let latents = (self.shrink(latents)? / self.options.spec.vae_scale)?;
        let images = self.vae.decode(&latents)?;
        Self::to_rgb8(&((images.to_dtype(DType::F32)? + 1.0)? / 2.0)?)
    }
}

/// Token ids of `prompt`, cut or padded to the encoder's context length.
fn tokenize(tokenizer: &Tokenizer, config: &ClipConfig, prompt: &str) -> anyhow::Result<Vec<u32>> {
    let pad = config.pad_with.as_deref().unwrap_or("<|endoftext|>");
    let Some(&pad_id) = tokenizer.get_vocab(true).get(pad) else {
        bail!("tokenizer has no padding token {pad}");
    };
    let mut tokens = tokenizer
        .encode(prompt, true)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .get_ids()
        .to_vec();
    let length = config.max_position_embeddings;
    if tokens.len() > length {
        log::warn!(
            "{}",
            crate::events::PromptTruncated {
                tokens: tokens.len(),
                max: length,
                prompt: prompt.to_string(),
            }
        );
        tokens.truncate(length);
    }
    tokens.resize(length, pad_id);
    Ok(tokens)
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
        Ok(latents)
    }

    fn decode_keyframe(&mut self, latent: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        self.decode_full(latent)
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

    fn keyframe_label(&self, index: u64) -> Option<(u64, &str)> {
        let theme = self.theme_index(index);
        Some((theme as u64, &self.options.themes[theme].positive))
    }

    fn decode(&mut self, latents: &Tensor) -> anyhow::Result<Vec<Vec<u8>>> {
        match &self.tiny {
            Some(tiny) => {
                let latents = self.shrink(&latents.to_dtype(self.options.dtype)?)?;
                Self::to_rgb8(&tiny.forward(&latents)?.to_dtype(DType::F32)?)
            }
            None => self.decode_full(&latents.to_dtype(self.options.dtype)?),
        }
    }
}

/// The candle device and dtype for a configured device: f16 on CUDA, f32 on the CPU.
pub fn compute_device(device: crate::config::ComputeDevice) -> anyhow::Result<(Device, DType)> {
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

/// Loads the Stable Diffusion model the config describes.
pub fn load_configured(config: &crate::config::Config) -> anyhow::Result<StableDiffusionGenerator> {
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
    StableDiffusionGenerator::load(&sd.weights_dir, options, config.decode.tiny_decoder)
}
