//! GroupNorm (diffusers' `nn.GroupNorm`), optionally followed by SiLU, as one op: candle-nn's
//! group norm is a dozen full-tensor passes in f32 (to_f32, sums, subtractions, squares,
//! divisions, casts, scale, shift) and the SiLU another three; here each (image, group) is read
//! twice (statistics, then the output) and written once. Statistics in f64 on the CPU, in f32
//! shifted by the group's first value on the GPU (no cancellation for a large mean); the affine
//! and SiLU in f32; the output rounded once to the input's dtype.
//!
//! Inputs: x [n, c, ...] in f32, f16 or bf16, gamma and beta [c]. Output: x's shape and dtype.
//! CPU: scoped threads over the (image, group) pairs. CUDA: two kernels compiled by NVRTC once
//! per process (src/sys/cuda.rs launches them), partial sums then the output, each group spread
//! over enough blocks to keep the GPU busy at batch 1 (`split`). Where the kernels cannot
//! compile, or disagree with candle-nn's on their first use in a dtype (`self_check`: a wrong
//! kernel must never reach the screen), or `set_fused(false)` asked for it (bench-sd compares
//! the two), candle-nn's op-composed group norm serves, and `fused_group_norm_unavailable` is
//! logged once; `fused_error` says why. Runs on whatever thread the model runs on.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor, WithDType};
use candle_nn::VarBuilder;

static FUSED: AtomicBool = AtomicBool::new(true);

/// Chooses the fused op (the default) or candle-nn's for later group norms.
pub(crate) fn set_fused(enabled: bool) {
    FUSED.store(enabled, Ordering::Relaxed);
}

/// Why the fused op is not in use on the GPU (its kernels failed to compile, or to match
/// candle-nn's on their first use), once a group norm ran there.
pub(crate) fn fused_error() -> Option<String> {
    imp::kernel_error()
}

/// A group norm layer with the weights of diffusers' `GroupNorm` (`weight`, `bias`).
#[derive(Debug, Clone)]
pub(crate) struct GroupNorm {
    gamma: Tensor,
    beta: Tensor,
    groups: usize,
    eps: f64,
    /// candle-nn's, for the unfused path.
    candle: candle_nn::GroupNorm,
}

impl GroupNorm {
    pub(crate) fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let gamma = vb.get_with_hints(channels, "weight", candle_nn::init::ONE)?;
        let beta = vb.get_with_hints(channels, "bias", candle_nn::init::ZERO)?;
        let candle = candle_nn::GroupNorm::new(gamma.clone(), beta.clone(), channels, groups, eps)?;
        Ok(Self {
            gamma,
            beta,
            groups,
            eps,
            candle,
        })
    }

    /// The norm, then SiLU: what a resnet block and the decoder's output do.
    pub(crate) fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    /// The fused op where it may serve (the switch on, a dtype it takes, and on CUDA kernels
    /// that compiled and passed their first-use check), else candle-nn's.
    fn run(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let fused = FUSED.load(Ordering::Relaxed)
            && supported(x.dtype())
            && x.elem_count() > 0
            && (x.device().is_cpu() || imp::kernel_ready(x.device(), x.dtype()));
        if fused {
            self.fused(x, silu)
        } else {
            self.composed(x, silu)
        }
    }

    /// The fused op, whatever the switch says.
    pub(crate) fn fused(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let op = FusedGroupNorm {
            groups: self.groups,
            eps: self.eps,
            silu,
        };
        x.contiguous()?
            .apply_op3_no_bwd(&self.gamma.contiguous()?, &self.beta.contiguous()?, &op)
    }

    /// candle-nn's op-composed group norm (and SiLU), whatever the switch says.
    pub(crate) fn composed(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let normed = self.candle.forward(x)?;
        if silu {
            candle_nn::ops::silu(&normed)
        } else {
            Ok(normed)
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }
}

/// The op: x, gamma, beta -> the normalised x (SiLU after if `silu`).
pub(crate) struct FusedGroupNorm {
    pub groups: usize,
    pub eps: f64,
    pub silu: bool,
}

/// How the group norm sees a tensor: `images` of `groups` groups, each `count` contiguous
/// values of `channels_per_group` channels of `pixels` values each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Groups {
    pub images: usize,
    pub groups: usize,
    pub channels_per_group: usize,
    pub pixels: usize,
}

impl Groups {
    pub(crate) fn count(&self) -> usize {
        self.channels_per_group * self.pixels
    }
}

