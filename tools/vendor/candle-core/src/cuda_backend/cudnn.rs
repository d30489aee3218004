use crate::WithDType;
use cudarc;
use cudarc::cudnn::safe::{ConvForward, Cudnn};
use cudarc::driver::{CudaSlice, CudaView, DeviceRepr, ValidAsZeroBits};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

// The cudnn handles are stored per thread here rather than on the CudaDevice as they are neither
// send nor sync.
thread_local! {
    static CUDNN: RefCell<HashMap<crate::cuda_backend::DeviceId, Arc<Cudnn>>> = HashMap::new().into();
}

impl From<cudarc::cudnn::CudnnError> for crate::Error {
    fn from(err: cudarc::cudnn::CudnnError) -> Self {
        crate::Error::wrap(err)
    }
}

impl From<cudarc::driver::DriverError> for crate::Error {
    fn from(err: cudarc::driver::DriverError) -> Self {
        crate::Error::wrap(err)
    }
}

// Patched for dreamframe (tools/candle-core/PATCH.md): upstream builds four descriptors, asks the
// heuristic for an algorithm and allocates a zero-filled workspace on every conv2d call, and
// computes f16 in f16 with default math. `ConvSetup` keeps that path and adds a per-shape plan.

/// How forward 2D convolutions are set up on cuDNN. Process-wide; read on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvSetup {
    /// Upstream candle: descriptors, algorithm query and a zero-filled workspace on every call;
    /// f16 computed in f16 with cuDNN's default math.
    PerCall,
    /// A plan per shape built once (descriptors and algorithm from cuDNN's heuristic), a
    /// grow-only workspace per thread and device that is never zero-filled, f16/bf16 computed in
    /// f32 with tensor-core math (what PyTorch does).
    CachedHeuristic,
    /// As `CachedHeuristic`, but the algorithm is chosen once per shape by timing every
    /// candidate (`cudnnFindConvolutionForwardAlgorithm`, PyTorch's `cudnn.benchmark`).
    CachedBenchmark,
}

static CONV_SETUP: AtomicU8 = AtomicU8::new(ConvSetup::CachedBenchmark as u8);

/// Chooses how later conv2d calls are set up (plans already built are kept for reuse).
pub fn set_conv_setup(setup: ConvSetup) {
    CONV_SETUP.store(setup as u8, Ordering::Relaxed);
}

pub fn conv_setup() -> ConvSetup {
    match CONV_SETUP.load(Ordering::Relaxed) {
        0 => ConvSetup::PerCall,
        1 => ConvSetup::CachedHeuristic,
        _ => ConvSetup::CachedBenchmark,
    }
}

/// What conv2d calls cost on the host, counted since the process started (all threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvCounters {
    /// conv2d calls that reached cuDNN.
    pub calls: u64,
    /// Descriptor sets built (once per call upstream, once per shape when cached).
    pub descriptor_sets: u64,
    /// Algorithm searches: heuristic queries or benchmarks.
    pub algorithm_searches: u64,
    /// Device allocations made for workspaces.
    pub workspace_allocations: u64,
}

struct AtomicCounters {
    calls: AtomicU64,
    descriptor_sets: AtomicU64,
    algorithm_searches: AtomicU64,
    workspace_allocations: AtomicU64,
}

static COUNTERS: AtomicCounters = AtomicCounters {
    calls: AtomicU64::new(0),
    descriptor_sets: AtomicU64::new(0),
    algorithm_searches: AtomicU64::new(0),
    workspace_allocations: AtomicU64::new(0),
};

