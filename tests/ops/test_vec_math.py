"""The framework-free float math of the CPU kernels (exp_nonpositive in
csrc/include/ponder/vec_math.h, sum_exp_chunk in sampling.h), built by the system C++
compiler for this CPU and for plain x86-64, so that the AVX-512 and the portable code
paths are both checked against float64."""

import os
import platform
import shutil
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CXX = shutil.which("g++") or shutil.which("c++")

pytestmark = pytest.mark.skipif(CXX is None or platform.machine() != "x86_64", reason="needs a C++ compiler on x86-64")

# -march=native has AVX-512 where the CPU does; x86-64 never has it.
ARCHES = ["native", "x86-64"]
CPU_HAS_AVX512 = os.path.exists("/proc/cpuinfo") and " avx512f " in open("/proc/cpuinfo").read()


@pytest.fixture(scope="module", params=ARCHES)
def driver(request, tmp_path_factory):
    exe = tmp_path_factory.mktemp("vec_math") / f"driver_{request.param}"
    subprocess.run(
        [CXX, "-std=c++20", "-O2", f"-march={request.param}", "-fopenmp-simd", "-I", os.path.join(ROOT, "csrc", "include"),
         os.path.join(ROOT, "tests", "csrc", "vec_math_driver.cpp"), "-o", str(exe)],
        check=True, capture_output=True, text=True)
    return str(exe)


def bits(values) -> str:
    return " ".join(str(b) for b in np.asarray(values, dtype=np.float32).view(np.uint32))


def run(driver: str, lines: list[str]) -> np.ndarray:
    out = subprocess.run([driver], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True).stdout
    return np.array([int(word) for word in out.split()], dtype=np.uint32).view(np.float32)


def ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want| in units of the float32 spacing at want (want in float64)."""
    want32 = want.astype(np.float32)
    return np.abs(got.astype(np.float64) - want) / np.spacing(want32).astype(np.float64)


def test_exp_nonpositive_matches_float64(driver):
    rng = np.random.default_rng(0)
    x = np.concatenate([
        -rng.exponential(5.0, 4000), -rng.uniform(0, 87, 4000), np.linspace(-87, 0, 1001),
        [0.0, -0.0, -1e-30, -np.log(2) / 2, -86.99, -87.0],
    ]).astype(np.float32)
    out = run(driver, [f"exp {len(x)} {bits(x)}"])
    # The scalar form, then the 16-lane form where the build has AVX-512.
    assert len(out) == len(x) * (2 if driver.endswith("native") and CPU_HAS_AVX512 else 1)
    want = np.exp(x.astype(np.float64))
    for got in out.reshape(-1, len(x)):
        assert ulps(got, want).max() <= 1.05
        assert (got[x == 0] == 1.0).all()


@pytest.mark.parametrize("special", [np.nan, -np.inf, -87.5, -1e30])
def test_exp_nonpositive_zero_outside_range(driver, special):
    x = np.array([special, -3.0], dtype=np.float32)
    out = run(driver, [f"exp 2 {bits(x)}"]).reshape(-1, 2)
    assert (out[:, 0] == 0.0).all()
    assert np.allclose(out[:, 1], np.exp(-3.0), rtol=1e-7)


def expected_sum(x: np.ndarray, m: float) -> float:
    x = np.minimum(x.astype(np.float64), np.finfo(np.float32).max)
    terms = np.exp(np.where(np.isnan(x), -np.inf, x) - m)
    return float(terms[x - m >= -87].sum())


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 31, 33, 256])
def test_sum_exp_chunk_every_tail_length(driver, n):
    rng = np.random.default_rng(n)
    x = rng.normal(0, 3, n).astype(np.float32)
    m = float(x.max()) if n else 0.0
    got = run(driver, [f"sum {bits([m])} {n} {bits(x)}"])[0]
    assert got == pytest.approx(expected_sum(x, m), rel=2e-6, abs=0)


def test_sum_exp_chunk_special_values(driver):
    f32max = np.finfo(np.float32).max
    # NaN and -inf add nothing; +inf counts as float max (so as exp(0) at m = float max);
    # values more than 87 below m add nothing.
    cases = [
        (np.array([1.0, np.nan, -np.inf, 0.5] * 5, dtype=np.float32), 1.0),
        (np.array([np.inf, 3.0, np.inf, np.nan, f32max] + [0.0] * 14, dtype=np.float32), f32max),
        (np.array([-100.0, -88.0, 0.0, -86.0] * 9, dtype=np.float32), 0.0),
        (np.full(19, -np.inf, dtype=np.float32), 0.0),
    ]
    lines = [f"sum {bits([m])} {len(x)} {bits(x)}" for x, m in cases]
    got = run(driver, lines)
    for value, (x, m) in zip(got, cases):
        assert value == pytest.approx(expected_sum(x, m), rel=2e-6, abs=0)
