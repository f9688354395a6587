"""How ponder._C is built: properties no numerical test would notice when they break."""

import subprocess
import sys

import pytest

import ponder._C


def test_cpu_kernels_are_compiled_with_openmp():
    # at::parallel_for is an inline OpenMP region in ponder's own code: compiled without
    # -fopenmp it still works, on one thread, and only a benchmark would ever notice.
    with open(ponder._C.__file__, "rb") as f:
        binary = f.read()
    assert b"GOMP_parallel" in binary, "ponder._C was built without -fopenmp: its CPU kernels run on one thread"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_ponder_shares_torchs_openmp_runtime():
    # Two OpenMP runtimes in one process would mean two thread pools fighting over the
    # cores, and torch.set_num_threads would not reach ponder's kernels.
    code = (
        "import torch, ponder._C\n"
        "paths = {l.split()[-1] for l in open('/proc/self/maps') if 'libgomp' in l}\n"
        "print(len(paths))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
