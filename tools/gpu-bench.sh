#!/usr/bin/env bash
# GPU benchmark of Stable Diffusion decode and denoise at real SD 1.5 / sd-turbo sizes with random
# weights (no model weights needed). Two steps, because the GPU machine has nvcc and a driver but
# no Rust toolchain and no network, while the build machine has Rust but no GPU:
#
#   tools/gpu-bench.sh build   # here: CUDA toolchain from PyPI wheels, `--features cuda,cudnn`
#                              # build, stripped binary + CUDA runtime libraries into .gpu/
#   tools/gpu-bench.sh run     # on the GPU machine, from the repository root with .gpu/ carried
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
  export LIBRARY_PATH="$(find "$site/nvidia" -name 'lib' -type d | paste -sd:)${LIBRARY_PATH:+:$LIBRARY_PATH}"
  # A target folder of its own: the CUDA features would otherwise rebuild the CPU release's deps.
  CARGO_TARGET_DIR=target/cuda CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --features cuda,cudnn
  mkdir -p "$out/lib"
  cp target/cuda/release/dreamframe "$out/dreamframe"
  strip "$out/dreamframe"
  # The runtime libraries the binary links, for a machine that may lack some of them.
  find "$site/nvidia" -name 'lib*.so*' \( -name 'libcublas*' -o -name 'libcurand*' -o -name 'libcudart*' \
    -o -name 'libnvrtc*' -o -name 'libcudnn*' \) -exec cp -L {} "$out/lib/" \;
  du -sh "$out/dreamframe" "$out/lib"
  echo "carry $out (without $out/venv) to the GPU machine and run: tools/gpu-bench.sh run"
  ;;
run)
  export LD_LIBRARY_PATH="$PWD/$out/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
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
