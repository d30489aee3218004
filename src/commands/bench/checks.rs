//! `bench-sd`'s correctness checks, each with a stated bound. `Comparison`: a model's output
//! against an f32 reference of the same weights on the same inputs, as the largest error over
//! the reference's standard deviation (random weights at trained scale keep that spread near a
//! real model's, so the ratio means what it would with real weights). `broadcast`: the patched
//! candle's fast broadcast kernels against upstream's kernels and the CPU on varied layouts
//! (either side broadcast, offsets into both, size-1 dimensions, layouts that do and do not
//! collapse to three steps), each op within one unit in the last place. `group_norm`: the fused
//! group norm (+ SiLU) against candle-nn's op-composed one on the VAE's and UNet's shapes.
//! `attention`: the models' attention, f16 scores where they run so, against f32 at their shapes.
//! Runs on the bench thread; fails only with candle's errors.

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::generator::stable_diffusion::conv;
use crate::generator::stable_diffusion::group_norm::{varied_channels, GroupNorm};
use crate::generator::stable_diffusion::random::{normal_tensor, random_var_builder};

/// The largest error a model's output may have, as a share of the f32 reference's standard
/// deviation. f16 keeps 11 significant bits; through a VAE decode, TAESD or a UNet step that
/// grows to 1-2% at worst: candle's CPU in f16 against f32 (`bench-sd --device cpu --dtype f16
/// --only check`, sd-1.5 at 256x256) gave 0.98% (VAE), 1.78% (TAESD), 1.14% (UNet), a little
/// above its 64x64 figures (more pixels, a longer tail). 5% leaves room for cuDNN's and cuBLAS's
/// other summation orders and f16 accumulation, and still catches a wrong kernel, whose error
/// is of the signal's own size (100%).
pub(crate) const BOUND: f64 = 0.05;

/// A tensor's values as f32 on the host, in order.
fn host_values(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// How far one output is from its reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Comparison {
    pub max_abs_error: f64,
    pub rms_error: f64,
    pub reference_std: f64,
}

impl Comparison {
    /// `got` against `reference` (same shape, any dtype and device).
    pub(crate) fn of(got: &Tensor, reference: &Tensor) -> anyhow::Result<Self> {
        anyhow::ensure!(
            got.dims() == reference.dims(),
            "shapes differ: {:?} against the reference's {:?}",
            got.dims(),
            reference.dims()
        );
        let (got, reference) = (host_values(got)?, host_values(reference)?);
        let n = reference.len().max(1) as f64;
        let mean = reference.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let variance = reference
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let (mut max_abs_error, mut squares) = (0f64, 0f64);
        for (&a, &b) in got.iter().zip(&reference) {
            let error = (f64::from(a) - f64::from(b)).abs();
            // A NaN anywhere is as wrong as can be.
            max_abs_error = if error.is_nan() {
                f64::INFINITY
            } else {
                max_abs_error.max(error)
            };
            squares += error * error;
        }
        Ok(Self {
            max_abs_error,
            rms_error: (squares / n).sqrt(),
            reference_std: variance.sqrt(),
        })
    }

    /// The largest error over the reference's spread (infinite for a constant reference that
    /// was missed).
    pub(crate) fn error_over_spread(&self) -> f64 {
        if self.max_abs_error == 0.0 {
            0.0
        } else {
            self.max_abs_error / self.reference_std
        }
    }

    pub(crate) fn within_bound(&self) -> bool {
        self.error_over_spread() <= BOUND
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_abs_error={:.3e} rms_error={:.3e} reference_std={:.3e} max_error_over_std={:.3e} bound={BOUND} {}",
            self.max_abs_error,
            self.rms_error,
            self.reference_std,
            self.error_over_spread(),
            if self.within_bound() { "ok" } else { "FAIL" }
        )
    }
}

/// One layout the broadcast check runs every op on: a name, and the two operands.
struct Layout {
    name: &'static str,
    lhs: Tensor,
    rhs: Tensor,
}

/// Values on `device` in `dtype`, the same on every run: N(0, 1) pushed half a unit away from
/// zero (sign(x) * (|x| + 0.5)), so no division is by (almost) zero, whose overflow would say
/// nothing.
fn operand(
    name: &str,
    dims: &[usize],
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let values = normal_tensor(name, dims, (0.0, 1.0), DType::F32, device)?;
    (values.sign()? * (values.abs()? + 0.5)?)?.to_dtype(dtype)
}

