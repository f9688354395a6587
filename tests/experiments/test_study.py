"""``ponder study`` end to end on tiny checkpoints, and its checks of the paper's findings."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from ponder.cli import main
from ponder.experiments.study import (PRM_STRATEGIES, STRATEGIES, StudyConfig, _after_wrong, _analyse,
                                     _budget_to_reach, _context_line, _pairs_ranked, _plan, _revision_context,
                                     findings, run_study, support)
from ponder.search import Candidate


def test_study_runs_bins_cross_validates_and_writes_its_files(checkpoints, tmp_path, capsys):
    policy, prm = checkpoints
    config = StudyConfig(problems=10, budgets=(1, 2, 4), chunk=4, policy=str(policy), prm=str(prm),
                         prover=str(prm), revision=str(policy), resamples=20, out=str(tmp_path / "s"))
    results = run_study(config)
    out = capsys.readouterr().out
    assert set(results["strategies"]) == set(STRATEGIES)
    assert set(results["strategies"]["lookahead"]) == {"2", "4"}
    assert set(results["strategies"]["revisions_balanced"]) == {"2", "4"}
    # Two chains of 2 is the balanced split at 4: run once, recorded under both names.
    assert results["strategies"]["revisions_length_2"] == {"4": results["strategies"]["revisions_balanced"]["4"]}
    assert results["strategies"]["revisions_length_4"] == {}
    assert set(results["oracle"]["accuracy"]) == set(STRATEGIES)  # every strategy per bin
    for per in results["strategies"].values():
        for record in per.values():
            assert len(record["correct"]) == 10 and record["generated_tokens"] > 0
    for kind in ("oracle", "predicted"):
        bins = results[kind]["bins"]
        assert len(bins) == 10 and set(bins) <= set(range(5))
        assert set(results[kind]["compute_optimal"]) == {"1", "2", "4"}
        # Cross-validated choice is never better than the best strategy on every question.
        for budget, accuracy in results[kind]["compute_optimal"].items():
            oracle_best = sum(max(per[budget]["correct"][q] for s, per in results["strategies"].items()
                                  if budget in per and s in PRM_STRATEGIES) for q in range(10)) / 10
            assert accuracy <= oracle_best + 1e-9
        assert set(results[kind]["compute_optimal_revisions"]) == {"1", "2", "4"}
        for budget, accuracy in results[kind]["compute_optimal_revisions"].items():
            oracle_best = sum(max(per[budget]["correct"][q] for s, per in results["strategies"].items()
                                  if budget in per and s.startswith("revisions_")) for q in range(10)) / 10
            assert accuracy <= oracle_best + 1e-9
    assert [p["oracle_pass1"] for p in results["problems"]] and all(0 <= p["oracle_pass1"] <= 1
                                                                     for p in results["problems"])
    for line in results["findings"]:
        assert line["line"] in out
        if not line["ran"]:  # (here: beam search against best-of-N, which needs budgets 4, 16 and 64)
            assert line["line"].startswith("n/a") and "support" not in line and "resamples" not in line["line"]
            continue
        assert line["line"].endswith(f"[holds in {line['support']:.0%} of 20 resamples of the problems]")
        assert line["support"] in {k / 20 for k in range(21)}
    assert sum(not line["ran"] for line in results["findings"]) == 1
    context = results["revision_context"]
    assert set(context) == {"in_chain", "independent"} and _context_line(context) in out
    for totals in context.values():  # a right second attempt never repeats a wrong answer
        assert totals["right"] + totals["repeated"] <= totals["pairs"]
    # Independent pairs: all-parallel at 2 and 4, one and two per problem.
    assert context["independent"]["pairs"] <= 10 * (1 + 2)
    ranking = results["prm_ranking"]  # NaN when no problem had both right and wrong samples
    assert (math.isnan(ranking) or 0 <= ranking <= 1) and "PRM ranking: a right solution scores above" in out
    written = json.loads((tmp_path / "s" / "study.json").read_text())
    assert written["findings"] == results["findings"]
    for picture in ("bins_oracle.png", "bins_predicted.png", "revisions.png", "revision_ratios.png",
                    "compute_optimal.png", "compute_optimal_revisions.png", "pav.png"):
        assert (tmp_path / "s" / picture).read_bytes()[:4] == b"\x89PNG"


def test_study_resumes_from_the_chunks_it_wrote(checkpoints, tmp_path):
    policy, prm = checkpoints
    settings = dict(budgets=(1, 2), chunk=5, policy=str(policy), prm=str(prm), resamples=0, out=str(tmp_path / "s"))
    quiet = dict(log=lambda line: None)
    first = run_study(StudyConfig(problems=10, strategies=("best_of_n_weighted",), **settings), **quiet)
    runs = tmp_path / "s" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["best_of_n_weighted@1", "best_of_n_weighted@2"]
    assert sorted(p.name for p in (runs / "best_of_n_weighted@2").iterdir()) == ["0.json", "5.json"]
    assert first["chunks_read_back"] == {}
    # More problems and another strategy: the first two chunks of each budget are read back.
    lines = []
    more = run_study(StudyConfig(problems=15, strategies=("best_of_n_weighted", "majority"), resume=True,
                                 **settings), log=lines.append)
    assert more["chunks_read_back"] == {"best_of_n_weighted@1": 2, "best_of_n_weighted@2": 2}
    assert sum(line.endswith("(2 of 3 chunks read back)") for line in lines) == 2
    for budget in ("1", "2"):
        old, new = first["strategies"]["best_of_n_weighted"][budget], more["strategies"]["best_of_n_weighted"][budget]
        assert new["correct"][:10] == old["correct"] and len(new["correct"]) == 15
        assert new["generations"] == pytest.approx(float(budget))  # spend per problem, over all 15
    # A study read wholly from the chunks of one run equals that run.
    again = run_study(StudyConfig(problems=15, strategies=("best_of_n_weighted", "majority"), resume=True,
                                  **settings), **quiet)
    assert sum(again["chunks_read_back"].values()) == 12
    assert again["strategies"] == more["strategies"] and again["findings"] == more["findings"]
    # Another seed, or a PRM directory that differs in one byte, makes the stored chunks stale.
    other_seed = run_study(StudyConfig(problems=10, strategies=("best_of_n_weighted",), resume=True, seed=1,
                                       **settings), **quiet)
    assert other_seed["chunks_read_back"] == {}
    changed = tmp_path / "prm-copy"
    shutil.copytree(prm, changed)
    (changed / "config.json").write_text((changed / "config.json").read_text() + "\n")
    changed_prm = run_study(StudyConfig(problems=10, strategies=("best_of_n_weighted",), resume=True,
                                        **{**settings, "prm": str(changed)}), **quiet)
    assert changed_prm["chunks_read_back"] == {}
    (runs / "majority@1" / "5.json").write_text('{"key": ')  # as a crashed writer would leave it, were it not atomic
    with pytest.raises(ValueError, match=r"5.json is not a chunk's record .*delete it to run that chunk again"):
        run_study(StudyConfig(problems=10, strategies=("best_of_n_weighted", "majority"), resume=True, **settings),
                  **quiet)


def test_study_against_rollout_values_keeps_its_chunks_apart_and_needs_no_prover(checkpoints, tmp_path, capsys):
    policy, prm = checkpoints
    settings = dict(problems=10, budgets=(2,), chunk=5, policy=str(policy), prm=str(prm), resamples=0,
                    out=str(tmp_path / "s"), resume=True)
    strategies = ("best_of_n_weighted", "beam_search", "beam_search_pav")
    # No prover is loaded: the PAV's prover is read from the roll-outs.
    results = run_study(StudyConfig(strategies=strategies, rollouts=4, prover=str(tmp_path / "none"), **settings))
    assert results["config"]["rollouts"] == 4 and "Roll-out value ranking" in capsys.readouterr().out
    # A finished solution scores as the checker says, so the roll-out values rank every right one first.
    assert results["prm_ranking"] == 1.0 or math.isnan(results["prm_ranking"])
    key = json.loads((tmp_path / "s" / "runs" / "beam_search_pav@2-rollouts4" / "0.json").read_text())["key"]
    assert key["rollouts"] == 4 and set(key["models"]) == {"policy"}
    beam = results["strategies"]["beam_search_pav"]["2"]
    assert beam["prm_tokens"] == 0 and beam["generated_tokens"] > 2 * 4 * 10  # the roll-outs are sampled tokens
    # A beam search of 2 with width 2 keeps one beam, whose children the PAV ranks as Q does:
    # against Q and against the PAV it draws the same samples and ends the same.
    plain = results["strategies"]["beam_search"]["2"]
    assert plain["correct"] == beam["correct"] and plain["generated_tokens"] == beam["generated_tokens"]
    # The PRM's chunks neither are read as the roll-outs' nor overwrite them.
    with_prm = run_study(StudyConfig(strategies=("best_of_n_weighted",), **settings), log=lambda line: None)
    assert with_prm["chunks_read_back"] == {}
    again = run_study(StudyConfig(strategies=strategies, rollouts=4, **settings), log=lambda line: None)
    assert sum(again["chunks_read_back"].values()) == 6 and again["strategies"] == results["strategies"]
    with pytest.raises(ValueError, match="the PAV's best-of-4 prover needs at least 4 roll-outs, got rollouts=3"):
        run_study(StudyConfig(strategies=strategies, rollouts=3, **settings))
    with pytest.raises(ValueError, match="rollouts must be a positive int, got 0"):
        main(["study", "--rollouts", "0", "--out", str(tmp_path)])


def test_plan_runs_each_revision_split_once_per_budget():
    strategies = ("best_of_n_weighted", "revisions_parallel", "revisions_balanced", "revisions_sequential",
                  "revisions_length_2", "revisions_length_8", "revisions_length_32")
    grid, same_run = _plan(strategies, (1, 4, 16, 64))
    # One chain of one attempt at 1; two chains of 2 at 4 and eight of 8 at 64 are the balanced split.
    assert same_run == {("revisions_sequential", 1): "revisions_parallel",
                        ("revisions_length_2", 4): "revisions_balanced",
                        ("revisions_length_8", 64): "revisions_balanced"}
    assert [s for b, s in grid if b == 1] == ["best_of_n_weighted", "revisions_parallel"]
    assert [s for b, s in grid if b == 16] == ["best_of_n_weighted", "revisions_parallel", "revisions_balanced",
                                               "revisions_sequential", "revisions_length_2", "revisions_length_8"]
    assert [s for b, s in grid if b == 64] == ["best_of_n_weighted", "revisions_parallel", "revisions_balanced",
                                               "revisions_sequential", "revisions_length_2", "revisions_length_32"]


def test_prm_ranking_counts_right_above_wrong_pairs():
    assert _pairs_ranked([(0.9, True), (0.5, False), (0.9, False), (0.1, True)]) == (1.5, 4)
    assert _pairs_ranked([(0.3, True)]) == (0, 0)


def _attempts(*answers) -> list[Candidate]:
    return [Candidate(uid=i, steps=[], answer=a, score=0.5, finished=a is not None) for i, a in enumerate(answers)]


def test_after_wrong_pairs_attempts_in_a_chain_or_across_independent_chains():
    # Two chains of three (answer 7): pairs (5, 5) and (5, 7) in the first, (3, 3) twice in the second.
    assert _after_wrong(_attempts(5, 5, 7, 3, 3, 3), chains=2, length=3, answer=7) == [4, 1, 3]
    # No answer is wrong, and repeating it is not repeating a wrong answer.
    assert _after_wrong(_attempts(None, None, 7), chains=1, length=3, answer=7) == [2, 1, 0]
    # All parallel: chains 0 and 1, then 2 and 3, are the pairs; a fifth chain has no partner.
    assert _after_wrong(_attempts(5, 5, 7, 5, 4), chains=5, length=1, answer=7) == [1, 0, 1]


def test_revision_context_sums_each_run_once_by_whether_attempts_saw_each_other():
    runs = {"revisions_parallel": {4: {"after_wrong": [10, 3, 2]}, 16: {"after_wrong": [30, 9, 4]}},
            "revisions_sequential": {4: {"after_wrong": [5, 1, 4]}},
            "revisions_length_2": {4: {"after_wrong": [99, 99, 0]}},  # the balanced split's run under a second name
            "best_of_n_weighted": {4: {"correct": [True]}}}
    grid = [(4, "best_of_n_weighted"), (4, "revisions_parallel"), (16, "revisions_parallel"),
            (4, "revisions_sequential")]
    context = _revision_context(runs, grid)
    assert context == {"independent": {"pairs": 40, "right": 12, "repeated": 6},
                       "in_chain": {"pairs": 5, "right": 1, "repeated": 4}}
    line = _context_line(context)
    assert "right in 20.0% and repeats the wrong answer in 80.0% of 5 pairs" in line
    assert "right in 30.0% and gives the same wrong answer in 15.0% of 40 pairs" in line
    assert _revision_context(runs, grid[:1]) == {}
    assert "n/a" in _context_line({"in_chain": {"pairs": 0, "right": 0, "repeated": 0},
                                   "independent": {"pairs": 1, "right": 1, "repeated": 0}})


def test_budget_to_reach_interpolates_in_log_budget():
    curve = {1: 0.2, 4: 0.4, 16: 0.6}
    assert _budget_to_reach(curve, 0.1) == 1
    assert math.isclose(_budget_to_reach(curve, 0.5), 8.0)
    assert _budget_to_reach(curve, 0.7) == math.inf


def _problem_records(correct: dict[str, list[int]], budget: int = 64) -> dict:
    """Analysed study results of len(list) problems with spread difficulty scores, each
    strategy's per-problem correctness at ``budget`` given."""
    count = len(next(iter(correct.values())))
    results = {"problems": [{"oracle_pass1": (i % 10) / 10, "predicted": (i % 7) / 7} for i in range(count)],
               "strategies": {s: {str(budget): {"correct": c}} for s, c in correct.items()}}
    _analyse(results, seed=0)
    return results


