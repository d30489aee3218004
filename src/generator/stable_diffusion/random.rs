//! Random weights of whatever shape a model asks for, at the scale of trained ones, for
//! `bench-sd` and its checks: a weight matrix or kernel N(0, 1/fan_in) (each layer keeps its
//! input's scale, so signals neither vanish nor overflow f16), norm gammas near 1, biases small.
//! Drawn on the host from a seed made of the tensor's name, so the same name and shape give the
//! same values on every device, in every dtype and with any number of threads: an f16 model on
//! the GPU and its f32 reference on the CPU hold the same weights. Draws on the calling thread
//! and scoped helpers; fails only where candle cannot make or move the tensor.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Values drawn per ChaCha stream: what makes the draws independent of the thread count.
const BLOCK: usize = 1 << 16;

/// The spread of a bias, and of a norm gamma around 1.
const SMALL: f32 = 0.02;
const GAMMA_SPREAD: f32 = 0.1;

/// `count` draws of N(mean, std) seeded by `name`: the same on every machine.
pub(crate) fn normal_values(
    name: &str,
    count: usize,
    mean: f32,
    std: f32,
) -> Result<Vec<f32>, rand_distr::NormalError> {
    let seed = fnv1a(name.as_bytes());
    let normal = Normal::new(mean, std)?;
    let mut values = vec![0f32; count];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let blocks_per_thread = count.div_ceil(BLOCK).div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (part, values) in values.chunks_mut(blocks_per_thread * BLOCK).enumerate() {
            scope.spawn(move || {
                for (block, values) in values.chunks_mut(BLOCK).enumerate() {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream((part * blocks_per_thread + block) as u64);
                    for value in values {
                        *value = normal.sample(&mut rng);
                    }
                }
            });
        }
    });
    Ok(values)
}

/// A tensor of N(mean, std) draws seeded by `name`, made on the host and moved to `device`.
pub(crate) fn normal_tensor(
    name: &str,
    shape: impl Into<Shape>,
    (mean, std): (f32, f32),
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let shape = shape.into();
    let values = normal_values(name, shape.elem_count(), mean, std)
        .map_err(|e| candle_core::Error::Msg(format!("{name}: N({mean}, {std}): {e}")))?;
    Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// The (mean, std) a trained model's tensor of this name and shape has, roughly.
fn trained_scale(name: &str, shape: &Shape) -> (f32, f32) {
    let dims = shape.dims();
    if dims.len() >= 2 {
        // A linear layer's [out, in] or a conv's [out, in, kh, kw]: fan-in is all but the first.
        let fan_in: usize = dims[1..].iter().product();
        (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
    } else if name.ends_with("weight") {
        // Rank 1 weights are the norms' gammas.
        (1.0, GAMMA_SPREAD)
    } else {
        (0.0, SMALL)
    }
}

/// Makes every tensor it is asked for (plain tensors, not trainable variables, so inference
/// keeps no gradient graph).
struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let scale = trained_scale(name, &shape);
        normal_tensor(name, shape, scale, dtype, device)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "random weights cannot guess the shape of {name}"
        )))
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

pub(crate) fn random_var_builder(dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomWeights), dtype, device.clone())
}

/// FNV-1a, 64 bits: a seed from a name that no Rust release will change (std's hasher may).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[f32]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    #[test]
    fn the_same_name_gives_the_same_values_and_another_name_others() {
        let count = 3 * BLOCK + 17;
        let a = normal_values("unet.conv_in.weight", count, 0.0, 1.0).unwrap();
        assert_eq!(
            a,
            normal_values("unet.conv_in.weight", count, 0.0, 1.0).unwrap()
        );
        let b = normal_values("unet.conv_out.weight", count, 0.0, 1.0).unwrap();
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 10, "{same} equal draws");
        // Each block is its own stream: no block repeats another.
        assert_ne!(a[..100], a[BLOCK..BLOCK + 100]);
        // A shorter draw is a prefix of a longer one: the values do not depend on how the work
        // is split between threads.
        assert_eq!(
            normal_values("unet.conv_in.weight", BLOCK + 5, 0.0, 1.0).unwrap()[..],
            a[..BLOCK + 5]
        );
    }

    #[test]
    fn weights_have_a_trained_models_scale() {
        let vb = random_var_builder(DType::F32, &Device::Cpu);
        let conv = vb
            .get((256, 128, 3, 3), "decoder.conv.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (mean, std) = stats(&conv);
        assert!(mean.abs() < 0.005, "{mean}");
        let want = 1.0 / (128.0 * 9.0f64).sqrt();
        assert!((std / want - 1.0).abs() < 0.02, "{std} vs {want}");
        let gamma = vb
            .get(512, "decoder.norm.weight")
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (mean, std) = stats(&gamma);
        assert!(
            (mean - 1.0).abs() < 0.03 && (std - 0.1).abs() < 0.02,
            "{mean} {std}"
        );
        let bias = vb
            .get(512, "decoder.norm.bias")
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (mean, std) = stats(&bias);
        assert!(
            mean.abs() < 0.01 && (std - 0.02).abs() < 0.005,
            "{mean} {std}"
        );
    }

    #[test]
    fn every_dtype_holds_the_same_weights() {
        let f32s = random_var_builder(DType::F32, &Device::Cpu)
            .get((64, 32), "text.proj.weight")
            .unwrap();
        let f16s = random_var_builder(DType::F16, &Device::Cpu)
            .get((64, 32), "text.proj.weight")
            .unwrap();
        assert_eq!(f16s.dtype(), DType::F16);
        let difference = crate::commands::bench::checks::Comparison::of(&f16s, &f32s)
            .unwrap()
            .max_abs_error;
        // f16 rounding of values below 1: under 2^-11 relative.
        assert!(difference < 1e-3, "{difference}");
    }
}