/// The layouts: the fast path's own cases (bias, group statistics, either side broadcast,
/// offsets, size-1 dimensions) and ones it must leave to upstream (four steps, both sides
/// broadcast, neither contiguous).
fn layouts(dtype: DType, device: &Device) -> candle_core::Result<Vec<Layout>> {
    let x = |name: &str, dims: &[usize]| operand(name, dims, dtype, device);
    let image = x("image", &[2, 8, 5, 7])?;
    let bias = x("bias", &[1, 8, 1, 1])?;
    let wide = x("wide", &[3, 8, 5, 7])?;
    let long_bias = x("long bias", &[16])?;
    let groups = x("groups", &[2, 4, 35])?;
    let group_means = x("group means", &[2, 4, 1])?;
    Ok(vec![
        Layout {
            name: "bias [2,8,5,7] op [1,8,1,1]",
            lhs: image.clone(),
            rhs: bias.clone(),
        },
        Layout {
            name: "flipped [1,8,1,1] op [2,8,5,7]",
            lhs: bias.clone(),
            rhs: image.clone(),
        },
        Layout {
            name: "groups [2,4,35] op [2,4,1]",
            lhs: groups.clone(),
            rhs: group_means.clone(),
        },
        Layout {
            name: "flipped groups [2,4,1] op [2,4,35]",
            lhs: group_means,
            rhs: groups,
        },
        Layout {
            name: "contiguous side at an offset (narrowed [3,8,5,7] to its last 2)",
            lhs: wide.narrow(0, 1, 2)?,
            rhs: bias.clone(),
        },
        Layout {
            name: "broadcast side at an offset (narrowed [16] to 8 from 5)",
            lhs: image.clone(),
            rhs: long_bias.narrow(0, 5, 8)?.reshape((1, 8, 1, 1))?,
        },
        Layout {
            name: "size-1 dims [1,8,1,7] op [1,1,1,7]",
            lhs: x("size one", &[1, 8, 1, 7])?,
            rhs: x("size one row", &[1, 1, 1, 7])?,
        },
        Layout {
            name: "rows [6,9] op [1,9]",
            lhs: x("rows", &[6, 9])?,
            rhs: x("row", &[1, 9])?,
        },
        Layout {
            name: "columns [6,9] op [6,1]",
            lhs: x("columns", &[6, 9])?,
            rhs: x("column", &[6, 1])?,
        },
        Layout {
            name: "scalar [4,5] op [1,1]",
            lhs: x("scalar field", &[4, 5])?,
            rhs: x("scalar", &[1, 1])?,
        },
        Layout {
            name: "four steps [2,3,4,5] op [2,1,4,1] (upstream's)",
            lhs: x("four steps", &[2, 3, 4, 5])?,
            rhs: x("four steps b", &[2, 1, 4, 1])?,
        },
        Layout {
            name: "both broadcast [2,1,5] op [1,3,1] (upstream's)",
            lhs: x("both a", &[2, 1, 5])?,
            rhs: x("both b", &[1, 3, 1])?,
        },
        Layout {
            name: "transposed [7,5]^T op [1,7] (upstream's)",
            lhs: x("transposed", &[7, 5])?.t()?,
            rhs: x("transposed row", &[1, 7])?,
        },
        Layout {
            name: "VAE bias [1,512,64,64] op [1,512,1,1]",
            lhs: x("vae activations", &[1, 512, 64, 64])?,
            rhs: x("vae bias", &[1, 512, 1, 1])?,
        },
    ])
}

type BinaryOp = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

const OPS: [(&str, BinaryOp); 6] = [
    ("add", Tensor::broadcast_add),
    ("sub", Tensor::broadcast_sub),
    ("mul", Tensor::broadcast_mul),
    ("div", Tensor::broadcast_div),
    ("minimum", Tensor::broadcast_minimum),
    ("maximum", Tensor::broadcast_maximum),
];

/// One unit in the last place of `dtype`, relative.
fn ulp(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-10),
        DType::BF16 => 2f64.powi(-7),
        _ => 2f64.powi(-23),
    }
}

/// The largest error of `got` relative to `want` (elementwise, |got - want| / |want|, with the
/// dtype's smallest normal number as the floor of |want|).
fn relative_error(got: &Tensor, want: &Tensor, dtype: DType) -> anyhow::Result<f64> {
    let floor = match dtype {
        DType::F16 => 6.1e-5,
        DType::BF16 | DType::F32 => 1.2e-38,
        _ => 0.0,
    };
    let (got, want) = (host_values(got)?, host_values(want)?);
    anyhow::ensure!(got.len() == want.len(), "sizes differ");
    Ok(got.iter().zip(&want).fold(0f64, |worst, (&a, &b)| {
        if a == b {
            return worst;
        }
        let error = (f64::from(a) - f64::from(b)).abs() / f64::from(b.abs()).max(floor);
        if error.is_nan() {
            f64::INFINITY
        } else {
            worst.max(error)
        }
    }))
}

