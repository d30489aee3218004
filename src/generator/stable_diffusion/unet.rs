//! The UNet (diffusers' `UNet2DConditionModel`), with SDXL's added conditioning:
//! candle-transformers' blocks, assembled as its `UNet2DConditionModel` assembles them, plus
//! `add_time_proj` and `add_embedding` where the preset has them.
//!
//! Why not candle-transformers' `UNet2DConditionModel`: 0.11.1's has no added conditioning, so
//! SDXL models (sdxl-turbo) ran without the pooled text embedding and the size/crop ids that
//! diffusers adds to the time embedding, and their pictures were not diffusers'. The rest is the
//! same arithmetic as upstream's (its fields are private, so the assembly is repeated here), and
//! tests/reference.rs holds every preset's whole loop to diffusers' pipelines.
//!
//! Inputs: latents [n, c, h, w], the timestep, text embeddings [n, tokens, dim] and, for SDXL,
//! `Added` (pooled text embedding [n, pooled] and time ids [n, 6]). Output: the prediction
//! [n, c, h, w]. Weights: the model repo's `unet/diffusion_pytorch_model.safetensors`. Runs on
//! the keyframe thread.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{conv2d, group_norm, Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModelConfig;
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    CrossAttnDownBlock2D, CrossAttnDownBlock2DConfig, CrossAttnUpBlock2D, CrossAttnUpBlock2DConfig,
    DownBlock2D, DownBlock2DConfig, UNetMidBlock2DCrossAttn, UNetMidBlock2DCrossAttnConfig,
    UpBlock2D, UpBlock2DConfig,
};

/// SDXL's `addition_embed_type = "text_time"` (unet/config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddedConfig {
    /// `addition_time_embed_dim`: the sinusoidal width of each of the six time ids.
    pub time_embed_dim: usize,
    /// `projection_class_embeddings_input_dim`: pooled text width + 6 x `time_embed_dim`.
    pub input_dim: usize,
}

/// What SDXL's pipelines pass as `added_cond_kwargs`, one row per batch entry.
#[derive(Debug, Clone)]
pub(crate) struct Added {
    /// `text_embeds`: the second text encoder's pooled, projected output [n, pooled].
    pub text_embeds: Tensor,
    /// `time_ids`: original size (h, w), crop top-left (y, x), target size (h, w) [n, 6].
    pub time_ids: Tensor,
}

enum Down {
    Basic(DownBlock2D),
    CrossAttn(CrossAttnDownBlock2D),
}

enum Up {
    Basic(UpBlock2D),
    CrossAttn(CrossAttnUpBlock2D),
}

impl Up {
    fn resnets(&self) -> usize {
        match self {
            Up::Basic(block) => block.resnets.len(),
            Up::CrossAttn(block) => block.upblock.resnets.len(),
        }
    }
}

pub(crate) struct UNet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// SDXL: `add_time_proj` and `add_embedding`.
    added: Option<(Timesteps, TimestepEmbedding)>,
    down_blocks: Vec<Down>,
    mid_block: UNetMidBlock2DCrossAttn,
    up_blocks: Vec<Up>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    upsamplers: usize,
    center_input_sample: bool,
}

impl UNet {
    /// Builds the UNet from `vb`, the root of the UNet's file.
    pub(crate) fn new(
        vb: VarBuilder,
        channels: usize,
        config: &UNet2DConditionModelConfig,
        added: Option<AddedConfig>,
    ) -> Result<Self> {
        let blocks = &config.blocks;
        let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
            candle_core::bail!("a UNet needs at least one block");
        };
        let time_dim = first.out_channels * 4;
        let padded = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let added = match added {
            Some(added) => Some((
                Timesteps::new(
                    added.time_embed_dim,
                    config.flip_sin_to_cos,
                    config.freq_shift,
                ),
                TimestepEmbedding::new(vb.pp("add_embedding"), added.input_dim, time_dim)?,
            )),
            None => None,
        };
        let mid = UNetMidBlock2DCrossAttnConfig {
            resnet_eps: config.norm_eps,
            output_scale_factor: config.mid_block_scale_factor,
            cross_attn_dim: config.cross_attention_dim,
            attn_num_head_channels: last.attention_head_dim,
            resnet_groups: Some(config.norm_num_groups),
            use_linear_projection: config.use_linear_projection,
            transformer_layers_per_block: last.use_cross_attn.unwrap_or(1),
            ..Default::default()
        };
        Ok(Self {
            conv_in: conv2d(channels, first.out_channels, 3, padded, vb.pp("conv_in"))?,
            time_proj: Timesteps::new(
                first.out_channels,
                config.flip_sin_to_cos,
                config.freq_shift,
            ),
            time_embedding: TimestepEmbedding::new(
                vb.pp("time_embedding"),
                first.out_channels,
                time_dim,
            )?,
            added,
            down_blocks: down_blocks(vb.pp("down_blocks"), config, time_dim)?,
            mid_block: UNetMidBlock2DCrossAttn::new(
                vb.pp("mid_block"),
                last.out_channels,
                Some(time_dim),
                false,
                mid,
            )?,
            up_blocks: up_blocks(vb.pp("up_blocks"), config, time_dim)?,
            norm_out: group_norm(
                config.norm_num_groups,
                first.out_channels,
                config.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: conv2d(first.out_channels, channels, 3, padded, vb.pp("conv_out"))?,
            upsamplers: blocks.len() - 1,
            center_input_sample: config.center_input_sample,
        })
    }

