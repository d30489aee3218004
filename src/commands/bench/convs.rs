//! `bench-sd --only conv_shapes`: the models' heaviest 3x3 convolutions timed alone, so a GPU run
//! shows how far cuDNN's kernels are from the hardware (TFLOPS beside each time) and from
//! PyTorch's on the same shapes (tools/gpu-peer.py times the same keys, NCHW and channels-last),
//! apart from everything else a decode does. Each shape twice: the input NCHW-contiguous, as the
//! models hand it over, and the same values laid out channels-last (NHWC) behind an NCHW view,
//! which the patched candle passes to cuDNN with its strides: whether that layout alone is
//! faster says whether carrying activations channels-last through a model would pay.
//!
//! Inputs: the device, dtype and timing. Output: one line per shape and layout. Runs on
//! the bench thread; fails only with candle's errors.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Conv2d;

use super::measure_with;
use crate::generator::stable_diffusion::vae::PADDED;
use crate::stdout;

/// (key, channels in and out, picture side, batch): the full VAE's 3x3 convolutions at each of
/// its four resolutions, TAESD's at full size, and sd-1.5's UNet's first level with guidance.
/// tools/gpu-peer.py `CONV_SHAPES` holds the same.
pub(crate) const CONV_SHAPES: [(&str, usize, usize, usize); 6] = [
    ("conv_512c_64px_b10", 512, 64, 10),
    ("conv_512c_128px_b10", 512, 128, 10),
    ("conv_256c_256px_b10", 256, 256, 10),
    ("conv_128c_512px_b10", 128, 512, 10),
    ("conv_64c_512px_b10", 64, 512, 10),
    ("conv_320c_64px_b2", 320, 64, 2),
];

/// Times `shapes` on `device` in `dtype`, 3x3 with one pixel of padding and a bias, as the models'
/// convolutions are.
pub(crate) fn time(
    device: &Device,
    dtype: DType,
    (warmups, runs): (usize, usize),
    shapes: &[(&str, usize, usize, usize)],
) -> anyhow::Result<()> {
    for &(key, channels, side, batch) in shapes {
        let weight = (Tensor::randn(0f32, 1.0, (channels, channels, 3, 3), device)?
            / (9.0 * channels as f64).sqrt())?
        .to_dtype(dtype)?;
        let bias = (Tensor::randn(0f32, 1.0, channels, device)? * 0.02)?.to_dtype(dtype)?;
        let conv = Conv2d::new(weight, Some(bias), PADDED);
        let nhwc =
            Tensor::randn(0f32, 1.0, (batch, side, side, channels), device)?.to_dtype(dtype)?;
        let channels_last = nhwc.permute((0, 3, 1, 2))?;
        let nchw = channels_last.contiguous()?;
        let flops = 2.0 * (batch * side * side * channels * channels * 9) as f64;
        for (layout, input) in [("nchw", &nchw), ("nhwc_in", &channels_last)] {
            let m = measure_with(key.to_string(), warmups, runs, 1, || {
                conv.forward(input)?;
                device.synchronize().map_err(anyhow::Error::from)
            })?;
            let mut line = format!(
                "{key}{} setup=default {} warmups={warmups} runs={} per=call tflops={:.1}",
                if layout == "nchw" {
                    String::new()
                } else {
                    format!("_{layout}")
                },
                m.spread_fields(),
                m.runs,
                flops / (m.median_ms * 1e-3) / 1e12,
            );
            if layout != "nchw" {
                let difference = max_abs_difference(&conv.forward(input)?, &conv.forward(&nchw)?)?;
                line.push_str(&format!(" vs_nchw_max_abs_error={difference:.3e}"));
            }
            stdout::line(line)?;
        }
    }
    Ok(())
}

/// The largest |a - b|, reduced on the device: a batch-10 activation is 335 M values, whose
/// copy to the host would cost the GPU session seconds per shape.
fn max_abs_difference(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both layouts compute the same convolution (the channels-last view is read through its
    /// strides), and the timing runs through on small shapes.
    #[test]
    fn both_layouts_compute_the_same_convolution() {
        let shapes = [("conv_tiny", 4, 6, 2), ("conv_other", 8, 4, 1)];
        time(&Device::Cpu, DType::F32, (0, 1), &shapes).expect("tiny shapes time");
        let nhwc = Tensor::randn(0f32, 1.0, (2, 6, 6, 4), &Device::Cpu).unwrap();
        let view = nhwc.permute((0, 3, 1, 2)).unwrap();
        let weight = Tensor::randn(0f32, 0.3, (4, 4, 3, 3), &Device::Cpu).unwrap();
        let conv = Conv2d::new(weight, None, PADDED);
        let strided = conv.forward(&view).unwrap();
        let contiguous = conv.forward(&view.contiguous().unwrap()).unwrap();
        let error = max_abs_difference(&strided, &contiguous).unwrap();
        assert!(error < 1e-5, "channels-last input off by {error:e}");
    }
}