impl FusedGroupNorm {
    /// The grouping of x's layout, checked against the op's groups and the weights' length.
    pub(crate) fn groups_of(&self, x: &Layout, gamma: &Layout, beta: &Layout) -> Result<Groups> {
        let dims = x.dims();
        if dims.len() < 2 {
            candle_core::bail!("group norm: input of shape {dims:?}, needs [n, c, ...]");
        }
        let (images, channels) = (dims[0], dims[1]);
        if self.groups == 0 || channels % self.groups != 0 {
            candle_core::bail!(
                "group norm: {channels} channels do not split into {} groups",
                self.groups
            );
        }
        for (name, layout) in [("gamma", gamma), ("beta", beta)] {
            if layout.shape().elem_count() != channels || !layout.is_contiguous() {
                candle_core::bail!(
                    "group norm: {name} of shape {:?} for {channels} channels",
                    layout.dims()
                );
            }
        }
        if !x.is_contiguous() {
            candle_core::bail!("group norm: the input must be contiguous");
        }
        Ok(Groups {
            images,
            groups: self.groups,
            channels_per_group: channels / self.groups,
            pixels: dims[2..].iter().product(),
        })
    }
}

/// Blocks to spread the groups over: a few per multiprocessor on the GPUs this runs on (132 on an
/// H100), so the memory system is kept busy at batch 1.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // the CUDA launch's (src/sys/cuda.rs)
pub(crate) const TARGET_BLOCKS: usize = 1024;

/// Values a block handles at least, so small tensors are not split into near-empty blocks.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // the CUDA launch's (src/sys/cuda.rs)
const MIN_CHUNK: usize = 4096;

/// How many blocks share one group of `count` values when there are `groups` groups: (splits,
/// chunk), every block's chunk non-empty.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // the CUDA launch's (src/sys/cuda.rs)
pub(crate) fn split(groups: usize, count: usize) -> (usize, usize) {
    let splits = TARGET_BLOCKS
        .div_ceil(groups.max(1))
        .min(count / MIN_CHUNK)
        .max(1);
    let chunk = count.div_ceil(splits).max(1);
    (count.div_ceil(chunk).max(1), chunk)
}

/// `values[layout]`'s contiguous part.
fn contiguous<'a, T>(values: &'a [T], layout: &Layout) -> &'a [T] {
    let start = layout.start_offset();
    &values[start..start + layout.shape().elem_count()]
}

/// Sums of (v - shift) and of its squares over `values`, in f64, in independent lanes so the
/// loop vectorises instead of waiting on one accumulator.
fn shifted_sums<T: WithDType>(values: &[T], shift: f64) -> (f64, f64) {
    const LANES: usize = 8;
    let (mut sums, mut squares) = ([0f64; LANES], [0f64; LANES]);
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let d = chunk[lane].to_f64() - shift;
            sums[lane] += d;
            squares[lane] += d * d;
        }
    }
    for (lane, v) in rest.iter().enumerate() {
        let d = v.to_f64() - shift;
        sums[lane] += d;
        squares[lane] += d * d;
    }
    (sums.iter().sum(), squares.iter().sum())
}

/// One group's output: `x` and `out` are the group's `count` values, `gamma` and `beta` its
/// channels' weights. One pass for the statistics (sums shifted by the first value, so a large
/// mean does not cancel), one for the output.
fn normalise_group<T: WithDType>(
    x: &[T],
    out: &mut [T],
    (gamma, beta): (&[T], &[T]),
    pixels: usize,
    eps: f64,
    silu: bool,
) {
    let Some(first) = x.first() else {
        return;
    };
    let n = x.len() as f64;
    let (sum, squares) = shifted_sums(x, first.to_f64());
    let mean_shifted = sum / n;
    let variance = (squares / n - mean_shifted * mean_shifted).max(0.0);
    let mean = first.to_f64() + mean_shifted;
    let rstd = 1.0 / (variance + eps).sqrt();
    for (channel, (x, out)) in x
        .chunks(pixels.max(1))
        .zip(out.chunks_mut(pixels.max(1)))
        .enumerate()
    {
        // The affine in f32, as the GPU kernel does it.
        let scale = (rstd * gamma[channel].to_f64()) as f32;
        let shift = (beta[channel].to_f64() - mean * rstd * gamma[channel].to_f64()) as f32;
        if silu {
            for (x, out) in x.iter().zip(out.iter_mut()) {
                let y = x.to_f64() as f32 * scale + shift;
                *out = T::from_f64(f64::from(y / (1.0 + (-y).exp())));
            }
        } else {
            for (x, out) in x.iter().zip(out.iter_mut()) {
                *out = T::from_f64(f64::from(x.to_f64() as f32 * scale + shift));
            }
        }
    }
}

