//! CLIP's text transformer, as transformers' `CLIPTextModel` computes what
//! `StableDiffusionPipeline.encode_prompt` takes from it (`last_hidden_state`), or what
//! `StableDiffusionXLPipeline` takes (`hidden_states[-2]`, and from the second encoder,
//! `CLIPTextModelWithProjection`, the pooled `text_embeds`).
//!
//! Input: token ids [1, 77] (tokenizer.rs). Output: [1, 77, hidden], and [1, projection] pooled
//! where the config has a projection. Runs on the keyframe thread once per theme. Weights: the
//! model repo's `text_encoder/model.safetensors` (`text_encoder_2/` for SDXL's second), names
//! under `text_model.` (or without it, as transformers 5 saves them), the projection as
//! `text_projection.weight`; a missing tensor or wrong shape is an error naming both (weights.rs).
//!
//! Why not candle-transformers' `stable_diffusion::clip`: its "gelu" is the tanh approximation
//! where transformers' (OpenCLIP ViT-H, sd-2.x and sd-turbo) is the exact erf one, which moved
//! every hidden state by up to 1e-3 at real size (tools/reference/text_encoders.sh), and it only
//! takes its fixed real-size configs, so it cannot be checked on a tiny model in CI. This is the
//! same arithmetic with the activation as configured; tests/reference.rs compares
//! it with transformers on tiny models of both activations.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};

/// The MLP's activation (`hidden_act` in text_encoder/config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// "quick_gelu": x * sigmoid(1.702 x) (OpenAI CLIP, sd-1.5).
    QuickGelu,
    /// "gelu": the exact, erf-based GELU (OpenCLIP ViT-H, sd-2.x).
    Gelu,
}

/// Which hidden state the pipeline hands the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextOutput {
    /// `last_hidden_state` (after the final layer norm): sd-1.x, sd-2.x.
    Last,
    /// `hidden_states[-2]`, the second-to-last layer's output, not normalized: SDXL.
    Penultimate,
}

/// text_encoder/config.json, as far as the arithmetic goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub attention_heads: usize,
    pub layers: usize,
    pub max_positions: usize,
    pub activation: Activation,
    /// The tokenizer's padding token ("!" for OpenCLIP's models).
    pub pad_token: String,
    pub output: TextOutput,
    /// `projection_dim` of a `CLIPTextModelWithProjection` (SDXL's second encoder): the pooled
    /// output is wanted, projected to this width.
    pub projection: Option<usize>,
}

impl TextConfig {
    /// openai/clip-vit-large-patch14's text model (sd-1.5; sdxl's first encoder).
    pub(crate) fn clip_l() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            attention_heads: 12,
            layers: 12,
            max_positions: 77,
            activation: Activation::QuickGelu,
            pad_token: super::tokenizer::END.into(),
            output: TextOutput::Last,
            projection: None,
        }
    }

    /// As SDXL's pipeline uses an encoder: the penultimate layer's hidden states.
    pub(crate) fn penultimate(self) -> Self {
        Self {
            output: TextOutput::Penultimate,
            ..self
        }
    }

    /// OpenCLIP ViT-H/14's text model cut to 23 layers, as the sd-2.x repos ship it.
    pub(crate) fn open_clip_h() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 1024,
            intermediate_size: 4096,
            attention_heads: 16,
            layers: 23,
            max_positions: 77,
            activation: Activation::Gelu,
            pad_token: "!".into(),
            output: TextOutput::Last,
            projection: None,
        }
    }

    /// OpenCLIP ViT-bigG/14's text model (sdxl's second encoder).
    pub(crate) fn open_clip_big_g() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 1280,
            intermediate_size: 5120,
            attention_heads: 20,
            layers: 32,
            max_positions: 77,
            activation: Activation::Gelu,
            pad_token: "!".into(),
            output: TextOutput::Penultimate,
            projection: Some(1280),
        }
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens, hidden) = x.dims3()?;
        let head_dim = hidden / self.heads;
        let split = |t: Tensor| {
            t.reshape((batch, tokens, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(x)? * (head_dim as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?.broadcast_add(mask)?;
        let probabilities = candle_nn::ops::softmax_last_dim(&scores)?;
        let mixed = probabilities
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, tokens, hidden))?;
        self.out.forward(&mixed)
    }
}

struct Layer {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Layer {
    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let x = (x + self.attention.forward(&self.norm1.forward(x)?, mask)?)?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let h = match self.activation {
            Activation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            Activation::Gelu => h.gelu_erf()?,
        };
        x + self.fc2.forward(&h)?
    }
}

