//! The Stable Diffusion variants dreamframe knows: their UNet, VAE and text-encoder layouts,
//! latent scale, prediction type and per-preset defaults (steps, guidance, size). The values mirror
//! the diffusers config.json files of each model (candle keeps its own copies private).

use candle_transformers::models::stable_diffusion::{unet_2d, vae};

use super::scheduler::{Prediction, ScheduleConfig, Spacing};
use super::text_encoder::TextConfig;
use super::unet::AddedConfig;

pub(crate) use crate::config::Preset;

/// Everything needed to build and drive one preset.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub name: String,
    pub unet: unet_2d::UNet2DConditionModelConfig,
    /// SDXL's added conditioning (pooled text embedding and time ids), `None` before SDXL.
    pub added: Option<AddedConfig>,
    pub vae: vae::AutoEncoderKLConfig,
    /// Text encoders; `None` in tests, which pass text embeddings directly.
    pub clip: Option<TextConfig>,
    pub clip2: Option<TextConfig>,
    /// The model repo's scheduler_config.json, as far as it changes the arithmetic.
    pub schedule: ScheduleConfig,
    /// Latents are the VAE's latents times this (what the UNet works in).
    pub vae_scale: f64,
    /// vae/config.json `force_upcast`: the VAE overflows in f16, so it decodes in f32 even
    /// where the rest runs in f16 (as diffusers' pipelines upcast it).
    pub vae_upcast: bool,
    /// unet/config.json `upcast_attention`: the UNet's attention scores in f32 even where it runs
    /// in f16 (attention.rs). sd-2.1's config sets it (its attention logits are large enough
    /// that f16 loses the softmax); sd-turbo, distilled from it, is treated alike until a run
    /// with its weights shows f16 scores hold.
    pub attention_upcast: bool,
    pub default_steps: usize,
    pub default_guidance: f64,
    pub native_size: (u32, u32),
    /// File name of the matching tiny decoder in the weights folder.
    pub taesd_file: &'static str,
    /// The Hugging Face repo whose diffusers folder this preset loads (for error messages).
    pub repo: &'static str,
}

impl Spec {
    /// Image pixels per latent pixel: the VAE halves the size once per block after the first.
    pub(crate) fn vae_factor(&self) -> u32 {
        1 << (self.vae.block_out_channels.len().saturating_sub(1))
    }

    pub(crate) fn latent_channels(&self) -> usize {
        self.vae.latent_channels
    }
}

fn block(
    out_channels: usize,
    use_cross_attn: Option<usize>,
    attention_head_dim: usize,
) -> unet_2d::BlockConfig {
    unet_2d::BlockConfig {
        out_channels,
        use_cross_attn,
        attention_head_dim,
    }
}

fn unet(
    blocks: Vec<unet_2d::BlockConfig>,
    cross_attention_dim: usize,
    use_linear_projection: bool,
) -> unet_2d::UNet2DConditionModelConfig {
    unet_2d::UNet2DConditionModelConfig {
        blocks,
        center_input_sample: false,
        cross_attention_dim,
        downsample_padding: 1,
        flip_sin_to_cos: true,
        freq_shift: 0.,
        layers_per_block: 2,
        mid_block_scale_factor: 1.,
        norm_eps: 1e-5,
        norm_num_groups: 32,
        sliced_attention_size: None,
        use_linear_projection,
    }
}

fn sd_vae() -> vae::AutoEncoderKLConfig {
    vae::AutoEncoderKLConfig {
        block_out_channels: vec![128, 256, 512, 512],
        layers_per_block: 2,
        latent_channels: 4,
        norm_num_groups: 32,
        use_quant_conv: true,
        use_post_quant_conv: true,
    }
}