fn cpu_group_norm<T: WithDType>(
    x: &[T],
    (gamma, beta): (&[T], &[T]),
    shape: Groups,
    eps: f64,
    silu: bool,
) -> Vec<T> {
    let count = shape.count().max(1);
    let mut out = vec![T::zero(); x.len()];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let groups_per_thread = (shape.images * shape.groups).div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (part, (x, out)) in x
            .chunks(groups_per_thread * count)
            .zip(out.chunks_mut(groups_per_thread * count))
            .enumerate()
        {
            scope.spawn(move || {
                for (i, (x, out)) in x.chunks(count).zip(out.chunks_mut(count)).enumerate() {
                    let group = (part * groups_per_thread + i) % shape.groups;
                    let channels =
                        group * shape.channels_per_group..(group + 1) * shape.channels_per_group;
                    let weights = (&gamma[channels.clone()], &beta[channels]);
                    normalise_group(x, out, weights, shape.pixels, eps, silu);
                }
            });
        }
    });
    out
}

/// `cpu_group_norm` of the three storages' contiguous parts.
fn cpu_fwd_of<T: WithDType>(
    [x, gamma, beta]: [&[T]; 3],
    [x_layout, gamma_layout, beta_layout]: [&Layout; 3],
    (shape, eps, silu): (Groups, f64, bool),
) -> Vec<T> {
    let weights = (
        contiguous(gamma, gamma_layout),
        contiguous(beta, beta_layout),
    );
    cpu_group_norm(contiguous(x, x_layout), weights, shape, eps, silu)
}

impl CustomOp3 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "fused-group-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        gamma: &CpuStorage,
        gamma_layout: &Layout,
        beta: &CpuStorage,
        beta_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = self.groups_of(x_layout, gamma_layout, beta_layout)?;
        let layouts = [x_layout, gamma_layout, beta_layout];
        let settings = (shape, self.eps, self.silu);
        let storage = match (x, gamma, beta) {
            (CpuStorage::F32(x), CpuStorage::F32(g), CpuStorage::F32(b)) => {
                CpuStorage::F32(cpu_fwd_of([x, g, b], layouts, settings))
            }
            (CpuStorage::F16(x), CpuStorage::F16(g), CpuStorage::F16(b)) => {
                CpuStorage::F16(cpu_fwd_of([x, g, b], layouts, settings))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(g), CpuStorage::BF16(b)) => {
                CpuStorage::BF16(cpu_fwd_of([x, g, b], layouts, settings))
            }
            _ => candle_core::bail!(
                "group norm: input and weights must be one of f32, f16, bf16, got {:?}",
                x.dtype()
            ),
        };
        Ok((storage, x_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        gamma: &candle_core::CudaStorage,
        gamma_layout: &Layout,
        beta: &candle_core::CudaStorage,
        beta_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let shape = self.groups_of(x_layout, gamma_layout, beta_layout)?;
        let storage = crate::sys::cuda::group_norm(
            (x, x_layout),
            (gamma, gamma_layout),
            (beta, beta_layout),
            shape,
            (self.eps as f32, self.silu),
        )?;
        Ok((storage, x_layout.shape().clone()))
    }
}

/// Activations to check a group norm on, f32 on `device`, the same on every run (seeded by
/// `name`): N(0, 1) with every channel [1] its own mean, N(`mean`, 2), and scale, |N(1, 0.5)| +
/// 0.1, as real activations have, so an op that took one group's or channel's statistics for
/// another's does not get the same ones by chance.
pub(crate) fn varied_channels(
    name: &str,
    dims: &[usize],
    mean: f32,
    device: &candle_core::Device,
) -> Result<Tensor> {
    use super::random::normal_tensor;
    let mut channel_dims = vec![1; dims.len()];
    channel_dims[1] = dims[1];
    let channel = |what: &str, mean_std| {
        normal_tensor(
            &format!("{name} {what}"),
            &channel_dims[..],
            mean_std,
            DType::F32,
            device,
        )
    };
    let offsets = channel("offsets", (mean, 2.0))?;
    let scales = (channel("scales", (1.0, 0.5))?.abs()? + 0.1)?;
    normal_tensor(name, dims, (0.0, 1.0), DType::F32, device)?
        .broadcast_mul(&scales)?
        .broadcast_add(&offsets)
}

/// The fused op against candle-nn's on one input that spreads every group over several GPU
/// blocks ([1, 64, 128, 128] in 32 groups: 8 blocks a group), with SiLU: why not, if they
/// differ by more than a few of the dtype's units (as a share of the output's spread).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // the CUDA path's first-use check
fn self_check(device: &candle_core::Device, dtype: DType) -> std::result::Result<(), String> {
    check_against_candle(device, dtype, 32)
}

