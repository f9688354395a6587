"""Triton backend of ``ponder.ops.step_scores`` and ``ponder.ops.vote``.

The semantics are those of :mod:`ponder.reference.scoring`. Three kernels:

1. ``_step_scores_kernel``: one program per ``BLOCK`` steps gathers the one or two
   logits of each step (any strides) and writes ``sigmoid(good - bad)`` or
   ``sigmoid(good)`` in float32. An out-of-range row (never checked on a GPU) scores NaN.
2. ``_aggregate_kernel``: one program per solution folds its new scores in step order
   (the launcher groups the steps by solution with a stable sort, on the device) and
   combines them with the prior, in the order the reference does, so that ``last``,
   ``min`` and ``prod`` match it exactly up to the rounding of the scores.
3. ``_vote_kernel``: one program per prompt walks its candidates in chunks of
   ``BLOCK``. ``max`` keeps the best (score, index) across chunks. ``weighted`` and
   ``majority`` compare every candidate with every other through ``[BLOCK, BLOCK]``
   tiles: each candidate learns its answer's sum, first candidate and best candidate,
   and the first candidate of each answer stands for it in the ranking. The work is
   quadratic in a prompt's candidates (fine for the tens to thousands a search makes);
   sums are tree reductions, so they can differ from the reference's sequential sums
   in the last bits.
"""

import torch
import triton
import triton.language as tl

from ponder.reference.scoring import AGGREGATES, VOTE_METHODS

# The op's string choices as kernel constexprs.
_AGGREGATE_IDS = {name: i for i, name in enumerate(AGGREGATES)}  # last, min, prod, mean
_VOTE_IDS = {name: i for i, name in enumerate(VOTE_METHODS)}  # max, weighted, majority

# Launch configuration on a GPU: 256 steps a program for the gathers; 32 candidates a
# chunk for the votes, so a [32, 32] tile is 8 elements a thread over 4 warps (ptxas:
# at most 72 registers; [64, 64] tiles took 242-255, at the edge of spilling).
GPU_STEP_BLOCK = 256
GPU_VOTE_BLOCK = 32
NUM_WARPS = 4
# The interpreter runs every Triton operation as one numpy call at a fixed Python cost:
# few, large tiles are fastest there.
_INTERPRETER_STEP_BLOCK = 4096
_INTERPRETER_MAX_VOTE_BLOCK = 256


