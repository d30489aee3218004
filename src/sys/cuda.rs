//! CUDA kernels of our own, compiled by NVRTC once per process and launched on candle's stream:
//! the fused group norm (+ SiLU) of stable_diffusion/group_norm.rs. The launch is the one unsafe
//! call (the driver cannot check a kernel's arguments); everything it relies on is checked here
//! first. CUDA builds only.

use std::sync::OnceLock;

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{Layout, Result};

use crate::generator::stable_diffusion::group_norm::Groups;

const MODULE: &str = "dreamframe_group_norm";

/// Threads per block: a multiple of 32 (the reduction works warp by warp), at most 1024.
const THREADS: u32 = 512;

/// One block per (image, group): the group's `count` contiguous values are summed, shifted by the
/// group's first value so a large mean does not cancel, in f32; then each value is normalised,
/// scaled and shifted by its channel's gamma and beta, SiLU applied if asked, and rounded once.
const SOURCE: &str = r#"
__device__ __forceinline__ float load(const float *p, unsigned int i) { return p[i]; }
__device__ __forceinline__ void store(float *p, unsigned int i, float v) { p[i] = v; }
__device__ __forceinline__ float load(const unsigned short *p, unsigned int i) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i])); return f;
}
__device__ __forceinline__ void store(unsigned short *p, unsigned int i, float v) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); p[i] = h;
}
// bf16 as the upper half of an f32, rounded to nearest even (NaN stays NaN).
struct bf16 { unsigned short bits; };
__device__ __forceinline__ float load(const bf16 *p, unsigned int i) {
    return __uint_as_float(((unsigned int)p[i].bits) << 16);
}
__device__ __forceinline__ void store(bf16 *p, unsigned int i, float v) {
    unsigned int u = __float_as_uint(v);
    unsigned int rounded = (v != v) ? (u | 0x00400000u) : (u + 0x7fffu + ((u >> 16) & 1u));
    p[i].bits = (unsigned short)(rounded >> 16);
}
__device__ __forceinline__ float block_sum(float v, float *shared) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    const unsigned int warps = blockDim.x >> 5;
    v = threadIdx.x < warps ? shared[threadIdx.x] : 0.0f;
    if (warp == 0) {
        for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    v = shared[0];
    __syncthreads();
    return v;
}
#define GROUP_NORM(NAME, T) \
extern "C" __global__ void NAME(unsigned int count, unsigned int pixels, \
    unsigned int channels_per_group, unsigned int groups, float eps, int silu, \
    const T *x, const T *gamma, const T *beta, T *out) { \
    __shared__ float shared[32]; \
    const unsigned long long base = (unsigned long long)blockIdx.x * count; \
    const T *xs = x + base; \
    T *ys = out + base; \
    const float shift = load(xs, 0); \
    float sum = 0.0f, squares = 0.0f; \
    for (unsigned int i = threadIdx.x; i < count; i += blockDim.x) { \
        const float d = load(xs, i) - shift; \
        sum += d; \
        squares += d * d; \
    } \
    sum = block_sum(sum, shared); \
    squares = block_sum(squares, shared); \
    const float mean_shifted = sum / (float)count; \
    const float variance = fmaxf(squares / (float)count - mean_shifted * mean_shifted, 0.0f); \
    const float mean = shift + mean_shifted; \
    const float rstd = rsqrtf(variance + eps); \
    const unsigned int first_channel = (blockIdx.x % groups) * channels_per_group; \
    for (unsigned int i = threadIdx.x; i < count; i += blockDim.x) { \
        const unsigned int channel = first_channel + i / pixels; \
        float y = (load(xs, i) - mean) * rstd * load(gamma, channel) + load(beta, channel); \
        if (silu) y = y / (1.0f + __expf(-y)); \
        store(ys, i, y); \
    } \
}
GROUP_NORM(group_norm_f32, float)
GROUP_NORM(group_norm_f16, unsigned short)
GROUP_NORM(group_norm_bf16, bf16)
"#;