def test_support_is_the_share_of_problem_resamples_where_a_finding_holds():
    weighted = [1] * 60 + [0] * 40
    # Majority right on every problem weighted best-of-N gets, and one more (the last): the
    # finding fails on these problems, and holds exactly in the resamples without the last
    # problem, (1 - 1/100) ** 100 = 0.366 of them.
    edge = _problem_records({"best_of_n_weighted": weighted, "majority": weighted[:-1] + [1]})
    held = support(edge, (64,), resamples=400, seed=1)
    names = [c["name"] for c in findings(edge, (64,))]
    at_edge = held[names.index("weighted best-of-N at least as accurate as majority at N=64")]
    assert abs(at_edge - 0.99 ** 100) < 0.08
    assert held[names.index("beam search ahead of weighted best-of-N on the middle bins")] == 0  # not run: n/a
    # Majority wrong wherever weighted best-of-N is, and on one more: it holds on every resample.
    ahead = _problem_records({"best_of_n_weighted": weighted, "majority": [0] + weighted[1:]})
    held = support(ahead, (64,), resamples=50, seed=1)
    assert held[names.index("weighted best-of-N at least as accurate as majority at N=64")] == 1.0
    assert support(ahead, (64,), resamples=50, seed=1) == held  # the seed fixes the resamples
    with pytest.raises(ValueError, match="resamples must be a positive int, got 0"):
        support(ahead, (64,), resamples=0)


