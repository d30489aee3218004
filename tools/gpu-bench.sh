#!/usr/bin/env bash
# GPU benchmark of Stable Diffusion decode and denoise at real SD 1.5 / sd-turbo sizes with random
# weights (no model weights needed). Two steps, because the GPU machine has nvcc and a driver but
# no Rust toolchain and no network, while the build machine has Rust but no GPU:
#
#   tools/gpu-bench.sh build   # here: CUDA toolchain from PyPI wheels, `--features cuda,cudnn`
#                              # build, stripped binary (~57 MB) as .gpu/dreamframe
#   tools/gpu-bench.sh run     # on the GPU machine, from the repository root, with .gpu/dreamframe
#                              # carried (device tool: carry [".gpu/dreamframe"]); the CUDA, cuBLAS,
#                              # cuRAND and cuDNN libraries come from that machine's PyTorch venv
#
# It prints `dreamframe bench-sd` for sd-1.5 and sd-turbo: VAE decode ms/frame at batch 1, 4, 10,
# tiny decoder ms/frame, UNet step ms, keyframe ms (txt2img and img2img).
# Goals on an H100: full VAE <= 10 ms/frame batched, tiny decoder <= 1 ms/frame.
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
  du -sh "$out/dreamframe"
  echo "carry $out/dreamframe to the GPU machine and run: tools/gpu-bench.sh run"
  ;;
run)
  # CUDA 13 runtime libraries of the machine's Python (PyTorch cu130 brings them), then the toolkit's.
  nvidia_libs=$(python3 -c 'import nvidia, os, glob; print(":".join(sorted(set(os.path.dirname(p) for root in nvidia.__path__ for p in glob.glob(root + "/**/lib*.so*", recursive=True)))))' 2>/dev/null || true)
  export LD_LIBRARY_PATH="${nvidia_libs}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  ldd "$out/dreamframe" | grep "not found" && { echo "missing libraries above" >&2; exit 1; }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  for preset in sd-1.5 sd-turbo; do
    "$out/dreamframe" bench-sd --device cuda:0 --preset "$preset" --runs 5
  done
  ;;
*)
  echo "usage: tools/gpu-bench.sh build|run" >&2
  exit 2
  ;;
esac
