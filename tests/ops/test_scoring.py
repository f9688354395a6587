"""ponder.step_scores / ponder.vote: every backend against the reference.

The reference (ponder.reference.scoring) is the definition; it is itself checked
against plain Python loops over small random cases. Each available backend (reference,
cpu, triton under the interpreter, cuda where a GPU exists) must match it for PRM head
widths from a value head to a 152k vocabulary, every float dtype, strided logits,
interleaved solutions, ties, candidates without an answer, prompts of 0 to 300
candidates, and NaN / inf. Bad arguments raise a clear error.
"""

from __future__ import annotations

import math

import pytest
import torch

import ponder
from ponder.reference import scoring as reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Scores and values: the same float32 inputs, exp and the folds on each backend (a few ulp).
CLOSE = dict(atol=1e-6, rtol=1e-5, equal_nan=True)
NAN, INF = float("nan"), float("inf")


# ---- plain Python oracles ----

def _sigmoid(x: float) -> float:
    if math.isnan(x):
        return NAN
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


def python_step_scores(head_logits, rows, solution, prior_value, prior_count, head, good, bad, aggregate):
    logits = head_logits.float().tolist()
    scores = []
    for r in rows.tolist():
        x = logits[r][good] - (logits[r][bad] if head == "pair" else 0.0)
        scores.append(_sigmoid(x))
    value, count = prior_value.tolist(), prior_count.tolist()
    for s in range(len(value)):
        new = [score for score, owner in zip(scores, solution.tolist()) if owner == s]
        if not new:
            continue
        old = [value[s]] if count[s] > 0 else []
        if aggregate == "last":
            value[s] = new[-1]
        elif aggregate == "min":
            value[s] = NAN if any(math.isnan(v) for v in old + new) else min(old + new)
        elif aggregate == "prod":
            value[s] = math.prod(old + new)
        else:
            value[s] = ((value[s] * count[s] if count[s] > 0 else 0.0) + sum(new)) / (count[s] + len(new))
        count[s] += len(new)
    return torch.tensor(scores), torch.tensor(value), torch.tensor(count)


def python_vote(answers, scores, offsets, method):
    answers, scores, offsets = answers.tolist(), scores.tolist(), offsets.tolist()
    key = [-INF if math.isnan(s) else s for s in scores]
    winners, chosen_answers, weights = [], [], []
    for start, end in zip(offsets, offsets[1:]):
        winner, weight = -1, 0.0
        if method == "max":
            for i in range(start, end):
                if winner < 0 or key[i] > key[winner]:
                    winner, weight = i, key[i]
        else:
            groups: dict[int, list[int]] = {}  # answer -> its candidates, in index order (dicts keep first-seen order)
            for i in range(start, end):
                if answers[i] >= 0:
                    groups.setdefault(answers[i], []).append(i)
            best_rank = None
            for members in groups.values():
                total = float(len(members)) if method == "majority" else sum(
                    0.0 if math.isnan(scores[i]) else scores[i] for i in members)
                rank = -INF if math.isnan(total) else total
                if best_rank is None or rank > best_rank:
                    best_rank, weight = rank, total
                    winner = max(members, key=lambda i: (key[i], -i))
        winners.append(winner)
        chosen_answers.append(answers[winner] if winner >= 0 else -1)
        weights.append(weight)
    return torch.tensor(winners, dtype=torch.int64), torch.tensor(chosen_answers, dtype=torch.int64), torch.tensor(
        weights)


# ---- cases ----

def step_case(num_rows: int, num_columns: int, num_steps: int, num_solutions: int, dtype=torch.float32, device="cpu",
              seed: int = 0) -> dict:
    """Arguments of step_scores: steps of interleaved solutions, some solutions without a new step."""
    g = torch.Generator().manual_seed(seed)
    prior_count = torch.randint(0, 4, (num_solutions,), generator=g)
    prior_value = torch.where(prior_count > 0, torch.rand(num_solutions, generator=g), NAN)  # ignored at count 0
    return dict(head_logits=(3 * torch.randn(num_rows, num_columns, generator=g)).to(dtype).to(device),
                rows=torch.randint(0, num_rows, (num_steps,), generator=g).to(device),
                solution=torch.randint(0, max(num_solutions * 3 // 4, 1), (num_steps,), generator=g).to(device),
                prior_value=prior_value.to(device), prior_count=prior_count.to(device))


def vote_case(counts: list[int], num_answers: int = 4, device="cpu", seed: int = 0, dyadic: bool = False) -> dict:
    """Arguments of vote: prompts with ``counts`` candidates, answers in [-1, num_answers)."""
    g = torch.Generator().manual_seed(seed)
    n = sum(counts)
    scores = torch.randint(0, 8, (n,), generator=g) / 8.0 if dyadic else torch.rand(n, generator=g)
    return dict(answers=torch.randint(-1, num_answers, (n,), generator=g).to(device), scores=scores.to(device),
                offsets=torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()]).to(device))


