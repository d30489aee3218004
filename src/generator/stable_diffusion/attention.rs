//! Scaled dot-product attention, softmax(q·kᵀ·scale)·v, as the UNet's transformers and the VAE's
//! mid block compute it.
//!
//! On CUDA an f16 model's scores stay in f16: cuBLAS multiplies f16 with f32 accumulation and
//! candle's fused softmax kernel sums in f32 (x - max and its exp are rounded to f16, as the stored
//! scores and weights are). bf16 keeps 8 bits where f16 keeps 11: its scores are f32. That is what
//! PyTorch's math SDPA backend and diffusers' attention processors before SDPA computed; SDPA's
//! flash kernels keep the scores in f32 registers instead. Upcasting them to f32 first
//! (candle-transformers' way) doubles the bytes of the largest tensors in the model (sd-1.5 at
//! 512x512: 16 heads x 4096² scores per self-attention) and takes the products off the tensor
//! cores. Where a model's config asks for `upcast_attention` (sd-2.1: its logits are large enough
//! that f16 loses the softmax) the scores are f32, as they are on the CPU, whose softmax sums in
//! the input's dtype. `set_upcast(true)` makes them f32 everywhere (bench-sd times the two side by
//! side).
//!
//! Inputs: q [n, tq, d], k [n, tk, d], v [n, tk, dv], one attention per leading index (heads
//! folded into n). Output: [n, tq, dv] in q's dtype. Runs on the calling model's thread.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Result, Tensor};

static UPCAST: AtomicBool = AtomicBool::new(false);

/// Scores in f32 on every device for every later attention (candle-transformers' way), or as
/// each model asks (the default). For bench-sd, which runs one model on one thread.
pub(crate) fn set_upcast(enabled: bool) {
    UPCAST.store(enabled, Ordering::Relaxed);
}

/// softmax(q·kᵀ·scale)·v; `upcast`: the model wants f32 scores whatever its dtype.
pub(crate) fn scaled_dot_product(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
) -> Result<Tensor> {
    let half = q.device().is_cuda() && q.dtype() == DType::F16;
    let work = if half && !upcast && !UPCAST.load(Ordering::Relaxed) {
        DType::F16
    } else {
        DType::F32
    };
    product_in(q, k, v, scale, work)
}

/// The product with the scores in `work`, the scale applied to k (the cross-attentions' short
/// side).
fn product_in(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, work: DType) -> Result<Tensor> {
    let key_t = (k.to_dtype(work)? * scale)?.t()?;
    let scores = q.to_dtype(work)?.matmul(&key_t)?;
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    weights.matmul(&v.to_dtype(work)?)?.to_dtype(q.dtype())
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, IndexOp};

    use super::*;

    /// The textbook formula, one attention at a time, in f64 on the host.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Vec<f64> {
        let read = |t: &Tensor| -> Vec<Vec<Vec<f64>>> {
            t.to_dtype(DType::F64)
                .and_then(|t| t.to_vec3::<f64>())
                .expect("values")
        };
        let (q, k, v) = (read(q), read(k), read(v));
        let mut out = Vec::new();
        for n in 0..q.len() {
            for query in &q[n] {
                let scores: Vec<f64> = k[n]
                    .iter()
                    .map(|key| query.iter().zip(key).map(|(a, b)| a * b).sum::<f64>() * scale)
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for column in 0..v[n][0].len() {
                    out.push(
                        exps.iter()
                            .zip(&v[n])
                            .map(|(e, row)| e / total * row[column])
                            .sum(),
                    );
                }
            }
        }
        out
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .and_then(|t| t.flatten_all()?.to_vec1::<f64>())
            .expect("values")
    }

    fn max_error(a: &Tensor, b: &Tensor) -> f64 {
        flat(a)
            .iter()
            .zip(&flat(b))
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()))
    }

    /// Cross-attention shapes (tq != tk, dv != d), scores large enough that the softmax is far
    /// from uniform, and a strided q: every attention on its own rows.
    #[test]
    fn matches_the_textbook_formula_per_head_with_strided_inputs() {
        let cpu = Device::Cpu;
        let q_wide = Tensor::randn(0f32, 2.0, (3, 4, 5), &cpu).expect("q");
        let q = q_wide.transpose(1, 2).expect("strided q");
        let k = Tensor::randn(0f32, 2.0, (3, 7, 4), &cpu).expect("k");
        let v = Tensor::randn(0f32, 1.0, (3, 7, 6), &cpu).expect("v");
        let scale = 0.5;
        let ours = scaled_dot_product(&q, &k, &v, scale, false).expect("attention");
        assert_eq!(ours.dims(), &[3, 5, 6]);
        let expected = reference(&q.contiguous().expect("q"), &k, &v, scale);
        let error = flat(&ours)
            .iter()
            .zip(&expected)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-5, "max abs error {error:e}");
        // One head alone gives the same rows: nothing leaks between the leading index.
        let one = |t: &Tensor| t.i(1..2).expect("one head");
        let alone = scaled_dot_product(&one(&q), &one(&k), &one(&v), scale, false).expect("one");
        assert_eq!(flat(&alone), flat(&one(&ours)));
    }

    /// An f16 model's output is f16, and within f16's rounding of the f32 model's, whether the
    /// scores are f32 (the CPU, an upcasting model) or f16 (the GPU's path, run here on the CPU).
    #[test]
    fn f16_scores_and_f32_scores_stay_within_f16_rounding() {
        let cpu = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 64, 8), &cpu).expect("q");
        let k = Tensor::randn(0f32, 1.0, (2, 64, 8), &cpu).expect("k");
        let v = Tensor::randn(0f32, 1.0, (2, 64, 8), &cpu).expect("v");
        let full = scaled_dot_product(&q, &k, &v, 0.35, false).expect("f32");
        let half = |t: &Tensor| t.to_dtype(DType::F16).expect("f16");
        let (qh, kh, vh) = (half(&q), half(&k), half(&v));
        let upcast = scaled_dot_product(&qh, &kh, &vh, 0.35, true).expect("f32 scores");
        let in_dtype = product_in(&qh, &kh, &vh, 0.35, DType::F16).expect("f16 scores");
        for (what, ours) in [("f32 scores", upcast), ("f16 scores", in_dtype)] {
            assert_eq!(ours.dtype(), DType::F16, "{what}");
            let error = max_error(&ours, &full);
            assert!(error < 1e-2, "{what}: max abs error {error:e}");
        }
    }
}