impl AtomicCounters {
    fn record_per_call(&self, searched: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.descriptor_sets.fetch_add(1, Ordering::Relaxed);
        self.algorithm_searches
            .fetch_add(searched as u64, Ordering::Relaxed);
        self.workspace_allocations.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn conv_counters() -> ConvCounters {
    ConvCounters {
        calls: COUNTERS.calls.load(Ordering::Relaxed),
        descriptor_sets: COUNTERS.descriptor_sets.load(Ordering::Relaxed),
        algorithm_searches: COUNTERS.algorithm_searches.load(Ordering::Relaxed),
        workspace_allocations: COUNTERS.workspace_allocations.load(Ordering::Relaxed),
    }
}

/// The cached conv2d path, on cuDNN's raw API: the safe wrappers keep their raw descriptors
/// private, and `cudnnFindConvolutionForwardAlgorithm` needs them.
mod planned {
    use super::{ConvSetup, COUNTERS};
    use crate::conv::{CudnnFwdAlgo, ParamsConv2D};
    use crate::cuda_backend::{CudaDevice, DeviceId};
    use cudarc::cudnn::{result, sys, CudnnError};
    use cudarc::driver::{CudaSlice, CudaView, DevicePtr, DevicePtrMut};
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::ffi::c_void;
    use std::sync::atomic::Ordering;

    /// Workspaces above this are skipped when benchmarking: the fastest algorithm is not worth
    /// most of the GPU's memory.
    const BENCHMARK_WORKSPACE_LIMIT: usize = 1 << 30;

    /// Storage, compute and math types of one cached conv.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub(crate) struct Types {
        data: sys::cudnnDataType_t,
        compute: sys::cudnnDataType_t,
        math: sys::cudnnMathType_t,
    }

    impl Types {
        /// `None` for types the cached path does not take (they keep the upstream path).
        pub(crate) fn of(data: sys::cudnnDataType_t) -> Option<Self> {
            use sys::cudnnDataType_t as D;
            use sys::cudnnMathType_t as M;
            let (compute, math) = match data {
                // f32 accumulation with tensor cores, as PyTorch sets for half inputs.
                D::CUDNN_DATA_HALF | D::CUDNN_DATA_BFLOAT16 => {
                    (D::CUDNN_DATA_FLOAT, M::CUDNN_TENSOR_OP_MATH)
                }
                D::CUDNN_DATA_FLOAT => (D::CUDNN_DATA_FLOAT, M::CUDNN_DEFAULT_MATH),
                D::CUDNN_DATA_DOUBLE => (D::CUDNN_DATA_DOUBLE, M::CUDNN_DEFAULT_MATH),
                _ => return None,
            };
            Some(Self {
                data,
                compute,
                math,
            })
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct PlanKey {
        types: Types,
        input: [i32; 4],
        input_strides: [i32; 4],
        filter: [i32; 4],
        padding: i32,
        stride: i32,
        dilation: i32,
        algo: Option<CudnnFwdAlgo>,
        benchmark: bool,
    }

    struct TensorDesc(sys::cudnnTensorDescriptor_t);
    struct FilterDesc(sys::cudnnFilterDescriptor_t);
    struct ConvDesc(sys::cudnnConvolutionDescriptor_t);
    struct Handle(sys::cudnnHandle_t);

    impl Drop for TensorDesc {
        fn drop(&mut self) {
            // SAFETY: a `TensorDesc` is only built from a fresh `create_tensor_descriptor()` and is
            // neither Clone nor Copy, so this drop destroys the descriptor exactly once and nothing
            // uses it afterwards.
            let _ = unsafe { result::destroy_tensor_descriptor(self.0) };
        }
    }
    impl Drop for FilterDesc {
        fn drop(&mut self) {
            // SAFETY: as for `TensorDesc`: made by `create_filter_descriptor()`, owned only here,
            // destroyed once.
            let _ = unsafe { result::destroy_filter_descriptor(self.0) };
        }
    }
    impl Drop for ConvDesc {
        fn drop(&mut self) {
            // SAFETY: as for `TensorDesc`: made by `create_convolution_descriptor()`, owned only
            // here, destroyed once.
            let _ = unsafe { result::destroy_convolution_descriptor(self.0) };
        }
    }
    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: a `Handle` is only built from a fresh `create_handle()` and owned only here
            // (not Clone, Copy, or Send: it holds a raw pointer), so it is destroyed once, on the
            // thread that used it. `DeviceState` drops its plans and workspace before it.
            let _ = unsafe { result::destroy_handle(self.0) };
        }
    }

    struct Plan {
        x: TensorDesc,
        w: FilterDesc,
        y: TensorDesc,
        conv: ConvDesc,
        algo: sys::cudnnConvolutionFwdAlgo_t,
        workspace_size: usize,
    }

    /// One thread's cuDNN state for one device (cuDNN handles are not thread-safe). Declared in
    /// drop order: plans and workspace before the handle.
    struct DeviceState {
        plans: HashMap<PlanKey, Plan>,
        workspace: Option<CudaSlice<u8>>,
        handle: Handle,
    }

    thread_local! {
        static STATES: RefCell<HashMap<DeviceId, DeviceState>> = RefCell::new(HashMap::new());
    }

    fn candle_algo(algo: CudnnFwdAlgo) -> sys::cudnnConvolutionFwdAlgo_t {
        use sys::cudnnConvolutionFwdAlgo_t as A;
        match algo {
            CudnnFwdAlgo::ImplicitGemm => A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
            CudnnFwdAlgo::ImplicitPrecompGemm => {
                A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM
            }
            CudnnFwdAlgo::Gemm => A::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
            CudnnFwdAlgo::Direct => A::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
            CudnnFwdAlgo::Fft => A::CUDNN_CONVOLUTION_FWD_ALGO_FFT,
            CudnnFwdAlgo::FftTiling => A::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
            CudnnFwdAlgo::Winograd => A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
            CudnnFwdAlgo::WinogradNonFused => A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
            CudnnFwdAlgo::Count => A::CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
        }
    }

    type Perf = sys::cudnnConvolutionFwdAlgoPerf_t;

    fn build_plan(handle: sys::cudnnHandle_t, key: &PlanKey) -> Result<Plan, CudnnError> {
        COUNTERS.descriptor_sets.fetch_add(1, Ordering::Relaxed);
        let x = TensorDesc(result::create_tensor_descriptor()?);
        let [n, c, h, w] = key.input;
        let [sn, sc, sh, sw] = key.input_strides;
        // SAFETY: `x` was just created by us and is not destroyed until it drops; dims and strides
        // are passed by value, and values cuDNN rejects come back as an error.
        unsafe {
            result::set_tensor4d_descriptor_ex(x.0, key.types.data, [n, c, h, w], [sn, sc, sh, sw])
        }?;
        let filter = FilterDesc(result::create_filter_descriptor()?);
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        // SAFETY: `filter` was just created and is live; the rest are plain values.
        unsafe { result::set_filter4d_descriptor(filter.0, key.types.data, nchw, key.filter) }?;
        let conv = ConvDesc(result::create_convolution_descriptor()?);
        let (p, s, d) = (key.padding, key.stride, key.dilation);
        let cross = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
        // SAFETY: `conv` was just created and is live; the rest are plain values.
        unsafe {
            result::set_convolution2d_descriptor(conv.0, p, p, s, s, d, d, cross, key.types.compute)
        }?;
        // SAFETY: `conv` is live (created above; destroyed only when it drops); the math type is
        // passed by value.
        unsafe { result::set_convolution_math_type(conv.0, key.types.math) }?;
        let y = TensorDesc(result::create_tensor_descriptor()?);
        let k = key.filter;
        let out = |size: i32, k: i32| (size + 2 * p - d * (k - 1) - 1) / s + 1;
        let y_dims = [n, k[0], out(h, k[2]), out(w, k[3])];
        // SAFETY: `y` was just created and is live; the dims are passed by value.
        unsafe { result::set_tensor4d_descriptor(y.0, nchw, key.types.data, y_dims) }?;

        let (algo, math) = match key.algo {
            Some(algo) => (candle_algo(algo), key.types.math),
            None => {
                COUNTERS.algorithm_searches.fetch_add(1, Ordering::Relaxed);
                let found = if key.benchmark {
                    benchmark(handle, &x, &filter, &conv, &y).ok().flatten()
                } else {
                    None
                };
                match found {
                    Some(perf) => (perf.algo, perf.mathType),
                    None => {
                        let perf = heuristic(handle, &x, &filter, &conv, &y)?;
                        (perf.algo, perf.mathType)
                    }
                }
            }
        };
        // The math type the algorithm was measured or recommended with (as PyTorch does).
        // SAFETY: `conv` is still live; `math` is a plain value.
        unsafe { result::set_convolution_math_type(conv.0, math) }?;
        // SAFETY: `handle` is this thread's live handle (the caller holds its `DeviceState`); the
        // four descriptors were created and set above and are live. The wrapper gives cuDNN a
        // pointer to its own local for the size.
        let workspace_size = unsafe {
            result::get_convolution_forward_workspace_size(handle, x.0, filter.0, conv.0, y.0, algo)
        }?;
        Ok(Plan {
            x,
            w: filter,
            y,
            conv,
            algo,
            workspace_size,
        })
    }

    const ALGO_COUNT: usize =
        sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as usize;

    fn heuristic(
        handle: sys::cudnnHandle_t,
        x: &TensorDesc,
        w: &FilterDesc,
        conv: &ConvDesc,
        y: &TensorDesc,
    ) -> Result<Perf, CudnnError> {
        let mut count = 0;
        // SAFETY: `cudnnConvolutionFwdAlgoPerf_t` is a plain C struct of an f32, a usize, ints and
        // #[repr(u32)] enums that each have a variant 0 (IMPLICIT_GEMM, STATUS_SUCCESS,
        // NON_DETERMINISTIC, DEFAULT_MATH), so all-zero bytes are a valid value.
        let mut perfs: [Perf; ALGO_COUNT] = unsafe { std::mem::zeroed() };
        // SAFETY: `handle` is this thread's live handle and the descriptors are live (borrowed for
        // the call). `perfs` holds ALGO_COUNT entries, the count requested, so cuDNN writes at most
        // that many; `count` is a local; both outlive the call. cuDNN is trusted to write only
        // valid enum values into the entries.
        unsafe {
            result::get_convolution_forward_algorithm(
                handle,
                x.0,
                w.0,
                conv.0,
                y.0,
                ALGO_COUNT as i32,
                &mut count,
                perfs.as_mut_ptr(),
            )
        }?;
        let returned = &perfs[..(count.max(0) as usize).min(ALGO_COUNT)];
        let ok = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
        match returned.iter().find(|perf| perf.status == ok) {
            Some(perf) => Ok(*perf),
            None => Err(CudnnError(
                returned
                    .first()
                    .map_or(sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED, |p| p.status),
            )),
        }
    }

    /// The fastest algorithm by measurement within the workspace limit; `None` if none ran.
    fn benchmark(
        handle: sys::cudnnHandle_t,
        x: &TensorDesc,
        w: &FilterDesc,
        conv: &ConvDesc,
        y: &TensorDesc,
    ) -> Result<Option<Perf>, CudnnError> {
        let mut count = 0;
        // SAFETY: as in `heuristic`: all-zero bytes are a valid `cudnnConvolutionFwdAlgoPerf_t`.
        let mut perfs: [Perf; ALGO_COUNT] = unsafe { std::mem::zeroed() };
        // SAFETY: as in `heuristic`: live handle and descriptors, `perfs` has room for the
        // ALGO_COUNT results requested, `count` is a local. cuDNN allocates and frees its own
        // buffers for the trial runs (none of ours is passed) and blocks until done.
        unsafe {
            sys::cudnnFindConvolutionForwardAlgorithm(
                handle,
                x.0,
                w.0,
                conv.0,
                y.0,
                ALGO_COUNT as i32,
                &mut count,
                perfs.as_mut_ptr(),
            )
        }
        .result()?;
        let returned = &perfs[..(count.max(0) as usize).min(ALGO_COUNT)];
        let ok = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
        Ok(returned
            .iter()
            .find(|perf| perf.status == ok && perf.memory <= BENCHMARK_WORKSPACE_LIMIT)
            .copied())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_conv2d<T>(
        src: &CudaView<T>,
        src_l: &crate::Layout,
        filter: &CudaView<T>,
        dst: &mut CudaSlice<T>,
        params: &ParamsConv2D,
        dev: &CudaDevice,
        types: Types,
        setup: ConvSetup,
    ) -> crate::Result<()> {
        COUNTERS.calls.fetch_add(1, Ordering::Relaxed);
        let input = [params.b_size, params.c_in, params.i_h, params.i_w].map(|v| v as i32);
        // `src` already starts at the layout's offset; contiguous inputs get NCHW strides.
        let input_strides = if src_l.is_contiguous() {
            let [_, c, h, w] = input;
            [c * h * w, h * w, w, 1]
        } else {
            let s = src_l.stride();
            [s[0], s[1], s[2], s[3]].map(|v| v as i32)
        };
        let key = PlanKey {
            types,
            input,
            input_strides,
            filter: [params.c_out, params.c_in, params.k_h, params.k_w].map(|v| v as i32),
            padding: params.padding as i32,
            stride: params.stride as i32,
            dilation: params.dilation as i32,
            algo: params.cudnn_fwd_algo,
            benchmark: setup == ConvSetup::CachedBenchmark,
        };
        let stream = dev.cuda_stream();
        STATES.with(|states| -> crate::Result<()> {
            let mut states = states.borrow_mut();
            let state = match states.entry(dev.id()) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    let handle = Handle(result::create_handle()?);
                    // SAFETY: `handle` was just created on this thread; `stream` is `dev`'s own
                    // stream (a driver CUstream is a runtime cudaStream_t), alive here. The handle
                    // keeps only the raw pointer and is used again only through this `dev.id()`
                    // entry, i.e. while a caller holds `dev`, whose stream is that same one, kept
                    // alive by it (ids are never reused).
                    unsafe { result::set_stream(handle.0, stream.cu_stream() as *mut _) }?;
                    entry.insert(DeviceState {
                        plans: HashMap::new(),
                        workspace: None,
                        handle,
                    })
                }
            };
            let handle = state.handle.0;
            if !state.plans.contains_key(&key) {
                let plan = build_plan(handle, &key)?;
                state.plans.insert(key.clone(), plan);
            }
            let plan = &state.plans[&key];
            let needed = plan.workspace_size;
            if needed > 0 && state.workspace.as_ref().is_none_or(|w| w.len() < needed) {
                // Drop the old one first so both are never held at once.
                state.workspace = None;
                COUNTERS
                    .workspace_allocations
                    .fetch_add(1, Ordering::Relaxed);
                // SAFETY: uninitialised bytes are fine here: cuDNN uses the workspace as scratch,
                // and the host never reads it.
                state.workspace = Some(unsafe { stream.alloc::<u8>(needed) }?);
            }
            let (x_ptr, _x_sync) = src.device_ptr(&stream);
            let (w_ptr, _w_sync) = filter.device_ptr(&stream);
            let (y_ptr, _y_sync) = dst.device_ptr_mut(&stream);
            let (ws_ptr, ws_len, _ws_sync) = match state.workspace.as_mut() {
                Some(ws) if needed > 0 => {
                    let len = ws.len();
                    let (ptr, sync) = ws.device_ptr_mut(&stream);
                    (ptr as *mut c_void, len, Some(sync))
                }
                _ => (std::ptr::null_mut(), 0, None),
            };
            // Scaling factors are float for every data type but double.
            let (alpha32, beta32) = (1f32, 0f32);
            let (alpha64, beta64) = (1f64, 0f64);
            let (alpha, beta): (*const c_void, *const c_void) =
                if types.data == sys::cudnnDataType_t::CUDNN_DATA_DOUBLE {
                    (&alpha64 as *const f64 as _, &beta64 as *const f64 as _)
                } else {
                    (&alpha32 as *const f32 as _, &beta32 as *const f32 as _)
                };
            // SAFETY: `handle` is this thread's own, set to `dev`'s stream; the plan's descriptors
            // are live and were built for exactly this key (input dims and strides, filter dims,
            // padding, stride, dilation, and T's data type via `Types::of(T::DATA_TYPE)`). The data
            // pointers come from `device_ptr*` on that same stream, their sync guards held past the
            // call. `ws_ptr` has `ws_len` >= the plan's workspace size (grown above), or is null
            // with 0 when none is needed. `alpha`/`beta` point at locals of the type cuDNN reads
            // (double for double data, float otherwise) that outlive the call. Caller obligation,
            // as upstream: `params` describes `src_l`'s shape, so the descriptor addresses only
            // elements of `src`; `filter` is a contiguous [c_out, c_in, k_h, k_w] (conv2d in mod.rs
            // checks); `dst` holds b * c_out * out_h * out_w elements (mod.rs allocates that, with
            // the formula `y` uses); every value fits in i32.
            unsafe {
                result::convolution_forward(
                    handle,
                    alpha,
                    plan.x.0,
                    x_ptr as *const c_void,
                    plan.w.0,
                    w_ptr as *const c_void,
                    plan.conv.0,
                    plan.algo,
                    ws_ptr,
                    ws_len,
                    beta,
                    plan.y.0,
                    y_ptr as *mut c_void,
                )
            }?;
            Ok(())
        })
    }
}

