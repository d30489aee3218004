//! The UNet's blocks, as diffusers' `UNet2DConditionModel` chains them: resnets with a time
//! embedding, transformers (`Transformer2DModel` of `BasicTransformerBlock`s), and the down, mid
//! and up blocks made of them.
//!
//! Why our own and not candle-transformers': so that every group norm is the fused op
//! (group_norm.rs; with its SiLU where a resnet follows the norm with one), attention keeps an f16
//! model's scores in f16 on the GPU unless the config's `upcast_attention` says f32 (attention.rs),
//! and a resnet adds its first convolution's bias and its time embedding in one pass. The
//! arithmetic is diffusers', held to its pipelines by tests/reference.rs. Where candle-transformers
//! 0.11.1 differs from diffusers, this follows diffusers: every norm takes the config's
//! `norm_num_groups` (upstream's plain resnets always took 32), GEGLU's GELU is the exact (erf) one
//! of PyTorch's `F.gelu`, not the tanh approximation, and a linear `proj_out` maps the inner width
//! back to the block's.
//!
//! Inputs: activations [n, c, h, w], the time embedding after its SiLU [n, time_dim], the text
//! embeddings [n, tokens, context_dim]. Runs on the keyframe thread. Errors name the missing
//! tensor or wrong shape (candle's VarBuilder).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{
    conv2d, layer_norm, linear, linear_no_bias, Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder,
};

use super::attention::scaled_dot_product;
use super::group_norm::GroupNorm;
use super::vae::{conv3x3, shortcut, upsampler, PADDED};

/// diffusers' `Transformer2DModel` norm epsilon and `BasicTransformerBlock` LayerNorm epsilon.
const TRANSFORMER_NORM_EPS: f64 = 1e-6;
const LAYER_NORM_EPS: f64 = 1e-5;

/// What every block of one UNet shares.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shared {
    /// `norm_num_groups`.
    pub groups: usize,
    /// `norm_eps` (the resnets').
    pub eps: f64,
    /// The time embedding's width.
    pub time_dim: usize,
    /// `cross_attention_dim`: the text embeddings' width.
    pub context_dim: usize,
    /// `use_linear_projection`: transformers project in and out with Linear, not 1x1 convs.
    pub linear_projection: bool,
    /// `upcast_attention`: attention scores in f32 whatever the dtype.
    pub attention_upcast: bool,
}

/// A block's transformers: diffusers' `attention_head_dim`, which (for the UNets of SD 1.x, 2.x
/// and XL) counts heads, and `transformer_layers_per_block`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attending {
    pub heads: usize,
    pub depth: usize,
}

/// diffusers' `ResnetBlock2D` with a time embedding: norm, SiLU, conv, + time projection, norm,
/// SiLU, conv, plus the input (through a 1x1 conv where the width changes), over a scale.
struct Resnet {
    norm1: GroupNorm,
    /// conv1 without its bias: that is added with the time projection, in one pass.
    conv1: Conv2d,
    conv1_bias: Tensor,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    output_scale: f64,
}

impl Resnet {
    fn new(
        vb: VarBuilder,
        shared: Shared,
        (in_channels, out_channels): (usize, usize),
        output_scale: f64,
    ) -> Result<Self> {
        let conv1 = vb.pp("conv1");
        let conv1_weight = conv1.get((out_channels, in_channels, 3, 3), "weight")?;
        Ok(Self {
            norm1: GroupNorm::new(shared.groups, in_channels, shared.eps, vb.pp("norm1"))?,
            conv1: Conv2d::new(conv1_weight, None, PADDED),
            conv1_bias: conv1.get(out_channels, "bias")?,
            time_emb_proj: linear(shared.time_dim, out_channels, vb.pp("time_emb_proj"))?,
            norm2: GroupNorm::new(shared.groups, out_channels, shared.eps, vb.pp("norm2"))?,
            conv2: conv3x3(out_channels, out_channels, vb.pp("conv2"))?,
            shortcut: shortcut(in_channels, out_channels, &vb)?,
            output_scale,
        })
    }