static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// The kernels' PTX, compiled once; the error says why it could not be (then candle-nn's group
/// norm serves).
pub(crate) fn group_norm_ptx() -> std::result::Result<&'static str, String> {
    PTX.get_or_init(|| {
        candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE)
            .map(|ptx| ptx.to_src())
            .map_err(|e| format!("compiling the group norm kernel with NVRTC: {e:?}"))
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// The fused group norm of `x` (contiguous, [images, channels, pixels...]) with `gamma` and
/// `beta` ([channels], contiguous), as `shape` describes it; (eps, silu).
pub(crate) fn group_norm(
    (x, x_layout): (&CudaStorage, &Layout),
    (gamma, gamma_layout): (&CudaStorage, &Layout),
    (beta, beta_layout): (&CudaStorage, &Layout),
    shape: Groups,
    (eps, silu): (f32, bool),
) -> Result<CudaStorage> {
    use candle_core::cuda_backend::CudaStorageSlice as Slice;
    let layouts = [x_layout, gamma_layout, beta_layout];
    let device = &x.device;
    let settings = (shape, eps, silu);
    match (&x.slice, &gamma.slice, &beta.slice) {
        (Slice::F32(x), Slice::F32(g), Slice::F32(b)) => {
            launch("group_norm_f32", device, [x, g, b], layouts, settings)
        }
        (Slice::F16(x), Slice::F16(g), Slice::F16(b)) => {
            launch("group_norm_f16", device, [x, g, b], layouts, settings)
        }
        (Slice::BF16(x), Slice::BF16(g), Slice::BF16(b)) => {
            launch("group_norm_bf16", device, [x, g, b], layouts, settings)
        }
        _ => candle_core::bail!("group norm: input and weights must be one of f32, f16, bf16"),
    }
}

fn launch<T: CudaDType + DeviceRepr>(
    kernel: &str,
    device: &CudaDevice,
    [x, gamma, beta]: [&CudaSlice<T>; 3],
    [x_layout, gamma_layout, beta_layout]: [&Layout; 3],
    (shape, eps, silu): (Groups, f32, bool),
) -> Result<CudaStorage> {
    let count = shape.count();
    let blocks = shape.images * shape.groups;
    let elements = blocks * count;
    let channels = shape.groups * shape.channels_per_group;
    // What the kernel's indexing assumes: 32-bit counts, one block per group within the grid's
    // x limit, the input contiguous and as long as the shape says, one weight per channel.
    let fits_u32 = |v: usize| u32::try_from(v).is_ok();
    if elements == 0
        || !(fits_u32(count) && blocks < (1 << 31) - 1)
        || !x_layout.is_contiguous()
        || x_layout.shape().elem_count() != elements
        || gamma_layout.shape().elem_count() != channels
        || beta_layout.shape().elem_count() != channels
        || !gamma_layout.is_contiguous()
        || !beta_layout.is_contiguous()
    {
        candle_core::bail!("group norm: layout outside what the kernel indexes: {shape:?}");
    }
    let ptx = group_norm_ptx().map_err(candle_core::Error::Msg)?;
    let func = device.get_or_load_custom_func(kernel, MODULE, ptx)?;
    let xs = x.slice(x_layout.start_offset()..);
    let gammas = gamma.slice(gamma_layout.start_offset()..);
    let betas = beta.slice(beta_layout.start_offset()..);
    // SAFETY: every element is written by the kernel before anything reads it.
    // The kernel's second loop stores out[b * count + i] for every block b < blocks and every
    // i < count (each block's threads stride over 0..count), i.e. all `elements`; reads are
    // queued after it on the device's one stream; if the launch fails, `out` is dropped unread.
    let out = unsafe { device.alloc::<T>(elements)? };
    let mut builder = func.builder();
    let (count, pixels) = (count as u32, shape.pixels as u32);
    let (per_group, groups) = (shape.channels_per_group as u32, shape.groups as u32);
    builder.arg(&count);
    builder.arg(&pixels);
    builder.arg(&per_group);
    builder.arg(&groups);
    builder.arg(&eps);
    let silu = i32::from(silu);
    builder.arg(&silu);
    builder.arg(&xs);
    builder.arg(&gammas);
    builder.arg(&betas);
    builder.arg(&out);
    let config = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: ffi; the arguments match the kernel's signature and stay in bounds.
    // In order: (u32 count, u32 pixels, u32 channels_per_group, u32 groups, f32 eps, i32 silu,
    // const T *x, const T *gamma, const T *beta, T *out), T being float, unsigned short (f16's
    // 2 bytes) or bf16 (2 bytes) as the kernel's name says, from x's dtype. Bounds, checked
    // above: x holds blocks * count values from its offset, so block b's reads of
    // x[b * count + i], i < count, stay inside it; the channel index first_channel + i / pixels
    // is below groups * channels_per_group = the weights' length, since i < count =
    // channels_per_group * pixels; out was allocated with blocks * count values. The 64-bit
    // base offset and 32-bit counts do not wrap (count and blocks fit u32). The grid's x
    // dimension is below 2^31 - 1, the block has THREADS (a multiple of 32, at most 1024) and
    // 128 bytes of static shared memory. The function, the buffers and the launch all belong
    // to `device`'s stream.
    unsafe { builder.launch(config) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}