pub(crate) fn launch_conv2d<
    T: DeviceRepr + WithDType + ValidAsZeroBits + cudarc::cudnn::CudnnDataType,
    Y: cudarc::cudnn::CudnnDataType,
>(
    src: &CudaView<T>,
    src_l: &crate::Layout,
    filter: &CudaView<T>,
    dst: &mut CudaSlice<T>,
    params: &crate::conv::ParamsConv2D,
    dev: &crate::cuda_backend::CudaDevice,
) -> crate::Result<()> {
    let setup = conv_setup();
    if setup != ConvSetup::PerCall {
        if let Some(types) = planned::Types::of(T::DATA_TYPE) {
            return planned::launch_conv2d(src, src_l, filter, dst, params, dev, types, setup);
        }
    }
    COUNTERS.record_per_call(params.cudnn_fwd_algo.is_none());
    launch_conv2d_per_call::<T, Y>(src, src_l, filter, dst, params, dev)
}

/// Upstream candle 0.11.1's conv2d, unchanged: descriptors, algorithm and a zero-filled
/// workspace on every call.
fn launch_conv2d_per_call<
    T: DeviceRepr + WithDType + ValidAsZeroBits + cudarc::cudnn::CudnnDataType,
    Y: cudarc::cudnn::CudnnDataType,
