"""``ponder demo`` end to end on tiny checkpoints, and the methods-at-a-budget table it runs."""

from __future__ import annotations

import json

import pytest

from ponder.cli import main
from ponder.experiments.demo import DemoConfig, format_table, run_demo
from ponder.experiments.searchers import Searchers
from ponder.experiments.methods import METHODS, REVISION_METHODS, feasible, revision_split, run_method
from ponder.search import CheckerVerifier
from ponder.tasks import split


def test_demo_runs_every_method_and_writes_table_plot_json_and_tree(checkpoints, tmp_path, capsys):
    policy, prm = checkpoints
    config = DemoConfig(budgets=(1, 2, 4), problems=3, policy=str(policy), prm=str(prm), out=str(tmp_path / "demo"))
    results = run_demo(config, progress=True)
    captured = capsys.readouterr()
    assert "demo [" in captured.err  # the progress line
    grid = [(row["method"], row["budget"]) for row in results["rows"]]
    assert grid == [(m, b) for b in (1, 2, 4) for m in METHODS if feasible(m, b)]
    assert ("lookahead", 1) not in grid and ("lookahead", 2) in grid
    problems = split("test", 3)
    for row in results["rows"]:
        assert row["accuracy"] == sum(a == p.answer for a, p in zip(row["answers"], problems)) / 3
        assert row["generated_tokens"] > 0 and row["prm_tokens"] > 0 and row["wall_s"] > 0
        assert set(row["phase_s"]) == {"sampling", "model", "prm", "other"}
        assert format_table([row]).split()[0] == row["method"]  # printed as it went
        assert format_table([row]) in captured.out
    for budget in (1, 2, 4):
        best_of_n = [row for row in results["rows"]
                     if row["budget"] == budget and row["method"] in ("best_of_n_max", "best_of_n_weighted", "majority")]
        assert len({row["generated_tokens"] for row in best_of_n}) == 1  # one set of samples, selected three ways
        assert all(row["generations"] == budget for row in best_of_n)
    out = tmp_path / "demo"
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
    for picture in ("accuracy.png", "tree.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "tree.json").read_text())["nodes"]


def test_cli_demo_on_own_checkpoints(checkpoints, tmp_path, capsys):
    policy, prm = checkpoints
    main(["demo", "--policy", str(policy), "--prm", str(prm), "--methods", "majority", "beam_search",
          "--budgets", "2", "--problems", "2", "--out", str(tmp_path / "d")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["method", "budget", "accuracy"]
    assert [line.split()[:2] for line in lines[1:3]] == [["majority", "2"], ["beam_search", "2"]]
    assert (tmp_path / "d" / "results.json").is_file()


@pytest.mark.parametrize("config,message", [
    (dict(methods=("best_of_n", )), "unknown method 'best_of_n'"),
    (dict(budgets=(0, 4)), "budgets must be positive"),
    (dict(problems=0), "problems must be >= 1"),
])
def test_demo_rejects_bad_settings(checkpoints, tmp_path, config, message):
    with pytest.raises(ValueError, match=message):
        run_demo(DemoConfig(out=str(tmp_path), **config))


def test_methods_at_a_budget(checkpoints):
    assert [b for b in range(1, 9) if feasible("lookahead", b)] == [2, 4, 6, 8]
    assert [b for b in range(1, 9) if feasible("mcts", b)] == [2, 3, 4, 5, 6, 7, 8]
    searchers = Searchers.load(*map(str, checkpoints))
    problems = split("test", 2)
    from ponder.builtin import task_answer, task_checker, task_policy

    def run(method, budget, **options):
        return run_method(method, budget, task_policy(searchers.model, searchers.tokenizer),
                          CheckerVerifier(task_checker(problems)), [p.prompt for p in problems],
                          answer_of=task_answer, **options)

    # Beam width: the largest divisor of the beams up to 4; lookahead spends (k + 1) per beam.
    assert run("beam_search", 6).result.config["width"] == 3
    assert run("lookahead", 8).result.config["n"] == 4
    assert run("mcts", 4, tokens_per_generation=20).result.config["max_tokens"] == 80
    with pytest.raises(ValueError, match="lookahead needs a multiple of 2"):
        run("lookahead", 3)
    with pytest.raises(ValueError, match="MCTS needs tokens_per_generation"):
        run("mcts", 4)
    with pytest.raises(ValueError, match="MCTS at least 2"):
        run("mcts", 1, tokens_per_generation=20)
    with pytest.raises(ValueError, match="unknown method"):
        run("beam", 2)
    # Revisions: chains x attempts per chain spend the budget; balanced chains are about sqrt(N) long.
    splits = {(m, b): revision_split(m, b) for m in REVISION_METHODS for b in (2, 4, 6, 8, 16, 64)
              if feasible(m, b)}
    assert all(chains * length == b for (_, b), (chains, length) in splits.items())
    assert [splits["revisions_balanced", b] for b in (2, 4, 6, 8, 16, 64)] == \
        [(1, 2), (2, 2), (3, 2), (2, 4), (4, 4), (8, 8)]
    assert splits["revisions_parallel", 16] == (16, 1) and splits["revisions_sequential", 16] == (1, 16)
    with pytest.raises(ValueError, match="unknown revision method"):
        revision_split("revisions", 4)
    # The sweep: chains of L attempts, two chains or more.
    assert [b for b in range(1, 17) if feasible("revisions_length_4", b)] == [8, 12, 16]
    assert revision_split("revisions_length_8", 64) == (8, 8) and revision_split("revisions_length_32", 64) == (2, 32)
    for method, budget, chains_length in (("revisions_balanced", 4, (2, 2)), ("revisions_length_2", 6, (3, 2))):
        config = run(method, budget).result.config
        assert (config["chains"], config["length"]) == chains_length
    for method, budget, message in (("revisions_balanced", 1, "balanced revisions at least 2"),
                                    ("revisions_length_4", 4, "revisions_length_L a multiple of L of at least 2L"),
                                    ("revisions_length_4", 10, "revisions_length_L a multiple of L of at least 2L")):
        with pytest.raises(ValueError, match=message):
            run(method, budget)
    with pytest.raises(ValueError, match="needs the revision model"):
        searchers.run("revisions_parallel", 2, problems)