    fn forward(&self, x: &Tensor, time: &Tensor) -> Result<Tensor> {
        let bias = self
            .time_emb_proj
            .forward(time)?
            .broadcast_add(&self.conv1_bias)?
            .unsqueeze(D::Minus1)?
            .unsqueeze(D::Minus1)?;
        let h = self
            .conv1
            .forward(&self.norm1.forward_silu(x)?)?
            .broadcast_add(&bias)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let out = match &self.shortcut {
            Some(conv) => (conv.forward(x)? + h)?,
            None => (x + h)?,
        };
        if self.output_scale == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale
        }
    }
}

/// diffusers' `Attention` as a `BasicTransformerBlock` uses it: no bias on q, k, v; heads folded
/// into the batch for the product.
struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
    upcast: bool,
}

impl Attention {
    fn new(
        vb: VarBuilder,
        shared: Shared,
        dim: usize,
        context_dim: usize,
        heads: usize,
    ) -> Result<Self> {
        let head_dim = dim / heads;
        let inner = head_dim * heads;
        Ok(Self {
            to_q: linear_no_bias(dim, inner, vb.pp("to_q"))?,
            to_k: linear_no_bias(context_dim, inner, vb.pp("to_k"))?,
            to_v: linear_no_bias(context_dim, inner, vb.pp("to_v"))?,
            to_out: linear(inner, dim, vb.pp("to_out.0"))?,
            heads,
            scale: (head_dim as f64).powf(-0.5),
            upcast: shared.attention_upcast,
        })
    }

    /// [n, tokens, heads x d] -> [n x heads, tokens, d], contiguous.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (n, tokens, width) = x.dims3()?;
        let d = width / self.heads;
        x.reshape((n, tokens, self.heads, d))?
            .transpose(1, 2)?
            .reshape((n * self.heads, tokens, d))
    }

    /// [n x heads, tokens, d] -> [n, tokens, heads x d], contiguous.
    fn merge_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (nh, tokens, d) = x.dims3()?;
        x.reshape((nh / self.heads, self.heads, tokens, d))?
            .transpose(1, 2)?
            .reshape((nh / self.heads, tokens, self.heads * d))
    }

    /// Self-attention over `x` [n, tokens, dim], or attention to `context`.
    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        // Contiguous for the Linears: candle-core 0.11.1's CPU matmul misreads some strided
        // [n, tokens, dim] inputs beside a shared weight (vae.rs). Free where they already are.
        let x = x.contiguous()?;
        let context = context.map_or(Ok(x.clone()), Tensor::contiguous)?;
        let q = self.split_heads(&self.to_q.forward(&x)?)?;
        let k = self.split_heads(&self.to_k.forward(&context)?)?;
        let v = self.split_heads(&self.to_v.forward(&context)?)?;
        let mixed = scaled_dot_product(&q, &k, &v, self.scale, self.upcast)?;
        self.to_out.forward(&self.merge_heads(&mixed)?)
    }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention to the text, GEGLU
/// feed-forward, each after a LayerNorm and added to its input.
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    /// GEGLU's projection to twice the feed-forward width: values, then gates.
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, shared: Shared, dim: usize, heads: usize) -> Result<Self> {
        let inner = 4 * dim;
        let ff = vb.pp("ff").pp("net");
        Ok(Self {
            norm1: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), shared, dim, dim, heads)?,
            norm2: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), shared, dim, shared.context_dim, heads)?,
            norm3: layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm3"))?,
            ff_in: linear(dim, 2 * inner, ff.pp("0").pp("proj"))?,
            ff_out: linear(inner, dim, ff.pp("2"))?,
        })
    }

    fn forward(&self, x: &Tensor, text: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self.attn2.forward(&self.norm2.forward(&x)?, Some(text))? + x)?;
        let projected = self.ff_in.forward(&self.norm3.forward(&x)?)?;
        let halves = projected.chunk(2, D::Minus1)?;
        let gated = (&halves[0] * halves[1].gelu_erf()?)?;
        self.ff_out.forward(&gated)? + x
    }
}