def cpu_args(case: dict) -> dict:
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in case.items()}


def assert_steps_match(got, case: dict, **options):
    want = reference.step_scores(*cpu_args(case).values(), *options.values())
    assert got.scores.dtype == torch.float32 and got.value.dtype == torch.float32 and got.count.dtype == torch.int64
    torch.testing.assert_close(got.scores.cpu(), want[0], **CLOSE)
    torch.testing.assert_close(got.value.cpu(), want[1], **CLOSE)
    assert torch.equal(got.count.cpu(), want[2])


def assert_vote_matches(got, case: dict, method: str):
    want = reference.vote(*cpu_args(case).values(), method)
    assert torch.equal(got.winner.cpu(), want[0]) and torch.equal(got.answer.cpu(), want[1])
    torch.testing.assert_close(got.weight.cpu(), want[2], **CLOSE)


# ---- the reference against plain loops ----

@pytest.mark.parametrize("seed", range(4))
def test_reference_step_scores_is_the_python_loop(seed):
    case = step_case(9, 5, 14, 6, seed=seed)
    case["head_logits"][seed, 2] = NAN  # a NaN logit, read by some steps of some seeds
    for head, good, bad in (("pair", 3, 1), ("sigmoid", 2, 0)):
        for aggregate in reference.AGGREGATES:
            got = reference.step_scores(*case.values(), head, good, bad, aggregate)
            want = python_step_scores(*case.values(), head, good, bad, aggregate)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w.to(g.dtype), **(CLOSE if g.is_floating_point() else {}))


@pytest.mark.parametrize("seed", range(4))
def test_reference_vote_is_the_python_loop(seed):
    # Dyadic scores in eighths make exact ties (between candidates and between sums) common.
    case = vote_case([0, 1, 5, 9, 3, 12, 0, 7], num_answers=3, seed=seed, dyadic=seed % 2 == 0)
    case["scores"][seed * 3] = NAN
    for method in reference.VOTE_METHODS:
        got = reference.vote(*case.values(), method)
        want = python_vote(*case.values(), method)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), method
        torch.testing.assert_close(got[2], want[2], **CLOSE)


# ---- step_scores on every backend ----

# (C, T, P, S): a 2-class head, a small vocabulary, Llama's and Qwen2's vocabularies.
STEP_SHAPES = [(2, 300, 256, 80), (111, 64, 64, 40), (32000, 16, 40, 24), (151936, 4, 12, 9)]