def _synthetic(beam, bon, majority, optimal, pav, revisions=None):
    """Results with per-bin accuracies (same at every bin but the revision methods', given
    per bin as ``{method: {budget: [5 bins]}}``) and overall curves."""
    def record(acc):
        return {"correct": [1] * round(100 * acc) + [0] * (100 - round(100 * acc))}
    strategies = {"beam_search": {str(b): record(a) for b, a in beam.items()},
                  "best_of_n_weighted": {str(b): record(a) for b, a in bon.items()},
                  "majority": {str(b): record(a) for b, a in majority.items()},
                  "beam_search_pav": {str(b): record(a) for b, a in pav.items()}}
    bins = {"beam_search": {str(b): [a] * 5 for b, a in beam.items()},
            "best_of_n_weighted": {str(b): [a] * 5 for b, a in bon.items()},
            **{m: {str(b): acc for b, acc in per.items()} for m, per in (revisions or {}).items()}}
    kind = {"accuracy": bins, "compute_optimal": {str(b): a for b, a in optimal.items()}}
    return {"strategies": strategies, "oracle": kind, "predicted": kind}


def _revision_bins(easy_order, hard_order):
    """Per-bin accuracies of the three revision splits at 4, 16, 64: on bins 0-1 ranked by
    ``easy_order`` and on bins 3-4 by ``hard_order`` (best first)."""
    def level(method, order):
        return 0.6 - 0.1 * order.index(method)
    return {m: {b: [level(m, easy_order)] * 2 + [0.3] + [level(m, hard_order) - 0.3] * 2 for b in (4, 16, 64)}
            for m in ("revisions_parallel", "revisions_balanced", "revisions_sequential")}