/// A transformer's way in and out: a 1x1 convolution on [n, c, h, w] or a Linear on tokens.
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn new(vb: VarBuilder, linear_projection: bool, from: usize, to: usize) -> Result<Self> {
        Ok(if linear_projection {
            Projection::Linear(linear(from, to, vb)?)
        } else {
            Projection::Conv(conv2d(from, to, 1, Default::default(), vb)?)
        })
    }
}

/// [n, c, h, w] -> [n, h x w, c].
fn to_tokens(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.permute((0, 2, 3, 1))?.reshape((n, h * w, c))
}

/// [n, h x w, c] -> [n, c, h, w] (a view).
fn from_tokens(x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    let (n, _, c) = x.dims3()?;
    x.reshape((n, h, w, c))?.permute((0, 3, 1, 2))
}

/// diffusers' `Transformer2DModel`: group norm, projection in, transformer blocks over the
/// pixels as tokens, projection out, plus the input.
struct Transformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

impl Transformer {
    fn new(vb: VarBuilder, shared: Shared, channels: usize, attending: Attending) -> Result<Self> {
        let inner = channels / attending.heads * attending.heads;
        let blocks = (0..attending.depth)
            .map(|i| {
                TransformerBlock::new(
                    vb.pp("transformer_blocks").pp(i),
                    shared,
                    inner,
                    attending.heads,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let linear = shared.linear_projection;
        Ok(Self {
            norm: GroupNorm::new(shared.groups, channels, TRANSFORMER_NORM_EPS, vb.pp("norm"))?,
            proj_in: Projection::new(vb.pp("proj_in"), linear, channels, inner)?,
            blocks,
            proj_out: Projection::new(vb.pp("proj_out"), linear, inner, channels)?,
        })
    }

    fn forward(&self, x: &Tensor, text: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(layer) => layer.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, text)?;
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&from_tokens(&tokens, (h, w))?)?,
            Projection::Linear(layer) => from_tokens(&layer.forward(&tokens)?, (h, w))?,
        };
        out + x
    }
}

/// A block's transformers, one per resnet (`attentions.i`), where it has them.
fn transformers(
    vb: &VarBuilder,
    shared: Shared,
    channels: usize,
    layers: usize,
    attending: Option<Attending>,
) -> Result<Vec<Transformer>> {
    let Some(attending) = attending else {
        return Ok(Vec::new());
    };
    (0..layers)
        .map(|i| Transformer::new(vb.pp("attentions").pp(i), shared, channels, attending))
        .collect()
}

/// diffusers' `DownBlock2D` (no transformers) or `CrossAttnDownBlock2D`: resnets (each followed
/// by a transformer in the latter), then a stride-2 convolution but in the last block.
pub(super) struct DownBlock {
    resnets: Vec<Resnet>,
    transformers: Vec<Transformer>,
    /// The downsampling convolution and its padding (0: diffusers pads right and bottom by one).
    downsample: Option<(Conv2d, usize)>,
}

impl DownBlock {
    /// `downsample`: the padding of the downsampling convolution, where there is one.
    pub(super) fn new(
        vb: VarBuilder,
        shared: Shared,
        (in_channels, out_channels): (usize, usize),
        layers: usize,
        attending: Option<Attending>,
        downsample: Option<usize>,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let input = if i == 0 { in_channels } else { out_channels };
                Resnet::new(vb.pp("resnets").pp(i), shared, (input, out_channels), 1.0)
            })
            .collect::<Result<Vec<_>>>()?;
        let transformers = transformers(&vb, shared, out_channels, layers, attending)?;
        let downsample = match downsample {
            Some(padding) => {
                let config = Conv2dConfig {
                    stride: 2,
                    padding,
                    ..Default::default()
                };
                let conv = vb.pp("downsamplers").pp(0).pp("conv");
                Some((
                    conv2d(out_channels, out_channels, 3, config, conv)?,
                    padding,
                ))
            }
            None => None,
        };
        Ok(Self {
            resnets,
            transformers,
            downsample,
        })
    }

    /// The block's output and every state the up blocks take as skips, in order.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        time: &Tensor,
        text: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, time)?;
            if let Some(transformer) = self.transformers.get(i) {
                x = transformer.forward(&x, text)?;
            }
            states.push(x.clone());
        }
        if let Some((conv, padding)) = &self.downsample {
            let input = if *padding == 0 {
                x.pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?
            } else {
                x
            };
            x = conv.forward(&input)?;
            states.push(x.clone());
        }
        Ok((x, states))
    }
}

