#!/usr/bin/env bash
# Regenerates the golden files under tests/data/sd-reference/ from diffusers and transformers:
#
#   tools/reference/regenerate.sh
#
# Builds the reference venv first if needed (tools/reference/setup.sh), then runs
# make_golden.py (about 20 s). Deterministic: an unchanged reference rewrites identical files,
# so `git status` after it shows exactly what a new diffusers/transformers changed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$("$here/setup.sh")"
"$venv/bin/python" "$here/make_golden.py" "$here/../../tests/data/sd-reference" 2> >(grep -v -e 'it/s]' -e torchvision >&2)
