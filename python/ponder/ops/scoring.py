"""Fused PRM scoring: ``step_scores`` (score new steps, fold them into each solution's
aggregate) and ``vote`` (best-of-N, weighted best-of-N, majority vote across candidates).

The semantics are defined in :mod:`ponder.reference.scoring`; this module validates
arguments and runs the chosen backend. Index values (rows, solution ids, prior counts,
answers, offsets) are checked only for CPU tensors outside ``torch.compile``: reading a
GPU tensor would synchronise with the device. On a GPU, kernels never read outside the
tensors instead: an out-of-range row scores NaN, a step with an out-of-range solution
is left out of every aggregate, a negative answer counts as no answer, and offsets are
clamped into ``[0, N]``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from ponder.ops._backend import has_cpu_kernels, resolve_backend, values_checkable
from ponder.ops._checks import check_tensor, first_bad
from ponder.reference import scoring as reference

_LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class StepScores(NamedTuple):
    """Result of :func:`step_scores`.

    scores : float32 [P]: the score of each new step
    value : float32 [S]: each solution's aggregate over all its steps so far
    count : int64 [S]: each solution's number of steps so far
    """

    scores: torch.Tensor
    value: torch.Tensor
    count: torch.Tensor


class VoteResult(NamedTuple):
    """Result of :func:`vote`.

    winner : int64 [G]: the chosen candidate (an index into the N candidates), -1 if none
    answer : int64 [G]: its answer id, -1 if none
    weight : float32 [G]: what the vote maximised (score, sum of scores or count), 0 if none
    """

    winner: torch.Tensor
    answer: torch.Tensor
    weight: torch.Tensor


def _check_vector(name: str, value, dtype: torch.dtype, anchor_name: str, anchor: torch.Tensor,
                  length: int | None = None, length_of: str = "") -> None:
    """``value``: a 1-D ``dtype`` tensor on ``anchor``'s device, of ``length`` entries (the length of ``length_of``)."""
    check_tensor(name, value)
    if value.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {value.dtype}")
    if value.dim() != 1 or (length is not None and value.shape[0] != length):
        expected = f"[{length}] ({length_of})" if length is not None else "1-D"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
    if value.device != anchor.device:
        raise ValueError(f"{name} is on {value.device} but {anchor_name} is on {anchor.device}")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_column(name: str, value, num_columns: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int (a column of head_logits), got {value!r}")
    if not 0 <= value < num_columns:
        raise ValueError(f"{name} = {value} is out of range: expected 0 <= {name} < {num_columns} (C, the columns "
                         "of head_logits)")
    return int(value)


# The Triton implementations as custom ops (so torch.compile sees one opaque call).
# Triton itself is imported on first use only: it is an optional dependency and slow to import.
@torch.library.custom_op("ponder::step_scores_triton", mutates_args=())
def _step_scores_triton(head_logits: torch.Tensor, rows: torch.Tensor, solution: torch.Tensor,
                        prior_value: torch.Tensor, prior_count: torch.Tensor, head: str, good: int, bad: int,
                        aggregate: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ponder.kernels import scoring as kernels

    return kernels.step_scores(head_logits, rows, solution, prior_value, prior_count, head, good, bad, aggregate)


@torch.library.custom_op("ponder::vote_triton", mutates_args=())
def _vote_triton(answers: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor,
                 method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ponder.kernels import scoring as kernels

    return kernels.vote(answers, scores, offsets, method)


def _fake_step_scores(head_logits, rows, solution, prior_value, prior_count, head, good, bad, aggregate):
    return (rows.new_empty(rows.shape, dtype=torch.float32), prior_value.new_empty(prior_value.shape),
            prior_count.new_empty(prior_count.shape))


def _fake_vote(answers, scores, offsets, method):
    num_prompts = offsets.shape[0] - 1
    return (offsets.new_empty(num_prompts), offsets.new_empty(num_prompts),
            scores.new_empty(num_prompts, dtype=torch.float32))


# Each op's implementations (same argument lists) and its fake, for torch.compile.
_REFERENCE = {"step_scores": reference.step_scores, "vote": reference.vote}
_TRITON = {"step_scores": _step_scores_triton, "vote": _vote_triton}
_FAKES = {"step_scores": _fake_step_scores, "vote": _fake_vote}

for _name, _fake in _FAKES.items():
    _TRITON[_name].register_fake(_fake)
    if has_cpu_kernels():  # the compiled ops' schemas exist only when the extension is built
        torch.library.register_fake(f"ponder::{_name}")(_fake)


def _run(name: str, backend: str | None, device: torch.device, *args) -> tuple[torch.Tensor, ...]:
    """Run op ``name`` on ``backend`` (or the best for ``device``)."""
    chosen = resolve_backend(backend, device)
    if chosen == "reference":
        return _REFERENCE[name](*args)
    if chosen == "triton":
        return _TRITON[name](*args)
    return getattr(torch.ops.ponder, name)(*args)


def step_scores(head_logits: torch.Tensor, rows: torch.Tensor, solution: torch.Tensor, prior_value: torch.Tensor,
                prior_count: torch.Tensor, *, head: str = "pair", good: int = 0, bad: int = 1,
                aggregate: str = "last", backend: str | None = None) -> StepScores:
    """Score the new steps of a packed PRM forward and fold them into each solution's aggregate.

    Step ``p`` is read at row ``rows[p]`` of ``head_logits`` and belongs to solution
    ``solution[p]``. Steps may come in any order; the steps of one solution are taken in
    the order they have in ``rows`` (which matters for ``aggregate="last"``). The exact
    definition is :mod:`ponder.reference.scoring`.

    Parameters
    ----------
    head_logits : float32 / float16 / bfloat16 [T, C], any strides
        The PRM head's output for every token of the batch: C = vocab for a step-tag
        token head, 2 for a 2-class head, 1 for a value head.
    rows : int64 [P] on head_logits' device, in ``[0, T)``: the step-tag / step-end row of each new step
    solution : int64 [P], in ``[0, S)``: the solution each new step belongs to
    prior_value : float32 [S]: each solution's aggregate over its earlier steps (ignored where the count is 0)
    prior_count : int64 [S], ``>= 0``: each solution's number of earlier steps
    head : {"pair", "sigmoid"}
        ``"pair"``: ``score = sigmoid(l[good] - l[bad])``, the probability of ``good``
        under a softmax over the two logits (e.g. the '+' / '-' tag tokens). A 2-class
        classification head whose class 1 means "correct" is ``"pair"`` with
        ``good=1, bad=0``. ``"sigmoid"``: ``score = sigmoid(l[good])`` (a value head;
        ``bad`` is ignored).
    good, bad : int, columns of head_logits in ``[0, C)``; distinct for ``"pair"``
    aggregate : {"last", "min", "prod", "mean"}
        How a solution's step scores combine: the last score, the minimum, the product,
        or the mean, each over the prior (when its count is positive) and the new steps.
    backend : {"reference", "cpu", "cuda", "triton"}, optional

    Returns
    -------
    StepScores
        ``scores`` float32 [P], ``value`` float32 [S], ``count`` int64 [S]
        (``prior_count`` plus the new steps). A solution with no new step keeps its
        prior value and count exactly.

    Notes
    -----
    Scores are computed in float32. A NaN logit gives a NaN score, and a NaN score
    makes its solution's value NaN for ``min``, ``prod`` and ``mean`` (and for ``last``
    while it is the last). Infinite logits are exact: ``l[good] = +inf`` with a finite
    ``l[bad]`` scores 1, and -inf scores 0; two equal infinities (``+inf`` and ``+inf``)
    have no defined difference and score NaN.
    """
    check_tensor("head_logits", head_logits)
    if head_logits.dim() != 2:
        raise ValueError(f"head_logits must be 2-D [T, C], got shape {tuple(head_logits.shape)}")
    if head_logits.dtype not in _LOGIT_DTYPES:
        raise TypeError(f"head_logits must be float32, float16 or bfloat16, got {head_logits.dtype}")
    num_rows, num_columns = head_logits.shape
    _check_vector("rows", rows, torch.int64, "head_logits", head_logits)
    _check_vector("solution", solution, torch.int64, "head_logits", head_logits, rows.shape[0], "one per step, as rows")
    _check_vector("prior_value", prior_value, torch.float32, "head_logits", head_logits)
    _check_vector("prior_count", prior_count, torch.int64, "head_logits", head_logits, prior_value.shape[0],
                  "one per solution, as prior_value")
    head = _check_choice("head", head, reference.HEADS)
    aggregate = _check_choice("aggregate", aggregate, reference.AGGREGATES)
    good = _check_column("good", good, num_columns)
    if head == "pair":
        bad = _check_column("bad", bad, num_columns)
        if bad == good:
            raise ValueError(f"good and bad are both column {good}: a pair head needs two distinct columns")
    else:
        bad = 0  # unused: a value head reads one column
    if values_checkable(rows):
        first_bad("rows", rows, (rows < 0) | (rows >= num_rows), f"0 <= row < {num_rows} (T, the rows of head_logits)")
        num_solutions = prior_value.shape[0]
        first_bad("solution", solution, (solution < 0) | (solution >= num_solutions),
                  f"0 <= solution < {num_solutions} (S, the length of prior_value)")
        first_bad("prior_count", prior_count, prior_count < 0, ">= 0")
    return StepScores(*_run("step_scores", backend, head_logits.device, head_logits, rows, solution, prior_value,
                            prior_count, head, good, bad, aggregate))


def _check_offsets(offsets: torch.Tensor, num_candidates: int) -> None:
    if int(offsets[0]) != 0 or int(offsets[-1]) != num_candidates:
        raise ValueError(f"offsets must start at 0 and end at N = {num_candidates} (the number of candidates), got "
                         f"offsets[0] = {int(offsets[0])} and offsets[-1] = {int(offsets[-1])}")
    steps = offsets.diff()
    if bool((steps < 0).any()):
        g = int((steps < 0).nonzero()[0])
        raise ValueError(f"offsets must be nondecreasing, got offsets[{g}] = {int(offsets[g])} > "
                         f"offsets[{g + 1}] = {int(offsets[g + 1])}")


def vote(answers: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor, *, method: str = "weighted",
         backend: str | None = None) -> VoteResult:
    """Choose one candidate per prompt: best-of-N, weighted best-of-N or majority vote.

    Prompt ``g`` owns candidates ``offsets[g]:offsets[g+1]`` (possibly none). The exact
    definition is :mod:`ponder.reference.scoring`.

    Parameters
    ----------
    answers : int64 [N]: each candidate's answer id (e.g. a hash of its extracted final
        answer), ``>= 0``, or -1 when no answer was extracted
    scores : float32 [N] on answers' device: each candidate's score (e.g. its PRM value)
    offsets : int64 [G + 1]: nondecreasing, ``offsets[0] = 0``, ``offsets[G] = N``
    method : {"max", "weighted", "majority"}
        ``"max"``: the highest-scored candidate, whatever its answer (its answer may be
        -1). ``"weighted"``: the answer with the largest sum of scores over its
        candidates. ``"majority"``: the answer with the most candidates. For the last
        two, answer -1 never wins, and the winner is the highest-scored candidate with
        the winning answer.
    backend : {"reference", "cpu", "cuda", "triton"}, optional

    Returns
    -------
    VoteResult
        ``winner`` int64 [G] (index into the N candidates), ``answer`` int64 [G],
        ``weight`` float32 [G]: the winner's score, its answer's sum of scores, or its
        answer's count. A prompt with no candidate (or, for ``"weighted"`` and
        ``"majority"``, none with an answer) gets winner -1, answer -1, weight 0.

    Notes
    -----
    Ties go to the lowest index: between candidates, the lower index; between answers,
    the answer whose first candidate comes first. A NaN score counts as ``-inf`` when
    scores are compared (so a NaN-scored candidate wins ``"max"`` only when no score is
    larger than ``-inf``, and then with weight ``-inf``) and adds 0 to a weighted sum.
    A sum that is NaN (``+inf`` and ``-inf`` scores for one answer) ranks below every
    other sum. Sums are float32; backends add in different orders (the Triton kernel
    by tree reduction), so answers whose sums agree to within rounding may rank
    differently on different backends.
    """
    _check_vector("answers", answers, torch.int64, "answers", answers)
    num_candidates = answers.shape[0]
    _check_vector("scores", scores, torch.float32, "answers", answers, num_candidates, "one per candidate, as answers")
    _check_vector("offsets", offsets, torch.int64, "answers", answers)
    if offsets.shape[0] == 0:
        raise ValueError("offsets must have G + 1 >= 1 entries (offsets[0] = 0), got an empty tensor")
    method = _check_choice("method", method, reference.VOTE_METHODS)
    if values_checkable(offsets):
        _check_offsets(offsets, num_candidates)
        first_bad("answers", answers, answers < -1, ">= 0, or -1 for no answer")
    return VoteResult(*_run("vote", backend, answers.device, answers, scores, offsets, method))