/// diffusers' `UNetMidBlock2DCrossAttn`: a resnet, then (transformer, resnet) pairs.
pub(super) struct MidBlock {
    first: Resnet,
    pairs: Vec<(Transformer, Resnet)>,
}

impl MidBlock {
    pub(super) fn new(
        vb: VarBuilder,
        shared: Shared,
        channels: usize,
        attending: Attending,
        output_scale: f64,
    ) -> Result<Self> {
        let resnet = |i: usize| {
            Resnet::new(
                vb.pp("resnets").pp(i),
                shared,
                (channels, channels),
                output_scale,
            )
        };
        Ok(Self {
            first: resnet(0)?,
            pairs: vec![(
                Transformer::new(vb.pp("attentions").pp(0), shared, channels, attending)?,
                resnet(1)?,
            )],
        })
    }

    pub(super) fn forward(&self, x: &Tensor, time: &Tensor, text: &Tensor) -> Result<Tensor> {
        let mut x = self.first.forward(x, time)?;
        for (transformer, resnet) in &self.pairs {
            x = resnet.forward(&transformer.forward(&x, text)?, time)?;
        }
        Ok(x)
    }
}

/// diffusers' `UpBlock2D` or `CrossAttnUpBlock2D`: each resnet takes the previous output beside
/// one skip from the down blocks (a transformer after each in the latter), then a
/// nearest-neighbour doubling (or the given size) and a 3x3 convolution but in the last block.
pub(super) struct UpBlock {
    resnets: Vec<Resnet>,
    transformers: Vec<Transformer>,
    upsample: Option<Conv2d>,
}

impl UpBlock {
    /// `in_channels`: the matching down block's input width (its last skip's); `previous`: the
    /// width coming up from below.
    pub(super) fn new(
        vb: VarBuilder,
        shared: Shared,
        (in_channels, previous, out_channels): (usize, usize, usize),
        layers: usize,
        attending: Option<Attending>,
        upsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let skip = if i + 1 == layers {
                    in_channels
                } else {
                    out_channels
                };
                let input = if i == 0 { previous } else { out_channels };
                Resnet::new(
                    vb.pp("resnets").pp(i),
                    shared,
                    (input + skip, out_channels),
                    1.0,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let transformers = transformers(&vb, shared, out_channels, layers, attending)?;
        let upsample = upsampler(out_channels, &vb, upsample)?;
        Ok(Self {
            resnets,
            transformers,
            upsample,
        })
    }

    /// How many skips the block takes.
    pub(super) fn skips(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` in the order the down blocks made them (the last is taken first); `size`: the
    /// upsampled size where doubling would not match the next skip's.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        time: &Tensor,
        text: &Tensor,
        size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - i - 1];
            x = resnet.forward(&Tensor::cat(&[&x, skip], 1)?, time)?;
            if let Some(transformer) = self.transformers.get(i) {
                x = transformer.forward(&x, text)?;
            }
        }
        match &self.upsample {
            Some(conv) => {
                let (_, _, h, w) = x.dims4()?;
                let (h, w) = size.unwrap_or((2 * h, 2 * w));
                conv.forward(&x.upsample_nearest2d(h, w)?)
            }
            None => Ok(x),
        }
    }
}