    /// Whether the model wants `Added` (an SDXL UNet).
    pub(crate) fn takes_added(&self) -> bool {
        self.added.is_some()
    }

    /// The time embedding, plus SDXL's added embedding: an SDXL UNet without `added` (or the
    /// reverse) is an error, not a silently different picture.
    fn embedding(
        &self,
        batch: usize,
        timestep: f64,
        like: &Tensor,
        added: Option<&Added>,
    ) -> Result<Tensor> {
        // The sinusoids in f32, as diffusers computes them: in f16 a timestep near 1000 times a
        // frequency near 1 is off by up to half a radian.
        let dtype = like.dtype();
        let steps = Tensor::full(timestep as f32, batch, like.device())?;
        let emb = self
            .time_embedding
            .forward(&self.time_proj.forward(&steps)?.to_dtype(dtype)?)?;
        match (&self.added, added) {
            (None, None) => Ok(emb),
            (Some((time_proj, embedding)), Some(added)) => {
                let time_ids = added.time_ids.to_dtype(DType::F32)?;
                let time = time_proj
                    .forward(&time_ids.flatten_all()?)?
                    .reshape((batch, ()))?
                    .to_dtype(dtype)?;
                let text = added.text_embeds.to_dtype(dtype)?;
                emb + embedding.forward(&Tensor::cat(&[&text, &time], 1)?)?
            }
            (None, Some(_)) => candle_core::bail!("this UNet has no added conditioning"),
            (Some(_), None) => {
                candle_core::bail!(
                    "this UNet needs SDXL's added conditioning (pooled text, time ids)"
                )
            }
        }
    }

    /// diffusers' `UNet2DConditionModel.forward` for `sample`, `timestep`,
    /// `encoder_hidden_states` and `added_cond_kwargs`.
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        text: &Tensor,
        added: Option<&Added>,
    ) -> Result<Tensor> {
        let (batch, _, height, width) = xs.dims4()?;
        let overall = 1usize << self.upsamplers;
        let forward_upsample_size = height % overall != 0 || width % overall != 0;
        let xs = if self.center_input_sample {
            ((xs * 2.0)? - 1.0)?
        } else {
            xs.clone()
        };
        let emb = self.embedding(batch, timestep, &xs, added)?;
        let xs = self.conv_in.forward(&xs)?;
        let mut residuals = vec![xs.clone()];
        let mut xs = xs;
        for block in &self.down_blocks {
            let (out, block_residuals) = match block {
                Down::Basic(b) => b.forward(&xs, Some(&emb))?,
                Down::CrossAttn(b) => b.forward(&xs, Some(&emb), Some(text))?,
            };
            residuals.extend(block_residuals);
            xs = out;
        }
        let mut xs = self.mid_block.forward(&xs, Some(&emb), Some(text))?;
        let mut upsample_size = None;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let skip = residuals.split_off(residuals.len() - block.resnets());
            if i < self.upsamplers && forward_upsample_size {
                if let Some(next) = residuals.last() {
                    let (_, _, h, w) = next.dims4()?;
                    upsample_size = Some((h, w));
                }
            }
            xs = match block {
                Up::Basic(b) => b.forward(&xs, &skip, Some(&emb), upsample_size)?,
                Up::CrossAttn(b) => b.forward(&xs, &skip, Some(&emb), upsample_size, Some(text))?,
            };
        }
        let xs = candle_nn::ops::silu(&self.norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}

/// The down blocks, as upstream's `UNet2DConditionModel::new` makes them.
fn down_blocks(
    vb: VarBuilder,
    config: &UNet2DConditionModelConfig,
    time_dim: usize,
) -> Result<Vec<Down>> {
    let blocks = &config.blocks;
    (0..blocks.len())
        .map(|i| {
            let block = blocks[i];
            let in_channels = blocks[i.saturating_sub(1)].out_channels;
            let basic = DownBlock2DConfig {
                num_layers: config.layers_per_block,
                resnet_eps: config.norm_eps,
                resnet_groups: config.norm_num_groups,
                add_downsample: i + 1 < blocks.len(),
                downsample_padding: config.downsample_padding,
                ..Default::default()
            };
            let vb = vb.pp(i);
            Ok(match block.use_cross_attn {
                Some(transformer_layers_per_block) => Down::CrossAttn(CrossAttnDownBlock2D::new(
                    vb,
                    in_channels,
                    block.out_channels,
                    Some(time_dim),
                    false,
                    CrossAttnDownBlock2DConfig {
                        downblock: basic,
                        attn_num_head_channels: block.attention_head_dim,
                        cross_attention_dim: config.cross_attention_dim,
                        sliced_attention_size: sliced(config, block.attention_head_dim),
                        use_linear_projection: config.use_linear_projection,
                        transformer_layers_per_block,
                    },
                )?),
                None => Down::Basic(DownBlock2D::new(
                    vb,
                    in_channels,
                    block.out_channels,
                    Some(time_dim),
                    basic,
                )?),
            })
        })
        .collect()
}