/// `self_check` with the fused op told `fused_groups` groups (candle-nn's always 32): another
/// count must fail it, as a wrong kernel would.
fn check_against_candle(
    device: &candle_core::Device,
    dtype: DType,
    fused_groups: usize,
) -> std::result::Result<(), String> {
    use super::random::normal_tensor;
    // candle-nn's rounds three more times than the fused op: a unit or two of the dtype at the
    // largest values (~8 after SiLU, against a spread of ~0.6). A wrong kernel is off by ~100%.
    let bound = match dtype {
        DType::F16 => 4e-2,
        DType::BF16 => 3e-1,
        _ => 1e-4,
    };
    let compare = || -> Result<(f64, f64)> {
        let x = varied_channels("group norm self-check", &[1, 64, 128, 128], 0.0, device)?
            .to_dtype(dtype)?;
        let gamma = normal_tensor("group norm self-check gamma", 64, (1.0, 0.1), dtype, device)?;
        let beta = normal_tensor("group norm self-check beta", 64, (0.0, 0.1), dtype, device)?;
        let op = FusedGroupNorm {
            groups: fused_groups,
            eps: 1e-6,
            silu: true,
        };
        let fused = x.apply_op3_no_bwd(&gamma, &beta, &op)?;
        let composed = candle_nn::GroupNorm::new(gamma, beta, 64, 32, 1e-6)?.forward(&x)?;
        let composed = candle_nn::ops::silu(&composed)?.to_dtype(DType::F32)?;
        let difference = (fused.to_dtype(DType::F32)? - &composed)?.abs()?;
        let largest = difference.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let spread = composed.flatten_all()?.var(0)?.to_scalar::<f32>()?.sqrt();
        Ok((f64::from(largest), f64::from(spread)))
    };
    match compare() {
        Ok((largest, spread)) if largest <= bound * spread => Ok(()),
        Ok((largest, spread)) => Err(format!(
            "the fused group norm differs from candle-nn's by {largest:.3e} ({:.3e} of the output's spread, more than {bound:e}) in {dtype:?}",
            largest / spread
        )),
        Err(error) => Err(format!("the fused group norm's check failed in {dtype:?}: {error}")),
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::OnceLock;

    use candle_core::{DType, Device};

    /// Per dtype (f32, f16, bf16): whether the kernels compiled and passed `self_check` on the
    /// first device that used them.
    static VERIFIED: [OnceLock<Result<(), String>>; 3] = [const { OnceLock::new() }; 3];

    pub(super) fn kernel_ready(device: &Device, dtype: DType) -> bool {
        let slot = match dtype {
            DType::F32 => 0,
            DType::F16 => 1,
            _ => 2,
        };
        VERIFIED[slot]
            .get_or_init(|| {
                let verdict = crate::sys::cuda::group_norm_ptx()
                    .map(|_| ())
                    .and_then(|()| super::self_check(device, dtype));
                if let Err(error) = &verdict {
                    log::warn!(
                        "{}",
                        crate::events::FusedGroupNormUnavailable {
                            error: error.clone()
                        }
                    );
                }
                verdict
            })
            .is_ok()
    }

    pub(super) fn kernel_error() -> Option<String> {
        VERIFIED
            .iter()
            .find_map(|verdict| verdict.get().and_then(|v| v.as_ref().err().cloned()))
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{DType, Device};

    pub(super) fn kernel_ready(_: &Device, _: DType) -> bool {
        false
    }

    pub(super) fn kernel_error() -> Option<String> {
        None
    }
}

/// The dtypes the fused op takes.
fn supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::checks::Comparison;
    use crate::generator::stable_diffusion::random::normal_tensor;
    use candle_core::Device;

    fn layer(groups: usize, channels: usize) -> GroupNorm {
        let vb = crate::generator::stable_diffusion::random::random_var_builder(
            DType::F32,
            &Device::Cpu,
        );
        GroupNorm::new(groups, channels, 1e-6, vb.pp("norm")).unwrap()
    }

    fn max_error(a: &Tensor, b: &Tensor) -> f64 {
        Comparison::of(a, b).unwrap().max_abs_error
    }

    #[test]
    fn fused_matches_candles_group_norm_and_silu() {
        let norm = layer(4, 8);
        // A large mean beside a small spread: where one-pass f32 sums would cancel.
        let x = (normal_tensor("x", (3, 8, 5, 6), (0.0, 0.5), DType::F32, &Device::Cpu).unwrap()
            + 100.0)
            .unwrap();
        let want = norm.composed(&x, false).unwrap();
        let got = norm.fused(&x, false).unwrap();
        assert_eq!(got.dims(), x.dims());
        assert!(max_error(&got, &want) < 2e-4, "{}", max_error(&got, &want));
        let want = norm.composed(&x, true).unwrap();
        let got = norm.fused(&x, true).unwrap();
        assert!(max_error(&got, &want) < 2e-4, "{}", max_error(&got, &want));
        // Each image is its own: the second alone gives what it gave in the batch.
        let alone = norm.fused(&x.narrow(0, 1, 1).unwrap(), true).unwrap();
        assert!(max_error(&alone, &got.narrow(0, 1, 1).unwrap()) < 1e-6);
    }

    #[test]
    fn f16_and_bf16_round_once_and_stay_in_their_dtype() {
        let norm = layer(2, 4);
        let x = normal_tensor("y", (2, 4, 7, 3), (1.0, 2.0), DType::F32, &Device::Cpu).unwrap();
        let want = norm.fused(&x, true).unwrap();
        for (dtype, bound) in [(DType::F16, 5e-3), (DType::BF16, 4e-2)] {
            let layer = GroupNorm {
                gamma: norm.gamma.to_dtype(dtype).unwrap(),
                beta: norm.beta.to_dtype(dtype).unwrap(),
                ..norm.clone()
            };
            let got = layer.fused(&x.to_dtype(dtype).unwrap(), true).unwrap();
            assert_eq!(got.dtype(), dtype);
            let c = Comparison::of(&got, &want).unwrap();
            assert!(c.error_over_spread() < bound, "{dtype:?}: {c}");
        }
    }

    #[test]
    fn the_gpus_blocks_tile_every_group_and_spread_small_batches() {
        for (groups, count) in [
            (32, 4 << 20),
            (32, 1),
            (1, 5000),
            (320, 64 * 40),
            (7, 123_457),
        ] {
            let (splits, chunk) = split(groups, count);
            // Every block non-empty, the chunks covering the group exactly.
            assert!(
                (splits - 1) * chunk < count && splits * chunk >= count,
                "{groups} {count}"
            );
            assert!(
                chunk >= MIN_CHUNK.min(count),
                "{groups} {count}: chunk {chunk}"
            );
        }
        // Batch 1 of the VAE's full-size block: 32 groups of a million values use ~1024 blocks.
        let (splits, _) = split(32, 4 * 512 * 512);
        assert_eq!(32 * splits, TARGET_BLOCKS);
        // Many small groups are not split at all.
        assert_eq!(split(640, 2560), (1, 2560));
    }

    #[test]
    fn the_first_use_check_passes_on_the_cpu_in_every_dtype() {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            self_check(&Device::Cpu, dtype).unwrap();
        }
        // An op that groups wrongly is caught, in the dtype with the loosest bound too.
        for dtype in [DType::F32, DType::BF16] {
            let error = check_against_candle(&Device::Cpu, dtype, 16).unwrap_err();
            assert!(error.contains("differs from candle-nn's"), "{error}");
        }
    }

    #[test]
    fn the_switch_gives_candles_path_and_bad_shapes_are_errors() {
        let norm = layer(4, 8);
        let x = normal_tensor("z", (1, 8, 3, 3), (0.0, 1.0), DType::F32, &Device::Cpu).unwrap();
        // The only test that turns the switch (others call `fused` or `composed` directly).
        let switched_on = norm.forward(&x).unwrap();
        set_fused(false);
        let switched_off = norm.forward_silu(&x);
        set_fused(true);
        assert_eq!(
            max_error(&switched_on, &norm.fused(&x, false).unwrap()),
            0.0
        );
        assert_eq!(
            max_error(&switched_off.unwrap(), &norm.composed(&x, true).unwrap()),
            0.0
        );
        // A transposed input is made contiguous first.
        let t = x.transpose(2, 3).unwrap();
        let want = norm.composed(&t.contiguous().unwrap(), false).unwrap();
        assert!(max_error(&norm.fused(&t, false).unwrap(), &want) < 1e-5);
        let op = FusedGroupNorm {
            groups: 3,
            eps: 1e-6,
            silu: false,
        };
        let error = x
            .apply_op3_no_bwd(&norm.gamma, &norm.beta, &op)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("8 channels do not split into 3 groups"),
            "{error}"
        );
        assert!(supported(DType::F16) && !supported(DType::U8));
    }
}
