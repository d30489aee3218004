//! The full VAE's decoder (diffusers' `AutoencoderKL.decode`), batch-correct, its group norms
//! fused with their SiLU (group_norm.rs): resnets, up blocks and an attention block of our own
//! around candle-nn's convolutions and linear layers (the convolutions' builders are shared with
//! the UNet's blocks, unet_blocks.rs).
//!
//! Why not candle-transformers' `AutoEncoderKL`: in 0.11.1 its mid-block attention hands a
//! transposed [n, pixels, channels] tensor to a `Linear`, and candle-core 0.11.1's CPU matmul folds
//! such a product with the shared weight into one gemm that reads every image after the first from
//! the wrong rows (0.25 to 0.42 max abs error on the golden test's batch of three), so decoding had
//! to go one latent at a time. This is the same decoder with every Linear's input contiguous
//! (attention.rs's batched products take each image's own rows), held to diffusers on a batch of
//! three by tests/reference.rs. Only the decoder is built: dreamframe never encodes (img2img starts
//! from the previous keyframe's latent), so the file's encoder tensors are never read.
//!
//! Input: latents [n, c, h, w] already divided by the preset's scaling factor. Output: pictures
//! [n, 3, 8h, 8w] (for the real layout) in about [-1, 1]. Weights: the model repo's
//! `vae/diffusion_pytorch_model.safetensors`; attention weights under either of diffusers' names
//! (`to_q`... or the older `query`...). Runs on the decoder thread.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, Linear, VarBuilder};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

use super::attention::scaled_dot_product;
use super::group_norm::GroupNorm;

/// The decoder's resnets and norms use this epsilon (diffusers' `Decoder`).
const EPS: f64 = 1e-6;

/// diffusers' `Attention` as the VAE's mid block uses it: one head over all channels, a group
/// norm first, a residual connection after.
struct SelfAttention {
    norm: GroupNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
}

/// A [channels, channels] projection stored as a Linear or (older files) a 1x1 convolution; an
/// error names the Linear's shape, the layout current files have.
fn projection(channels: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = match vb.get((channels, channels), "weight") {
        Ok(weight) => weight,
        Err(linear_error) => match vb.get((channels, channels, 1, 1), "weight") {
            Ok(weight) => weight.reshape((channels, channels))?,
            Err(_) => return Err(linear_error),
        },
    };
    Ok(Linear::new(weight, Some(vb.get(channels, "bias")?)))
}

impl SelfAttention {
    fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        let (q, k, v, out) = if vb.contains_tensor("to_q.weight") {
            ("to_q", "to_k", "to_v", "to_out.0")
        } else {
            ("query", "key", "value", "proj_attn")
        };
        Ok(Self {
            norm: GroupNorm::new(groups, channels, EPS, vb.pp("group_norm"))?,
            query: projection(channels, vb.pp(q))?,
            key: projection(channels, vb.pp(k))?,
            value: projection(channels, vb.pp(v))?,
            out: projection(channels, vb.pp(out))?,
        })
    }

    /// Every tensor the Linears see is contiguous, batch first: each image attends only to its
    /// own pixels. Scores as attention.rs keeps them.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = x.dims4()?;
        let pixels = height * width;
        let tokens = self
            .norm
            .forward(x)?
            .reshape((batch, channels, pixels))?
            .transpose(1, 2)?
            .contiguous()?;
        let query = self.query.forward(&tokens)?;
        let key = self.key.forward(&tokens)?;
        let value = self.value.forward(&tokens)?;
        let scale = (channels as f64).powf(-0.5);
        // diffusers' VAE attention sets no `upcast_attention`: scores in the dtype on the GPU.
        let mixed = scaled_dot_product(&query, &key, &value, scale, false)?;
        let projected = self
            .out
            .forward(&mixed)?
            .transpose(1, 2)?
            .reshape((batch, channels, height, width))?;
        projected + x
    }
}

/// One pixel of padding: what keeps a 3x3 convolution's output the size of its input.
pub(crate) const PADDED: Conv2dConfig = Conv2dConfig {
    padding: 1,
    stride: 1,
    dilation: 1,
    groups: 1,
    cudnn_fwd_algo: None,
};

/// A 3x3 convolution with one pixel of padding (the resnets' and up blocks', the UNet's too).
pub(super) fn conv3x3(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d(in_channels, out_channels, 3, PADDED, vb)
}

/// An up block's `upsamplers.0.conv` (after a nearest-neighbour doubling), where it has one.
pub(super) fn upsampler(channels: usize, vb: &VarBuilder, wanted: bool) -> Result<Option<Conv2d>> {
    if !wanted {
        return Ok(None);
    }
    conv3x3(channels, channels, vb.pp("upsamplers").pp(0).pp("conv")).map(Some)
}

/// A resnet's 1x1 `conv_shortcut` where its width changes (diffusers' `use_in_shortcut`
/// default), none where the input adds as it is.
pub(super) fn shortcut(
    in_channels: usize,
    out_channels: usize,
    vb: &VarBuilder,
) -> Result<Option<Conv2d>> {
    if in_channels == out_channels {
        return Ok(None);
    }
    let conv = vb.pp("conv_shortcut");
    conv2d(in_channels, out_channels, 1, Default::default(), conv).map(Some)
}

