"""ponder.sample / ponder.filtered_probs: every backend against the reference.

The reference (ponder.reference.sampling) is the definition. Each available backend
(reference, cpu, triton under the interpreter, cuda where a GPU exists) must give the
same filtered distribution within float tolerance, draw from it (chi-square), never
draw outside it, reproduce under a seed, and return the reference's own tokens for the
same seed.
"""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

import ponder
from ponder.reference import sampling as reference
from ponder.synthetic import llm_like_logits

VOCABS = [111, 32000, 128256, 151936]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def mixed_params(batch: int, vocab: int, device="cpu") -> dict:
    """Per-row parameters cycling through greedy, plain, and every filter combination."""
    rows = [
        (1.0, 0, 1.0, 0.0),  # plain softmax
        (0.7, 50, 0.95, 0.0),  # the usual chain
        (0.0, 0, 1.0, 0.0),  # greedy
        (1.3, 10, 0.5, 0.1),
        (1.0, 0, 0.9, 0.0),  # top-p alone over the whole row
        (0.5, vocab + 7, 1.0, 0.05),  # top-k beyond the vocab: no top-k
        (2.0, 30, 1.0, 0.3),  # min-p binding inside the top-k set
        (1.0, 0, 1.0, 0.2),  # min-p alone
    ]
    chosen = [rows[i % len(rows)] for i in range(batch)]
    t, k, p, m = zip(*chosen)
    return {
        "temperature": torch.tensor(t, dtype=torch.float32, device=device),
        "top_k": torch.tensor(k, dtype=torch.int64, device=device),
        "top_p": torch.tensor(p, dtype=torch.float32, device=device),
        "min_p": torch.tensor(m, dtype=torch.float32, device=device),
    }


def batch_for(backend: str, vocab: int) -> int:
    # The Triton interpreter runs programs one by one in Python: keep its batches small.
    if backend == "triton" and not torch.cuda.is_available():
        return 2 if vocab > 1000 else 8
    return 8 if vocab > 1000 else 64


def reference_probs(logits, params):
    return reference.filtered_probs(logits.cpu(), *(params[k].cpu() for k in ("temperature", "top_k", "top_p", "min_p")))


def assert_probs_match(got: torch.Tensor, want: torch.Tensor):
    got = got.cpu()
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(got > 0, want > 0), f"support differs in {(got > 0).ne(want > 0).sum()} entries"
    torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_filtered_probs_match_reference(backend_device, vocab, dtype):
    backend, device = backend_device
    batch = batch_for(backend, vocab)
    logits = llm_like_logits(batch, vocab, seed=vocab, dtype=dtype, device=device)
    params = mixed_params(batch, vocab, device)
    got = ponder.filtered_probs(logits, **params, backend=backend)
    want = reference_probs(logits, params)
    assert_probs_match(got, want)
    sums = want.double().sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


