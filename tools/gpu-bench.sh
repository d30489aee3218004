#!/usr/bin/env bash
# GPU benchmark of Stable Diffusion at real SD 1.5 / sd-turbo sizes with random weights (no model
# weights needed), checked against upstream candle and a PyTorch peer, and the display pipeline
# end to end on the GPU. Two steps, because the GPU machine has nvcc
# and a driver but no Rust toolchain and no network, while the build machine has Rust but no GPU:
#
#   tools/gpu-bench.sh build   # here: CUDA toolchain from PyPI wheels, `--features cuda,cudnn`
#                              # build, stripped and xz-compressed as .gpu/dreamframe.xz (~7 MB),
#                              # and diffusers' wheel in .whl/ for the PyTorch peer
#   tools/gpu-bench.sh run     # on the GPU machine, from the repository root (device tool:
#                              # carry [".gpu/dreamframe.xz", ".whl"]); the CUDA, cuBLAS, cuRAND
#                              # and cuDNN libraries come from that machine's PyTorch venv
#
# `run` prints, each part under its own time limit so one failure leaves the rest:
#  - bench-sd for sd-turbo and sd-1.5: each new conv setup checked against upstream candle's
#    per-call cuDNN conv on the same inputs (max abs error), host work per decode and UNet step
#    (conv calls, descriptor sets, algorithm searches, workspace allocations), then VAE decode
#    (64x64 and 512x512 at batch 1/4/10), TAESD, UNet step per setup, and keyframes;
#  - the PyTorch peer (tools/gpu-peer.py, diffusers, same sizes, f16) and ours/PyTorch's;
#  - the display pipeline for 60 s (sd-turbo img2img keyframes, TAESD, 1920x1080, 60 fps, null
#    sink) with its stats lines;
#  - the same binary with /proc mounted subset=pid (the unit's ProcSubset=pid) and under
#    PR_SET_MDWE (the unit's MemoryDenyWriteExecute).
#   tools/gpu-bench.sh profile [part...]   # on the GPU machine: Nsight Compute kernel times of
#                              # one VAE decode, TAESD batch and UNet step (bench-sd --only parts)
#
# All files go into one archive, $OUT/gpu-results.tgz (the device tool brings back few files).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu

case "${1:-}" in
build)
  # CUDA 13.0 series to match the GPU machine's driver 580; compute capability 9.0 (Hopper).
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" \
    "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-cudnn-cu13==9.*" \
    "nvidia-cuda-cccl==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*"
  site=$("$out/venv/bin/python" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))')
  cuda_root=$(dirname "$(find "$site/nvidia" -name nvcc -type f | head -n 1)")/..
  export PATH="$cuda_root/bin:$PATH" CUDA_ROOT="$cuda_root" CUDA_PATH="$cuda_root"
  export CUDARC_CUDA_VERSION=13000 CUDA_COMPUTE_CAP=90
  # The wheels ship only versioned libraries (libcublas.so.13) and no libcuda (the driver's): link
  # against unversioned names, and a libcuda stub with the driver functions cudarc calls and the
  # driver's soname, so the binary loads the real libcuda.so.1 on the GPU machine.
  link="$PWD/$out/link"
  mkdir -p "$link"
  for lib in $(find "$site/nvidia" -name 'lib*.so.*' -type f); do
    name=$(basename "$lib")
    ln -sf "$lib" "$link/${name%%.so.*}.so"
  done
  export LIBRARY_PATH="$link${LIBRARY_PATH:+:$LIBRARY_PATH}"
  # A target folder of its own: the CUDA features would otherwise rebuild the CPU release's deps.
  build() { CARGO_TARGET_DIR=target/cuda CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --features cuda,cudnn; }
  stub() {
    nm -u target/cuda/release/deps/libcudarc-*.rlib 2>/dev/null | awk '$1 == "U" && $2 ~ /^cu[A-Z]/ { print "void " $2 "(void) {}" }' |
      sort -u >"$link/cuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/cuda_stub.c"
  }
  # The stub lists what cudarc references, so cudarc must be compiled first: the first link may fail.
  [[ -e "$link/libcuda.so" ]] && build || { stub && build; }
  cp target/cuda/release/dreamframe "$out/dreamframe"
  strip "$out/dreamframe"
  # The device tool carries 64 MiB in all; the embedded PTX compresses well.
  xz -T0 -6 -kf "$out/dreamframe"
  # The peer's one missing package (the GPU machine's venv has torch, numpy, safetensors, hub).
  python3 -m pip download -q --no-deps -d .whl "diffusers==0.42.1"
  du -sh "$out/dreamframe" "$out/dreamframe.xz" .whl
  echo "carry $out/dreamframe.xz and .whl to the GPU machine and run: tools/gpu-bench.sh run"
  ;;