/// diffusers' `ResnetBlock2D` as the decoder uses it (no time embedding, output scale 1): norm,
/// SiLU, conv, norm, SiLU, conv, plus the input (through a 1x1 convolution where the width
/// changes).
struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    fn new(vb: VarBuilder, in_channels: usize, out_channels: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(groups, in_channels, EPS, vb.pp("norm1"))?,
            conv1: conv3x3(in_channels, out_channels, vb.pp("conv1"))?,
            norm2: GroupNorm::new(groups, out_channels, EPS, vb.pp("norm2"))?,
            conv2: conv3x3(out_channels, out_channels, vb.pp("conv2"))?,
            shortcut: shortcut(in_channels, out_channels, &vb)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.shortcut {
            Some(conv) => conv.forward(x)? + h,
            None => x + h,
        }
    }
}

/// diffusers' `UpDecoderBlock2D`: resnets, then (but for the last block) a nearest-neighbour
/// doubling and a 3x3 convolution.
struct UpBlock {
    resnets: Vec<Resnet>,
    upsample: Option<Conv2d>,
}

impl UpBlock {
    fn new(
        vb: VarBuilder,
        (in_channels, out_channels): (usize, usize),
        (layers, groups): (usize, usize),
        upsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let input = if i == 0 { in_channels } else { out_channels };
                Resnet::new(vb.pp("resnets").pp(i), input, out_channels, groups)
            })
            .collect::<Result<Vec<_>>>()?;
        let upsample = upsampler(out_channels, &vb, upsample)?;
        Ok(Self { resnets, upsample })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for resnet in &self.resnets {
            x = resnet.forward(&x)?;
        }
        match &self.upsample {
            Some(conv) => {
                let (_, _, height, width) = x.dims4()?;
                conv.forward(&x.upsample_nearest2d(2 * height, 2 * width)?)
            }
            None => Ok(x),
        }
    }
}

/// diffusers' `Decoder` (+ `post_quant_conv`): conv_in, a mid block (resnet, attention, resnet),
/// up blocks, norm, SiLU, conv_out.
pub(crate) struct VaeDecoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_resnets: [Resnet; 2],
    mid_attention: SelfAttention,
    up_blocks: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Picture pixels per latent pixel, a side.
    factor: usize,
    /// The widest activations' channels (the last up block's, at full resolution).
    full_resolution_channels: usize,
}

/// Activations of the last up block held at once at full resolution (a resnet's input, its
/// norms and convolutions, the residual sum), rounded up: what one picture's decode peaks at.
const LIVE_FULL_RESOLUTION_TENSORS: usize = 6;

impl VaeDecoder {
    /// Builds the decoder from `vb`, the root of the VAE's file, for `config` (the preset's).
    pub(crate) fn new(vb: VarBuilder, config: &AutoEncoderKLConfig) -> Result<Self> {
        let channels = &config.block_out_channels;
        let (Some(&first), Some(&last)) = (channels.first(), channels.last()) else {
            candle_core::bail!("a VAE needs at least one block");
        };
        let groups = config.norm_num_groups;
        let latent = config.latent_channels;
        let post_quant_conv = if config.use_post_quant_conv {
            Some(conv2d(
                latent,
                latent,
                1,
                Default::default(),
                vb.pp("post_quant_conv"),
            )?)
        } else {
            None
        };
        let vb = vb.pp("decoder");
        let mid = vb.pp("mid_block");
        let resnet = |i: usize| Resnet::new(mid.pp("resnets").pp(i), last, last, groups);
        // In diffusers' order, so a file of another size fails on conv_in first.
        let conv_in = conv2d(latent, last, 3, PADDED, vb.pp("conv_in"))?;
        let mid_resnets = [resnet(0)?, resnet(1)?];
        let mid_attention = SelfAttention::new(mid.pp("attentions").pp(0), last, groups)?;
        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let up_blocks = reversed
            .iter()
            .enumerate()
            .map(|(i, &out_channels)| {
                let in_channels = reversed[i.saturating_sub(1)];
                UpBlock::new(
                    vb.pp("up_blocks").pp(i),
                    (in_channels, out_channels),
                    (config.layers_per_block + 1, groups),
                    i + 1 < reversed.len(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            post_quant_conv,
            conv_in,
            mid_resnets,
            mid_attention,
            up_blocks,
            norm_out: GroupNorm::new(groups, first, EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(first, 3, 3, PADDED, vb.pp("conv_out"))?,
            factor: 1 << (channels.len() - 1),
            full_resolution_channels: first,
        })
    }

    /// About the most memory one picture's decode holds at once, for latents of (h, w) in
    /// `dtype`: ~0.8 GB for a 512x512 picture in f32 (sd-1.5/2.x/turbo), ~3.2 GB at 1024x1024.
    pub(crate) fn peak_bytes_per_picture(
        &self,
        (height, width): (usize, usize),
        dtype: DType,
    ) -> usize {
        let pixels = height * self.factor * width * self.factor;
        pixels
            * self.full_resolution_channels
            * dtype.size_in_bytes()
            * LIVE_FULL_RESOLUTION_TENSORS
    }

    /// Scaled latents [n, c, h, w] -> pictures [n, 3, H, W] in about [-1, 1].
    pub(crate) fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut x = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents)?,
            None => latents.clone(),
        };
        x = self.conv_in.forward(&x)?;
        x = self.mid_resnets[0].forward(&x)?;
        x = self.mid_attention.forward(&x)?;
        x = self.mid_resnets[1].forward(&x)?;
        for block in &self.up_blocks {
            x = block.forward(&x)?;
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&x)?)
    }
}
