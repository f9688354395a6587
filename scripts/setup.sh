#!/usr/bin/env bash
# Creates (or updates) the project's virtualenv in .venv and builds ponder into it.
# Idempotent: a second run only rebuilds what changed.
#   scripts/setup.sh            runtime dependencies
#   scripts/setup.sh --test     plus what the tests and benchmarks need
# PONDER_TORCH picks the torch requirement (default: the CPU build torch==2.13.0; an
# unpinned "torch" would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

extras=()
if [[ "${1:-}" == "--test" ]]; then
  extras=(pytest pytest-xdist scipy hypothesis transformers "triton>=3.2")
fi

python3 -m venv .venv
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }
# Runtime and build requirements first (the editable install below uses --no-deps): the build runs without isolation against this torch.
pip_install "${PONDER_TORCH:-torch==2.13.0}" numpy safetensors tokenizers matplotlib "scikit-build-core>=0.10" pybind11 ninja "${extras[@]}"
pip_install --no-build-isolation --no-deps --editable .
