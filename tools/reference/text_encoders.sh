#!/usr/bin/env bash
# Compares our CLIP text encoders at real size (random weights) with transformers' (not CI):
#
#   tools/reference/text_encoders.sh [folder]      # default: a temporary folder, ~2 GB
#
# Writes the weights and the reference hidden states (text_encoders.py), then runs the ignored
# Rust test that loads the same files and prints the max abs error per preset and prompt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$("$here/setup.sh")"
out="${1:-$(mktemp -d)}"
"$venv/bin/python" "$here/text_encoders.py" "$out"
cd "$here/../.."
DREAMFRAME_TEXT_REFERENCE="$out" cargo test --release --lib text_encoders_at_real_size -- --ignored --nocapture