pub(crate) fn spec(preset: Preset) -> Spec {
    let sd2_unet = || {
        unet(
            vec![
                block(320, Some(1), 5),
                block(640, Some(1), 10),
                block(1280, Some(1), 20),
                block(1280, None, 20),
            ],
            1024,
            true,
        )
    };
    let sdxl_unet = || {
        unet(
            vec![
                block(320, None, 5),
                block(640, Some(2), 10),
                block(1280, Some(10), 20),
            ],
            2048,
            true,
        )
    };
    match preset {
        Preset::Sd15 => Spec {
            name: preset.name().into(),
            unet: unet(
                vec![
                    block(320, Some(1), 8),
                    block(640, Some(1), 8),
                    block(1280, Some(1), 8),
                    block(1280, None, 8),
                ],
                768,
                false,
            ),
            added: None,
            vae: sd_vae(),
            clip: Some(TextConfig::clip_l()),
            clip2: None,
            schedule: ScheduleConfig::stable_diffusion(None, Prediction::Epsilon),
            vae_scale: 0.18215,
            vae_upcast: false,
            attention_upcast: false,
            default_steps: 20,
            default_guidance: 7.5,
            native_size: preset.native_size(),
            taesd_file: "taesd_decoder.safetensors",
            repo: "stable-diffusion-v1-5/stable-diffusion-v1-5",
        },
        Preset::Sd21 => Spec {
            name: preset.name().into(),
            unet: sd2_unet(),
            added: None,
            vae: sd_vae(),
            clip: Some(TextConfig::open_clip_h()),
            clip2: None,
            schedule: ScheduleConfig::stable_diffusion(None, Prediction::VPrediction),
            vae_scale: 0.18215,
            vae_upcast: false,
            attention_upcast: true,
            default_steps: 20,
            default_guidance: 7.5,
            native_size: preset.native_size(),
            taesd_file: "taesd_decoder.safetensors",
            repo: "stabilityai/stable-diffusion-2-1",
        },
        Preset::SdTurbo => Spec {
            name: preset.name().into(),
            unet: sd2_unet(),
            added: None,
            vae: sd_vae(),
            clip: Some(TextConfig::open_clip_h()),
            clip2: None,
            schedule: ScheduleConfig::stable_diffusion(
                Some(Spacing::Trailing),
                Prediction::Epsilon,
            ),
            vae_scale: 0.18215,
            vae_upcast: false,
            attention_upcast: true,
            default_steps: 2,
            default_guidance: 0.0,
            native_size: preset.native_size(),
            taesd_file: "taesd_decoder.safetensors",
            repo: "stabilityai/sd-turbo",
        },
        Preset::SdxlTurbo => Spec {
            name: preset.name().into(),
            unet: sdxl_unet(),
            // unet/config.json: addition_time_embed_dim 256,
            // projection_class_embeddings_input_dim 2816 (bigG's 1280 + 6 x 256).
            added: Some(AddedConfig {
                time_embed_dim: 256,
                input_dim: 2816,
            }),
            vae: sd_vae(),
            clip: Some(TextConfig::clip_l().penultimate()),
            clip2: Some(TextConfig::open_clip_big_g()),
            schedule: ScheduleConfig::stable_diffusion(
                Some(Spacing::Trailing),
                Prediction::Epsilon,
            ),
            vae_scale: 0.13025,
            vae_upcast: true,
            attention_upcast: false,
            default_steps: 2,
            default_guidance: 0.0,
            native_size: preset.native_size(),
            taesd_file: "taesdxl_decoder.safetensors",
            repo: "stabilityai/sdxl-turbo",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::text_encoder::{Activation, TextOutput};
    use super::*;

    /// What each pipeline hands the UNet: sd-1.x/2.x the last, normalized hidden state of their
    /// one encoder; SDXL the penultimate layer of both (StableDiffusionXLPipeline).
    #[test]
    fn each_preset_takes_the_text_output_its_diffusers_pipeline_takes() {
        for preset in [Preset::Sd15, Preset::Sd21, Preset::SdTurbo] {
            let spec = spec(preset);
            let clip = spec.clip.expect("one text encoder");
            assert_eq!(clip.output, TextOutput::Last, "{}", spec.name);
            assert!(spec.clip2.is_none(), "{}", spec.name);
        }
        let sdxl = spec(Preset::SdxlTurbo);
        for clip in [&sdxl.clip, &sdxl.clip2] {
            assert_eq!(
                clip.as_ref().expect("two encoders").output,
                TextOutput::Penultimate
            );
        }
        // SDXL's UNet takes both encoders' hidden states side by side, and add_embedding the
        // second's projection beside six time ids.
        let clip = sdxl.clip.expect("first encoder");
        let clip2 = sdxl.clip2.expect("second encoder");
        assert_eq!(
            sdxl.unet.cross_attention_dim,
            clip.hidden_size + clip2.hidden_size
        );
        let added = sdxl.added.expect("SDXL's added conditioning");
        assert_eq!(
            added.input_dim,
            clip2.projection.expect("bigG's projection") + 6 * added.time_embed_dim
        );
        assert_eq!(
            clip.projection, None,
            "only the last encoder's pooled output is used"
        );
        assert!(sdxl.vae_upcast, "SDXL's VAE decodes in f32");
        for preset in [Preset::Sd15, Preset::Sd21, Preset::SdTurbo] {
            let spec = spec(preset);
            assert!(spec.added.is_none() && !spec.vae_upcast, "{}", spec.name);
        }
        assert_eq!(
            spec(Preset::Sd15).clip.map(|c| c.activation),
            Some(Activation::QuickGelu)
        );
        assert_eq!(
            spec(Preset::SdTurbo)
                .clip
                .map(|c| (c.activation, c.pad_token)),
            Some((Activation::Gelu, "!".to_string()))
        );
    }
}