@pytest.mark.parametrize("num_columns,num_rows,num_steps,num_solutions", STEP_SHAPES,
                         ids=[f"C{shape[0]}" for shape in STEP_SHAPES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_step_scores_matches_reference(backend_device, num_columns, num_rows, num_steps, num_solutions, dtype):
    backend, device = backend_device
    case = step_case(num_rows, num_columns, num_steps, num_solutions, dtype, device)
    # A tag-token pair far apart in the vocabulary ('+' near the end), or a 2-class head.
    good, bad = (1, 0) if num_columns == 2 else (num_columns - 3, 17)
    aggregate = reference.AGGREGATES[(num_columns + DTYPES.index(dtype)) % 4]  # each shape meets several
    got = ponder.step_scores(**case, head="pair", good=good, bad=bad, aggregate=aggregate, backend=backend)
    assert_steps_match(got, case, head="pair", good=good, bad=bad, aggregate=aggregate)


@pytest.mark.parametrize("head", reference.HEADS)
@pytest.mark.parametrize("aggregate", reference.AGGREGATES)
def test_step_scores_heads_and_aggregates(backend_device, head, aggregate):
    backend, device = backend_device
    case = step_case(20, 3, 30, 12, device=device, seed=1)
    got = ponder.step_scores(**case, head=head, good=2, bad=0, aggregate=aggregate, backend=backend)
    assert_steps_match(got, case, head=head, good=2, bad=0, aggregate=aggregate)


def test_step_scores_value_head(backend_device):
    """C = 1: a value head; bad is ignored (its default 1 is no column of it)."""
    backend, device = backend_device
    case = step_case(10, 1, 10, 4, device=device)
    got = ponder.step_scores(**case, head="sigmoid", aggregate="mean", backend=backend)
    assert_steps_match(got, case, head="sigmoid", good=0, bad=0, aggregate="mean")


@pytest.mark.parametrize("layout", ["column slice", "transposed", "every other row"])
def test_step_scores_strided_logits(backend_device, layout):
    backend, device = backend_device
    case = step_case(12, 111, 20, 7, device=device, seed=2)
    logits = case["head_logits"]
    if layout == "column slice":  # the head's columns of a wider output
        pad = torch.zeros(12, 5, device=device)
        case["head_logits"] = torch.cat([pad, logits, pad], dim=1)[:, 5:5 + 111]
    elif layout == "transposed":  # stored [C, T]
        case["head_logits"] = logits.t().contiguous().t()
    else:
        case["head_logits"] = torch.stack([logits, logits], dim=1).flatten(0, 1)[::2]
    assert not case["head_logits"].is_contiguous()
    got = ponder.step_scores(**case, good=100, bad=3, aggregate="min", backend=backend)
    assert_steps_match(got, case, head="pair", good=100, bad=3, aggregate="min")
    torch.testing.assert_close(got.scores.cpu(), torch.sigmoid(logits[case["rows"], 100] - logits[case["rows"], 3]).cpu(),
                               **CLOSE)


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # inf - inf on purpose
def test_step_scores_nan_and_inf(backend_device):
    backend, device = backend_device
    # Columns (good, bad) per row.
    pairs = [(INF, 0.0), (0.0, INF), (-INF, 3.0), (INF, -INF), (INF, INF), (-INF, -INF), (NAN, 1.0), (1.0, NAN),
             (200.0, -200.0), (-200.0, 200.0)]
    want_pair = [1.0, 0.0, 0.0, 1.0, NAN, NAN, NAN, NAN, 1.0, 0.0]
    logits = torch.tensor(pairs, device=device)
    rows = torch.arange(len(pairs), device=device)
    solution = torch.arange(len(pairs), device=device)
    prior_value, prior_count = torch.full((len(pairs),), 0.5, device=device), torch.ones(len(pairs), dtype=torch.long,
                                                                                     device=device)
    got = ponder.step_scores(logits, rows, solution, prior_value, prior_count, aggregate="prod", backend=backend)
    torch.testing.assert_close(got.scores.cpu(), torch.tensor(want_pair), equal_nan=True)
    torch.testing.assert_close(got.value.cpu(), torch.tensor(want_pair) * 0.5, equal_nan=True)
    got = ponder.step_scores(logits, rows, solution, prior_value, prior_count, head="sigmoid", backend=backend)
    want_sigmoid = [1.0, 0.5, 0.0, 1.0, 1.0, 0.0, NAN, 1 / (1 + math.exp(-1)), 1.0, 0.0]
    torch.testing.assert_close(got.scores.cpu(), torch.tensor(want_sigmoid), equal_nan=True)
    # A NaN step poisons min, prod and mean of its solution; "last" forgets it once a later step comes.
    rows = torch.tensor([6, 0, 7, 8], device=device)  # NaN, 1, NaN, 1
    solution = torch.tensor([0, 0, 1, 1], device=device)
    for aggregate, want in (("min", [NAN, NAN]), ("prod", [NAN, NAN]), ("mean", [NAN, NAN]), ("last", [1.0, 1.0])):
        got = ponder.step_scores(logits, rows, solution, prior_value[:2], prior_count[:2], aggregate=aggregate,
                                 backend=backend)
        torch.testing.assert_close(got.value.cpu(), torch.tensor(want), equal_nan=True)


def test_step_scores_order_and_untouched_solutions(backend_device):
    """Steps of a solution count in the order of ``rows``, wherever they stand; solutions
    without a new step keep their prior (even a NaN one with count 0) exactly."""
    backend, device = backend_device
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]], device=device)
    rows = torch.tensor([0, 3, 1, 2, 1], device=device)
    solution = torch.tensor([2, 0, 2, 0, 4], device=device)
    prior_value = torch.tensor([0.25, 0.125, 0.75, NAN, 0.5], device=device)
    prior_count = torch.tensor([2, 5, 0, 0, 1], device=device)
    s = torch.sigmoid(torch.tensor([2.0, 3.0, -1.0, 0.0]))  # scores of rows 0, 3, 1, 2
    expected = {
        "last": [s[3], 0.125, s[2], NAN, s[2]],
        "min": [min(0.25, s[1], s[3]), 0.125, min(s[0], s[2]), NAN, min(0.5, s[2])],
        "prod": [0.25 * (s[1] * s[3]), 0.125, s[0] * s[2], NAN, 0.5 * s[2]],
        "mean": [(0.5 + s[1] + s[3]) / 4, 0.125, (s[0] + s[2]) / 2, NAN, (0.5 + s[2]) / 2],
    }
    for aggregate, want in expected.items():
        got = ponder.step_scores(logits, rows, solution, prior_value, prior_count, aggregate=aggregate, backend=backend)
        torch.testing.assert_close(got.value.cpu(), torch.tensor([float(v) for v in want]), **CLOSE)
        assert got.count.tolist() == [4, 5, 2, 0, 2]
        assert got.value[1].item() == 0.125  # exactly the prior


