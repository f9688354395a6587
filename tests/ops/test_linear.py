"""ponder.ops.linear (the model runner's dense layer) on every backend against float64,
its batch invariance, NaN containment, edge shapes, bad input and the custom-op machinery."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ponder import ops
from ponder.ops._backend import has_cpu_kernels

BACKENDS = ["reference"] + (["cpu"] if has_cpu_kernels() else [])
needs_cpu_kernels = pytest.mark.skipif(not has_cpu_kernels(), reason="the extension is not built")


def case(M: int, K: int, N: int, *, bias: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g)
    w = torch.randn(N, K, generator=g) / K ** 0.5
    b = torch.randn(N, generator=g) if bias else None
    return x, w, b


def assert_matches_float64(y, x, w, b):
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    # float32 sums of K products: rounding grows like sqrt(K) ulps of the magnitudes summed.
    scale = x.double().abs() @ w.double().abs().T + (0 if b is None else b.double().abs())
    assert y.dtype == torch.float32 and y.shape == want.shape
    assert ((y.double() - want).abs() <= 1e-6 * scale * (x.shape[-1] ** 0.5 + 1) + 1e-30).all()


# Decode and prefill row counts, the model shapes of the benchmarks (hidden 512, fused qkv
# 1024, gate/up 2816, down from 1408), a vocabulary projection, and odd sizes around the
# kernel's blocks (16 rows a block, 8 columns a tile). The vocabulary projections span
# the sizes the sampling tests use: 111, 32000, 128256, 151936.
SHAPES = [(1, 512, 1024), (16, 512, 2816), (16, 1408, 512), (7, 48, 111), (3, 64, 32000), (2, 16, 128256),
          (1, 32, 151936), (256, 64, 96),
          (17, 33, 9), (15, 1, 7), (33, 100, 17), (5, 7, 1)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("M,K,N", SHAPES, ids=lambda v: str(v))
def test_matches_float64(backend, M, K, N):
    x, w, b = case(M, K, N, bias=(M + N) % 2 == 0)
    assert_matches_float64(ops.linear(x, w, b, backend=backend), x, w, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["every other row", "column slice", "transposed x", "transposed weight",
                                    "leading dims"])
def test_strided_inputs(backend, layout):
    x, w, b = case(40, 24, 19, seed=1)
    if layout == "every other row":
        x = torch.randn(80, 24)[::2]
    elif layout == "column slice":
        x, w = torch.randn(40, 50)[:, 3:27], torch.randn(19, 60)[:, 10:34]
    elif layout == "transposed x":
        x = torch.randn(24, 40).T
    elif layout == "transposed weight":
        w = torch.randn(24, 19).T
    else:
        x = torch.randn(4, 10, 24).transpose(0, 1)
    y = ops.linear(x, w, b, backend=backend)
    assert y.shape == (*x.shape[:-1], 19)
    assert_matches_float64(y.reshape(-1, 19), x.reshape(-1, 24), w, b)


@needs_cpu_kernels
@pytest.mark.parametrize("M", [1, 15, 16, 17, 100])
def test_cpu_is_batch_invariant(M):
    """A row's output is bitwise the same alone, in any batch, at any position, on any thread count."""
    x, w, b = case(M, 200, 37, seed=M)
    batch = ops.linear(x, w, b, backend="cpu")
    for m in {0, M // 2, M - 1}:
        assert torch.equal(ops.linear(x[m:m + 1], w, b, backend="cpu")[0], batch[m])
    shuffled = torch.randperm(M, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ops.linear(x[shuffled], w, b, backend="cpu"), batch[shuffled])
    bigger = torch.cat([torch.randn(23, 200), x])
    assert torch.equal(ops.linear(bigger, w, b, backend="cpu")[23:], batch)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(ops.linear(x, w, b, backend="cpu"), batch)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_stay_in_their_row(backend):
    x, w, b = case(20, 30, 11, seed=2)
    x[3, 4], x[17, 0] = float("nan"), float("inf")
    y = ops.linear(x, w, b, backend=backend)
    assert y[3].isnan().all()
    assert not y[17].isfinite().any()
    clean = torch.ones(20, dtype=torch.bool)
    clean[[3, 17]] = False
    assert y[clean].isfinite().all()
    assert_matches_float64(y[clean], x[clean], w, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("M,K,N", [(0, 8, 5), (4, 8, 0), (4, 0, 5)])
def test_empty_shapes(backend, M, K, N):
    x, w, b = case(M, K, N)
    y = ops.linear(x, w, b, backend=backend)
    assert y.shape == (M, N)
    torch.testing.assert_close(y, F.linear(x, w, b))  # K = 0: the bias alone


BAD = [
    (dict(x=torch.zeros(2, 3, dtype=torch.float64)), TypeError, "x must be float32, got torch.float64"),
    (dict(x=torch.tensor(1.0)), ValueError, "x must have at least 1 dimension"),
    (dict(x=[[1.0]]), TypeError, "x must be a torch.Tensor, got list"),
    (dict(weight=torch.zeros(4, 3, dtype=torch.bfloat16)), TypeError, "weight must be float32, got torch.bfloat16"),
    (dict(weight=torch.zeros(12)), ValueError, r"weight must be 2-D, got shape \(12,\)"),
    (dict(weight=torch.zeros(4, 5)), ValueError, r"weight must have shape \[N, 3\] \(K = x.shape\[-1\]\), got \(4, 5\)"),
    (dict(bias=torch.zeros(5)), ValueError, r"bias must have shape \[4\] \(N = weight.shape\[0\]\), got \(5,\)"),
    (dict(bias=torch.zeros(4, 1)), ValueError, r"bias must be 1-D, got shape \(4, 1\)"),
    (dict(backend="triton"), ValueError, "backend must be one of .'reference', 'cpu'. for linear"),
]


@pytest.mark.parametrize("change,error,match", BAD, ids=[m for _, _, m in BAD])
def test_rejects_bad_arguments(change, error, match):
    args = dict(x=torch.zeros(2, 3), weight=torch.zeros(4, 3), bias=torch.zeros(4), backend=None) | change
    with pytest.raises(error, match=match):
        ops.linear(args["x"], args["weight"], args["bias"], backend=args["backend"])


@needs_cpu_kernels
def test_compiled_op_checks_its_arguments():
    """Direct torch.ops.ponder.linear calls (bypassing the Python checks) get clear errors too."""
    with pytest.raises(RuntimeError, match=r"weight must have shape \[N, 3\] \(K = x.shape\[1\]\), got \[4, 5\]"):
        torch.ops.ponder.linear(torch.zeros(2, 3), torch.zeros(4, 5), None)
    with pytest.raises(RuntimeError, match="x must be float32, got Half"):
        torch.ops.ponder.linear(torch.zeros(2, 3, dtype=torch.half), torch.zeros(4, 3), None)
    with pytest.raises(RuntimeError, match=r"bias must have shape \[4\]"):
        torch.ops.ponder.linear(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(3))


@needs_cpu_kernels
def test_opcheck():
    x, w, b = case(5, 12, 9)
    torch.library.opcheck(torch.ops.ponder.linear.default, (x, w, b), test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.ponder.linear.default, (x, w, None), test_utils=("test_schema", "test_faketensor"))


@needs_cpu_kernels
def test_torch_compile_fullgraph():
    x, w, b = case(6, 16, 10, seed=4)
    compiled = torch.compile(lambda x: torch.relu(ops.linear(x, w, b, backend="cpu")), backend="eager", fullgraph=True)
    assert torch.equal(compiled(x), torch.relu(ops.linear(x, w, b, backend="cpu")))