>(
    src: &CudaView<T>,
    src_l: &crate::Layout,
    filter: &CudaView<T>,
    dst: &mut CudaSlice<T>,
    params: &crate::conv::ParamsConv2D,
    dev: &crate::cuda_backend::CudaDevice,
) -> crate::Result<()> {
    use crate::conv::CudnnFwdAlgo as CandleAlgo;
    use cudarc::cudnn::sys::cudnnConvolutionFwdAlgo_t as A;

    let device_id = dev.id();
    let cudnn = CUDNN.with(|cudnn| {
        if let Some(cudnn) = cudnn.borrow().get(&device_id) {
            return Ok(cudnn.clone());
        }
        let c = Cudnn::new(dev.cuda_stream());
        if let Ok(c) = &c {
            cudnn.borrow_mut().insert(device_id, c.clone());
        }
        c
    })?;
    let conv = cudnn.create_conv2d::<Y>(
        /* pad */ [params.padding as i32, params.padding as i32],
        /* stride */ [params.stride as i32, params.stride as i32],
        /* dilation */ [params.dilation as i32, params.dilation as i32],
        cudarc::cudnn::sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
    )?;
    let x_shape = [
        params.b_size as i32,
        params.c_in as i32,
        params.i_h as i32,
        params.i_w as i32,
    ];
    // Note that `src` already starts at the proper offset.
    let x = if src_l.is_contiguous() {
        cudnn.create_4d_tensor::<T>(
            cudarc::cudnn::sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            x_shape,
        )?
    } else {
        let s = src_l.stride();
        cudnn.create_4d_tensor_ex::<T>(
            x_shape,
            [s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32],
        )?
    };
    let w = cudnn.create_4d_filter::<T>(
        cudarc::cudnn::sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
        [
            params.c_out as i32,
            params.c_in as i32,
            params.k_h as i32,
            params.k_w as i32,
        ],
    )?;
    let (w_out, h_out) = (params.out_w() as i32, params.out_h() as i32);
    let y = cudnn.create_4d_tensor::<T>(
        cudarc::cudnn::sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
        [params.b_size as i32, params.c_out as i32, h_out, w_out],
    )?;
    let conv2d = ConvForward {
        conv: &conv,
        x: &x,
        w: &w,
        y: &y,
    };
    let alg = match params.cudnn_fwd_algo {
        None => conv2d.pick_algorithm()?,
        Some(CandleAlgo::ImplicitGemm) => A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        Some(CandleAlgo::ImplicitPrecompGemm) => {
            A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM
        }
        Some(CandleAlgo::Gemm) => A::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        Some(CandleAlgo::Direct) => A::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        Some(CandleAlgo::Fft) => A::CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        Some(CandleAlgo::FftTiling) => A::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        Some(CandleAlgo::Winograd) => A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        Some(CandleAlgo::WinogradNonFused) => A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
        Some(CandleAlgo::Count) => A::CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
    };
    let workspace_size = conv2d.get_workspace_size(alg)?;
    let mut workspace = dev.cuda_stream().alloc_zeros::<u8>(workspace_size)?;
    unsafe {
        conv2d.launch::<CudaSlice<u8>, _, _, _>(
            alg,
            Some(&mut workspace),
            (T::one(), T::zero()),
            src,
            filter,
            dst,
        )?;
    }
    Ok(())
}