def test_findings_pass_and_fail_on_their_numbers():
    budgets = (1, 4, 16, 64)
    good = _synthetic(beam={1: .2, 4: .5, 16: .6, 64: .6}, bon={1: .2, 4: .4, 16: .5, 64: .6},
                      majority={1: .2, 4: .4, 16: .5, 64: .55}, optimal={1: .2, 4: .5, 16: .62, 64: .65},
                      pav={1: .3, 4: .6, 16: .65, 64: .7},
                      revisions=_revision_bins(["revisions_sequential", "revisions_balanced", "revisions_parallel"],
                                               ["revisions_balanced", "revisions_parallel", "revisions_sequential"]))
    checks = findings(good, budgets)
    assert len(checks) == 9
    not_run = [c["name"] for c in checks if c["line"].startswith("n/a")]
    assert not_run == ["best_of_n_weighted against the PAV at least 1.5x more compute-efficient"]
    assert all(c["pass"] for c in checks if c["name"] not in not_run)
    bad = _synthetic(beam={1: .2, 4: .3, 16: .4, 64: .7}, bon={1: .2, 4: .4, 16: .5, 64: .6},
                     majority={1: .2, 4: .4, 16: .5, 64: .65}, optimal={1: .2, 4: .3, 16: .4, 64: .6},
                     pav={1: .2, 4: .3, 16: .4, 64: .5},
                     revisions=_revision_bins(["revisions_parallel", "revisions_balanced", "revisions_sequential"],
                                              ["revisions_sequential", "revisions_balanced", "revisions_parallel"]))
    assert [c["line"][:4] for c in findings(bad, budgets)] == ["FAIL"] * 6 + ["n/a "] + ["FAIL"] * 2
    without = _synthetic(beam={1: .2, 4: .3, 16: .4, 64: .7}, bon={1: .2, 4: .4, 16: .5, 64: .6},
                         majority={1: .2, 4: .4, 16: .5, 64: .65}, optimal={1: .2, 4: .3, 16: .4, 64: .6},
                         pav={1: .2, 4: .3, 16: .4, 64: .5})
    assert findings(without, budgets)[-1]["line"].startswith("n/a   sequential revisions against parallel sampling")


