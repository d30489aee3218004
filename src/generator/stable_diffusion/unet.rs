//! The UNet (diffusers' `UNet2DConditionModel`), with SDXL's added conditioning: our blocks
//! (unet_blocks.rs) assembled as diffusers assembles them, candle-transformers' time embeddings,
//! plus `add_time_proj` and `add_embedding` where the preset has them.
//!
//! Why not candle-transformers' `UNet2DConditionModel`: 0.11.1's has no added conditioning, so
//! SDXL models (sdxl-turbo) ran without the pooled text embedding and the size/crop ids that
//! diffusers adds to the time embedding, and their pictures were not diffusers'; its blocks are
//! not ours for the reasons unet_blocks.rs gives. tests/reference.rs holds every preset's whole
//! loop to diffusers' pipelines. Attention slicing (`sliced_attention_size`, which no preset
//! sets) is refused: it only saves memory.
//!
//! Inputs: latents [n, c, h, w], the timestep, text embeddings [n, tokens, dim] and, for SDXL,
//! `Added` (pooled text embedding [n, pooled] and time ids [n, 6]). Output: the prediction
//! [n, c, h, w]. Weights: the model repo's `unet/diffusion_pytorch_model.safetensors`. Runs on
//! the keyframe thread.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{conv2d, Conv2d, VarBuilder};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};

use super::group_norm::GroupNorm;
use super::unet_blocks::{Attending, DownBlock, MidBlock, Shared, UpBlock};
use super::vae::PADDED;

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

pub(crate) struct UNet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// SDXL: `add_time_proj` and `add_embedding`.
    added: Option<(Timesteps, TimestepEmbedding)>,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    upsamplers: usize,
    center_input_sample: bool,
}

impl UNet {
    /// Builds the UNet from `vb`, the root of the UNet's file; `attention_upcast`: the config's
    /// `upcast_attention` (f32 attention scores whatever the dtype).
    pub(crate) fn new(
        vb: VarBuilder,
        channels: usize,
        config: &UNet2DConditionModelConfig,
        added: Option<AddedConfig>,
        attention_upcast: bool,
    ) -> Result<Self> {
        let blocks = &config.blocks;
        let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
            candle_core::bail!("a UNet needs at least one block");
        };
        let time_dim = first.out_channels * 4;
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
        if config.sliced_attention_size.is_some() {
            candle_core::bail!("attention slicing (sliced_attention_size) is not supported");
        }
        let shared = Shared {
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            time_dim,
            context_dim: config.cross_attention_dim,
            linear_projection: config.use_linear_projection,
            attention_upcast,
        };
        let mid_attending = Attending {
            heads: last.attention_head_dim,
            depth: last.use_cross_attn.unwrap_or(1),
        };
        Ok(Self {
            conv_in: conv2d(channels, first.out_channels, 3, PADDED, vb.pp("conv_in"))?,
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
            down_blocks: down_blocks(vb.pp("down_blocks"), config, shared)?,
            mid_block: MidBlock::new(
                vb.pp("mid_block"),
                shared,
                last.out_channels,
                mid_attending,
                config.mid_block_scale_factor,
            )?,
            up_blocks: up_blocks(vb.pp("up_blocks"), config, shared)?,
            norm_out: GroupNorm::new(
                config.norm_num_groups,
                first.out_channels,
                config.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: conv2d(first.out_channels, channels, 3, PADDED, vb.pp("conv_out"))?,
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
        // Every resnet takes the embedding through SiLU first: once here.
        let time = candle_nn::ops::silu(&self.embedding(batch, timestep, &xs, added)?)?;
        let xs = self.conv_in.forward(&xs)?;
        let mut skips = vec![xs.clone()];
        let mut xs = xs;
        for block in &self.down_blocks {
            let (out, states) = block.forward(&xs, &time, text)?;
            skips.extend(states);
            xs = out;
        }
        let mut xs = self.mid_block.forward(&xs, &time, text)?;
        let mut upsample_size = None;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let taken = skips.split_off(skips.len() - block.skips());
            if i < self.upsamplers && forward_upsample_size {
                if let Some(next) = skips.last() {
                    let (_, _, h, w) = next.dims4()?;
                    upsample_size = Some((h, w));
                }
            }
            xs = block.forward(&xs, &taken, &time, text, upsample_size)?;
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&xs)?)
    }
}

/// The down blocks, as diffusers' `UNet2DConditionModel.__init__` makes them.
fn down_blocks(
    vb: VarBuilder,
    config: &UNet2DConditionModelConfig,
    shared: Shared,
) -> Result<Vec<DownBlock>> {
    let blocks = &config.blocks;
    (0..blocks.len())
        .map(|i| {
            let block = blocks[i];
            let in_channels = blocks[i.saturating_sub(1)].out_channels;
            DownBlock::new(
                vb.pp(i),
                shared,
                (in_channels, block.out_channels),
                config.layers_per_block,
                attending(block),
                (i + 1 < blocks.len()).then_some(config.downsample_padding),
            )
        })
        .collect()
}

/// The up blocks, mirror images of the down blocks.
fn up_blocks(
    vb: VarBuilder,
    config: &UNet2DConditionModelConfig,
    shared: Shared,
) -> Result<Vec<UpBlock>> {
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
            UpBlock::new(
                vb.pp(i),
                shared,
                (in_channels, previous, block.out_channels),
                config.layers_per_block + 1,
                attending(block),
                i + 1 < n,
            )
        })
        .collect()
}

/// A block's transformers, where it has them (`use_cross_attn` holds their depth).
fn attending(block: BlockConfig) -> Option<Attending> {
    block.use_cross_attn.map(|depth| Attending {
        heads: block.attention_head_dim,
        depth,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

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
            false,
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
            false,
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
