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

use crate::generator::stable_diffusion::group_norm::{split, Groups, TARGET_BLOCKS};

const MODULE: &str = "dreamframe_group_norm";

/// Threads per block: a multiple of 32 (the reduction works warp by warp), at most 1024.
const THREADS: u32 = 256;

/// Two kernels, so every group is spread over many blocks (one block per group left most of
/// the GPU idle at batch 1: 32 groups). `group_stats`: block b sums its `chunk` of group
/// b / splits, shifted by the group's first value so a large mean does not cancel, in f32, into
/// partial[2b], partial[2b + 1]. `group_norm`: the same blocks; each first adds up its group's
/// `splits` partial sums, then normalises its chunk, scales and shifts each value by its
/// channel's gamma and beta, applies SiLU if asked, and rounds once.
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
#define GROUP_NORM(SUFFIX, T) \
extern "C" __global__ void group_stats_##SUFFIX(unsigned int count, unsigned int chunk, \
    unsigned int splits, const T *x, float *partial) { \
    __shared__ float shared[32]; \
    const unsigned int group = blockIdx.x / splits, part = blockIdx.x % splits; \
    const T *xs = x + (unsigned long long)group * count; \
    const float shift = load(xs, 0); \
    const unsigned int start = part * chunk, end = min(count, start + chunk); \
    float sum = 0.0f, squares = 0.0f; \
    for (unsigned int i = start + threadIdx.x; i < end; i += blockDim.x) { \
        const float d = load(xs, i) - shift; \
        sum += d; \
        squares += d * d; \
    } \
    sum = block_sum(sum, shared); \
    squares = block_sum(squares, shared); \
    if (threadIdx.x == 0) { \
        partial[2 * blockIdx.x] = sum; \
        partial[2 * blockIdx.x + 1] = squares; \
    } \
} \
extern "C" __global__ void group_norm_##SUFFIX(unsigned int count, unsigned int chunk, \
    unsigned int splits, unsigned int pixels, unsigned int channels_per_group, \
    unsigned int groups, float eps, int silu, const T *x, const T *gamma, const T *beta, \
    const float *partial, T *out) { \
    __shared__ float stats[2]; \
    const unsigned int group = blockIdx.x / splits, part = blockIdx.x % splits; \
    const T *xs = x + (unsigned long long)group * count; \
    T *ys = out + (unsigned long long)group * count; \
    if (threadIdx.x == 0) { \
        float sum = 0.0f, squares = 0.0f; \
        for (unsigned int s = 0; s < splits; ++s) { \
            sum += partial[2 * (group * splits + s)]; \
            squares += partial[2 * (group * splits + s) + 1]; \
        } \
        const float mean_shifted = sum / (float)count; \
        const float variance = fmaxf(squares / (float)count - mean_shifted * mean_shifted, 0.0f); \
        stats[0] = load(xs, 0) + mean_shifted; \
        stats[1] = rsqrtf(variance + eps); \
    } \
    __syncthreads(); \
    const float mean = stats[0], rstd = stats[1]; \
    const unsigned int first_channel = (group % groups) * channels_per_group; \
    const unsigned int start = part * chunk, end = min(count, start + chunk); \
    for (unsigned int i = start + threadIdx.x; i < end; i += blockDim.x) { \
        const unsigned int channel = first_channel + i / pixels; \
        float y = (load(xs, i) - mean) * rstd * load(gamma, channel) + load(beta, channel); \
        if (silu) y = y / (1.0f + __expf(-y)); \
        store(ys, i, y); \
    } \
}
GROUP_NORM(f32, float)
GROUP_NORM(f16, unsigned short)
GROUP_NORM(bf16, bf16)
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
            launch("f32", device, [x, g, b], layouts, settings)
        }
        (Slice::F16(x), Slice::F16(g), Slice::F16(b)) => {
            launch("f16", device, [x, g, b], layouts, settings)
        }
        (Slice::BF16(x), Slice::BF16(g), Slice::BF16(b)) => {
            launch("bf16", device, [x, g, b], layouts, settings)
        }
        _ => candle_core::bail!("group norm: input and weights must be one of f32, f16, bf16"),
    }
}