/// What `broadcast` found for one dtype: cases run, the worst errors, and each failure.
pub(crate) struct BroadcastSummary {
    dtype: DType,
    cases: usize,
    worst_fast_vs_upstream: f64,
    worst_fast_vs_cpu: f64,
    pub failures: Vec<String>,
}

impl fmt::Display for BroadcastSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dtype={:?} cases={} worst_relative_error fast_vs_upstream={:.3e} fast_vs_cpu={:.3e} bound={:.3e} {}",
            self.dtype,
            self.cases,
            self.worst_fast_vs_upstream,
            self.worst_fast_vs_cpu,
            ulp(self.dtype),
            if self.failures.is_empty() { "ok" } else { "FAIL" }
        )
    }
}

/// Every op on every layout in `dtype` on `device`: with the fast kernels, with upstream's, and
/// on the CPU; each result within one ulp of the other two. Leaves the fast kernels on.
pub(crate) fn broadcast(device: &Device, dtype: DType) -> anyhow::Result<BroadcastSummary> {
    let mut summary = BroadcastSummary {
        dtype,
        cases: 0,
        worst_fast_vs_upstream: 0.0,
        worst_fast_vs_cpu: 0.0,
        failures: vec![],
    };
    let bound = ulp(dtype);
    for layout in layouts(dtype, device)? {
        let (cpu_lhs, cpu_rhs) = (
            layout.lhs.to_device(&Device::Cpu)?,
            layout.rhs.to_device(&Device::Cpu)?,
        );
        for (op_name, op) in OPS {
            conv::set_fast_broadcast(true)?;
            let fast = op(&layout.lhs, &layout.rhs)?;
            conv::set_fast_broadcast(false)?;
            let upstream = op(&layout.lhs, &layout.rhs)?;
            conv::set_fast_broadcast(true)?;
            let cpu = op(&cpu_lhs, &cpu_rhs)?;
            let vs_upstream = relative_error(&fast, &upstream, dtype)?;
            let vs_cpu = relative_error(&fast, &cpu, dtype)?;
            summary.cases += 1;
            summary.worst_fast_vs_upstream = summary.worst_fast_vs_upstream.max(vs_upstream);
            summary.worst_fast_vs_cpu = summary.worst_fast_vs_cpu.max(vs_cpu);
            if vs_upstream > bound || vs_cpu > bound {
                summary.failures.push(format!(
                    "{op_name} {} {dtype:?}: relative error {vs_upstream:.3e} against upstream, {vs_cpu:.3e} against the CPU (bound {bound:.3e})",
                    layout.name
                ));
            }
        }
    }
    Ok(summary)
}

/// The error the fused group norm may always have, as a share of the output's spread, even
/// where candle-nn's is the reference itself (f32: the two sum a group of up to a million values
/// in other orders and precisions, candle-nn in plain f32; 1.6e-5 seen on the CPU for channels
/// with means up to ~6).
fn group_norm_floor(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2e-3,
        DType::BF16 => 2e-2,
        _ => 1e-4,
    }
}

/// (groups, input shape) the decoders and UNet normalise: the VAE's mid block and full-size up
/// block, a UNet block at 512x512's smallest latent, and a small odd one.
const GROUP_NORM_SHAPES: [(usize, [usize; 4]); 4] = [
    (32, [1, 512, 64, 64]),
    (32, [2, 128, 256, 256]),
    (32, [2, 1280, 8, 8]),
    (4, [3, 12, 5, 7]),
];

