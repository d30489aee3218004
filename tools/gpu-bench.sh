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
# `run [part...]` prints, each part under its own time limit so one failure leaves the rest
# (parts, in this order; default all but `compile`):
#  - checks: bench-sd for sd-turbo and sd-1.5, every conv setup against an f32 reference of the
#    same weights on the CPU (max error over the reference's spread, bound stated; 256x256), the
#    fast broadcast kernels against upstream's and the CPU's on varied layouts, the fused group
#    norm kernel against candle-nn's group norm (max abs error; both against f32), attention
#    with f16 scores and with f32 scores against f32 at sd-1.5's and the VAE's shapes, and the host
#    work per decode and UNet step (conv calls, descriptor sets, algorithm searches, workspaces);
#  - ratios: two rounds of ours (bench-sd, the default setup: VAE decode 64x64 and 512x512 at
#    batch 1/4/10, and at batch 1 with candle-nn's group norms, TAESD b10, UNet step, and the
#    step with candle-nn's group norms and f32 attention scores, and the heaviest 3x3
#    convolutions alone, NCHW and channels-last, with their TFLOPS) then the PyTorch peer
#    (tools/gpu-peer.py, diffusers, f16,
#    eager and channels-last, cudnn.benchmark), 3 warm-ups and 20 runs each, and the table of
#    ours/PyTorch per round;
#  - compile: the peer's torch.compile variants (minutes of compiling; not in the default);
#  - pipelines: the display's own `run` on the null sink for 60 s each, 1 s of buffer before
#    playing, the quality ladder off: 1920x1080 at 60 fps with full-VAE in-betweens and sd-turbo
#    keyframes; 3840x2160 at 60 fps with TAESD in-betweens; sd-1.5 keyframes (20 steps) with
#    full-VAE in-betweens at 30 fps; each with its stats lines (buffer trend) and summary
#    (held deadlines, underrun frames, lateness, decode_fps);
#  - hardened: the same binary with /proc mounted subset=pid (the unit's ProcSubset=pid) and
#    under PR_SET_MDWE (the unit's MemoryDenyWriteExecute).
# The GPU time the script took is its last line. The parts' limits add up to more than one
# device call may take (10 minutes): run `run checks ratios` and then `run pipelines hardened` on
# the same warm machine (results accumulate in one archive). GPU_BUDGET (seconds, default 540)
# caps one call: parts past it are skipped and said so, and the archive is still written. A task
# gets 15 minutes of device time, the machine's start included: give each call about 5 minutes
# (`GPU_BUDGET=300 tools/gpu-bench.sh run checks ratios`, then the same for `pipelines
# hardened`) and the device tool's timeout_s a minute more.
#   tools/gpu-bench.sh profile [part...]   # on the GPU machine: Nsight Compute kernel times of
#                              # one VAE decode, TAESD batch and UNet step (bench-sd --only parts),
#                              # and the top 10 kernels of each
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
  # The stub lists what cudarc references, so cudarc must be compiled first: on a fresh checkout
  # the first link fails (an empty stub), and the stub made after it serves the second.
  [[ -e "$link/libcuda.so" ]] || stub
  build || { stub && build; }
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
  results=/tmp/dreamframe-gpu # kept between calls on a warm machine: the archive has them all
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
  # The whole call's budget (GPU_BUDGET seconds, default 540: inside the device tool's 600 s per
  # command with time to pack the archive): a part gets what is left of it, at most its own
  # limit, and is skipped once under 20 s are left, so the archive always comes back.
  deadline=$((SECONDS + ${GPU_BUDGET:-540}))
  part() { # name seconds command...: output to the screen and $results/name.txt
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS))
    if ((left < 20)); then
      echo "== $name skipped: ${left}s of GPU_BUDGET left"
      return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s): $*"
    local started=$SECONDS
    timeout "$limit" "$@" >"$results/$name.txt" 2>"$results/$name.err"
    local rc=$?
    cat "$results/$name.txt"
    grep -v '^\s*$' "$results/$name.err" | grep -v ' stats \| transition \| keyframe ' | tail -n 5
    echo "== $name rc=$rc in $((SECONDS - started))s"
  }
  parts=("${@:2}")
  [[ ${#parts[@]} -gt 0 ]] || parts=(checks ratios pipelines hardened)
  has() { [[ " ${parts[*]} " == *" $1 "* ]]; }
  started_all=$SECONDS
  if has checks; then
    for preset in sd-turbo sd-1.5; do
      part "checks-$preset" 120 "$bin" bench-sd --device cuda:0 --preset "$preset" --check-size 256 \
        --only check,broadcast_check,group_norm_check,attention_check,host_work
    done
  fi
  if [[ -d .whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  timed=vae_64px_b1,vae_b1,vae_b4,vae_b10,vae_b1_candle_norm,taesd_b10,unet_step,unet_step_unfused,conv_shapes
  if has ratios; then
    # Two rounds, ours then PyTorch's in each, so a drift of the machine shows as a spread.
    for round in 1 2; do
      for preset in sd-turbo sd-1.5; do
        part "ours-$round-$preset" 90 "$bin" bench-sd --device cuda:0 --preset "$preset" \
          --conv cached-benchmark --warmups 3 --runs 20 --only "$timed"
      done
      PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 part "peer-$round" 150 python3 tools/gpu-peer.py --warmups 3 --runs 20
    done
    echo "== ours / PyTorch's fastest variant, per round"
    python3 tools/gpu-peer.py --join "$results"/ours-1-*.txt "$results/peer-1.txt" \
      "$results"/ours-2-*.txt "$results/peer-2.txt" | tee "$results/ratios.txt"
  fi
  if has compile; then
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 part peer-compile 400 python3 tools/gpu-peer.py --warmups 3 --runs 20 --compile
  fi
  if has pipelines; then
    run_pipeline() { # name args...
      local name=$1
      shift
      part "$name" 100 "$bin" bench-sd --device cuda:0 --pipeline 60 --start-seconds 1 "$@"
      awk '/ (stats|adapt) / { line = $3; for (i = 4; i <= NF; i++) if ($i ~ /^(state|achieved_fps|buffer_frames|buffer_seconds|held_deadlines|underruns|underrun_frames|late_frames|jitter_p99_ms|jitter_max_ms|decode_fps|decode_ms_per_frame|upscale_ms_per_frame|model_lock_max_wait_ms|from|to|reason)=/) line = line " " $i; print line }' "$results/$name.err"
    }
    run_pipeline pipeline-1080p-full --preset sd-turbo --inbetweens full --screen 1920x1080 --fps 60
    run_pipeline pipeline-4k-tiny --preset sd-turbo --inbetweens tiny --screen 3840x2160 --fps 60
    run_pipeline pipeline-sd15-full --preset sd-1.5 --steps 20 --inbetweens full --screen 1920x1080 --fps 30
  fi
  if has hardened; then
    # The hardened unit on a CUDA box: ProcSubset=pid hides /proc/driver/nvidia; MDWE refuses
    # writable+executable memory. A short run of the same CUDA code under each.
    quick=("$bin" bench-sd --device cuda:0 --preset sd-turbo --size 128 --warmups 1 --runs 1 --conv cached-benchmark --only vae_b1,unet_step)
    part proc-subset-pid 40 unshare --mount --propagation private sh -c \
      'mount -t proc -o subset=pid proc /proc && ls /proc | head -n 3 | tr "\n" " " && echo && ls /proc/driver/nvidia 2>&1 | head -n 2; exec "$@"' sh "${quick[@]}"
    part mdwe 40 python3 -c 'import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.prctl(65, 1, 0, 0, 0)  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
print("PR_SET_MDWE:", "on" if rc == 0 else "unavailable: " + os.strerror(ctypes.get_errno()), flush=True)
os.execv(sys.argv[1], sys.argv[1:])' "${quick[@]}"
  fi
  echo "== the script took $((SECONDS - started_all)) s on the GPU machine (parts: ${parts[*]})"
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
  # The 10 kernels that took the most GPU time in a per-kernel summary (two calls: the warm-up
  # and the timed one), with their share of the total.
  top_kernels() {
    python3 - "$1" <<'PY'
import csv, sys
# ncu's per-kernel summary: one row per kernel and metric; the column names vary a little
# between versions, so they are looked up by what they contain.
scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"')))
def column(*names):
    for key in (rows[0] if rows else {}):
        if any(n.lower() in key.lower() for n in names):
            return key
kernel, calls, value = column("Kernel Name", "Function Name"), column("Invocations"), column("Average", "Metric Value")
unit, metric = column("Metric Unit"), column("Metric Name")
if not (kernel and value):
    sys.exit(f"cannot read the summary: columns {list(rows[0]) if rows else 'none'}")
totals = {}
for r in rows:
    if metric and r[metric] != "gpu__time_duration.sum":
        continue
    ms = float(r[value].replace(",", "")) * scale.get(r[unit] if unit else "nsecond", 1.0)
    n = int(r[calls].replace(",", "")) if calls else 1
    old = totals.get(r[kernel], (0.0, 0))
    totals[r[kernel]] = (old[0] + ms * n, old[1] + n)
whole = sum(t for t, _ in totals.values()) or 1.0
print(f"total {whole:.3f} ms in {sum(c for _, c in totals.values())} launches")
for name, (ms, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:10]:
    print(f"{ms:10.3f} ms {100 * ms / whole:5.1f}% {n:6d}x  {name[:110]}")
PY
  }
  shift
  targets=("$@")
  [[ ${#targets[@]} -gt 0 ]] || targets=(vae_b1 taesd_b10 unet_step)
  for what in "${targets[@]}"; do
    echo "== $what"
    timeout 150 "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --print-summary per-kernel \
      "$bin" bench-sd --device cuda:0 --preset sd-turbo --warmups 1 --runs 1 --conv cached-heuristic --only "$what" \
      >"$results/profile-$what.csv" 2>"$results/profile-$what.err"
    echo "rc=$? $(wc -l <"$results/profile-$what.csv") lines"
    tail -n 3 "$results/profile-$what.err"
    top_kernels "$results/profile-$what.csv" | tee "$results/top-$what.txt"
  done
  ;;
*)
  echo "usage: tools/gpu-bench.sh build|run|profile" >&2
  exit 2
  ;;
esac
