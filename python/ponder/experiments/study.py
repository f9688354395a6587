"""``ponder study``: the compute-optimal scaling paper's experiments, in small, on the built-in task.

On the first ``problems`` validation problems, every strategy runs at every budget
(generations, as the paper counts them), and each problem's correctness is recorded:

* best-of-N selected by PRM max, PRM-weighted vote and majority vote (one set of samples);
* beam search (beam width 4), lookahead search (k = 1) and DVTS against the PRM;
* best-of-N (weighted) and beam search against the process advantage verifier
  ``Q + alpha * A`` (the PRM plus the prover PRM's progress), for the PAV comparison;
* sequential revisions with the revision model, the budget all in parallel chains,
  all in one sequential chain, or balanced between the two
  (:data:`~ponder.experiments.methods.REVISION_METHODS`), and in every other split
  between the ends, chains of 2, 4, ..., 32 attempts (``REVISION_SWEEP``, the paper's
  sweep of the sequential/parallel ratio), against the PRM. A split that two of them
  share at a budget (``revisions_length_8`` is the balanced split at 64) runs once.

With ``rollouts``, every strategy searches against the policy's Monte-Carlo values over that
many roll-outs of each scored branch instead of the PRM (and the PAV's prover is the
best-of-4 policy read from the same roll-outs; finished solutions score as the task's
checker says): what the trained verifiers approximate, to tell a method's limits from
theirs. Roll-outs cost far more than a PRM, so run few strategies that way.

Difficulty, in five quantile bins (bin 0 the easiest), two ways: *oracle*, from the
policy's pass@1 over the largest budget's best-of-N samples, and *predicted*, from the
PRM's mean final score over the same samples. Per bin and budget the accuracy of every
strategy; the compute-optimal PRM search strategy per bin and budget chosen by two-fold
cross validation (:func:`ponder.search.compute_optimal.cross_validate`) and its accuracy
against best-of-N's; the same among the revision model's splits (compute-optimal
revisions, the paper's figure 8) against all-parallel sampling. The findings the paper
reports are checked and printed as PASS / FAIL lines with their numbers
(:func:`findings`), each with its support: the share of ``resamples`` bootstrap resamples
of the problems on which the check passes (:func:`support`; none for 0 resamples).
Whether the revision model uses the attempts it sees is measured on the same runs: after
a wrong attempt, how often the next one of its chain is right or repeats the wrong answer,
against two independent attempts of the problem (:func:`_after_wrong`).
Each chunk a strategy finishes at a budget is written at once to
``out/runs/<strategy>@<budget>/<first problem>.json`` (``<strategy>@<budget>-rollouts<K>``
against roll-out values) with what it depends on: its
problems, the seed, the PAV weight, ponder's version and a fingerprint of every
checkpoint it used. With ``resume``, a chunk whose file holds the same is read back
instead of run again. A chunk's result does not depend on the rest of the study (its
seed is the study's plus its first problem's index, and a split of ``n`` problems is the
first ``n`` of a larger one), so a long study stopped part-way, or extended by
strategies, budgets or problems, redoes only what is missing, and a smaller study is a
read of a larger one's first chunks. ponder's own code is not in the fingerprint:
resume with the code that wrote the chunks.
Written into ``out``: ``study.json`` (everything), ``bins_oracle.png`` /
``bins_predicted.png`` (accuracy against budget per bin of the PRM search strategies),
``revisions.png`` (the same for the three revision rows, oracle bins),
``revision_ratios.png`` (accuracy against the sequential/parallel ratio: overall per
budget, and per oracle bin at the largest budget, as the paper's figure 7),
``compute_optimal.png``, ``compute_optimal_revisions.png`` and ``pav.png``.

Problems run in chunks (``chunk`` problems per search) so that the KV caches stay small.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import ponder
from ponder.experiments import plots
from ponder.experiments.methods import REVISION_METHODS, REVISION_SWEEP, feasible, revision_split, uses_revision_model
from ponder.experiments.searchers import PROVER_BEST_OF, Searchers
from ponder.search import Candidate
from ponder.search.compute_optimal import DifficultyBins, cross_validate
from ponder.search.progress import Progress
from ponder.tasks import Problem, split

__all__ = ["StudyConfig", "STRATEGIES", "run_study", "findings", "support"]

STRATEGIES: dict[str, tuple[str, bool]] = {
    "best_of_n_max": ("best_of_n_max", False),
    "best_of_n_weighted": ("best_of_n_weighted", False),
    "majority": ("majority", False),
    "beam_search": ("beam_search", False),
    "lookahead": ("lookahead", False),
    "dvts": ("dvts", False),
    "best_of_n_weighted_pav": ("best_of_n_weighted", True),
    "beam_search_pav": ("beam_search", True),
    **{method: (method, False) for method in REVISION_METHODS + REVISION_SWEEP},
}
"""Strategy name -> (method of :mod:`ponder.experiments.methods`, against the PAV)."""
PRM_STRATEGIES = [name for name, (method, pav) in STRATEGIES.items() if not pav and not uses_revision_model(method)]
"""The strategies compute-optimal selection chooses among (the paper's PRM search)."""
BINS = 5


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs; ``policy``/``prm``/``prover``: checkpoint directories (None: shipped)."""

    problems: int = 250
    budgets: tuple[int, ...] = (1, 4, 16, 64)
    strategies: tuple[str, ...] = tuple(STRATEGIES)
    pav_alpha: float = 1.0
    chunk: int = 50
    seed: int = 0
    policy: str | None = None
    prm: str | None = None
    prover: str | None = None
    revision: str | None = None
    resamples: int = 1000
    out: str = "ponder-study"
    resume: bool = False  # read back the chunks in out/runs made with the same settings and checkpoints
    rollouts: int | None = None  # search against the policy's Monte-Carlo values (Searchers.rollout_verifier)


def _plan(strategies: Sequence[str], budgets: Sequence[int]) -> tuple[list[tuple[int, str]], dict]:
    """The (budget, strategy) runs, and ``{(strategy, budget): strategy that runs the same split}``
    for the revision strategies whose split an earlier one already runs at that budget."""
    grid, same_run = [], {}
    for budget in budgets:
        runs_split = {}
        for strategy in strategies:
            method = STRATEGIES[strategy][0]
            if not feasible(method, budget):
                continue
            if uses_revision_model(method):
                chains_length = revision_split(method, budget)
                if chains_length in runs_split:
                    same_run[strategy, budget] = runs_split[chains_length]
                    continue
                runs_split[chains_length] = strategy
            grid.append((budget, strategy))
    return grid, same_run


RUNS = "runs"
"""The folder of ``out`` that holds one JSON file per finished chunk (see the module docstring)."""


def _run_name(strategy: str, budget: int, config: StudyConfig) -> str:
    """The folder of ``out/runs`` for a strategy's chunks at ``budget``: ``strategy@budget``, and
    ``strategy@budget-rollouts<K>`` against roll-out values, so that neither overwrites the other."""
    return f"{strategy}@{budget}" + (f"-rollouts{config.rollouts}" if config.rollouts is not None else "")


def _run_key(strategy: str, budget: int, config: StudyConfig, fingerprints: dict) -> dict | None:
    """What a strategy's chunks at ``budget`` depend on, but for their problems; None when a
    model it uses has no fingerprint."""
    method, pav = STRATEGIES[strategy]
    verifiers = ["prm"] + (["prover"] if pav else []) if config.rollouts is None else []
    models = ["policy"] + verifiers + (["revision"] if uses_revision_model(method) else [])
    if any(model not in fingerprints for model in models):
        return None
    key = {"strategy": strategy, "budget": budget, "seed": config.seed,
           "pav_alpha": config.pav_alpha if pav else None, "ponder": ponder.__version__,
           "models": {model: fingerprints[model] for model in models}}
    if config.rollouts is not None:  # (absent otherwise, so the PRM's chunks keep their keys)
        key["rollouts"] = config.rollouts
    return key


def _store_part(path: Path, key: dict, part: dict) -> None:
    """Write a finished chunk's part with its key; whole or not at all (a stopped study leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"key": key, "part": part}) + "\n")
    partial.replace(path)


def _stored_part(path: Path, key: dict) -> dict | None:
    """The chunk's part stored at ``path`` if it was made with ``key``, else None."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a chunk's record ({error}); delete it to run that chunk again") from None
    return stored["part"] if stored.get("key") == key else None


def _revision_splits(accuracy: dict, budget: int) -> dict[tuple[int, int], str]:
    """``{(chains, length): strategy}`` of the revision strategies in ``accuracy`` (per-bin
    accuracies by strategy and budget) run at ``budget``."""
    return {revision_split(s, budget): s for s, per in accuracy.items()
            if uses_revision_model(s) and str(budget) in per}


def _run_chunked(searchers: Searchers, strategy: str, budget: int, problems: Sequence[Problem], config: StudyConfig,
                 shared: dict, key: dict | None) -> tuple[dict, int]:
    """One strategy at one budget over every problem, chunk by chunk: correctness, scores, spend.

    Each chunk is stored under ``key`` in ``config.out`` (with ``resume``, read back when
    stored); returns the record and how many chunks were read back.
    """
    record = {"correct": [], "pass1": [], "mean_score": [], "ranking": [], "generations": 0.0, "generated_tokens": 0.0,
              "prm_tokens": 0.0, "wall_s": 0.0}  # spend per problem, wall time in all
    read_back = 0
    for first in range(0, len(problems), config.chunk):
        chunk = problems[first:first + config.chunk]
        chunk_key = None if key is None else {**key, "first": first, "problems": len(chunk)}
        path = Path(config.out) / RUNS / _run_name(strategy, budget, config) / f"{first}.json"
        part = _stored_part(path, chunk_key) if config.resume else None
        if part is None:
            part = _run_chunk(searchers, strategy, budget, chunk, config.seed + first, config, shared)
            if chunk_key is not None:
                _store_part(path, chunk_key, part)
        else:
            read_back += 1
        for name in ("correct", "pass1", "mean_score", "ranking"):
            record[name] += part[name]
        if "after_wrong" in part:
            record["after_wrong"] = [a + b for a, b in zip(record.get("after_wrong", [0, 0, 0]), part["after_wrong"])]
        for name in ("generations", "generated_tokens", "prm_tokens"):
            record[name] += part[name] / len(problems)
        record["wall_s"] += part["wall_s"]
    return record, read_back


def _run_chunk(searchers: Searchers, strategy: str, budget: int, chunk: Sequence[Problem], seed: int,
               config: StudyConfig, shared: dict) -> dict:
    """One strategy at one budget on one chunk: per problem, correctness, pass@1 and mean
    score of the candidates, and their ranking (and for revisions the after-wrong counts,
    summed); the chunk's spend, summed."""
    method, pav = STRATEGIES[strategy]
    key = (budget, pav, seed)  # the best-of-N rows of one budget and verifier share their samples
    run = searchers.run(method, budget, chunk, seed=seed, pav_alpha=config.pav_alpha if pav else None,
                        rollouts=config.rollouts, best_of_n_result=shared.get(key))
    if run.result.method == "best_of_n":
        shared[key] = run.result
    spend = run.result.spend  # a shared best-of-N run's spend counts for each of its rows
    part = {"correct": [answer == p.answer for answer, p in zip(run.answers, chunk)],
            "pass1": [_mean([c.answer == p.answer for c in result.candidates])
                      for result, p in zip(run.result.results, chunk)],
            "mean_score": [_mean([c.score for c in result.candidates if c.finished]) for result in run.result.results],
            "ranking": [_pairs_ranked([(c.score, c.answer == p.answer) for c in result.candidates])
                        for result, p in zip(run.result.results, chunk)],
            "generations": spend.generations, "generated_tokens": spend.generated_tokens,
            "prm_tokens": spend.prm_tokens, "wall_s": spend.wall_s}
    if uses_revision_model(method):
        chains_length = revision_split(method, budget)
        counts = [_after_wrong(result.candidates, *chains_length, p.answer)
                  for result, p in zip(run.result.results, chunk)]
        part["after_wrong"] = [sum(column) for column in zip(*counts)]
    return part


def _pairs_ranked(candidates: list[tuple[float, bool]]) -> tuple[float, int]:
    """(right-above-wrong pairs, ties counting half; all right/wrong pairs) among one problem's scored candidates."""
    right = [score for score, ok in candidates if ok]
    wrong = [score for score, ok in candidates if not ok]
    above = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return above, len(right) * len(wrong)


def _after_wrong(attempts: Sequence[Candidate], chains: int, length: int, answer) -> list[int]:
    """``[pairs, right, repeated]`` over pairs of one problem's revision attempts whose first is
    wrong: how many, how many of their second attempts are right, and how many give the
    first's (wrong) answer again.

    ``attempts`` are listed chain by chain, each chain's in order. In chains of two
    attempts or more a pair is an attempt and the next of its chain, which saw it in its
    prompt; with one attempt per chain (all parallel) it is the attempts of chains ``2j``
    and ``2j + 1``, independent samples of the same problem. The two tell whether the
    revision model uses the attempts it sees: a model that ignores them gives both the
    same rates, one that copies them repeats more, one that revises repeats less.
    """
    if length >= 2:
        pairs = [(attempts[c * length + i], attempts[c * length + i + 1])
                 for c in range(chains) for i in range(length - 1)]
    else:
        pairs = list(zip(attempts[0::2], attempts[1::2]))
    counts = [0, 0, 0]
    for first, second in pairs:
        if first.answer != answer:
            counts[0] += 1
            counts[1] += second.answer == answer
            counts[2] += second.answer is not None and second.answer == first.answer
    return counts


def _revision_context(records: dict[str, dict[int, dict]], grid: Sequence[tuple[int, str]]) -> dict:
    """The revision model's attempts after a wrong one, summed over the runs of ``grid`` (each
    split once): ``{"in_chain": {...}, "independent": {...}}``, each ``{"pairs", "right",
    "repeated"}`` (see :func:`_after_wrong`); empty when no revision split ran."""
    context: dict[str, dict[str, int]] = {}
    for budget, strategy in grid:
        record = records[strategy][budget]
        if "after_wrong" in record:
            kind = "in_chain" if revision_split(strategy, budget)[1] >= 2 else "independent"
            totals = context.setdefault(kind, dict.fromkeys(("pairs", "right", "repeated"), 0))
            for key, count in zip(totals, record["after_wrong"]):
                totals[key] += count
    return context


def _context_line(context: dict) -> str:
    """What :func:`_revision_context`'s totals say, in one line."""
    def rate(kind: str, key: str) -> str:
        pairs = context[kind]["pairs"]
        return f"{context[kind][key] / pairs:.1%}" if pairs else "n/a"

    return (f"Revision model after a wrong attempt: the next attempt of its chain (it sees the wrong one) is right "
            f"in {rate('in_chain', 'right')} and repeats the wrong answer in {rate('in_chain', 'repeated')} of "
            f"{context['in_chain']['pairs']} pairs; an independent attempt of the problem is right in "
            f"{rate('independent', 'right')} and gives the same wrong answer in {rate('independent', 'repeated')} "
            f"of {context['independent']['pairs']} pairs")


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def run_study(config: StudyConfig, searchers: Searchers | None = None, *, log=print,
              progress: bool | None = None) -> dict:
    """Run every strategy at every budget, bin, cross-validate, check, plot; return the results."""
    unknown = [s for s in config.strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r}: expected some of {list(STRATEGIES)}")
    if not isinstance(config.resamples, int) or config.resamples < 0:
        raise ValueError(f"resamples must be a non-negative int, got {config.resamples!r}")
    if config.problems < 2 * BINS:
        raise ValueError(f"the study needs at least {2 * BINS} problems (two folds of {BINS} bins), "
                         f"got {config.problems}")
    needs_pav = any(STRATEGIES[s][1] for s in config.strategies)
    if config.rollouts is not None and not (isinstance(config.rollouts, int) and config.rollouts >= 1):
        raise ValueError(f"rollouts must be a positive int, got {config.rollouts!r}")
    if config.rollouts is not None and needs_pav and config.rollouts < PROVER_BEST_OF:
        raise ValueError(f"the PAV's best-of-{PROVER_BEST_OF} prover needs at least {PROVER_BEST_OF} roll-outs, "
                         f"got rollouts={config.rollouts}")
    needs_revision = any(uses_revision_model(STRATEGIES[s][0]) for s in config.strategies)
    searchers = searchers or Searchers.load(config.policy, config.prm, config.prover, config.revision,
                                            with_prover=needs_pav and config.rollouts is None,
                                            with_revision=needs_revision)
    problems = split("validation", config.problems)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = sorted(config.budgets)
    grid, same_run = _plan(config.strategies, budgets)
    bar = Progress("study", progress)
    records: dict[str, dict[int, dict]] = {s: {} for s in config.strategies}
    shared: dict = {}
    reused = {}  # "strategy@budget" -> chunks read back
    start = time.perf_counter()
    for i, (budget, strategy) in enumerate(grid):
        key = _run_key(strategy, budget, config, searchers.fingerprints)
        if config.resume and key is None:
            raise ValueError(f"resume needs the checkpoints' fingerprints, and {strategy} at {budget} uses a model "
                             f"that was not loaded from a directory (Searchers.load)")
        bar.update(i, len(grid), running=f"{strategy}@{budget}")
        record, read_back = _run_chunked(searchers, strategy, budget, problems, config, shared, key)
        bar.clear()
        records[strategy][budget] = record
        chunks = -(-len(problems) // config.chunk)
        if read_back:
            reused[f"{strategy}@{budget}"] = read_back
        log(f"{strategy:<24} {budget:>4}  accuracy {_mean(record['correct']):.3f}"
            + (f"  ({read_back} of {chunks} chunks read back)" if read_back else ""))
    for (strategy, budget), ran in same_run.items():
        records[strategy][budget] = records[ran][budget]
    largest = max(b for b in budgets if "best_of_n_weighted" in records and b in records["best_of_n_weighted"]) \
        if "best_of_n_weighted" in records else None
    if largest is None:
        raise ValueError("the study's difficulty bins need the best_of_n_weighted strategy")
    samples = records["best_of_n_weighted"][largest]
    pairs = sum(n for _, n in samples["ranking"])
    ranking = sum(above for above, _ in samples["ranking"]) / pairs if pairs else float("nan")
    oracle = torch.tensor(samples["pass1"], dtype=torch.float32)
    predicted = torch.nan_to_num(torch.tensor(samples["mean_score"], dtype=torch.float32), nan=0.0)
    results = {"config": asdict(config), "checkpoints": searchers.names, "wall_s": 0.0, "chunks_read_back": reused,
               "problems": [{"prompt": p.prompt, "answer": p.answer, "level": p.difficulty.level,
                             "oracle_pass1": float(o), "predicted": float(s)}
                            for p, o, s in zip(problems, oracle, predicted)],
               "prm_ranking": ranking,
               "strategies": {s: {str(b): {k: v for k, v in r.items() if k not in ("pass1", "mean_score", "ranking")}
                                  for b, r in per.items()} for s, per in records.items()}}
    results["revision_context"] = _revision_context(records, grid)
    _analyse(results, config.seed)
    for kind in ("oracle", "predicted"):
        _plot_bins({s: a for s, a in results[kind]["accuracy"].items() if s in PRM_STRATEGIES},
                   out / f"bins_{kind}.png", f"{kind} difficulty bins")
    _plot_bins({s: a for s, a in results["oracle"]["accuracy"].items() if s in REVISION_METHODS},
               out / "revisions.png", "sequential revisions: parallel, balanced and sequential splits, oracle bins")
    _plot_revision_ratios(results, budgets, out / "revision_ratios.png")
    results["findings"] = findings(results, budgets)
    if config.resamples:
        for line, held in zip(results["findings"], support(results, budgets, config.resamples, config.seed)):
            if not line["ran"]:  # (a check with nothing to check has no support to speak of)
                continue
            line["support"] = held
            line["line"] += f" [holds in {held:.0%} of {config.resamples} resamples of the problems]"
    _plot_curves(results, budgets, out)
    results["wall_s"] = time.perf_counter() - start
    (out / "study.json").write_text(json.dumps(results, indent=1) + "\n")
    verifier = "Roll-out value" if config.rollouts else "PRM"
    log(f"{verifier} ranking: a right solution scores above a wrong one of the same problem in {ranking:.1%} of "
        f"pairs ({pairs} pairs, best-of-N at {largest})")
    if {"in_chain", "independent"} <= set(results["revision_context"]):
        log(_context_line(results["revision_context"]))
    for line in results["findings"]:
        log(line["line"])
    log(f"\nwrote {out / 'study.json'} and its plots in {results['wall_s']:.0f} s")
    return results


def _analyse(results: dict, seed: int, groups: torch.Tensor | None = None) -> None:
    """Fill ``results["oracle"]`` and ``results["predicted"]`` from the problems' difficulty scores
    and the strategies' per-problem correctness: each problem's bin, every strategy's accuracy
    per bin and budget, and the compute-optimal curves (two-fold cross validation, folds drawn
    with ``seed``; ``groups`` as :func:`~ponder.search.compute_optimal.cross_validate` takes it)."""
    accuracy = {s: {int(b): torch.tensor(r["correct"], dtype=torch.float32) for b, r in per.items()}
                for s, per in results["strategies"].items()}
    for kind, key in (("oracle", "oracle_pass1"), ("predicted", "predicted")):
        scores = torch.tensor([p[key] for p in results["problems"]], dtype=torch.float32)
        bins = DifficultyBins.fit(scores, BINS).assign(scores)
        chosen = cross_validate({s: per for s, per in accuracy.items() if s in PRM_STRATEGIES}, bins, BINS,
                                seed=seed, groups=groups)
        per_bin = {s: {str(b): [float(acc[bins == k].mean()) if bool((bins == k).any()) else float("nan")
                                for k in range(BINS)] for b, acc in per.items()} for s, per in accuracy.items()}
        results[kind] = {"bins": bins.tolist(), "accuracy": per_bin,
                         "compute_optimal": {str(b): float(acc.mean()) for b, acc in chosen.items()}}
        splits = {s: per for s, per in accuracy.items() if uses_revision_model(s) and per}
        if splits:
            results[kind]["compute_optimal_revisions"] = {
                str(b): float(acc.mean())
                for b, acc in cross_validate(splits, bins, BINS, seed=seed, groups=groups).items()}


def support(results: dict, budgets: Sequence[int], resamples: int, seed: int = 0) -> list[float]:
    """Per finding of ``findings(results, budgets)``, the fraction of ``resamples`` (at least 1)
    bootstrap resamples of the problems on which it passes.

    A resample draws as many problems as the study ran, with replacement, and redoes the
    whole analysis on them: the quantile bins refitted, the compute-optimal choices
    cross-validated again (a problem's copies in one fold), every check. A finding that
    passes by a problem or two holds in about half of them; one that holds in 95 % or more
    is unlikely to flip on another draw of problems of the same task.
    """
    if not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive int, got {resamples!r}")
    held = [0] * len(findings(results, budgets))  # the checks come in one order, whatever the data
    count = len(results["problems"])
    draw = torch.Generator().manual_seed(seed)
    for _ in range(resamples):
        picked = torch.randint(count, (count,), generator=draw)
        rows = picked.tolist()
        sample = {"problems": [results["problems"][i] for i in rows],
                  "strategies": {s: {b: {"correct": [r["correct"][i] for i in rows]} for b, r in per.items()}
                                 for s, per in results["strategies"].items()}}
        _analyse(sample, seed, groups=picked)
        for i, check in enumerate(findings(sample, budgets)):
            held[i] += check["pass"]
    return [h / resamples for h in held]


def _overall(results: dict, strategy: str, budget: int) -> float:
    record = results["strategies"].get(strategy, {}).get(str(budget))
    return _mean(record["correct"]) if record else float("nan")


def _budget_to_reach(curve: dict[int, float], target: float) -> float:
    """The budget (log-linear interpolation between measured budgets) where ``curve`` first reaches ``target``."""
    points = sorted(curve.items())
    for (b0, a0), (b1, a1) in zip(points, points[1:]):
        if a0 >= target:
            return float(b0)
        if a1 >= target:
            return math.exp(math.log(b0) + (target - a0) / (a1 - a0) * (math.log(b1) - math.log(b0)))
    return float(points[0][0]) if points and points[0][1] >= target else float("inf")


def _rounded(curve: dict[int, float]) -> dict[int, float]:
    return {b: round(a, 3) for b, a in curve.items()}


def findings(results: dict, budgets: Sequence[int]) -> list[dict]:
    """The paper's findings as checks on these results: ``{"name", "pass", "ran", "line"}`` each.

    A check whose strategies or budgets were not run says so; it has not passed, and not ``ran``.
    """
    checks = []

    def check(name: str, passed: bool | None, detail: str):
        verdict = "PASS" if passed else ("n/a " if passed is None else "FAIL")
        checks.append({"name": name, "pass": bool(passed), "ran": passed is not None,
                       "line": f"{verdict}  {name}: {detail}"})

    bins = results["oracle"]["accuracy"]
    if {"beam_search", "best_of_n_weighted"} <= set(bins) and {4, 16, 64} <= set(budgets):
        middle = range(1, BINS - 1)
        gaps = {b: [bins["beam_search"][str(b)][k] - bins["best_of_n_weighted"][str(b)][k] for k in middle]
                for b in (4, 16)}
        ahead = all(_mean(g) > 0 for g in gaps.values())
        check("beam search ahead of weighted best-of-N at budgets 4 and 16 on the middle oracle bins", ahead,
              ", ".join(f"budget {b}: beam - best-of-N = {_mean(g):+.3f} (bins 1-3 mean)" for b, g in gaps.items()))
        easy = {b: bins["beam_search"][str(b)][0] - bins["best_of_n_weighted"][str(b)][0] for b in (4, 64)}
        check("on the easiest bin the gap closes or reverses at 64", easy[64] <= max(easy[4], 0.0),
              f"beam - best-of-N on bin 0: {easy[4]:+.3f} at 4, {easy[64]:+.3f} at 64")
    else:
        check("beam search ahead of weighted best-of-N on the middle bins", None, "needs beam_search, "
              "best_of_n_weighted and budgets 4, 16, 64")
    top = max(budgets)
    weighted, majority = _overall(results, "best_of_n_weighted", top), _overall(results, "majority", top)
    check(f"weighted best-of-N at least as accurate as majority at N={top}", weighted >= majority,
          f"{weighted:.3f} against {majority:.3f}")
    for key, baseline, label in (("compute_optimal", "best_of_n_weighted", ("compute-optimal", "best-of-N")),
                                 ("compute_optimal_revisions", "revisions_parallel",
                                  ("compute-optimal revisions", "all-parallel sampling"))):
        for kind in ("oracle", "predicted"):
            if key not in results[kind]:  # the revision model's splits were not run
                continue
            optimal = {int(b): a for b, a in results[kind][key].items()}
            target = _overall(results, baseline, top)
            needed = _budget_to_reach(optimal, target)
            curve = ", ".join(f"{b}: {a:.3f}" for b, a in sorted(optimal.items()))
            check(f"{label[0]} ({kind} bins) reaches {label[1]}'s accuracy at {top} with at most {top // 4}",
                  needed <= top // 4, f"{label[1]} at {top}: {target:.3f}; {label[0]} reaches it at budget "
                                      f"{needed:.1f} ({curve})")
    for method in ("beam_search", "best_of_n_weighted"):
        base = {b: _overall(results, method, b) for b in budgets}
        pav = {b: _overall(results, f"{method}_pav", b) for b in budgets}
        if any(math.isnan(a) for a in pav.values()):
            check(f"{method} against the PAV at least 1.5x more compute-efficient", None, "PAV strategy not run")
            continue
        # Efficiency at equal accuracy: the PRM's budget to reach what the PAV reaches at each
        # budget, over the PAV's budget; the geometric mean over budgets, not the luckiest one.
        # Where the PRM never gets there within the budgets run, the largest budget stands in:
        # a lower bound (marked ">="), so one budget's edge of a problem or two cannot make
        # the mean infinite.
        top_budget = max(base)
        needed = {b: _budget_to_reach(base, a) for b, a in pav.items() if a > min(base.values())}
        ratios = [(b, min(n, top_budget) / b, n > top_budget) for b, n in needed.items()]
        overall = math.exp(_mean(math.log(r) for _, r, _ in ratios)) if ratios else float("nan")
        check(f"{method} against the PAV at least 1.5x more compute-efficient than against the PRM", overall >= 1.5,
              f"{overall:.2f}x (geometric mean of the budget the PRM needs for the PAV's accuracy, per PAV budget: "
              + ", ".join(f"{b}: {'>=' if bound else ''}{r:.2f}x" for b, r, bound in ratios)
              + f"); PAV {_rounded(pav)}, PRM {_rounded(base)}")
    revised = {m: bins.get(m, {}) for m in REVISION_METHODS}
    compared = [b for b in budgets if b >= 4 and all(str(b) in per for per in revised.values())]
    if compared:
        easier, harder = range(0, 2), range(BINS - 2, BINS)

        def gain(method: str, budget: int, over: str, rows) -> float:
            return _mean(revised[method][str(budget)][k] - revised[over][str(budget)][k] for k in rows)

        ahead = {b: gain("revisions_sequential", b, "revisions_parallel", easier) for b in compared}
        check("sequential revisions ahead of parallel sampling at equal budget on the easier bins (0-1)",
              all(g > 0 for g in ahead.values()),
              ", ".join(f"budget {b}: sequential - parallel = {g:+.3f}" for b, g in ahead.items()))
        interior = {}  # budget -> (the best interior split on the harder bins, its lead over the better end)
        for b in compared:
            hard = {split: _mean(bins[s][str(b)][k] for k in harder) for split, s in _revision_splits(bins, b).items()}
            inside = {split: a for split, a in hard.items() if 1 < split[1] < b}
            best = max(inside, key=lambda split: (inside[split], -split[1]))
            interior[b] = best, inside[best] - max(hard[b, 1], hard[1, b])
        # The paper finds the ideal ratio "at higher generation budgets" and shows it per bin at
        # its largest budget (figure 7); at low budgets more sequential revisions tend to win
        # there too. So the check is at the largest budget; the line gives every budget.
        largest = max(compared)
        check(f"an interior sequential/parallel ratio is best on the harder bins ({BINS - 2}-{BINS - 1}) "
              f"at the largest budget", interior[largest][1] > 0,
              ", ".join(f"budget {b}: best interior split ({c} chains of {n}) - best of the two ends = {g:+.3f}"
                        for b, ((c, n), g) in interior.items()))
    else:
        check("sequential revisions against parallel sampling", None,
              f"needs {', '.join(REVISION_METHODS)} at a budget of 4 or more")
    return checks


def _plot_bins(accuracy: dict, path: Path, title: str) -> None:
    """One panel per bin: each strategy's accuracy against budget."""
    fig, axes = plots.pyplot().subplots(1, BINS, figsize=(3.2 * BINS, 3.2), sharey=True)
    for k, ax in enumerate(axes):
        label = " (easiest)" if k == 0 else " (hardest)" if k == BINS - 1 else ""
        plots.plot_curves(ax, {s: {int(b): acc[k] for b, acc in per.items()} for s, per in accuracy.items()},
                          f"bin {k}{label}")
    axes[0].set_ylabel("accuracy")
    if accuracy:  # a study without these strategies still draws the (empty) panels
        axes[-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    plots.save(fig, path)


def _plot_revision_ratios(results: dict, budgets: Sequence[int], path: Path) -> None:
    """Accuracy against the sequential/parallel ratio (attempts per chain over chains): overall,
    one line per budget, and per oracle bin at the largest budget (the paper's figure 7)."""
    accuracy = results["oracle"]["accuracy"]
    swept = [b for b in budgets if len(_revision_splits(accuracy, b)) >= 2]
    if not swept:
        return
    fig, (left, right) = plots.pyplot().subplots(1, 2, figsize=(11, 4))
    xlabel = "sequential / parallel (attempts per chain / chains)"
    plots.plot_curves(left, {f"budget {b}": {length / chains: _overall(results, s, b) for (chains, length), s
                                             in _revision_splits(accuracy, b).items()} for b in swept},
                      "all problems", xlabel=xlabel)
    top = swept[-1]
    plots.plot_curves(right, {f"bin {k}": {length / chains: accuracy[s][str(top)][k] for (chains, length), s
                                           in _revision_splits(accuracy, top).items()} for k in range(BINS)},
                      f"per oracle bin (0 easiest) at budget {top}", xlabel=xlabel)
    left.set_ylabel("accuracy")
    for ax in (left, right):
        ax.legend(fontsize=7)
    plots.save(fig, path)


def _plot_curves(results: dict, budgets: Sequence[int], out: Path) -> None:
    """compute_optimal.png (compute-optimal against best-of-N and beam), compute_optimal_revisions.png
    (compute-optimal revisions against the revision model's ends) and pav.png (PAV against PRM)."""
    def overall(strategy: str) -> dict[int, float]:
        return {b: _overall(results, strategy, b) for b in budgets}

    figures = {
        "compute_optimal.png": ("compute-optimal vs best-of-N", {
            "best-of-N weighted": overall("best_of_n_weighted"), "beam search": overall("beam_search"),
            **{f"compute-optimal ({kind} bins)": {int(b): a for b, a in results[kind]["compute_optimal"].items()}
               for kind in ("oracle", "predicted")}}),
        "compute_optimal_revisions.png": ("compute-optimal revisions vs parallel sampling", {
            "revisions, all parallel": overall("revisions_parallel"),
            "revisions, one sequential chain": overall("revisions_sequential"),
            **{f"compute-optimal revisions ({kind} bins)": {int(b): a for b, a in
                                                            results[kind].get("compute_optimal_revisions", {}).items()}
               for kind in ("oracle", "predicted")}}),
        "pav.png": ("PRM vs process advantage verifier", {
            label: overall(strategy) for method in ("best_of_n_weighted", "beam_search")
            for label, strategy in ((f"{method} (PRM)", method), (f"{method} (PAV)", f"{method}_pav"))}),
    }
    for name, (title, curves) in figures.items():
        fig, ax = plots.pyplot().subplots(figsize=(6, 4))
        plots.plot_curves(ax, curves, title, dashed=tuple(c for c in curves if "PAV" in c or "predicted" in c))
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
        plots.save(fig, out / name)
