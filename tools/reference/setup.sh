#!/usr/bin/env bash
# Builds the Python reference venv (PyTorch on the CPU, diffusers, transformers, tokenizers) that
# tools/reference/make_golden.py needs. Run by hand, never by CI: CI only compares against the
# golden files committed under tests/data/sd-reference/.
#
#   tools/reference/setup.sh            # builds (or checks) the venv, prints its path
#
# Location: $DREAMFRAME_REFERENCE_VENV, else ~/.cache/dreamframe-reference-venv.
# Idempotent: a venv whose stamp matches requirements.lock is left as it is (seconds).
# Versions: tools/reference/requirements.lock, installed with --no-deps (see the comment there
# for why torch comes with CUDA libraries although it only runs on the CPU, and which of its
# declared dependencies are deliberately left out). Needs python3.11 and PyPI; downloads about
# 2.5 GB and takes about 4 GB on disk (measured: README.md in this folder).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${DREAMFRAME_REFERENCE_VENV:-$HOME/.cache/dreamframe-reference-venv}"
lock="$here/requirements.lock"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

stamp="$venv/.dreamframe-lock.sha256"
want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$venv/bin/python" -c 'import torch, diffusers, transformers, tokenizers, safetensors' 2>/dev/null; then
    echo "reference venv up to date: $venv" >&2
    echo "$venv"
    exit 0
fi

start=$(date +%s)
echo "building reference venv in $venv (about 2.5 GB of downloads)" >&2
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"python 3.11 wanted, found {sys.version}"'
rm -rf "$venv"
"$python" -m venv "$venv"
# --no-deps: the lock names every package; torch's unused CUDA extras stay out (see the lock).
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$lock"
"$venv/bin/python" - <<'EOF'
import torch, diffusers, transformers, tokenizers, safetensors
import importlib.util, os
assert torch.__version__.startswith("2.15.0"), torch.__version__
x = torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3))
assert float(x) == 9.0
bpe = os.path.join(os.path.dirname(importlib.util.find_spec("open_clip").origin), "bpe_simple_vocab_16e6.txt.gz")
assert os.path.isfile(bpe), bpe
print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers",
      transformers.__version__, "tokenizers", tokenizers.__version__)
EOF
echo "$want" > "$stamp"
end=$(date +%s)
echo "reference venv built in $((end - start)) s, size $(du -sh "$venv" | cut -f1): $venv" >&2
echo "$venv"