run)
  set +e +o pipefail # every part runs under its own limit; one failing leaves the rest
  results=/tmp/dreamframe-gpu
  mkdir -p "$results"
  trap 'tar czf "${OUT:-/tmp}/gpu-results.tgz" -C "$results" .' EXIT
  # CUDA 13 runtime libraries of the machine's Python (PyTorch cu130 brings them), then the toolkit's.
  nvidia_libs=$(python3 -c 'import nvidia, os, glob; print(":".join(sorted(set(os.path.dirname(p) for root in nvidia.__path__ for p in glob.glob(root + "/**/lib*.so*", recursive=True)))))' 2>/dev/null || true)
  export LD_LIBRARY_PATH="${nvidia_libs}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  bin=/tmp/dreamframe
  if [[ -f "$out/dreamframe.xz" ]]; then xz -dc "$out/dreamframe.xz" >"$bin"; else cp "$out/dreamframe" "$bin"; fi
  chmod +x "$bin"
  ldd "$bin" | grep "not found" && { echo "missing libraries above" >&2; exit 1; }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  uname -r
  part() { # name seconds command...: output to the screen and $results/name.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local started=$SECONDS
    timeout "$limit" "$@" >"$results/$name.txt" 2>"$results/$name.err"
    local rc=$?
    cat "$results/$name.txt"
    grep -v '^\s*$' "$results/$name.err" | grep -v ' stats \| transition \| keyframe ' | tail -n 5
    echo "== $name rc=$rc in $((SECONDS - started))s"
  }
  for preset in sd-turbo sd-1.5; do
    part "bench-sd-$preset" 110 "$bin" bench-sd --device cuda:0 --preset "$preset" --runs 5
  done
  if [[ -d .whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 part peer 110 python3 tools/gpu-peer.py --runs 5
  echo "== ours / PyTorch (ours: the last conv setup, i.e. the default)"
  python3 tools/gpu-peer.py --join "$results"/bench-sd-*.txt "$results/peer.txt" | tee "$results/ratios.txt"
  part pipeline 90 "$bin" bench-sd --device cuda:0 --preset sd-turbo --pipeline 60
  awk '/ (stats|keyframe) / { line = $3; for (i = 4; i <= NF; i++) if ($i ~ /^(index|ms|lock_wait_ms|state|achieved_fps|buffer_frames|buffer_seconds|held_deadlines|underruns|decode_fps|decode_lock_wait_p99_ms|model_lock_max_wait_ms)=/) line = line " " $i; print line }' "$results/pipeline.err"
  grep -E ' transition ' "$results/pipeline.err" | tail -n 3 | cut -c1-300
  # The hardened unit on a CUDA box: ProcSubset=pid hides /proc/driver/nvidia; MDWE refuses
  # writable+executable memory. A short run of the same CUDA code under each.
  quick=("$bin" bench-sd --device cuda:0 --preset sd-turbo --size 128 --runs 1 --conv cached-benchmark)
  part proc-subset-pid 40 unshare --mount --propagation private sh -c \
    'mount -t proc -o subset=pid proc /proc && ls /proc | head -n 3 | tr "\n" " " && echo && ls /proc/driver/nvidia 2>&1 | head -n 2; exec "$@"' sh "${quick[@]}"
  part mdwe 40 python3 -c 'import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.prctl(65, 1, 0, 0, 0)  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
print("PR_SET_MDWE:", "on" if rc == 0 else "unavailable: " + os.strerror(ctypes.get_errno()), flush=True)
os.execv(sys.argv[1], sys.argv[1:])' "${quick[@]}"
  ;;
profile)
  # Which kernels one VAE decode, one TAESD batch and one UNet step spend their GPU time in
  # (Nsight Compute, kernel durations only; `profile vae_b1 ...` for some): what to fuse next.
  # Totals include the model's random initialisation (curand, casts) and the warm-up call.
  results=/tmp/dreamframe-gpu
  mkdir -p "$results"
  trap 'tar czf "${OUT:-/tmp}/gpu-results.tgz" -C "$results" .' EXIT
  nvidia_libs=$(python3 -c 'import nvidia, os, glob; print(":".join(sorted(set(os.path.dirname(p) for root in nvidia.__path__ for p in glob.glob(root + "/**/lib*.so*", recursive=True)))))' 2>/dev/null || true)
  export LD_LIBRARY_PATH="${nvidia_libs}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  bin=/tmp/dreamframe
  xz -dc "$out/dreamframe.xz" >"$bin" && chmod +x "$bin"
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1 || true)
  [[ -n "$ncu" ]] || { echo "no Nsight Compute (ncu) on this machine" >&2; exit 1; }
  shift
  targets=("$@")
  [[ ${#targets[@]} -gt 0 ]] || targets=(vae_b1 taesd_b10 unet_step)
  for what in "${targets[@]}"; do
    echo "== $what"
    timeout 150 "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --print-summary per-kernel \
      "$bin" bench-sd --device cuda:0 --preset sd-turbo --runs 1 --conv cached-heuristic --only "$what" \
      >"$results/profile-$what.csv" 2>"$results/profile-$what.err"
    echo "rc=$? $(wc -l <"$results/profile-$what.csv") lines"
    tail -n 3 "$results/profile-$what.err"
  done
  ;;
*)
  echo "usage: tools/gpu-bench.sh build|run|profile" >&2
  exit 2
  ;;
esac
