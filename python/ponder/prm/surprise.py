"""How surprised a PRM's own LM head is by the steps it scores: the least likely token written.

A small policy that slips writes a wrong digit of a sum, an unlikely token under a model
that knows the sums. A PRM fine-tuned from an LM of the task (with the next-token loss kept
beside its value loss) keeps that LM head, so it can see the slip, and the surer the LM, the
better: the policy itself sampled its slips, so it found them likely enough, and the shipped
PRM starts from the policy trained on further (:mod:`ponder.train.prm`). Reading it from the
hidden state at the tag alone is hard for a small model: the tag position has to recompute
the step and compare. So the value head of ponder's built-in PRM
(:class:`~ponder.prm.heads.SurprisalValueHead`) is also given two numbers per scored step,
float32 ``[P, 2]``:

* column 0, the step's *surprise*: the least log-probability, under the PRM's LM head, of
  the step's text tokens after its first. The first token is predicted at the separator
  before the step, where the step chooses what to do next, not whether it is done right;
  leaving it out also keeps a step's surprise inside the step's own tokens, so an
  incremental scorer needs nothing from the branch it extends. 0 for a step of one token.
* column 1, the *solution's surprise so far*: the least step surprise of this step and
  every earlier one of the same branch (0 before any step). Monte-Carlo values after a
  wrong step are near 0 for every later step; this column is how the head sees that.

Both are inputs to the head, not trained through: the LM head is trained by the
next-token loss alone.
"""

from __future__ import annotations

import torch

__all__ = ["SURPRISE_FEATURES", "step_surprise", "running_surprise", "surprise_tokens"]

SURPRISE_FEATURES = 2  # columns: the step's surprise, the solution's surprise so far


def surprise_tokens(text_length: int) -> range:
    """Indices, within a step's text ids, of the tokens its surprise reads (all after the first)."""
    return range(1, text_length)


def step_surprise(logits: torch.Tensor, targets: torch.Tensor, step: torch.Tensor, num_steps: int) -> torch.Tensor:
    """The least log-probability of each step's tokens.

    Parameters
    ----------
    logits : [N, V], the LM head's logits at the N positions that predict the tokens read
    targets : int64 [N], the token each of those positions predicts (the one written)
    step : int64 [N], the step (in ``[0, num_steps)``) each token belongs to
    num_steps : P

    Returns
    -------
    float32 [P]: per step, the minimum over its tokens of ``log_softmax(logits)[target]``;
    0 for a step with no tokens read.
    """
    logprobs = logits.float().log_softmax(-1).gather(1, targets[:, None].to(logits.device))[:, 0]
    least = torch.zeros(num_steps, dtype=torch.float32, device=logits.device)
    return least.scatter_reduce(0, step.to(logits.device), logprobs, "amin", include_self=True)


def running_surprise(surprise: torch.Tensor, solution: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """The head's surprise features ``[P, 2]`` from each step's surprise.

    Parameters
    ----------
    surprise : float32 [P], each step's surprise (:func:`step_surprise`), steps of one
        solution in order
    solution : int64 [P], the solution each step belongs to
    prior : float32 [S], each solution's surprise before these steps (0 for none)

    Returns
    -------
    float32 [P, 2]: the step's surprise and ``min(prior, surprises of the solution up to
    this step)``.
    """
    so_far = prior.tolist()
    running = []
    for value, owner in zip(surprise.tolist(), solution.tolist()):
        so_far[owner] = min(so_far[owner], value)
        running.append(so_far[owner])
    return torch.stack([surprise.float(), torch.tensor(running, dtype=torch.float32, device=surprise.device)], 1)