def test_interior_ratio_check_takes_the_best_split_of_the_sweep():
    curves = dict(beam={1: .2, 4: .5, 16: .6, 64: .6}, bon={1: .2, 4: .4, 16: .5, 64: .6},
                  majority={1: .2, 4: .4, 16: .5, 64: .55}, optimal={1: .2, 4: .5, 16: .62, 64: .65},
                  pav={1: .3, 4: .6, 16: .65, 64: .7})
    # On bins 3-4 one sequential chain (0.3) beats the balanced split (0.2) at every budget,
    # but two chains of 8 at 16 and four chains of 16 at 64 beat both ends (0.45).
    revisions = _revision_bins(["revisions_sequential", "revisions_balanced", "revisions_parallel"],
                               ["revisions_sequential", "revisions_balanced", "revisions_parallel"])
    revisions["revisions_length_8"] = {16: [0.5] * 2 + [0.3] + [0.45] * 2}
    revisions["revisions_length_16"] = {64: [0.5] * 2 + [0.3] + [0.45] * 2}

    def interior(results):
        return next(c for c in findings(results, (1, 4, 16, 64)) if c["name"].startswith("an interior"))
    check = interior(_synthetic(**curves, revisions=revisions))
    # The check is the largest budget's; the line shows every budget, 4's interior split behind.
    assert check["pass"] and check["line"].endswith(
        "budget 4: best interior split (2 chains of 2) - best of the two ends = -0.100, "
        "budget 16: best interior split (2 chains of 8) - best of the two ends = +0.150, "
        "budget 64: best interior split (4 chains of 16) - best of the two ends = +0.150")
    del revisions["revisions_length_16"]  # at 64 only the balanced split (8 chains of 8) is interior
    check = interior(_synthetic(**curves, revisions=revisions))
    assert not check["pass"] and check["line"].endswith(
        "budget 64: best interior split (8 chains of 8) - best of the two ends = -0.100")