fn launch<T: CudaDType + DeviceRepr>(
    suffix: &str,
    device: &CudaDevice,
    [x, gamma, beta]: [&CudaSlice<T>; 3],
    [x_layout, gamma_layout, beta_layout]: [&Layout; 3],
    (shape, eps, silu): (Groups, f32, bool),
) -> Result<CudaStorage> {
    let count = shape.count();
    let blocks = shape.images * shape.groups;
    let elements = blocks * count;
    let channels = shape.groups * shape.channels_per_group;
    // What the kernels' indexing assumes: a group's count below 2^31 (32-bit offsets within a
    // group), a grid within its x limit, the input contiguous and as long as the shape says, one
    // weight per channel.
    if elements == 0
        || !(count < (1 << 31) && blocks.saturating_mul(TARGET_BLOCKS) < (1 << 31) - 1)
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
    let (splits, chunk) = split(blocks, count);
    let grid = blocks * splits;
    let stats = device.get_or_load_custom_func(&format!("group_stats_{suffix}"), MODULE, ptx)?;
    let norm = device.get_or_load_custom_func(&format!("group_norm_{suffix}"), MODULE, ptx)?;
    let xs = x.slice(x_layout.start_offset()..);
    let gammas = gamma.slice(gamma_layout.start_offset()..);
    let betas = beta.slice(beta_layout.start_offset()..);
    // SAFETY: every element is written by `group_stats` before `group_norm` reads it.
    // Thread 0 of each of the `grid` blocks stores partial[2b] and partial[2b + 1]; the norm
    // kernel is queued after it on the device's one stream; if a launch fails, `partial` is
    // dropped unread.
    let partial = unsafe { device.alloc::<f32>(2 * grid)? };
    // SAFETY: every element is written by `group_norm` before anything reads it.
    // Block b covers values [chunk * (b % splits), min(count, chunk * (b % splits + 1))) of group
    // b / splits; with splits = ceil(count / chunk) the chunks tile 0..count for every group,
    // so all blocks * count values are stored; reads are queued after it on the device's one
    // stream; if a launch fails, `out` is dropped unread.
    let out = unsafe { device.alloc::<T>(elements)? };
    let config = LaunchConfig {
        grid_dim: (grid as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (count, chunk, splits) = (count as u32, chunk as u32, splits as u32);
    let (pixels, per_group) = (shape.pixels as u32, shape.channels_per_group as u32);
    let groups = shape.groups as u32;
    let silu = i32::from(silu);
    let mut builder = stats.builder();
    builder.arg(&count);
    builder.arg(&chunk);
    builder.arg(&splits);
    builder.arg(&xs);
    builder.arg(&partial);
    // SAFETY: ffi; the arguments match the kernel's signature and stay in bounds.
    // group_stats_T(u32 count, u32 chunk, u32 splits, const T *x, float *partial), T float,
    // unsigned short (f16's 2 bytes) or bf16 (2 bytes) as `suffix` says, from x's dtype.
    // Bounds, checked above: block b reads x[(b / splits) * count + i] for i < count, and
    // b / splits < blocks, x holding blocks * count values from its offset; it writes
    // partial[2b + 1] < 2 * grid, partial's length. part * chunk + chunk stays below 2^32:
    // chunk * splits < count + chunk <= 2 * count < 2^32. The grid's x dimension is below
    // 2^31 - 1, the block has THREADS (a multiple of 32, at most 1024) and 128 bytes of
    // static shared memory. Function, buffers and launch belong to `device`'s stream.
    unsafe { builder.launch(config) }.w()?;
    let mut builder = norm.builder();
    for value in [&count, &chunk, &splits, &pixels, &per_group, &groups] {
        builder.arg(value);
    }
    builder.arg(&eps);
    builder.arg(&silu);
    builder.arg(&xs);
    builder.arg(&gammas);
    builder.arg(&betas);
    builder.arg(&partial);
    builder.arg(&out);
    // SAFETY: ffi; the arguments match the kernel's signature and stay in bounds.
    // group_norm_T(u32 count, u32 chunk, u32 splits, u32 pixels, u32 channels_per_group,
    // u32 groups, f32 eps, i32 silu, const T *x, const T *gamma, const T *beta,
    // const float *partial, T *out), T as above. Bounds: x and out as for group_stats (out was
    // allocated with blocks * count values); partial[2 * ((b / splits) * splits + s) + 1] <
    // 2 * grid for s < splits; the channel index first_channel + i / pixels is below
    // groups * channels_per_group = the weights' length, since i < count =
    // channels_per_group * pixels. Same grid and block as above; 8 bytes of static shared
    // memory.
    unsafe { builder.launch(config) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}