/// The fused group norm, plain and with SiLU, against candle-nn's on the same inputs on
/// `device` in `dtype`, and both against candle-nn's in f32: the fused op must be no further from
/// the f32 result than candle-nn's own op in `dtype` is (which rounds three more times), or
/// within `group_norm_floor`. One line each, and whether all passed.
pub(crate) fn group_norm(device: &Device, dtype: DType) -> anyhow::Result<(Vec<String>, bool)> {
    let (mut lines, mut ok) = (vec![], true);
    for (groups, dims) in GROUP_NORM_SHAPES {
        let name = format!("check norm {dims:?}");
        let layer = |dtype| {
            GroupNorm::new(
                groups,
                dims[1],
                1e-6,
                random_var_builder(dtype, device).pp(&name),
            )
        };
        let (layer, layer_f32) = (layer(dtype)?, layer(DType::F32)?);
        let x_f32 = varied_channels(&format!("check x {dims:?}"), &dims, 0.5, device)?;
        let x = x_f32.to_dtype(dtype)?;
        for silu in [false, true] {
            let reference = layer_f32.composed(&x_f32, silu)?;
            let (fused, composed) = (layer.fused(&x, silu)?, layer.composed(&x, silu)?);
            let against_candle = Comparison::of(&fused, &composed)?;
            let fused_error = Comparison::of(&fused, &reference)?;
            let candle_error = Comparison::of(&composed, &reference)?;
            let allowed = candle_error
                .error_over_spread()
                .max(group_norm_floor(dtype));
            let within = fused_error.error_over_spread() <= allowed;
            ok &= within;
            lines.push(format!(
                "group_norm_check {dims:?} groups={groups} silu={silu} dtype={dtype:?} vs_candle_max_abs_error={:.3e} vs_f32: fused={:.3e} candle={:.3e} (max error over std) allowed={allowed:.3e} {}",
                against_candle.max_abs_error,
                fused_error.error_over_spread(),
                candle_error.error_over_spread(),
                if within { "ok" } else { "FAIL" }
            ));
        }
    }
    Ok((lines, ok))
}