pub(crate) struct TextEncoder {
    tokens: Embedding,
    positions: Embedding,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    output: TextOutput,
    /// `text_projection` (no bias), for the pooled output.
    projection: Option<Linear>,
}

/// What one encoder gives for a batch of token ids.
pub(crate) struct TextEncoding {
    /// The configured hidden state (`TextOutput`) [batch, tokens, hidden].
    pub hidden: Tensor,
    /// The projected pooled output [batch, projection], where configured.
    pub pooled: Option<Tensor>,
}

impl TextEncoder {
    /// Builds the encoder from `vb`, the root of text_encoder/model.safetensors.
    pub(crate) fn new(vb: VarBuilder, config: &TextConfig) -> candle_core::Result<Self> {
        let projection = match config.projection {
            Some(width) => Some(candle_nn::linear_no_bias(
                config.hidden_size,
                width,
                vb.pp("text_projection"),
            )?),
            None => None,
        };
        // The repos name every tensor under "text_model."; transformers 5 saves without it.
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight")
            || !vb.contains_tensor("embeddings.token_embedding.weight")
        {
            vb.pp("text_model")
        } else {
            vb
        };
        let hidden = config.hidden_size;
        let norm = |vb: VarBuilder| layer_norm(hidden, 1e-5, vb);
        let embeddings = vb.pp("embeddings");
        let layers = (0..config.layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layers.{i}"));
                let attention = vb.pp("self_attn");
                Ok(Layer {
                    norm1: norm(vb.pp("layer_norm1"))?,
                    attention: Attention {
                        q: linear(hidden, hidden, attention.pp("q_proj"))?,
                        k: linear(hidden, hidden, attention.pp("k_proj"))?,
                        v: linear(hidden, hidden, attention.pp("v_proj"))?,
                        out: linear(hidden, hidden, attention.pp("out_proj"))?,
                        heads: config.attention_heads,
                    },
                    norm2: norm(vb.pp("layer_norm2"))?,
                    fc1: linear(hidden, config.intermediate_size, vb.pp("mlp.fc1"))?,
                    fc2: linear(config.intermediate_size, hidden, vb.pp("mlp.fc2"))?,
                    activation: config.activation,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            tokens: embedding(config.vocab_size, hidden, embeddings.pp("token_embedding"))?,
            positions: embedding(
                config.max_positions,
                hidden,
                embeddings.pp("position_embedding"),
            )?,
            layers,
            final_norm: norm(vb.pp("final_layer_norm"))?,
            output: config.output,
            projection,
        })
    }

    /// The configured hidden state, and the projected pooled output where configured.
    pub(crate) fn encode(&self, ids: &Tensor) -> candle_core::Result<TextEncoding> {
        let (_, count) = ids.dims2()?;
        let device = ids.device();
        let positions = Tensor::arange(0u32, count as u32, device)?.unsqueeze(0)?;
        let mut x = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        let mask = causal_mask(count, x.dtype(), device)?;
        // The last layer runs unless only the penultimate output is wanted.
        let layers = self.layers.len();
        let used = if self.output == TextOutput::Penultimate && self.projection.is_none() {
            layers.saturating_sub(1)
        } else {
            layers
        };
        let mut penultimate = None;
        for (i, layer) in self.layers[..used].iter().enumerate() {
            if i + 1 == layers {
                penultimate = Some(x.clone());
            }
            x = layer.forward(&x, &mask)?;
        }
        let pooled = match &self.projection {
            Some(projection) => {
                Some(projection.forward(&pooled(&self.final_norm.forward(&x)?, ids)?)?)
            }
            None => None,
        };
        let hidden = match self.output {
            TextOutput::Last => self.final_norm.forward(&x)?,
            TextOutput::Penultimate => penultimate.unwrap_or(x),
        };
        Ok(TextEncoding { hidden, pooled })
    }
}

/// Each row's normalized hidden state at its end-of-text token: transformers' `pooler_output`,
/// which (for SDXL's config, `eos_token_id` 2) takes the first position of the row's largest id:
/// `<|endoftext|>` is the vocabulary's last token.
fn pooled(normed: &Tensor, ids: &Tensor) -> candle_core::Result<Tensor> {
    let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let picked = rows
        .iter()
        .enumerate()
        .map(|(row, ids)| {
            let largest = ids.iter().copied().max().unwrap_or(0);
            let position = ids.iter().position(|&id| id == largest).unwrap_or(0);
            normed.get(row)?.get(position)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::stack(&picked, 0)
}

/// 0 on and below the diagonal, -inf above: each token sees only those before it.
fn causal_mask(count: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = (0..count)
        .flat_map(|i| (0..count).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (count, count), device)?.to_dtype(dtype)
}
