//! Patched for dreamframe (tools/candle-core/PATCH.md): a fast path for binary ops where one side
//! is contiguous and the other a broadcast (a conv's bias, GroupNorm's mean, scale and shift).
//! Upstream's kernel computes the broadcast side's index with a 64-bit modulo and division per
//! dimension per element, reading the dims and strides from global memory: in a 512x512 VAE
//! decode on an H200 these ops took ~44 of ~63 ms (Nsight Compute). Here the layout is collapsed
//! on the host to at most three (size, stride) pairs and the kernel indexes in 32 bits. f16 and
//! f32 only; math in f32 (exact for add, sub and mul of f16 values; div rounded twice, within one
//! f16 ulp).

use super::{CudaDevice, WrapErr};
use crate::{builder_arg as barg, DType, Layout, Result, WithDType};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Switches the fast path on or off for later binary ops (off: upstream's kernel for all).
pub fn set_fast_broadcast(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

// Not inlined into the generic `try_launch`, which other crates instantiate: a private static
// named from there was left out of this crate's exported symbols (undefined at link time).
#[inline(never)]
fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

const MODULE: &str = "dreamframe_broadcast";

const SOURCE: &str = r#"
__device__ __forceinline__ float load(const float *p, unsigned int i) { return p[i]; }
__device__ __forceinline__ void store(float *p, unsigned int i, float v) { p[i] = v; }
__device__ __forceinline__ float load(const unsigned short *p, unsigned int i) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i])); return f;
}
__device__ __forceinline__ void store(unsigned short *p, unsigned int i, float v) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); p[i] = h;
}
// out[i] = op(a[i], b[j]) (or op(b[j], a[i]) when flip), where i runs over the contiguous
// operand a and j = o * s0 + m * s1 + k * s2 for i = (o * d1 + m) * d2 + k.
#define BROADCAST(NAME, T, EXPR) \
extern "C" __global__ void NAME(unsigned int n, unsigned int d1, unsigned int d2, \
    unsigned int s0, unsigned int s1, unsigned int s2, int flip, \
    const T *a, const T *b, T *out) { \
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; \
         i += blockDim.x * gridDim.x) { \
        unsigned int k = i % d2, t = i / d2, m = t % d1, o = t / d1; \
        float c = load(a, i), r = load(b, o * s0 + m * s1 + k * s2); \
        float x = flip ? r : c, y = flip ? c : r; \
        store(out, i, EXPR); \
    } \
}
#define OPS(T, SUFFIX) \
    BROADCAST(fast_badd_##SUFFIX, T, x + y) \
    BROADCAST(fast_bsub_##SUFFIX, T, x - y) \
    BROADCAST(fast_bmul_##SUFFIX, T, x * y) \
    BROADCAST(fast_bdiv_##SUFFIX, T, x / y) \
    BROADCAST(fast_bminimum_##SUFFIX, T, fminf(x, y)) \
    BROADCAST(fast_bmaximum_##SUFFIX, T, fmaxf(x, y))
OPS(float, f32)
OPS(unsigned short, f16)
"#;

static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// The kernels' PTX, compiled by NVRTC once per process; `None` if that failed (then upstream's
/// kernels serve every op, and `fast_broadcast_error` says why).
#[inline(never)]
fn ptx() -> Option<&'static str> {
    PTX.get_or_init(|| {
        cudarc::nvrtc::compile_ptx(SOURCE)
            .map(|ptx| ptx.to_src())
            .map_err(|e| format!("compiling the broadcast kernels with NVRTC: {e:?}"))
    })
    .as_deref()
    .ok()
}

/// Why the fast path is not in use, if it failed to compile.
pub fn fast_broadcast_error() -> Option<String> {
    PTX.get().and_then(|ptx| ptx.as_ref().err().cloned())
}

/// `dims` with `strides` as at most three (size, stride) pairs, outer first, that address the
/// same elements in the same order; `None` if that takes more than three.
fn collapse(dims: &[usize], strides: &[usize]) -> Option<[(usize, usize); 3]> {
    let mut pairs: Vec<(usize, usize)> = Vec::with_capacity(dims.len());
    for (&size, &stride) in dims.iter().zip(strides) {
        if size == 1 {
            continue;
        }
        match pairs.last_mut() {
            // The outer one steps over exactly the inner one's span (or both stay put).
            Some(outer) if outer.1 == stride * size => *outer = (outer.0 * size, stride),
            _ => pairs.push((size, stride)),
        }
    }
    if pairs.len() > 3 {
        return None;
    }
    let mut out = [(1, 0); 3];
    out[3 - pairs.len()..].copy_from_slice(&pairs);
    Some(out)
}

/// Runs `kernel` (upstream's name, e.g. "badd") through the fast path, or `None` where it does
/// not apply (then the caller runs upstream's kernel).
pub(crate) fn try_launch<T: DeviceRepr + WithDType + ValidAsZeroBits>(
    kernel: &str,
    lhs: &CudaSlice<T>,
    lhs_l: &Layout,
    rhs: &CudaSlice<T>,
    rhs_l: &Layout,
    dev: &CudaDevice,
) -> Result<Option<CudaSlice<T>>> {
    if !enabled() {
        return Ok(None);
    }
    let suffix = match T::DTYPE {
        DType::F16 => "f16",
        DType::F32 => "f32",
        _ => return Ok(None),
    };
    if !matches!(
        kernel,
        "badd" | "bsub" | "bmul" | "bdiv" | "bminimum" | "bmaximum"
    ) {
        return Ok(None);
    }
    let (lhs_cont, rhs_cont) = (lhs_l.is_contiguous(), rhs_l.is_contiguous());
    // Both contiguous: upstream's kernel is already a plain loop. Neither: not ours.
    if lhs_cont == rhs_cont {
        return Ok(None);
    }
    let flip = !lhs_cont;
    let (a, a_l, b, b_l) = if flip {
        (rhs, rhs_l, lhs, lhs_l)
    } else {
        (lhs, lhs_l, rhs, rhs_l)
    };
    let n = a_l.shape().elem_count();
    let Some(pairs) = collapse(a_l.dims(), b_l.stride()) else {
        return Ok(None);
    };
    let b_span: usize = pairs.iter().map(|&(d, s)| (d - 1) * s).sum::<usize>() + 1;
    if n == 0 || n > i32::MAX as usize || b_span > u32::MAX as usize {
        return Ok(None);
    }
    let Some(ptx) = ptx() else {
        return Ok(None);
    };
    let func = dev.get_or_load_custom_func(&format!("fast_{kernel}_{suffix}"), MODULE, ptx)?;
    let a = a.slice(a_l.start_offset()..);
    let b = b.slice(b_l.start_offset()..);
    // SAFETY: every element is written by the kernel.
    // The buffer is left uninitialised: the launch below writes out[i] for every i < n (its
    // grid-stride loop covers 0..n) before anything can read it, and reads are queued after it
    // on the device's one stream. If the launch fails, `out` is dropped unread.
    let out = unsafe { dev.alloc::<T>(n)? };
    let mut builder = func.builder();
    barg!(builder, n as u32, pairs[1].0 as u32, pairs[2].0 as u32);
    barg!(
        builder,
        pairs[0].1 as u32,
        pairs[1].1 as u32,
        pairs[2].1 as u32
    );
    barg!(builder, flip as i32);
    builder.arg(&a);
    builder.arg(&b);
    builder.arg(&out);
    // SAFETY: ffi; the arguments match the kernel's signature.
    // In order: (u32 n, u32 d1, u32 d2, u32 s0, u32 s1, u32 s2, int flip, const T *a,
    // const T *b, T *out), with T float for f32 and unsigned short (same 2 bytes) for f16, the
    // function picked by `suffix` from T::DTYPE. Bounds: `a` is contiguous with n elements from
    // its offset and `out` was allocated with n; `b` has the same dims (candle gives a binary
    // op's operands one shape, a broadcast side zero strides), `collapse` addresses the same
    // elements, so the largest index read from `b`, b_span - 1, lies inside its layout. The
    // size/stride casts do not truncate (each is <= n <= i32::MAX or bounded by b_span <=
    // u32::MAX), and n <= i32::MAX keeps the kernel's 32-bit i, i + stride and j from wrapping.
    // The function, the buffers and the launch all belong to `dev`'s stream.
    unsafe { builder.launch(LaunchConfig::for_num_elems(n as u32)) }.w()?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::collapse;

    #[test]
    fn a_channel_bias_collapses_to_channels_and_pixels() {
        // [1, 128, 64, 64] + bias [1, 128, 1, 1] broadcast: strides (128, 1, 0, 0).
        let pairs = collapse(&[1, 128, 64, 64], &[128, 1, 0, 0]).unwrap();
        assert_eq!(pairs, [(1, 0), (128, 1), (4096, 0)]);
    }

    #[test]
    fn group_statistics_and_batches_collapse() {
        // [2, 32, 4096] - mean [2, 32, 1]: strides (32, 1, 0) merge to 64 groups.
        assert_eq!(
            collapse(&[2, 32, 4096], &[32, 1, 0]).unwrap(),
            [(1, 0), (64, 1), (4096, 0)]
        );
        // A weight over channels in a batch of two: [2, 8, 4, 4] * [1, 8, 1, 1].
        assert_eq!(
            collapse(&[2, 8, 4, 4], &[0, 1, 0, 0]).unwrap(),
            [(2, 0), (8, 1), (16, 0)]
        );
    }

    #[test]
    fn four_independent_steps_do_not_collapse() {
        assert_eq!(collapse(&[2, 3, 4, 5], &[0, 1, 0, 7]), None);
    }
}