/// An attention the models make: (what, [heads x batch, query tokens, head width], key tokens).
type AttentionShape = (&'static str, [usize; 3], usize);

/// sd-1.5's first self- and cross-attention at 512x512 with guidance (batch 2 x 8 heads of 40
/// over 64x64 latents and 77 text tokens), and the VAE's one-head mid-block attention.
const ATTENTION_SHAPES: [AttentionShape; 3] = [
    ("unet_self", [16, 4096, 40], 4096),
    ("unet_cross", [16, 4096, 40], 77),
    ("vae_mid", [1, 4096, 512], 4096),
];

/// attention.rs's attention on `device` in `dtype`, scores as the models keep them (f16 for an
/// f16 model on the GPU, else f32) and in f32 (upcasting models, candle-transformers' way), both
/// against f32 on the CPU from the same rounded inputs. q and k are N(0, 1.7²), so the scores
/// spread about 3, as trained models' do and enough to make the softmax peaked. Bound: `BOUND`,
/// as a whole model's; f16 scores were estimated at 2-3% of the spread for such inputs (numpy),
/// f32 scores at ~0.4% (the output's rounding).
pub(crate) fn attention(device: &Device, dtype: DType) -> anyhow::Result<(Vec<String>, bool)> {
    attention_at(device, dtype, &ATTENTION_SHAPES)
}

fn attention_at(
    device: &Device,
    dtype: DType,
    shapes: &[AttentionShape],
) -> anyhow::Result<(Vec<String>, bool)> {
    use crate::generator::stable_diffusion::attention::scaled_dot_product;
    let (mut lines, mut ok) = (vec![], true);
    for &(what, [n, tq, d], tk) in shapes {
        // In the model's dtype, and the same rounded values in f32 for the reference.
        let input = |name: &str, dims: [usize; 3], std| -> anyhow::Result<_> {
            let name = format!("check attention {what} {name}");
            let x =
                normal_tensor(&name, &dims[..], (0.0, std), DType::F32, device)?.to_dtype(dtype)?;
            Ok((x.to_dtype(DType::F32)?, x))
        };
        let (q32, q) = input("q", [n, tq, d], 1.7)?;
        let (k32, k) = input("k", [n, tk, d], 1.7)?;
        let (v32, v) = input("v", [n, tk, d], 1.0)?;
        let scale = (d as f64).powf(-0.5);
        // On the CPU, whose f32 path the textbook unit test holds: a fault in this device's
        // matmul or softmax does not show on both sides.
        let cpu = |t: Tensor| t.to_device(&Device::Cpu);
        let reference = scaled_dot_product(&cpu(q32)?, &cpu(k32)?, &cpu(v32)?, scale, false)?;
        let ours = Comparison::of(&scaled_dot_product(&q, &k, &v, scale, false)?, &reference)?;
        let upcast = Comparison::of(&scaled_dot_product(&q, &k, &v, scale, true)?, &reference)?;
        let within = ours.within_bound();
        ok &= within;
        lines.push(format!(
            "attention_check {what} [{n}, {tq}, {d}] keys={tk} dtype={dtype:?} vs=f32 ours: {ours} f32_scores: {upcast} {}",
            if within { "ok" } else { "FAIL" }
        ));
    }
    Ok((lines, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap()
    }

    #[test]
    fn comparison_is_error_over_the_references_spread() {
        // Reference values -1, 1, -1, 1: mean 0, standard deviation 1.
        let reference = tensor(&[-1.0, 1.0, -1.0, 1.0]);
        let got = tensor(&[-1.0, 1.02, -1.0, 1.0]);
        let c = Comparison::of(&got, &reference).unwrap();
        assert!((c.reference_std - 1.0).abs() < 1e-12);
        assert!((c.max_abs_error - 0.02).abs() < 1e-6);
        assert!((c.rms_error - 0.01).abs() < 1e-6);
        assert!(c.within_bound(), "{c}");
        let got = tensor(&[-1.0, 1.06, -1.0, 1.0]);
        let c = Comparison::of(&got, &reference).unwrap();
        assert!(!c.within_bound(), "{c}");
        assert!(c.to_string().ends_with("FAIL"), "{c}");
        // The same error on a reference ten times smaller is ten times worse.
        let small = (reference.clone() * 0.1).unwrap();
        let got = tensor(&[-0.1, 0.102, -0.1, 0.1]);
        let c = Comparison::of(&got, &small).unwrap();
        assert!((c.error_over_spread() - 0.02).abs() < 1e-5, "{c}");
    }

    #[test]
    fn a_nan_or_another_shape_never_passes() {
        let reference = tensor(&[-1.0, 1.0]);
        let c = Comparison::of(&tensor(&[f32::NAN, 1.0]), &reference).unwrap();
        assert!(!c.within_bound(), "{c}");
        assert!(Comparison::of(&tensor(&[1.0, 1.0, 1.0]), &reference).is_err());
        assert_eq!(
            Comparison::of(&reference, &reference)
                .unwrap()
                .error_over_spread(),
            0.0
        );
    }

    #[test]
    fn relative_error_is_in_units_of_the_value() {
        let want = tensor(&[1000.0, 0.001, 0.0]);
        let got = tensor(&[1000.5, 0.001, 0.0]);
        let error = relative_error(&got, &want, DType::F32).unwrap();
        assert!((error - 5e-4).abs() < 1e-9, "{error}");
        // Below the floor, the floor divides: no infinite error for a signed zero.
        let error = relative_error(&tensor(&[1e-6]), &tensor(&[0.0]), DType::F16).unwrap();
        assert!((error - 1e-6 / 6.1e-5).abs() < 1e-6, "{error}");
    }

    /// On the CPU the layouts are made and every op runs on them (the CUDA comparison needs a GPU:
    /// `bench-sd --only broadcast_check`, and the test below in CUDA builds).
    #[test]
    fn every_layout_has_operands_of_one_broadcast_shape() {
        for dtype in [DType::F32, DType::F16] {
            let layouts = layouts(dtype, &Device::Cpu).unwrap();
            assert!(layouts.len() >= 12);
            for layout in &layouts {
                for (_, op) in OPS {
                    let out = op(&layout.lhs, &layout.rhs).unwrap();
                    assert_eq!(out.dtype(), dtype, "{}", layout.name);
                    let cpu = op(&layout.lhs, &layout.rhs).unwrap();
                    assert_eq!(relative_error(&out, &cpu, dtype).unwrap(), 0.0);
                }
            }
            // The offsets are real: the narrowed operands do not start at their storage's start.
            let offset = &layouts[4].lhs;
            assert_eq!(offset.layout().start_offset(), 8 * 5 * 7);
            assert!(!layouts[12].lhs.is_contiguous());
        }
    }

    #[test]
    fn the_attention_check_passes_an_f16_model_on_the_cpu() {
        let shapes = [
            ("small_self", [4, 64, 8], 64),
            ("small_cross", [4, 64, 8], 7),
        ];
        let (lines, ok) = attention_at(&Device::Cpu, DType::F16, &shapes).expect("check runs");
        assert!(ok, "{lines:#?}");
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].contains("keys=7") && lines[1].ends_with(" ok"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn the_fused_group_norm_is_within_its_bound_of_candles_on_the_cpu() {
        for dtype in [DType::F32, DType::F16] {
            let (lines, ok) = group_norm(&Device::Cpu, dtype).unwrap();
            assert_eq!(lines.len(), 2 * GROUP_NORM_SHAPES.len());
            assert!(ok, "{lines:#?}");
        }
    }

    /// The fast kernels against upstream's and the CPU on the first GPU (CUDA builds only).
    #[cfg(feature = "cudnn")]
    #[test]
    fn fast_broadcast_matches_upstream_on_the_gpu() {
        let device = Device::new_cuda(0).expect("a CUDA build's tests need a GPU");
        for dtype in [DType::F32, DType::F16] {
            let summary = broadcast(&device, dtype).unwrap();
            assert!(summary.failures.is_empty(), "{:#?}", summary.failures);
        }
    }
}