def test_compute_optimal_revisions_check_against_all_parallel():
    curves = dict(beam={1: .2, 4: .5, 16: .6, 64: .6}, bon={1: .2, 4: .4, 16: .5, 64: .6},
                  majority={1: .2, 4: .4, 16: .5, 64: .55}, optimal={1: .2, 4: .5, 16: .62, 64: .65},
                  pav={1: .3, 4: .6, 16: .65, 64: .7})
    results = _synthetic(**curves)
    results["strategies"]["revisions_parallel"] = {"64": {"correct": [1] * 70 + [0] * 30}}
    results["oracle"] = dict(results["oracle"], compute_optimal_revisions={"1": .5, "4": .6, "16": .7, "64": .75})
    results["predicted"] = dict(results["predicted"], compute_optimal_revisions={"1": .5, "4": .6, "16": .66, "64": .7})
    checks = {c["name"]: c for c in findings(results, (1, 4, 16, 64)) if "revisions (" in c["name"]}
    oracle = checks["compute-optimal revisions (oracle bins) reaches all-parallel sampling's accuracy at 64 with at "
                    "most 16"]
    predicted = checks["compute-optimal revisions (predicted bins) reaches all-parallel sampling's accuracy at 64 "
                       "with at most 16"]
    assert oracle["pass"] and "reaches it at budget 16.0" in oracle["line"]
    assert not predicted["pass"] and "all-parallel sampling at 64: 0.700; " in predicted["line"]


def test_cli_study_rejects_too_few_problems_and_negative_resamples(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="at least 10 problems"):
        main(["study", "--problems", "4", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="resamples must be a non-negative int, got -1"):
        main(["study", "--resamples", "-1", "--out", str(tmp_path)])


def test_pav_efficiency_bounds_a_budget_the_prm_never_reaches():
    # Measured once: the PAV a problem ahead at 4, where the PRM curve only falls after 1.
    results = _synthetic(beam={1: .38, 4: .373, 16: .353, 64: .32}, bon={1: .2, 4: .4, 16: .5, 64: .6},
                         majority={1: .2, 4: .4, 16: .5, 64: .55}, optimal={1: .2, 4: .5, 16: .62, 64: .65},
                         pav={1: .38, 4: .387, 16: .367, 64: .353})
    line = next(c for c in findings(results, (1, 4, 16, 64)) if c["name"].startswith("beam_search against the PAV"))
    # 4: the PRM never reaches 0.387, so 64 / 4 stands in as a lower bound; 16 and 64: reached at 1.
    assert "4: >=16.00x" in line["line"] and "16: 0.06x" in line["line"] and not line["pass"]
    assert line["line"].startswith("FAIL  beam_search against the PAV at least 1.5x") and "0.35x" in line["line"]
