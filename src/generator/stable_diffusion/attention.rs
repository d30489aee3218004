//! Scaled dot-product attention, softmax(q·kᵀ·scale)·v, as the UNet's transformers and the VAE's
//! mid block compute it.
//!
//! On CUDA the scores stay in the model's dtype: cuBLAS multiplies f16/bf16 with f32
//! accumulation and candle's fused softmax kernel sums in f32, so only the stored scores and
//! weights are rounded, as in PyTorch's `scaled_dot_product_attention`, which diffusers' pipelines
//! use. Upcasting them to f32 first (candle-transformers' way) doubles the bytes of the largest
//! tensors in the model (sd-1.5 at 512x512: 16 heads x 4096² scores per self-attention) and takes
//! the products off the tensor cores. On the CPU candle's softmax sums in the input's dtype, so
//! the scores are f32 there, whatever the model's dtype. `set_upcast(true)` makes them f32 on
//! the GPU too (bench-sd times the two side by side).
//!
//! Inputs: q [n, tq, d], k [n, tk, d], v [n, tk, dv], one attention per leading index (heads
//! folded into n). Output: [n, tq, dv] in q's dtype. Runs on the calling model's thread.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Result, Tensor};

static UPCAST: AtomicBool = AtomicBool::new(false);

/// Scores in f32 on every device for later attentions (candle-transformers' way), or not (the
/// default).
pub(crate) fn set_upcast(enabled: bool) {
    UPCAST.store(enabled, Ordering::Relaxed);
}

/// softmax(q·kᵀ·scale)·v, the scale applied to k (the cross-attentions' short side).
pub(crate) fn scaled_dot_product(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let dtype = q.dtype();
    let work = scores_dtype(q);
    let key_t = (k.to_dtype(work)? * scale)?.t()?;
    let scores = q.to_dtype(work)?.matmul(&key_t)?;
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    weights.matmul(&v.to_dtype(work)?)?.to_dtype(dtype)
}

/// The dtype the scores are computed and stored in (the module header says why).
fn scores_dtype(q: &Tensor) -> DType {
    if q.device().is_cuda() && !UPCAST.load(Ordering::Relaxed) {
        q.dtype()
    } else {
        DType::F32
    }
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

    /// Cross-attention shapes (tq != tk, dv != d), large enough scores that the softmax is far
    /// from uniform, and a key that is a strided view: every attention on its own rows.
    #[test]
    fn matches_the_textbook_formula_per_head_with_strided_inputs() {
        let cpu = Device::Cpu;
        let q = Tensor::randn(0f32, 2.0, (3, 5, 4), &cpu).expect("q");
        let k_wide = Tensor::randn(0f32, 2.0, (3, 4, 7), &cpu).expect("k");
        let k = k_wide.transpose(1, 2).expect("strided k");
        let v = Tensor::randn(0f32, 1.0, (3, 7, 6), &cpu).expect("v");
        let scale = 0.5;
        let ours = scaled_dot_product(&q, &k, &v, scale).expect("attention");
        assert_eq!(ours.dims(), &[3, 5, 6]);
        let expected = reference(&q, &k.contiguous().expect("k"), &v, scale);
        let error = flat(&ours)
            .iter()
            .zip(&expected)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-5, "max abs error {error:e}");
        // One head alone gives the same rows: nothing leaks between the leading index.
        let alone = scaled_dot_product(
            &q.i(1..2).unwrap(),
            &k.i(1..2).unwrap(),
            &v.i(1..2).unwrap(),
            scale,
        )
        .expect("one head");
        assert_eq!(flat(&alone), flat(&ours.i(1..2).unwrap()));
    }

    /// An f16 model's output is f16, computed from f32 scores on the CPU: within f16's rounding
    /// of the f32 model's.
    #[test]
    fn an_f16_model_gets_f16_out_within_its_rounding() {
        let cpu = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 64, 8), &cpu).expect("q");
        let k = Tensor::randn(0f32, 1.0, (2, 64, 8), &cpu).expect("k");
        let v = Tensor::randn(0f32, 1.0, (2, 64, 8), &cpu).expect("v");
        let full = scaled_dot_product(&q, &k, &v, 0.35).expect("f32");
        let half = |t: &Tensor| t.to_dtype(DType::F16).expect("f16");
        let ours = scaled_dot_product(&half(&q), &half(&k), &half(&v), 0.35).expect("f16");
        assert_eq!(ours.dtype(), DType::F16);
        let error = flat(&ours)
            .iter()
            .zip(&flat(&full))
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-2, "max abs error {error:e}");
    }
}