@pytest.mark.parametrize("vocab", VOCABS)
def test_sample_matches_reference_tokens(backend_device, vocab):
    """Same seed, same tokens as the reference, and the same log-probabilities."""
    backend, device = backend_device
    batch = batch_for(backend, vocab)
    logits = llm_like_logits(batch, vocab, seed=vocab + 1, device=device)
    params = mixed_params(batch, vocab, device)
    got = ponder.sample(logits, **params, seed=1234, num_samples=3, backend=backend)
    want = ponder.sample(logits.cpu(), **{k: v.cpu() for k, v in params.items()}, seed=1234, num_samples=3,
                         backend="reference")
    assert got.tokens.shape == (batch, 3) and got.tokens.dtype == torch.int64
    assert torch.equal(got.tokens.cpu(), want.tokens)
    torch.testing.assert_close(got.logprobs.cpu(), want.logprobs, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(got.raw_logprobs.cpu(), want.raw_logprobs, rtol=1e-5, atol=2e-5)


def test_logprobs_are_those_of_the_distributions(backend_device):
    backend, device = backend_device
    logits = llm_like_logits(16, 111, seed=5, device=device)
    params = mixed_params(16, 111, device)
    out = ponder.sample(logits, **params, seed=9, num_samples=4, backend=backend)
    probs = reference_probs(logits, params)
    torch.testing.assert_close(out.logprobs.cpu(), probs.gather(1, out.tokens.cpu()).log(), rtol=1e-5, atol=1e-5)
    raw = torch.log_softmax(logits.cpu().float(), -1).gather(1, out.tokens.cpu())
    torch.testing.assert_close(out.raw_logprobs.cpu(), raw, rtol=1e-5, atol=1e-5)


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Goodness of fit of token counts to probs, pooling cells with expected count < 5."""
    n = counts.sum().item()
    expected = probs.double() * n
    support = probs > 0
    small = support & (expected < 5)
    obs = counts[support & ~small].double().tolist()
    exp = expected[support & ~small].tolist()
    if small.any():
        obs.append(counts[small].sum().item())
        exp.append(expected[small].sum().item())
    scale = sum(obs) / sum(exp)  # float rounding of probs
    return scipy.stats.chisquare(obs, [e * scale for e in exp]).pvalue


@pytest.mark.parametrize("setting", ["plain", "chain", "top_p", "min_p", "hot"])
def test_samples_follow_filtered_distribution(backend_device, setting):
    backend, device = backend_device
    params = {
        "plain": dict(),
        "chain": dict(temperature=0.8, top_k=40, top_p=0.9),
        "top_p": dict(top_p=0.7),
        "min_p": dict(temperature=1.5, min_p=0.05),
        "hot": dict(temperature=3.0, top_k=100),
    }[setting]
    logits = torch.randn(1, 111, generator=torch.Generator().manual_seed(11)).to(device) * 1.5
    draws = 6000
    out = ponder.sample(logits, **params, seed=2024, num_samples=draws, backend=backend)
    probs = ponder.filtered_probs(logits, **params, backend="reference" if device == "cpu" else backend)[0].cpu()
    tokens = out.tokens[0].cpu()
    assert tokens.min() >= 0 and tokens.max() < 111
    assert (probs[tokens] > 0).all(), "a token outside the filtered support was drawn"
    counts = torch.bincount(tokens, minlength=111)
    assert chi_square_pvalue(counts, probs) > 1e-4


def test_seeds_reproduce_and_differ(backend_device):
    backend, device = backend_device
    logits = llm_like_logits(4, 500, seed=3, device=device)
    a = ponder.sample(logits, seed=77, num_samples=32, backend=backend).tokens
    b = ponder.sample(logits, seed=77, num_samples=32, backend=backend).tokens
    c = ponder.sample(logits, seed=78, num_samples=32, backend=backend).tokens
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Draws of one call are independent, not copies of one another.
    assert (a[:, 1:] != a[:, :1]).any()


def test_per_row_seeds(backend_device):
    backend, device = backend_device
    logits = llm_like_logits(1, 300, seed=4, device=device).expand(4, 300)
    seeds = torch.tensor([5, 5, 6, 2**62 + 1], dtype=torch.int64, device=device)
    out = ponder.sample(logits, seed=seeds, num_samples=16, backend=backend).tokens.cpu()
    want = ponder.sample(logits.cpu(), seed=seeds.cpu(), num_samples=16, backend="reference").tokens
    assert torch.equal(out, want)
    # The row index is part of the counter: equal seeds in different rows still differ.
    assert not torch.equal(out[0], out[1])


def test_seed_none_draws_from_torch_generator(backend_device):
    backend, device = backend_device
    logits = llm_like_logits(2, 200, seed=6, device=device)
    torch.manual_seed(0)
    a = ponder.sample(logits, num_samples=16, backend=backend).tokens
    torch.manual_seed(0)
    b = ponder.sample(logits, num_samples=16, backend=backend).tokens
    assert torch.equal(a, b)


def test_greedy_picks_first_maximum(backend_device):
    backend, device = backend_device
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, -1.0, 5.0, 5.0]], device=device)
    out = ponder.sample(logits, temperature=0.0, top_k=1, seed=1, backend=backend)
    assert out.tokens.tolist() == [1, 0]
    assert out.logprobs.tolist() == [0.0, 0.0]
    raw = torch.log_softmax(logits.cpu(), -1)
    torch.testing.assert_close(out.raw_logprobs.cpu(), torch.stack([raw[0, 1], raw[1, 0]]))
    probs = ponder.filtered_probs(logits, temperature=0.0, backend=backend).cpu()
    assert probs.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]


def test_ties_at_thresholds_are_kept(backend_device):
    backend, device = backend_device
    logits = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 0.0]], device=device)
    probs = ponder.filtered_probs(logits, top_k=2, backend=backend).cpu()[0]
    assert (probs[:4] > 0).all() and (probs[4:] == 0).all()
    # Four equal logits and top_p = 0.3: no token is strictly above the group, so all stay.
    flat = torch.zeros(1, 4, device=device)
    assert (ponder.filtered_probs(flat, top_p=0.3, backend=backend) > 0).all()
    # A token is kept when the mass strictly above it is < top_p: with masses .5, .3,
    # .15, .05 and top_p = .85, the third token (.8 above it) stays, the fourth (.95) goes.
    masses = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]], device=device))
    probs = ponder.filtered_probs(masses, top_p=0.85, backend=backend).cpu()[0]
    assert (probs[:3] > 0).all() and probs[3] == 0
    probs = ponder.filtered_probs(masses, top_p=0.75, backend=backend).cpu()[0]
    assert (probs[:2] > 0).all() and (probs[2:] == 0).all()


def test_top_k_beyond_vocab_is_no_filter(backend_device):
    backend, device = backend_device
    logits = llm_like_logits(3, 50, seed=8, device=device)
    a = ponder.filtered_probs(logits, top_k=50, backend=backend)
    b = ponder.filtered_probs(logits, top_k=10_000, backend=backend)
    c = ponder.filtered_probs(logits, backend=backend)
    assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("top_k", [0, 20])
def test_nan_and_inf_logits(backend_device, top_k):
    """NaN is never drawn, +inf tokens share the mass, and neighbour rows are untouched."""
    backend, device = backend_device
    logits = llm_like_logits(4, 600, seed=12, device=device)
    clean = logits.clone()
    logits[1, ::3] = float("nan")
    logits[2, [5, 9]] = float("inf")
    probs = ponder.filtered_probs(logits, top_k=top_k, backend=backend).cpu()
    assert torch.equal(probs[[0, 3]], ponder.filtered_probs(clean[[0, 3]], top_k=top_k, backend=backend).cpu())
    assert_probs_match(probs, ponder.filtered_probs(logits.cpu(), top_k=top_k, backend="reference"))
    assert (probs[1, ::3] == 0).all() and torch.isfinite(probs).all()
    assert probs[2, 5] == probs[2, 9] == 0.5
    out = ponder.sample(logits, top_k=top_k, seed=3, num_samples=64, backend=backend)
    assert (out.tokens[1].cpu() % 3 != 0).all()
    assert set(out.tokens[2].tolist()) == {5, 9}
    assert torch.isfinite(out.logprobs).all() and torch.isfinite(out.raw_logprobs).all()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("top_k", [0, 1, 3])
def test_huge_logits_at_any_temperature(backend_device, temperature, top_k):
    """Scaled logits are clamped to the float32 range: +inf (and logits that overflow when
    divided by a small temperature) share the mass instead of leaving no distribution."""
    backend, device = backend_device
    logits = torch.tensor([[float("inf"), float("inf"), 0.0, -1.0],
                           [3e38, 2e38 if temperature < 1 else 3e38, 0.0, float("-inf")],
                           [-3e38, -3e38, float("-inf"), float("-inf")]], device=device)
    probs = ponder.filtered_probs(logits, temperature=temperature, top_k=top_k, backend=backend).cpu()
    assert torch.equal(probs, ponder.filtered_probs(logits.cpu(), temperature=temperature, top_k=top_k,
                                                    backend="reference"))
    assert probs[0].tolist() == [0.5, 0.5, 0.0, 0.0]
    assert probs[1].tolist() == [0.5, 0.5, 0.0, 0.0]
    assert probs[2].tolist() == [0.5, 0.5, 0.0, 0.0]
    out = ponder.sample(logits, temperature=temperature, top_k=top_k, seed=4, num_samples=64, backend=backend)
    for row in range(3):
        assert set(out.tokens[row].tolist()) == {0, 1}
    assert torch.isfinite(out.logprobs).all()


@pytest.mark.parametrize("fill", [float("-inf"), float("nan")])
def test_row_without_finite_logit(backend_device, fill):
    backend, device = backend_device
    logits = llm_like_logits(3, 40, seed=13, device=device)
    logits[1] = fill
    probs = ponder.filtered_probs(logits, top_k=5, backend=backend).cpu()
    assert (probs[1] == 0).all()
    assert torch.allclose(probs[[0, 2]].sum(-1), torch.ones(2))
    for temperature in (1.0, 0.0):
        out = ponder.sample(logits, temperature=temperature, seed=1, num_samples=2, backend=backend)
        assert out.tokens[1].tolist() == [0, 0]
        assert (out.logprobs[1] == -math.inf).all() and (out.raw_logprobs[1] == -math.inf).all()
        assert torch.isfinite(out.logprobs[[0, 2]]).all()


def test_strided_logits(backend_device):
    backend, device = backend_device
    base = llm_like_logits(6, 2 * 301, seed=14, device=device)
    views = {
        "column_stride_2": base[:, ::2],
        "transposed": base[:, :301].t().contiguous().t(),
        "row_slice": base[1:5, 7:308],
    }
    params = dict(temperature=0.9, top_k=20, top_p=0.9)
    for name, view in views.items():
        assert not view.is_contiguous()
        got = ponder.sample(view, **params, seed=5, num_samples=4, backend=backend)
        want = ponder.sample(view.contiguous(), **params, seed=5, num_samples=4, backend="reference"
                             if device == "cpu" else backend)
        assert torch.equal(got.tokens.cpu(), want.tokens.cpu()), name
        assert_probs_match(ponder.filtered_probs(view, **params, backend=backend),
                           ponder.filtered_probs(view.contiguous().cpu(), **params, backend="reference"))


def test_empty_batch(backend_device):
    backend, device = backend_device
    logits = torch.empty(0, 10, device=device)
    out = ponder.sample(logits, seed=1, num_samples=2, backend=backend)
    assert out.tokens.shape == (0, 2)
    assert ponder.filtered_probs(logits, backend=backend).shape == (0, 10)


def test_single_sample_shape(backend_device):
    backend, device = backend_device
    out = ponder.sample(llm_like_logits(5, 30, seed=1, device=device), seed=1, backend=backend)
    assert out.tokens.shape == out.logprobs.shape == out.raw_logprobs.shape == (5,)


BAD_INPUTS = [
    (dict(logits=[[1.0, 2.0]]), TypeError, "logits must be a torch.Tensor"),
    (dict(logits=torch.zeros(3)), ValueError, r"2-D \[batch, vocab\], got shape \(3,\)"),
    (dict(logits=torch.zeros(2, 0)), ValueError, "empty vocab"),
    (dict(logits=torch.zeros(2, 3, dtype=torch.int64)), TypeError, "float32, float16 or bfloat16, got torch.int64"),
    (dict(temperature=-0.5), ValueError, r"temperature = -0.5 is out of range"),
    (dict(temperature=float("nan")), ValueError, "temperature = nan is out of range"),
    (dict(top_p=0.0), ValueError, r"top_p = 0.0 is out of range: expected 0 < top_p <= 1"),
    (dict(top_p=1.5), ValueError, "top_p = 1.5 is out of range"),
    (dict(min_p=1.0), ValueError, r"min_p = 1.0 is out of range: expected 0 <= min_p < 1"),
    (dict(min_p=-0.1), ValueError, "min_p = -0.1 is out of range"),
    (dict(top_k=-1), ValueError, "top_k = -1 is out of range"),
    (dict(top_k=2.5), TypeError, "top_k must be an int"),
    (dict(temperature=torch.ones(3)), ValueError, r"temperature must be a scalar or a tensor of shape \[2\]"),
    (dict(top_k=torch.ones(2)), TypeError, "top_k must be an integer tensor"),
    (dict(top_p=torch.tensor([0.5, 0.0])), ValueError, r"top_p\[1\] = 0.0 is out of range"),
    (dict(temperature=torch.tensor([1, 2])), TypeError, "temperature must be a floating-point tensor"),
    (dict(seed=-1), ValueError, "seed = -1 is out of range"),
    (dict(seed=2**63), ValueError, "out of range"),
    (dict(seed=1.5), TypeError, "seed must be None, an int or an int64 tensor"),
    (dict(seed=torch.zeros(2, dtype=torch.int32)), TypeError, "seed tensor must be int64"),
    (dict(seed=torch.zeros(5, dtype=torch.int64)), ValueError, r"seed must be an int or a tensor of shape \[2\]"),
    (dict(num_samples=0), ValueError, "num_samples must be an int >= 1, got 0"),
    (dict(backend="gpu"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_is_a_clear_error(kwargs, error, message):
    kwargs = dict(kwargs)
    logits = kwargs.pop("logits", torch.zeros(2, 5))
    with pytest.raises(error, match=message):
        ponder.sample(logits, **kwargs)


def test_backend_that_cannot_run_here():
    with pytest.raises(ValueError, match="backend 'cuda' cannot run on cpu tensors"):
        ponder.sample(torch.zeros(2, 5), backend="cuda")


@pytest.mark.skipif(not ponder.ops._backend.has_cpu_kernels(), reason="extension not built")
def test_compiled_op_checks_its_arguments():
    """Direct torch.ops calls (bypassing the Python checks) get clear errors too."""
    logits = torch.zeros(2, 5)
    t, k, p, m, s = torch.ones(2), torch.zeros(2, dtype=torch.int64), torch.ones(2), torch.zeros(2), torch.zeros(
        2, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r"top_k must have shape \[2\]"):
        torch.ops.ponder.sample(logits, t, k[:1], p, m, s, 1)
    with pytest.raises(RuntimeError, match="temperature must be Float"):
        torch.ops.ponder.filtered_probs(logits, t.double(), k, p, m)
    with pytest.raises(RuntimeError, match=r"top_p\[1\] = 2 is out of range"):
        torch.ops.ponder.filtered_probs(logits, t, k, torch.tensor([1.0, 2.0]), m)
    with pytest.raises(RuntimeError, match="num_samples must be >= 1"):
        torch.ops.ponder.sample(logits, t, k, p, m, s, 0)


def op_args(device="cpu"):
    logits = llm_like_logits(3, 97, seed=21, device=device)
    params = mixed_params(3, 97, device)
    return logits, [params[k] for k in ("temperature", "top_k", "top_p", "min_p")]


def test_opcheck(backend_device):
    """The custom ops' schemas, fake implementations and autograd registrations are consistent."""
    backend, device = backend_device
    if backend == "reference":
        pytest.skip("the reference is plain PyTorch, not a custom op")
    suffix = "_triton" if backend == "triton" else ""
    logits, params = op_args(device)
    seeds = torch.arange(3, dtype=torch.int64, device=device)
    torch.library.opcheck(getattr(torch.ops.ponder, "filtered_probs" + suffix).default, (logits, *params))
    torch.library.opcheck(getattr(torch.ops.ponder, "sample" + suffix).default, (logits, *params, seeds, 2))


def test_torch_compile_fullgraph(backend_device):
    backend, device = backend_device
    logits, params = op_args(device)

    def step(x, temperature, top_k, top_p, min_p):
        out = ponder.sample(x, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=3,
                            num_samples=2, backend=backend)
        return out.tokens, out.logprobs

    compiled = torch.compile(step, backend="eager", fullgraph=True)
    got = compiled(logits, *params)
    want = step(logits, *params)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
