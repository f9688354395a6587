"""Reference token sampling: the definition of ``ponder.sample`` and ``ponder.filtered_probs``.

Pure PyTorch, sort-based, written to be obviously right rather than fast. Every other
backend is tested against these two functions.

Semantics, per row (all parameters are per-row tensors here; the public functions in
``ponder.ops`` broadcast Python scalars):

* Cleaning: NaN logits count as ``-inf`` (never sampled); ``+inf`` counts as the
  largest finite float32, so +inf tokens share the mass equally.
* Temperature: ``s = logits / temperature`` in float32 (an IEEE division, as
  ``transformers`` does), clamped to the finite float32 range (so +inf logits still
  share the mass at any temperature); ``-inf`` stays ``-inf``. ``temperature == 0`` is
  greedy: the first index of the largest logit, with probability 1.
* top-k (``0 < k < V``): keep tokens whose ``s`` is at least the k-th largest ``s``
  (ties at the threshold are kept). ``k == 0`` or ``k >= V`` keeps everything.
* top-p (``p < 1``), on the top-k survivors renormalised: with ``w = exp(s - max s)``
  and ``Z`` the total ``w`` of the survivors, keep a token when the mass of survivors
  strictly larger than it is below ``p * Z``. Ties are kept together; the largest
  token is always kept. Mass sums are taken in float64 here.
* min-p: keep a token when ``w >= min_p`` (its probability is at least ``min_p`` times
  the largest probability).
* The filtered distribution is ``w / sum(w)`` over the kept tokens.
* Drawing: Gumbel-max with ponder's Philox uniforms (``reference.philox``): token =
  the first index of the largest key ``(s - max s) - log(-log(u))`` among kept tokens
  (relative to the max so that keys of float32-max logits do not saturate).
* A row with no finite logit has no distribution: its ``filtered_probs`` row is all
  zeros and ``sample`` returns token 0 with ``logprobs = raw_logprobs = -inf``.
"""

from __future__ import annotations

import torch

from ponder.reference.philox import sampling_uniforms

_FLOAT32_MAX = torch.finfo(torch.float32).max
_UNIFORMS_PER_CHUNK = 1 << 20  # draws are made a chunk at a time, about this many uniforms each


def clean_logits(logits: torch.Tensor) -> torch.Tensor:
    """float32 copy of ``logits`` [B, V] with NaN -> -inf and +inf -> float32 max."""
    return torch.nan_to_num(logits.float(), nan=float("-inf"), posinf=_FLOAT32_MAX, neginf=float("-inf"))


def scale_logits(x: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """``x / temperature`` clamped to the finite float32 range, with ``-inf`` kept."""
    s = (x / temperature).clamp(-_FLOAT32_MAX, _FLOAT32_MAX)
    return torch.where(x == float("-inf"), float("-inf"), s)


def _top_p_keep(s: torch.Tensor, w: torch.Tensor, keep: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Top-p mask [B, V] over the tokens in ``keep``, ties at the threshold kept."""
    w = torch.where(keep, w, 0.0).double()
    s = torch.where(keep, s, float("-inf"))
    order = torch.argsort(s, dim=-1, descending=True, stable=True)
    s_sorted = torch.gather(s, -1, order)
    w_sorted = torch.gather(w, -1, order)
    exclusive = torch.cumsum(w_sorted, dim=-1) - w_sorted
    # Every member of a group of equal values sees the mass strictly above the group.
    new_group = torch.ones_like(s_sorted, dtype=torch.bool)
    new_group[:, 1:] = s_sorted[:, 1:] != s_sorted[:, :-1]
    group_start = torch.cummax(torch.where(new_group, torch.arange(s.shape[-1], device=s.device), 0), dim=-1).values
    mass_above = torch.gather(exclusive, -1, group_start)
    total = w.sum(-1, keepdim=True)
    keep_sorted = mass_above < top_p.double().unsqueeze(-1) * total
    keep_p = torch.empty_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return keep_p | (top_p >= 1).unsqueeze(-1)


def _kept_weights(
    x: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled logits relative to their row max, ``s - max s``, and the unnormalised kept
    weights ``w = exp(s - max s)`` (0 where filtered); both float32 [B, V]."""
    vocab = x.shape[-1]
    greedy = temperature == 0
    s = scale_logits(x, torch.where(greedy, 1.0, temperature).unsqueeze(-1))
    s_max = s.amax(-1, keepdim=True)
    finite_row = s_max > float("-inf")
    w = torch.where(finite_row, torch.exp(s - torch.where(finite_row, s_max, 0.0)), 0.0)

    keep = s > float("-inf")
    use_k = (top_k > 0) & (top_k < vocab)
    kth = torch.sort(s, dim=-1, descending=True).values.gather(-1, (torch.where(use_k, top_k, vocab) - 1).unsqueeze(-1))
    keep &= (s >= kth) | ~use_k.unsqueeze(-1)
    keep &= _top_p_keep(s, w, keep, top_p)
    keep &= w >= min_p.unsqueeze(-1)

    one_hot = torch.zeros_like(keep).scatter_(-1, x.argmax(-1, keepdim=True), True) & finite_row
    keep = torch.where(greedy.unsqueeze(-1), one_hot, keep)
    w = torch.where(greedy.unsqueeze(-1), 1.0, w)
    return s - s_max, torch.where(keep, w, 0.0)


def filtered_probs(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor
) -> torch.Tensor:
    """The distribution ``sample`` draws from: float32 [B, V], rows sum to 1 (or are all 0).

    ``logits`` float [B, V]; ``temperature``, ``top_p``, ``min_p`` float32 [B];
    ``top_k`` int64 [B].
    """
    _, w = _kept_weights(clean_logits(logits), temperature, top_k, top_p, min_p)
    total = w.double().sum(-1, keepdim=True)
    return torch.where(total > 0, w.double() / torch.where(total > 0, total, 1.0), 0.0).float()


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    seeds: torch.Tensor,
    num_samples: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``num_samples`` tokens per row.

    Returns ``(tokens int64 [B, S], logprobs float32 [B, S], raw_logprobs float32 [B, S])``:
    the log-probability of each token under the filtered distribution and under
    ``softmax(logits)`` (no temperature, no filter).
    """
    x = clean_logits(logits)
    batch, vocab = x.shape
    s_rel, w = _kept_weights(x, temperature, top_k, top_p, min_p)
    kept = w > 0
    greedy = (temperature == 0).unsqueeze(-1)
    log_total = torch.log(w.double().sum(-1, keepdim=True)).float()
    log_w = torch.log(w)  # -inf where filtered
    raw = torch.log_softmax(x, dim=-1)  # NaN on rows with no finite logit

    tokens = []
    per_chunk = max(1, _UNIFORMS_PER_CHUNK // max(batch * vocab, 1))
    for first in range(0, num_samples, per_chunk):
        u = sampling_uniforms(seeds, vocab, range(first, min(first + per_chunk, num_samples)))  # [D, B, V]
        key = torch.where(kept, s_rel - torch.log(-torch.log(u)), float("-inf"))
        key = torch.where(greedy, torch.where(kept, 0.0, float("-inf")), key)
        tokens.append(key.argmax(-1).T)
    tok = torch.cat(tokens, dim=-1)
    no_mass = ~kept.any(-1, keepdim=True)
    tok = torch.where(no_mass, 0, tok)
    logprobs = torch.where(no_mass, float("-inf"), log_w.gather(-1, tok) - log_total)
    raw_logprobs = torch.where(no_mass, float("-inf"), raw.gather(-1, tok))
    return tok, logprobs.float(), raw_logprobs.float()
