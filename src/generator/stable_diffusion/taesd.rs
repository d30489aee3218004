//! The tiny autoencoder's decoder (TAESD, madebyollin/taesd): ~1.2 M parameters of 3x3
//! convolutions, ReLU and nearest-neighbour upsampling that turn SD latents into RGB at 8x the
//! latent size, an order of magnitude cheaper than the full VAE decoder. Used for in-between
//! frames; keyframes keep the full VAE.
//!
//! Weights, in either of the two forms it is published in (both checked by the golden test in
//! tests/reference.rs against diffusers' `AutoencoderTiny`):
//! - the GitHub repo's `taesd_decoder.safetensors` (`taesdxl_...` for SDXL): the PyTorch
//!   `nn.Sequential` names (`1.weight`, `3.conv.0.bias`, ...), index 0 being the input clamp;
//! - the diffusers folder (`madebyollin/taesd`): `decoder.layers.N...`, where the clamp is not a
//!   layer, so N is the published index minus one (encoder tensors are ignored).
//!
//! The hidden width is read from the first convolution (64 in the published models).
//! Input: latents in the UNet's (scaled) space, [batch, 4, h, w]; diffusers' `AutoencoderTiny`
//! has scaling_factor 1.0, so this is exactly what its pipelines hand it. Output: RGB in [0, 1]
//! (diffusers returns the same as [-1, 1]), [batch, 3, 8h, 8w]. Errors name the missing tensor or
//! wrong shape (candle's VarBuilder).

use candle_core::{Module, Result, Tensor};
use candle_nn::{conv2d, conv2d_no_bias, Conv2d, Conv2dConfig, VarBuilder};

/// Channels of every hidden layer in the published decoder.
pub(crate) const CHANNELS: usize = 64;

/// The tensor names of one published form: the `VarBuilder` prefix and the name of the
/// published `nn.Sequential` index `i`.
struct Layout {
    root: &'static str,
    offset: usize,
}

impl Layout {
    fn detect(vb: &VarBuilder) -> Self {
        if vb.contains_tensor("decoder.layers.0.weight") {
            Self {
                root: "decoder.layers",
                offset: 1,
            }
        } else {
            Self {
                root: "",
                offset: 0,
            }
        }
    }

    fn name(&self, index: usize) -> String {
        (index - self.offset).to_string()
    }
}

fn conv3(vb: VarBuilder, n_in: usize, n_out: usize, bias: bool) -> Result<Conv2d> {
    let config = Conv2dConfig {
        padding: 1,
        // With cuDNN, candle asks its heuristic for an algorithm (and zeroes a workspace for it)
        // on every call unless one is named; measured on an H100 that overhead, not the
        // arithmetic, dominated the tiny decoder. Ignored on the CPU and without cuDNN.
        cudnn_fwd_algo: Some(candle_core::conv::CudnnFwdAlgo::ImplicitPrecompGemm),
        ..Default::default()
    };
    if bias {
        conv2d(n_in, n_out, 3, config, vb)
    } else {
        conv2d_no_bias(n_in, n_out, 3, config, vb)
    }
}

/// conv-ReLU-conv-ReLU-conv plus identity skip, then ReLU.
struct Block {
    convs: [Conv2d; 3],
}

impl Block {
    fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        let vb = vb.pp("conv");
        Ok(Self {
            convs: [
                conv3(vb.pp("0"), channels, channels, true)?,
                conv3(vb.pp("2"), channels, channels, true)?,
                conv3(vb.pp("4"), channels, channels, true)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.convs[0].forward(x)?.relu()?;
        let h = self.convs[1].forward(&h)?.relu()?;
        let h = self.convs[2].forward(&h)?;
        (h + x)?.relu()
    }
}

enum Layer {
    /// tanh(x / 3) * 3: keeps out-of-range latents from blowing up.
    Clamp,
    Conv(Conv2d),
    Relu,
    Block(Block),
    Upsample,
}

pub(crate) struct TinyDecoder {
    layers: Vec<Layer>,
}

impl TinyDecoder {
    /// Builds the decoder from `vb`, the root of either published file.
    pub(crate) fn new(vb: VarBuilder, latent_channels: usize) -> Result<Self> {
        let layout = Layout::detect(&vb);
        let vb = if layout.root.is_empty() {
            vb
        } else {
            vb.pp(layout.root)
        };
        let at = |index: usize| vb.pp(layout.name(index));
        // The first convolution's bias gives the hidden width; random-weight backends cannot
        // be asked, and get the published width.
        let c = vb
            .get_unchecked(&format!("{}.bias", layout.name(1)))
            .and_then(|bias| bias.dim(0))
            .unwrap_or(CHANNELS);
        let mut layers = vec![
            Layer::Clamp,
            Layer::Conv(conv3(at(1), latent_channels, c, true)?),
            Layer::Relu,
        ];
        let mut index = 3;
        for stage in 0..3 {
            for _ in 0..3 {
                layers.push(Layer::Block(Block::new(at(index), c)?));
                index += 1;
            }
            layers.push(Layer::Upsample);
            index += 1;
            layers.push(Layer::Conv(conv3(at(index), c, c, false)?));
            index += 1;
            debug_assert_eq!(index, 8 + stage * 5);
        }
        layers.push(Layer::Block(Block::new(at(index), c)?));
        index += 1;
        layers.push(Layer::Conv(conv3(at(index), c, 3, true)?));
        Ok(Self { layers })
    }

    pub(crate) fn forward(&self, latents: &Tensor) -> Result<Tensor> {
        let mut x = latents.clone();
        for layer in &self.layers {
            x = match layer {
                Layer::Clamp => ((x / 3.0)?.tanh()? * 3.0)?,
                Layer::Conv(conv) => conv.forward(&x)?,
                Layer::Relu => x.relu()?,
                Layer::Block(block) => block.forward(&x)?,
                Layer::Upsample => {
                    let (_, _, h, w) = x.dims4()?;
                    x.upsample_nearest2d(h * 2, w * 2)?
                }
            };
        }
        Ok(x)
    }
}
