"""Fused token sampling: ``ponder.sample`` and ``ponder.filtered_probs``.

The semantics are defined in :mod:`ponder.reference.sampling`; this module validates
arguments, turns scalars into per-row tensors, and runs the chosen backend.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple, Union

import torch

from ponder import reference
from ponder.ops._backend import has_cpu_kernels, resolve_backend, values_checkable

Scalar = Union[int, float]
PerRow = Union[Scalar, torch.Tensor]

_LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_SEED_BOUND = 2**63


class SampleOutput(NamedTuple):
    """Result of :func:`sample`.

    tokens : int64 [B] (``num_samples == 1``) or [B, num_samples]
    logprobs : float32, same shape: log-probability under the filtered distribution
    raw_logprobs : float32, same shape: log-probability under ``softmax(logits)``
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    raw_logprobs: torch.Tensor


def _check_logits(logits) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D [batch, vocab], got shape {tuple(logits.shape)}")
    if logits.dtype not in _LOGIT_DTYPES:
        raise TypeError(f"logits must be float32, float16 or bfloat16, got {logits.dtype}")
    if logits.shape[1] == 0:
        raise ValueError(f"logits has an empty vocab: shape {tuple(logits.shape)}")


def _per_row(name: str, value: PerRow, logits: torch.Tensor, *, integer: bool, ok, expected: str) -> torch.Tensor:
    """``value`` as a [B] tensor on logits' device (int64 or float32), range-checked."""
    batch = logits.shape[0]
    dtype = torch.int64 if integer else torch.float32
    if isinstance(value, torch.Tensor):
        if value.shape != (batch,):
            raise ValueError(f"{name} must be a scalar or a tensor of shape [{batch}] (one per row), got shape {tuple(value.shape)}")
        if value.device != logits.device:
            raise ValueError(f"{name} is on {value.device} but logits are on {logits.device}")
        if integer and (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool):
            raise TypeError(f"{name} must be an integer tensor, got {value.dtype}")
        if not integer and not value.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
        if values_checkable(value):
            bad = ~ok(value.to(torch.float64))
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(f"{name}[{row}] = {value[row].item()} is out of range: expected {expected}")
        return value.to(dtype)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (integer and not isinstance(value, numbers.Integral)):
        kind = "an int" if integer else "a float"
        raise TypeError(f"{name} must be {kind} or a tensor of shape [{batch}], got {value!r}")
    if not ok(float(value)):
        raise ValueError(f"{name} = {value!r} is out of range: expected {expected}")
    return torch.full((batch,), value, dtype=dtype, device=logits.device)


def _sampling_params(logits, temperature, top_k, top_p, min_p):
    return (
        _per_row("temperature", temperature, logits, integer=False, ok=lambda t: t >= 0, expected="temperature >= 0 (0 is greedy)"),
        _per_row("top_k", top_k, logits, integer=True, ok=lambda t: t >= 0, expected="top_k >= 0 (0 disables it)"),
        _per_row("top_p", top_p, logits, integer=False, ok=lambda t: (t > 0) & (t <= 1), expected="0 < top_p <= 1 (1 disables it)"),
        _per_row("min_p", min_p, logits, integer=False, ok=lambda t: (t >= 0) & (t < 1), expected="0 <= min_p < 1 (0 disables it)"),
    )


def _seeds(seed, logits: torch.Tensor) -> torch.Tensor:
    batch = logits.shape[0]
    if seed is None:
        # One fresh seed from torch's default generator for logits' device, kept on the
        # device so nothing waits for the GPU.
        return torch.randint(-_SEED_BOUND, _SEED_BOUND - 1, (1,), dtype=torch.int64, device=logits.device).expand(batch)
    if isinstance(seed, torch.Tensor):
        if seed.shape != (batch,):
            raise ValueError(f"seed must be an int or a tensor of shape [{batch}] (one per row), got shape {tuple(seed.shape)}")
        if seed.device != logits.device:
            raise ValueError(f"seed is on {seed.device} but logits are on {logits.device}")
        if seed.dtype != torch.int64:
            raise TypeError(f"a seed tensor must be int64, got {seed.dtype}")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None, an int or an int64 tensor, got {seed!r}")
    if not 0 <= seed < _SEED_BOUND:
        raise ValueError(f"seed = {seed} is out of range: expected 0 <= seed < 2**63")
    return torch.full((batch,), int(seed), dtype=torch.int64, device=logits.device)