pub(crate) fn launch_conv1d<
    T: DeviceRepr + WithDType + ValidAsZeroBits + cudarc::cudnn::CudnnDataType,
    Y: cudarc::cudnn::CudnnDataType,
>(
    src: &CudaView<T>,
    src_l: &crate::Layout,
    filter: &CudaView<T>,
    dst: &mut CudaSlice<T>,
    params: &crate::conv::ParamsConv1D,
    dev: &crate::cuda_backend::CudaDevice,
) -> crate::Result<()> {
    use crate::conv::CudnnFwdAlgo as CandleAlgo;
    use cudarc::cudnn::sys::cudnnConvolutionFwdAlgo_t as A;

    let device_id = dev.id();
    let cudnn = CUDNN.with(|cudnn| {
        if let Some(cudnn) = cudnn.borrow().get(&device_id) {
            return Ok(cudnn.clone());
        }
        let c = Cudnn::new(dev.cuda_stream());
        if let Ok(c) = &c {
            cudnn.borrow_mut().insert(device_id, c.clone());
        }
        c
    })?;
    let conv = cudnn.create_conv2d::<Y>(
        /* pad */ [params.padding as i32, 0],
        /* stride */ [params.stride as i32, 1],
        /* dilation */ [params.dilation as i32, 1],
        cudarc::cudnn::sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
    )?;
    // https://docs.nvidia.com/deeplearning/cudnn/backend/latest/api/cudnn-ops-library.html#cudnnsettensornddescriptor
    // > Tensors are restricted to having at least 4 dimensions, and at most CUDNN_DIM_MAX
    // > dimensions (defined in cudnn.h). When working with lower dimensional data, it is
    // > recommended that the user create a 4D tensor, and set the size along unused dimensions
    // > to 1.
    let x_shape = [
        params.b_size as i32,
        params.c_in as i32,
        params.l_in as i32,
        1,
    ];
    // Note that `src` already starts at the proper offset.
    let x = if src_l.is_contiguous() {
        cudnn.create_4d_tensor::<T>(
            cudarc::cudnn::sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            x_shape,
        )?
    } else {
        let s = src_l.stride();
        cudnn.create_4d_tensor_ex::<T>(x_shape, [s[0] as i32, s[1] as i32, s[2] as i32, 1i32])?
    };
    let w = cudnn.create_4d_filter::<T>(
        cudarc::cudnn::sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
        [
            params.c_out as i32,
            params.c_in as i32,
            params.k_size as i32,
            1,
        ],
    )?;
    let l_out = params.l_out() as i32;
    let y = cudnn.create_4d_tensor::<T>(
        cudarc::cudnn::sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
        [params.b_size as i32, params.c_out as i32, l_out, 1],
    )?;
    let conv1d = ConvForward {
        conv: &conv,
        x: &x,
        w: &w,
        y: &y,
    };
    let alg = match params.cudnn_fwd_algo {
        None => conv1d.pick_algorithm()?,
        Some(CandleAlgo::ImplicitGemm) => A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        Some(CandleAlgo::ImplicitPrecompGemm) => {
            A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM
        }
        Some(CandleAlgo::Gemm) => A::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        Some(CandleAlgo::Direct) => A::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        Some(CandleAlgo::Fft) => A::CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        Some(CandleAlgo::FftTiling) => A::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        Some(CandleAlgo::Winograd) => A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        Some(CandleAlgo::WinogradNonFused) => A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
        Some(CandleAlgo::Count) => A::CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
    };
    let workspace_size = conv1d.get_workspace_size(alg)?;
    let mut workspace = dev.cuda_stream().alloc_zeros::<u8>(workspace_size)?;
    unsafe {
        conv1d.launch::<CudaSlice<u8>, _, _, _>(
            alg,
            Some(&mut workspace),
            (T::one(), T::zero()),
            src,
            filter,
            dst,
        )?;
    }
    Ok(())
}