def _interpreted(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu"


@triton.jit
def _step_scores_kernel(logits_ptr, rows_ptr, scores_ptr, num_steps, num_rows, row_stride, good_offset, bad_offset,
                        PAIR: tl.constexpr, BLOCK: tl.constexpr):
    """Program b: scores of steps ``b * BLOCK ...``; ``good_offset``, ``bad_offset``: the columns times their stride."""
    steps = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_batch = steps < num_steps
    row = tl.load(rows_ptr + steps, mask=in_batch, other=0)
    valid = in_batch & (row >= 0) & (row < num_rows)
    base = logits_ptr + row * row_stride
    x = tl.load(base + good_offset, mask=valid, other=0.0).to(tl.float32)
    if PAIR:
        x = x - tl.load(base + bad_offset, mask=valid, other=0.0).to(tl.float32)
    # 1 / (1 + exp(-x)) is exact at the infinities and NaN for NaN, as on the other backends.
    score = 1.0 / (1.0 + tl.exp(-x))
    tl.store(scores_ptr + steps, tl.where(valid, score, float("nan")), mask=in_batch)


@triton.jit
def _min_keeping_nan(a, b):
    return tl.where((a < b) | (a != a), a, b)


@triton.jit
def _aggregate_kernel(scores_ptr, order_ptr, offsets_ptr, prior_value_ptr, prior_count_ptr, value_ptr, count_ptr,
                      AGGREGATE: tl.constexpr):
    """Program s: solution s's steps are ``order[offsets[s]:offsets[s + 1]]``, in step order."""
    s = tl.program_id(0)
    start = tl.load(offsets_ptr + s)
    end = tl.load(offsets_ptr + s + 1)
    # Neutral starting values: the first fold gives the first score exactly.
    if AGGREGATE == 1:
        total = float("inf")
    elif AGGREGATE == 2:
        total = 1.0
    else:
        total = 0.0
    for i in range(start, end):
        score = tl.load(scores_ptr + tl.load(order_ptr + i))
        if AGGREGATE == 0:
            total = score
        elif AGGREGATE == 1:
            total = _min_keeping_nan(total, score)
        elif AGGREGATE == 2:
            total = total * score
        else:
            total = total + score
    prior = tl.load(prior_value_ptr + s)
    prior_count = tl.load(prior_count_ptr + s)
    has_prior = prior_count > 0
    if AGGREGATE == 1:
        total = tl.where(has_prior, _min_keeping_nan(prior, total), total)
    elif AGGREGATE == 2:
        total = tl.where(has_prior, prior * total, total)
    elif AGGREGATE == 3:
        # (At least 1: a solution without a new step keeps its prior below, not 0 / 0.)
        steps = tl.maximum(tl.where(has_prior, prior_count, 0) + (end - start), 1)
        total = (tl.where(has_prior, prior * prior_count.to(tl.float32), 0.0) + total) / steps.to(tl.float32)
    tl.store(value_ptr + s, tl.where(end > start, total, prior))
    tl.store(count_ptr + s, prior_count + (end - start))


@triton.jit
def _comparable(score):
    """Scores as votes compare them: NaN reads as -inf."""
    return tl.where(score != score, float("-inf"), score)


@triton.jit
def _vote_max(scores_ptr, start, end, BLOCK: tl.constexpr):
    """The highest-scored candidate in [start, end) (ties: lowest index) and its score; ``end`` if none."""
    best_key = float("-inf")
    best = end
    for chunk in range(start, end, BLOCK):
        index = chunk + tl.arange(0, BLOCK)
        valid = index < end
        key = tl.where(valid, _comparable(tl.load(scores_ptr + index, mask=valid, other=0.0)), float("-inf"))
        chunk_key = tl.max(key, axis=0)
        chunk_best = tl.min(tl.where(valid & (key == chunk_key), index, end), axis=0)
        # Chunks come in index order: a later chunk wins only with a larger score.
        take = (chunk_key > best_key) | (best == end)
        best_key = tl.where(take, chunk_key, best_key)
        best = tl.where(take, chunk_best, best)
    return best, best_key


@triton.jit
def _vote_groups(answers_ptr, scores_ptr, start, end, MAJORITY: tl.constexpr, BLOCK: tl.constexpr):
    """The winning answer's best candidate in [start, end) and its answer's sum; ``end`` if none."""
    best_rank = float("-inf")
    best_first = end
    winner = end
    weight = 0.0
    for chunk_i in range(start, end, BLOCK):
        i = chunk_i + tl.arange(0, BLOCK)
        answer_i = tl.load(answers_ptr + i, mask=i < end, other=-1)
        # Pass 1: each candidate i's answer: its sum, first candidate and top score.
        total = tl.zeros((BLOCK,), tl.float32)
        first = tl.zeros((BLOCK,), tl.int64) + end
        top = tl.full((BLOCK,), float("-inf"), tl.float32)
        for chunk_j in range(start, end, BLOCK):
            j = chunk_j + tl.arange(0, BLOCK)
            valid_j = j < end
            answer_j = tl.load(answers_ptr + j, mask=valid_j, other=-1)
            score_j = tl.load(scores_ptr + j, mask=valid_j, other=0.0)
            same = (answer_i[:, None] == answer_j[None, :]) & valid_j[None, :]  # [BLOCK i, BLOCK j]
            if MAJORITY:
                weight_j = tl.where(valid_j, 1.0, 0.0)
            else:
                weight_j = tl.where(score_j != score_j, 0.0, score_j)
            total += tl.sum(tl.where(same, weight_j[None, :], 0.0), axis=1)
            first = tl.minimum(first, tl.min(tl.where(same, j[None, :], end), axis=1))
            top = tl.maximum(top, tl.max(tl.where(same, _comparable(score_j)[None, :], float("-inf")), axis=1))
        # Pass 2: the lowest-index candidate of the answer at its top score.
        best = tl.zeros((BLOCK,), tl.int64) + end
        for chunk_j in range(start, end, BLOCK):
            j = chunk_j + tl.arange(0, BLOCK)
            valid_j = j < end
            answer_j = tl.load(answers_ptr + j, mask=valid_j, other=-1)
            key_j = _comparable(tl.load(scores_ptr + j, mask=valid_j, other=0.0))
            at_top = (answer_i[:, None] == answer_j[None, :]) & valid_j[None, :] & (key_j[None, :] == top[:, None])
            best = tl.minimum(best, tl.min(tl.where(at_top, j[None, :], end), axis=1))
        # Each answer stands in the ranking once, as its first candidate; a NaN sum ranks lowest.
        stands = (answer_i >= 0) & (first == i)
        rank = tl.where(stands, _comparable(total), float("-inf"))
        chunk_rank = tl.max(rank, axis=0)
        chunk_first = tl.min(tl.where(stands & (rank == chunk_rank), i, end), axis=0)
        # Chunks come in index order, and so do first candidates: a later one wins only with a larger sum.
        take = (chunk_first < end) & ((chunk_rank > best_rank) | (best_first == end))
        chosen = i == chunk_first
        best_rank = tl.where(take, chunk_rank, best_rank)
        best_first = tl.where(take, chunk_first, best_first)
        winner = tl.where(take, tl.min(tl.where(chosen, best, end), axis=0), winner)
        weight = tl.where(take, tl.sum(tl.where(chosen, total, 0.0), axis=0), weight)
    return winner, weight


@triton.jit
def _vote_kernel(answers_ptr, scores_ptr, offsets_ptr, winner_ptr, answer_ptr, weight_ptr, num_candidates,
                 METHOD: tl.constexpr, BLOCK: tl.constexpr):
    """Program g: the vote of prompt g over candidates ``offsets[g]:offsets[g + 1]`` (clamped into [0, N])."""
    g = tl.program_id(0)
    start = tl.minimum(tl.maximum(tl.load(offsets_ptr + g), 0), num_candidates)
    end = tl.minimum(tl.maximum(tl.load(offsets_ptr + g + 1), start), num_candidates)
    if METHOD == 0:
        winner, weight = _vote_max(scores_ptr, start, end, BLOCK)
    else:
        winner, weight = _vote_groups(answers_ptr, scores_ptr, start, end, METHOD == 2, BLOCK)
    found = winner < end
    tl.store(winner_ptr + g, tl.where(found, winner, -1))
    tl.store(answer_ptr + g, tl.load(answers_ptr + winner, mask=found, other=-1))
    tl.store(weight_ptr + g, tl.where(found, weight, 0.0))


def step_scores(head_logits: torch.Tensor, rows: torch.Tensor, solution: torch.Tensor, prior_value: torch.Tensor,
                prior_count: torch.Tensor, head: str, good: int, bad: int,
                aggregate: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step scores float32 [P] and each solution's value float32 [S] and count int64 [S] (arguments validated)."""
    num_steps, num_solutions = rows.shape[0], prior_value.shape[0]
    scores = torch.empty(num_steps, dtype=torch.float32, device=rows.device)
    value = torch.empty_like(prior_value)
    count = torch.empty_like(prior_count)
    # Each solution's steps, in step order, grouped on the device (no sync): a stable sort
    # by solution; steps with an out-of-range solution fall outside every group.
    order = torch.argsort(solution, stable=True)
    offsets = torch.searchsorted(solution[order], torch.arange(num_solutions + 1, device=rows.device))
    step_block = _INTERPRETER_STEP_BLOCK if _interpreted(rows) else GPU_STEP_BLOCK
    col_stride = head_logits.stride(1)
    with torch.cuda.device_of(head_logits):
        if num_steps:
            _step_scores_kernel[(triton.cdiv(num_steps, step_block),)](
                head_logits, rows.contiguous(), scores, num_steps, head_logits.shape[0], head_logits.stride(0),
                good * col_stride, bad * col_stride, PAIR=head == "pair", BLOCK=step_block, num_warps=NUM_WARPS)
        if num_solutions:
            _aggregate_kernel[(num_solutions,)](
                scores, order, offsets, prior_value.contiguous(), prior_count.contiguous(), value, count,
                AGGREGATE=_AGGREGATE_IDS[aggregate], num_warps=1)
    return scores, value, count


def _vote_block(offsets: torch.Tensor) -> int:
    """Candidates a chunk: on the interpreter, enough for the largest prompt (its offsets are host memory)."""
    if not _interpreted(offsets):
        return GPU_VOTE_BLOCK
    largest = int(offsets.diff().max()) if offsets.shape[0] > 1 else 1
    return min(max(16, triton.next_power_of_2(max(largest, 1))), _INTERPRETER_MAX_VOTE_BLOCK)


def vote(answers: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor,
         method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winner int64 [G], answer int64 [G] and weight float32 [G] per prompt (arguments validated)."""
    num_prompts = offsets.shape[0] - 1
    winner = torch.empty(num_prompts, dtype=torch.int64, device=answers.device)
    answer = torch.empty_like(winner)
    weight = torch.empty(num_prompts, dtype=torch.float32, device=answers.device)
    if num_prompts:
        with torch.cuda.device_of(answers):
            _vote_kernel[(num_prompts,)](
                answers.contiguous(), scores.contiguous(), offsets.contiguous(), winner, answer, weight,
                answers.shape[0], METHOD=_VOTE_IDS[method], BLOCK=_vote_block(offsets), num_warps=NUM_WARPS)
    return winner, answer, weight


# Ahead-of-time compilation (.ci/triton_aot.py), outside the interpreter: every kernel in
# the launch configurations a GPU gets. Offsets into head_logits are i64 (a transposed
# [C, T] store of a large vocab passes 2^31 elements); counts of steps, rows and
# candidates are i32.
_POINTER_TYPES = {"rows_ptr": "*i64", "scores_ptr": "*fp32", "order_ptr": "*i64", "offsets_ptr": "*i64",
                  "prior_value_ptr": "*fp32", "prior_count_ptr": "*i64", "value_ptr": "*fp32", "count_ptr": "*i64",
                  "answers_ptr": "*i64", "winner_ptr": "*i64", "answer_ptr": "*i64", "weight_ptr": "*fp32"}
_INT64_ARGS = ("row_stride", "good_offset", "bad_offset")


def aot_variants() -> dict:
    """``{kernel: [dict(signature=..., constexprs=..., num_warps=...), ...]}`` for ``triton.compile``."""
    def signature(kernel, logits_type="*fp32"):
        def kind(param):
            if param.is_constexpr:
                return "constexpr"
            if param.name == "logits_ptr":
                return logits_type
            return _POINTER_TYPES.get(param.name, "i64" if param.name in _INT64_ARGS else "i32")
        return {param.name: kind(param) for param in kernel.params}

    return {
        _step_scores_kernel: [dict(signature=signature(_step_scores_kernel, logits_type),
                                   constexprs={"PAIR": pair, "BLOCK": GPU_STEP_BLOCK}, num_warps=NUM_WARPS)
                              for logits_type in ("*fp32", "*fp16", "*bf16") for pair in (True, False)],
        _aggregate_kernel: [dict(signature=signature(_aggregate_kernel), constexprs={"AGGREGATE": aggregate_id},
                                 num_warps=1)
                            for aggregate_id in _AGGREGATE_IDS.values()],
        _vote_kernel: [dict(signature=signature(_vote_kernel), constexprs={"METHOD": method_id, "BLOCK": GPU_VOTE_BLOCK},
                            num_warps=NUM_WARPS)
                       for method_id in _VOTE_IDS.values()],
    }


DEVICE_FUNCTIONS = (_min_keeping_nan, _comparable, _vote_max, _vote_groups)