# The Triton implementations as custom ops (so torch.compile sees one opaque call).
# Triton itself is imported on first use only: it is an optional dependency and slow to import.
@torch.library.custom_op("ponder::filtered_probs_triton", mutates_args=())
def _filtered_probs_triton(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                           top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    from ponder.kernels import sampling as kernels

    return kernels.filtered_probs(logits, temperature, top_k, top_p, min_p)


@torch.library.custom_op("ponder::sample_triton", mutates_args=())
def _sample_triton(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                   min_p: torch.Tensor, seeds: torch.Tensor, num_samples: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ponder.kernels import sampling as kernels

    return kernels.sample(logits, temperature, top_k, top_p, min_p, seeds, num_samples)


def _fake_filtered_probs(logits, temperature, top_k, top_p, min_p):
    return logits.new_empty(logits.shape, dtype=torch.float32)


def _fake_sample(logits, temperature, top_k, top_p, min_p, seeds, num_samples):
    shape = (logits.shape[0], num_samples)
    return (logits.new_empty(shape, dtype=torch.int64), logits.new_empty(shape, dtype=torch.float32),
            logits.new_empty(shape, dtype=torch.float32))


_filtered_probs_triton.register_fake(_fake_filtered_probs)
_sample_triton.register_fake(_fake_sample)


if has_cpu_kernels():  # the compiled ops' schemas exist only when the extension is built
    torch.library.register_fake("ponder::filtered_probs")(_fake_filtered_probs)
    torch.library.register_fake("ponder::sample")(_fake_sample)


def filtered_probs(
    logits: torch.Tensor,
    *,
    temperature: PerRow = 1.0,
    top_k: PerRow = 0,
    top_p: PerRow = 1.0,
    min_p: PerRow = 0.0,
    backend: str | None = None,
) -> torch.Tensor:
    """The distribution :func:`sample` draws from.

    Parameters
    ----------
    logits : float32 / float16 / bfloat16 [B, V], any strides
    temperature, top_k, top_p, min_p
        Python scalars, or tensors of shape [B] on logits' device (one value per row).
        See :func:`sample`.
    backend : {"reference", "cpu", "cuda", "triton"}, optional
        Force an implementation (default: the best for logits' device, or ``$PONDER_BACKEND``).

    Returns
    -------
    float32 [B, V]: each row sums to 1, or is all zeros for a row with no finite logit.
    """
    _check_logits(logits)
    params = _sampling_params(logits, temperature, top_k, top_p, min_p)
    chosen = resolve_backend(backend, logits.device)
    if chosen == "reference":
        return reference.sampling.filtered_probs(logits, *params)
    if chosen == "triton":
        return _filtered_probs_triton(logits, *params)
    return torch.ops.ponder.filtered_probs(logits, *params)


def sample(
    logits: torch.Tensor,
    *,
    temperature: PerRow = 1.0,
    top_k: PerRow = 0,
    top_p: PerRow = 1.0,
    min_p: PerRow = 0.0,
    seed: int | torch.Tensor | None = None,
    num_samples: int = 1,
    backend: str | None = None,
) -> SampleOutput:
    """Draw tokens from logits after temperature, top-k, top-p and min-p, in one fused pass family.

    The filters run in the order of ``transformers``' warper chain: temperature, then
    top-k, then top-p on the renormalised top-k set, then min-p; ties at a threshold
    are kept. ``temperature=0`` is greedy (the first index of the largest logit; its
    logprob is 0). NaN logits are never drawn; +inf logits share the mass equally.
    A row with no finite logit returns token 0 with ``logprobs = raw_logprobs = -inf``.
    The exact definition is :mod:`ponder.reference.sampling`.

    Parameters
    ----------
    logits : float32 / float16 / bfloat16 [B, V], any strides
    temperature : float or float tensor [B], >= 0
    top_k : int or integer tensor [B], >= 0; 0 (or >= V) disables it
    top_p : float or float tensor [B], in (0, 1]; 1 disables it
    min_p : float or float tensor [B], in [0, 1); 0 disables it
    seed : int in [0, 2**63), int64 tensor [B] (per-row seeds), or None
        None draws one seed from torch's default generator for logits' device.
        Values of per-row tensors on a GPU are not checked (that would synchronise);
        out-of-range values there are clamped into range by the kernels.
    num_samples : int >= 1
        Independent draws per row, made without copying the row.
    backend : {"reference", "cpu", "cuda", "triton"}, optional

    Returns
    -------
    SampleOutput
        ``tokens`` int64 [B] (or [B, num_samples] when ``num_samples > 1``),
        ``logprobs`` and ``raw_logprobs`` float32 of the same shape.

    Notes
    -----
    Randomness is Philox4x32-10 with key = the row's seed and counter =
    ``(column // 4, draw, row, 0)``; the token is the first index of the largest
    ``s - log(-log(u))`` over kept tokens (Gumbel-max). Every backend uses the same
    counters, so with one seed they return the same tokens, except where two kept
    tokens' Gumbel keys agree to within float32 rounding of ``exp``/``log`` (backends
    use different implementations, within a few ulp) or where a top-p boundary token's
    mass comparison is within the rounding of the summation order (~1e-7 relative:
    the reference sums in float64, the kernels in float32 partial sums with float64
    totals). Both are rare; the tests compare tokens across backends exactly.
    """
    _check_logits(logits)
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    params = _sampling_params(logits, temperature, top_k, top_p, min_p)
    seeds = _seeds(seed, logits)
    chosen = resolve_backend(backend, logits.device)
    if chosen == "reference":
        result = reference.sampling.sample(logits, *params, seeds, int(num_samples))
    elif chosen == "triton":
        result = _sample_triton(logits, *params, seeds, int(num_samples))
    else:
        result = torch.ops.ponder.sample(logits, *params, seeds, int(num_samples))
    if num_samples == 1:
        result = tuple(t.squeeze(-1) for t in result)
    return SampleOutput(*result)