def test_step_scores_empty(backend_device):
    backend, device = backend_device
    logits = torch.randn(3, 2, device=device)
    none = torch.zeros(0, dtype=torch.long, device=device)
    got = ponder.step_scores(logits, none, none, torch.tensor([0.5, 0.25], device=device),
                             torch.tensor([1, 0], device=device), aggregate="mean", backend=backend)
    assert got.scores.shape == (0,) and got.value.tolist() == [0.5, 0.25] and got.count.tolist() == [1, 0]
    got = ponder.step_scores(logits, none, none, torch.zeros(0, device=device), none, backend=backend)
    assert got.scores.shape == got.value.shape == got.count.shape == (0,)


# ---- vote on every backend ----

# Prompts with no candidate, one, a few, and more than a GPU chunk (32) or an interpreter tile (256).
VOTE_COUNTS = [0, 1, 7, 0, 40, 2, 300, 16]


@pytest.mark.parametrize("method", reference.VOTE_METHODS)
def test_vote_matches_reference(backend_device, method):
    backend, device = backend_device
    case = vote_case(VOTE_COUNTS, num_answers=6, device=device)
    got = ponder.vote(**case, method=method, backend=backend)
    assert got.winner.shape == (len(VOTE_COUNTS),) and got.weight.dtype == torch.float32
    assert_vote_matches(got, case, method)


@pytest.mark.parametrize("method", reference.VOTE_METHODS)
def test_vote_ties(backend_device, method):
    """Exact ties (dyadic scores): lowest index between candidates, first candidate between answers."""
    backend, device = backend_device
    answers = torch.tensor([5, 3, 3, 5, 8, -1, 2, 2, 4, 4], device=device)
    scores = torch.tensor([0.25, 0.5, 0.25, 0.5, 0.75, 0.75, 0.5, 0.5, 0.125, 0.125], device=device)
    offsets = torch.tensor([0, 6, 10], device=device)
    got = ponder.vote(answers, scores, offsets, method=method, backend=backend)
    want = {
        # max: 0.75 at 4 and 5 -> 4; then 0.5 at 6 and 7 -> 6.
        "max": ([4, 6], [8, 2], [0.75, 0.5]),
        # sums 5: 0.75, 3: 0.75, 8: 0.75 -> 5 (first at 0), best of 5 is 3; 2: 1.0 beats 4: 0.25.
        "weighted": ([3, 6], [5, 2], [0.75, 1.0]),
        # counts 5: 2, 3: 2 -> 5; 2: 2, 4: 2 -> 2, best of 2 ties at 0.5 -> 6.
        "majority": ([3, 6], [5, 2], [2.0, 2.0]),
    }[method]
    assert got.winner.tolist() == want[0] and got.answer.tolist() == want[1] and got.weight.tolist() == want[2]
    assert_vote_matches(got, dict(answers=answers, scores=scores, offsets=offsets), method)