/// The up blocks, mirror images of the down blocks.
fn up_blocks(
    vb: VarBuilder,
    config: &UNet2DConditionModelConfig,
    time_dim: usize,
) -> Result<Vec<Up>> {
    let blocks = &config.blocks;
    let n = blocks.len();
    (0..n)
        .map(|i| {
            let block = blocks[n - 1 - i];
            let previous = if i > 0 {
                blocks[n - i].out_channels
            } else {
                blocks[n - 1].out_channels
            };
            let in_channels = blocks[if i == n - 1 { 0 } else { n - i - 2 }].out_channels;
            let basic = UpBlock2DConfig {
                num_layers: config.layers_per_block + 1,
                resnet_eps: config.norm_eps,
                resnet_groups: config.norm_num_groups,
                add_upsample: i + 1 < n,
                ..Default::default()
            };
            let vb = vb.pp(i);
            Ok(match block.use_cross_attn {
                Some(transformer_layers_per_block) => Up::CrossAttn(CrossAttnUpBlock2D::new(
                    vb,
                    in_channels,
                    previous,
                    block.out_channels,
                    Some(time_dim),
                    false,
                    CrossAttnUpBlock2DConfig {
                        upblock: basic,
                        attn_num_head_channels: block.attention_head_dim,
                        cross_attention_dim: config.cross_attention_dim,
                        sliced_attention_size: sliced(config, block.attention_head_dim),
                        use_linear_projection: config.use_linear_projection,
                        transformer_layers_per_block,
                    },
                )?),
                None => Up::Basic(UpBlock2D::new(
                    vb,
                    in_channels,
                    previous,
                    block.out_channels,
                    Some(time_dim),
                    basic,
                )?),
            })
        })
        .collect()
}

/// Upstream's attention slicing: `Some(0)` means half the head dimension.
fn sliced(config: &UNet2DConditionModelConfig, attention_head_dim: usize) -> Option<usize> {
    match config.sliced_attention_size {
        Some(0) => Some(attention_head_dim / 2),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;
    use candle_transformers::models::stable_diffusion::unet_2d::BlockConfig;

    use super::*;

    fn tiny() -> UNet2DConditionModelConfig {
        let block = |use_cross_attn| BlockConfig {
            out_channels: 32,
            use_cross_attn,
            attention_head_dim: 2,
        };
        UNet2DConditionModelConfig {
            blocks: vec![block(None), block(Some(1))],
            cross_attention_dim: 8,
            layers_per_block: 1,
            norm_num_groups: 8,
            use_linear_projection: true,
            ..Default::default()
        }
    }

    /// On CUDA the model runs in f16; the timestep's and the time ids' sinusoids must still come
    /// out as diffusers' f32 ones (a timestep near 1000 in f16 is off by up to half a radian).
    #[test]
    fn an_f16_model_computes_its_sinusoids_in_f32_as_diffusers_does() {
        let cpu = Device::Cpu;
        let added = Some(AddedConfig {
            time_embed_dim: 8,
            input_dim: 4 + 6 * 8,
        });
        let map = candle_nn::VarMap::new();
        let full = UNet::new(
            VarBuilder::from_varmap(&map, DType::F32, &cpu),
            4,
            &tiny(),
            added,
        )
        .expect("f32 UNet");
        let weights: HashMap<String, Tensor> = map
            .data()
            .lock()
            .expect("weights")
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect();
        let half = UNet::new(
            VarBuilder::from_tensors(weights, DType::F16, &cpu),
            4,
            &tiny(),
            added,
        )
        .expect("f16 UNet");
        let conditioning = Added {
            text_embeds: Tensor::randn(0f32, 1.0, (2, 4), &cpu).expect("pooled"),
            time_ids: Tensor::new(&[[1024f32, 768., 0., 0., 1024., 768.]; 2], &cpu).expect("ids"),
        };
        let sample = |dtype| Tensor::zeros((2, 4, 4, 4), dtype, &cpu).expect("sample");
        for timestep in [999.0, 757.0, 1.0] {
            let expected = full
                .embedding(2, timestep, &sample(DType::F32), Some(&conditioning))
                .and_then(|e| e.flatten_all()?.to_vec1::<f32>())
                .expect("f32 embedding");
            let ours = half
                .embedding(2, timestep, &sample(DType::F16), Some(&conditioning))
                .and_then(|e| e.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
                .expect("f16 embedding");
            let scale = expected.iter().fold(1f32, |m, v| m.max(v.abs()));
            let error = expected
                .iter()
                .zip(&ours)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                error <= 1e-2 * scale,
                "timestep {timestep}: f16 embedding off by {error} (largest value {scale})"
            );
        }
    }
}
