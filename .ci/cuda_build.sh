#!/usr/bin/env bash
# Proves, without a GPU, that ponder's CUDA code builds: ponder._C builds with PONDER_CUDA=ON
# against torch 2.14.1's CUDA build, every csrc/**/*.cu for sm_80 and sm_90a with warnings
# as errors (PONDER_CUDA_WERROR: nvcc's, the host compiler's, and ptxas register spills), in a
# venv of its own (.venv-cuda) and a build dir of its own (build/cuda); imported from
# outside the source tree, it has its CUDA kernels registered.
# Needs nvcc (CUDA 13) on PATH. Idempotent: a second run reuses the venv and the build dir.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

venv=.venv-cuda
build_dir=build/cuda
export TORCH_CUDA_ARCH_LIST="8.0;9.0a"  # torch's CMake takes the archs from here, not CMAKE_CUDA_ARCHITECTURES

step() { echo "== [$((SECONDS))s] $*"; }

# The nvcc on PATH may be a wrapper script: ask the driver itself where its toolkit is.
toolkit=$(cd "$(nvcc --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p')" && pwd -P)
step "CUDA toolkit: $toolkit ($(nvcc --version | tail -n 2 | head -n 1))"

step "venv $venv with torch 2.14.1 (CUDA build)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
python="$repo/$venv/bin/python"
"$python" -m pip install -q torch==2.14.1 numpy scikit-build-core pybind11 ninja "cmake>=3.30"
site=$("$python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$python" -c "import torch; assert torch.version.cuda, 'torch ' + torch.__version__ + ' is not a CUDA build'"

step "pip install ponder with PONDER_CUDA=ON and PONDER_CUDA_WERROR=ON (build dir $build_dir)"
build_args=(-C "build-dir=$build_dir" -C cmake.define.PONDER_CUDA=ON -C cmake.define.PONDER_CUDA_WERROR=ON)
# A toolkit without nvrtc (a slim install): link the nvrtc that torch's CUDA wheels ship.
if ! compgen -G "$toolkit/lib64/libnvrtc.so*" >/dev/null; then
  nvrtc=$(compgen -G "$site/nvidia/cu*/lib/libnvrtc.so.*" | head -n 1) ||
    { echo "no libnvrtc in $toolkit/lib64 nor in torch's wheels under $site/nvidia" >&2; exit 1; }
  build_args+=(-C "cmake.define.CUDA_nvrtc_LIBRARY=$nvrtc")
fi
"$python" -m pip install -q --no-build-isolation --no-deps "${build_args[@]}" .
mapfile -t sources < <(find csrc -name '*.cu' | sort)
for source in "${sources[@]}"; do  # each kernel file built, strictly, for both architectures
  grep -q -- "$source" "$build_dir/build.ninja" || { echo "$source is not in the CUDA build" >&2; exit 1; }
done
for flag in --Werror=all-warnings -Xcompiler=-Werror -Xptxas=-warn-spills arch=compute_80,code=sm_80 arch=compute_90a,code=sm_90a; do
  grep -q -- "$flag" "$build_dir/build.ninja" || { echo "the CUDA build lacks $flag" >&2; exit 1; }
done

step "import from outside the source tree"
cd "$(mktemp -d)"
PONDER_REPO="$repo" "$python" - <<'EOF'
import os

import torch
import ponder
from ponder import _C

assert not ponder.__file__.startswith(os.environ["PONDER_REPO"] + "/python"), f"imported the source tree: {ponder.__file__}"
assert _C.WITH_CUDA == 1, f"ponder._C.WITH_CUDA = {_C.WITH_CUDA}: built without the CUDA kernels"
for op in ("ponder::filtered_probs", "ponder::sample", "ponder::copy_blocks", "ponder::write_kv", "ponder::paged_attention",
           "ponder::step_scores", "ponder::vote"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), f"{op} has no {key} kernel"
print(f"ok: {_C.__file__} has CPU and CUDA kernels (torch {torch.__version__})")
EOF
step "done"