def test_vote_without_answers_and_single_candidates(backend_device):
    backend, device = backend_device
    answers = torch.tensor([-1, -1, 7, -1], device=device)
    scores = torch.tensor([0.5, 0.75, 0.25, 0.125], device=device)
    offsets = torch.tensor([0, 2, 2, 3, 4], device=device)  # no answer; none at all; one; one without an answer
    got = ponder.vote(answers, scores, offsets, method="max", backend=backend)
    assert got.winner.tolist() == [1, -1, 2, 3] and got.answer.tolist() == [-1, -1, 7, -1]
    assert got.weight.tolist() == [0.75, 0.0, 0.25, 0.125]
    for method in ("weighted", "majority"):
        got = ponder.vote(answers, scores, offsets, method=method, backend=backend)
        assert got.winner.tolist() == [-1, -1, 2, -1] and got.answer.tolist() == [-1, -1, 7, -1]
        assert got.weight.tolist() == [0.0, 0.0, 0.25 if method == "weighted" else 1.0, 0.0]


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # inf - inf on purpose
def test_vote_nan_and_inf(backend_device):
    backend, device = backend_device
    answers = torch.tensor([1, 2, 2, 3, 3, 4, 1, 1], device=device)
    scores = torch.tensor([NAN, NAN, -INF, INF, -INF, 0.5, NAN, NAN], device=device)
    offsets = torch.tensor([0, 3, 6, 8], device=device)
    got = ponder.vote(answers, scores, offsets, method="max", backend=backend)
    # All three of prompt 0 compare as -inf: the first wins, with weight -inf. Prompt 2: all NaN.
    assert got.winner.tolist() == [0, 3, 6] and got.weight.tolist() == [-INF, INF, -INF]
    got = ponder.vote(answers, scores, offsets, method="weighted", backend=backend)
    # Prompt 0: answer 1 sums 0 (NaN adds 0), answer 2 sums -inf: 1 wins. Prompt 1: answer 3
    # sums inf - inf = NaN and ranks below answer 4's 0.5. Prompt 2: answer 1 sums 0.
    assert got.winner.tolist() == [0, 5, 6] and got.answer.tolist() == [1, 4, 1]
    assert got.weight.tolist() == [0.0, 0.5, 0.0]
    got = ponder.vote(answers[3:5], scores[3:5], torch.tensor([0, 2], device=device), method="weighted",
                      backend=backend)
    assert got.winner.tolist() == [0] and math.isnan(got.weight.item())  # the NaN sum is the only one
    got = ponder.vote(answers, scores, offsets, method="majority", backend=backend)
    # Prompt 0: answer 2 has two candidates; its best is -inf at 2 over NaN (-inf too) at 1: the lower index.
    assert got.winner.tolist() == [1, 3, 6] and got.weight.tolist() == [2.0, 2.0, 2.0]


def test_vote_empty(backend_device):
    backend, device = backend_device
    none = torch.zeros(0, dtype=torch.long, device=device)
    got = ponder.vote(none, torch.zeros(0, device=device), torch.zeros(1, dtype=torch.long, device=device),
                      backend=backend)
    assert got.winner.shape == got.answer.shape == got.weight.shape == (0,)


# ---- bad input ----

