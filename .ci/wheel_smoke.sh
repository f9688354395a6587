#!/usr/bin/env bash
# Builds a wheel, installs it into a fresh virtualenv and uses it from outside the
# source tree, so a file missing from the wheel (the extension, a Triton kernel) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

.venv/bin/python -m pip wheel --quiet --no-build-isolation --no-deps -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0 numpy safetensors tokenizers matplotlib
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$work"/dist/ponder-*.whl

cd "$work"
"$work/venv/bin/python" - "$root" <<'PY'
import importlib.util
import os
import sys

import torch

import ponder
import ponder._C

root = sys.argv[1]
assert not ponder.__file__.startswith(root), f"imported ponder from the source tree: {ponder.__file__}"
kernels_dir = os.path.join(root, "kernels")
shipped = sorted(f[:-3] for f in os.listdir(kernels_dir) if f.endswith(".py"))
for name in shipped:
    assert importlib.util.find_spec(f"ponder.kernels.{name}") is not None, f"ponder.kernels.{name} is not in the wheel"
logits = torch.randn(4, 1000)
out = ponder.sample(logits, temperature=0.7, top_k=20, top_p=0.9, seed=1, num_samples=3)
ref = ponder.sample(logits, temperature=0.7, top_k=20, top_p=0.9, seed=1, num_samples=3, backend="reference")
assert torch.equal(out.tokens, ref.tokens)
print(f"wheel smoke test passed: {ponder.__file__}, kernels {shipped}")
PY
"$work/venv/bin/ponder" sampling --batch 4 --vocab 1000 --draws 1000 > /dev/null
echo "ponder sampling runs from the installed wheel"
# The shipped checkpoints are in the wheel: a one-problem search demo on them.
(cd "$work" && "$work/venv/bin/ponder" demo --methods best_of_n_weighted beam_search --budgets 1 4 --problems 2 \
  --out "$work/demo" > /dev/null && test -s "$work/demo/results.json" && test -s "$work/demo/accuracy.png")
echo "ponder demo runs from the installed wheel on the shipped checkpoints"