BAD_STEPS = [
    (dict(head_logits=[[0.0, 1.0]]), TypeError, "head_logits must be a torch.Tensor"),
    (dict(head_logits=torch.zeros(4)), ValueError, r"head_logits must be 2-D \[T, C\]"),
    (dict(head_logits=torch.zeros(4, 3, dtype=torch.float64)), TypeError, "float32, float16 or bfloat16"),
    (dict(rows=torch.tensor([0, 1], dtype=torch.int32)), TypeError, "rows must be torch.int64"),
    (dict(rows=torch.tensor([[0, 1]])), ValueError, "rows must have shape 1-D"),
    (dict(solution=torch.tensor([0])), ValueError, r"solution must have shape \[2\] \(one per step, as rows\)"),
    (dict(prior_value=torch.zeros(3, dtype=torch.float64)), TypeError, "prior_value must be torch.float32"),
    (dict(prior_count=torch.zeros(2, dtype=torch.long)), ValueError, r"prior_count must have shape \[3\]"),
    (dict(rows=torch.tensor([0, 4])), ValueError, r"rows\[1\] = 4 is out of range: expected 0 <= row < 4"),
    (dict(rows=torch.tensor([-1, 0])), ValueError, r"rows\[0\] = -1 is out of range"),
    (dict(solution=torch.tensor([0, 3])), ValueError, r"solution\[1\] = 3 is out of range: expected 0 <= solution < 3"),
    (dict(prior_count=torch.tensor([0, -2, 0])), ValueError, r"prior_count\[1\] = -2 is out of range: expected >= 0"),
    (dict(head="softmax2"), ValueError, r"head must be one of \('pair', 'sigmoid'\), got 'softmax2'"),
    (dict(aggregate="max"), ValueError, "aggregate must be one of"),
    (dict(good=3), ValueError, r"good = 3 is out of range: expected 0 <= good < 3"),
    (dict(bad=-1), ValueError, r"bad = -1 is out of range"),
    (dict(good=1.0), TypeError, "good must be an int"),
    (dict(good=True), TypeError, "good must be an int"),
    (dict(good=1, bad=1), ValueError, "good and bad are both column 1"),
    (dict(backend="gpu"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("change,error,match", BAD_STEPS, ids=[m for _, _, m in BAD_STEPS])
def test_step_scores_rejects_bad_arguments(change, error, match):
    args = dict(head_logits=torch.zeros(4, 3), rows=torch.tensor([0, 1]), solution=torch.tensor([0, 2]),
                prior_value=torch.zeros(3), prior_count=torch.zeros(3, dtype=torch.long))
    args.update({k: v for k, v in change.items() if k in args})
    kwargs = {k: v for k, v in change.items() if k not in args}
    with pytest.raises(error, match=match):
        ponder.step_scores(*args.values(), **kwargs)


BAD_VOTES = [
    (dict(answers=[1, 2]), TypeError, "answers must be a torch.Tensor"),
    (dict(answers=torch.tensor([1.0, 2.0, 3.0])), TypeError, "answers must be torch.int64"),
    (dict(scores=torch.zeros(2)), ValueError, r"scores must have shape \[3\] \(one per candidate, as answers\)"),
    (dict(scores=torch.zeros(3, dtype=torch.float16)), TypeError, "scores must be torch.float32"),
    (dict(offsets=torch.zeros(0, dtype=torch.long)), ValueError, r"offsets must have G \+ 1 >= 1 entries"),
    (dict(offsets=torch.tensor([1, 3])), ValueError, "offsets must start at 0 and end at N = 3"),
    (dict(offsets=torch.tensor([0, 2])), ValueError, r"end at N = 3 .* offsets\[-1\] = 2"),
    (dict(offsets=torch.tensor([0, 2, 1, 3])), ValueError, r"nondecreasing, got offsets\[1\] = 2 > offsets\[2\] = 1"),
    (dict(answers=torch.tensor([0, -2, 1])), ValueError, r"answers\[1\] = -2 is out of range"),
    (dict(method="mean"), ValueError, r"method must be one of \('max', 'weighted', 'majority'\)"),
]


@pytest.mark.parametrize("change,error,match", BAD_VOTES, ids=[m for _, _, m in BAD_VOTES])
def test_vote_rejects_bad_arguments(change, error, match):
    args = dict(answers=torch.tensor([0, 1, 1]), scores=torch.zeros(3), offsets=torch.tensor([0, 1, 3]))
    args.update({k: v for k, v in change.items() if k in args})
    kwargs = {k: v for k, v in change.items() if k not in args}
    with pytest.raises(error, match=match):
        ponder.vote(*args.values(), **kwargs)


@pytest.mark.skipif(not ponder.ops._backend.has_cpu_kernels(), reason="the extension is not built")
def test_compiled_ops_check_their_arguments():
    """Direct torch.ops.ponder.* calls (bypassing the Python checks) get clear errors too."""
    ops = torch.ops.ponder
    logits, steps, prior = torch.zeros(4, 3), torch.tensor([0, 1]), (torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match=r"rows\[1\] = 9 is out of range"):
        ops.step_scores(logits, torch.tensor([0, 9]), steps, *prior, "pair", 0, 1, "last")
    with pytest.raises(RuntimeError, match=r"solution\[0\] = 2 is out of range"):
        ops.step_scores(logits, steps, torch.tensor([2, 0]), *prior, "pair", 0, 1, "last")
    with pytest.raises(RuntimeError, match="good and bad are both column 2"):
        ops.step_scores(logits, steps, steps, *prior, "pair", 2, 2, "last")
    with pytest.raises(RuntimeError, match="head must be one of 'pair', 'sigmoid', got 'x'"):
        ops.step_scores(logits, steps, steps, *prior, "x", 0, 1, "last")
    with pytest.raises(RuntimeError, match="aggregate must be one of 'last', 'min', 'prod', 'mean', got 'sum'"):
        ops.step_scores(logits, steps, steps, *prior, "pair", 0, 1, "sum")
    with pytest.raises(RuntimeError, match=r"prior_count\[0\] = -1 is out of range"):
        ops.step_scores(logits, steps, steps, prior[0], torch.tensor([-1, 0]), "pair", 0, 1, "last")
    answers, scores = torch.tensor([0, 1]), torch.zeros(2)
    with pytest.raises(RuntimeError, match=r"nondecreasing, got offsets\[0\] = 0 > offsets\[1\] = -1"):
        ops.vote(answers, scores, torch.tensor([0, -1, 2]), "max")
    with pytest.raises(RuntimeError, match="offsets must start at 0 and end at N = 2"):
        ops.vote(answers, scores, torch.tensor([0, 1]), "max")
    with pytest.raises(RuntimeError, match=r"answers\[0\] = -3 is out of range"):
        ops.vote(torch.tensor([-3, 1]), scores, torch.tensor([0, 2]), "weighted")
    with pytest.raises(RuntimeError, match="method must be one of 'max', 'weighted', 'majority', got 'best'"):
        ops.vote(answers, scores, torch.tensor([0, 2]), "best")


# ---- custom-op machinery ----

def test_opcheck(backend_device):
    """The custom ops' schemas and fake implementations are consistent."""
    backend, device = backend_device
    if backend == "reference":
        pytest.skip("the reference is plain PyTorch, not a custom op")
    suffix = "_triton" if backend == "triton" else ""
    case = step_case(8, 5, 10, 4, device=device)
    case["prior_value"] = case["prior_value"].nan_to_num(0.5)  # opcheck compares outputs without equal_nan
    for head, aggregate in (("pair", "mean"), ("sigmoid", "last")):
        torch.library.opcheck(getattr(torch.ops.ponder, "step_scores" + suffix).default,
                              (*case.values(), head, 3, 1, aggregate))
    case = vote_case([3, 0, 5], device=device)
    for method in reference.VOTE_METHODS:
        torch.library.opcheck(getattr(torch.ops.ponder, "vote" + suffix).default, (*case.values(), method))


def test_torch_compile_fullgraph(backend_device):
    """Score, aggregate and vote compile into one graph and match eager."""
    backend, device = backend_device
    case = step_case(12, 7, 9, 3, device=device, seed=3)
    answers = torch.tensor([4, 2, 4], device=device)
    offsets = torch.tensor([0, 3], device=device)

    def step(head_logits, rows, solution, prior_value, prior_count):
        out = ponder.step_scores(head_logits, rows, solution, prior_value, prior_count, good=5, bad=2,
                                 aggregate="prod", backend=backend)
        return out.value, ponder.vote(answers, out.value, offsets, method="weighted", backend=backend).winner

    got = torch.compile(step, backend="eager", fullgraph=True)(*case.values())
    want = step(*case.values())
    torch.testing.assert_close(got[0], want[0], **CLOSE)
    assert torch.equal(got[1], want[1])


def test_triton_gpu_tiling(monkeypatch):
    """The Triton kernels with a GPU's launch configuration (32 candidates a chunk, so a
    100-candidate prompt takes four chunks in both tile loops; 256 steps a program),
    which the interpreter's large tiles do not reach."""
    if "triton" not in ponder.ops._backend.available_backends(torch.device("cpu")) or torch.cuda.is_available():
        pytest.skip("needs Triton's interpreter (on a GPU the other tests use these tiles)")
    from ponder.kernels import scoring as kernels

    monkeypatch.setattr(kernels, "_interpreted", lambda tensor: False)
    case = vote_case([100, 33, 32, 31], num_answers=5, seed=4, dyadic=True)
    for method in reference.VOTE_METHODS:
        assert_vote_matches(ponder.vote(**case, method=method, backend="triton"), case, method)
    case = step_case(40, 6, 260, 50, seed=4)
    got = ponder.step_scores(**case, good=4, bad=5, aggregate="mean", backend="triton")
    assert_steps_match(got, case, head="pair", good=4, bad=5, aggregate="mean")
