"""Each search method on a synthetic policy and verifier, against a brute-force computation of its choices."""

from __future__ import annotations

import math

import pytest
import torch

from ponder.search import Sampling, beam_search, best_of_n, dvts, lookahead_search, mcts, revisions
from ponder.search.beam import rank
from search_toys import (ToyPolicy, ToyVerifier, answer, answer_of, finished, reference_dvts, reference_lookahead,
                         reference_mcts, value, weighted_answer)

QUESTIONS = ["first", "second", "third"]


def toys(continue_labels: bool = False):
    return ToyPolicy(continue_labels), ToyVerifier()


def finals_of(result, prompt):
    return [(tuple(c.steps), c.score) for c in result.results[prompt].candidates]


def check_clean(policy, verifier):
    assert not policy.live, f"policy branches leaked: {sorted(policy.live)}"
    assert not verifier.live, f"verifier branches leaked: {sorted(verifier.live)}"


def test_rank_puts_nan_last_and_keeps_ties_in_order():
    assert rank([0.5, float("nan"), 0.9, 0.5, -1.0]) == [2, 0, 3, 4, 1]


@pytest.mark.parametrize("n, width, k, max_steps", [(8, 2, 0, 40), (16, 4, 0, 3), (4, 4, 0, 40), (8, 2, 1, 40),
                                                    (12, 3, 2, 40), (6, 1, 3, 2)])
def test_beam_and_lookahead_keep_exactly_what_brute_force_keeps(n, width, k, max_steps):
    policy, verifier = toys()
    search = beam_search if k == 0 else lookahead_search
    kwargs = {} if k == 0 else {"k": k}
    result = search(policy, verifier, QUESTIONS, n, width, answer_of=answer_of, max_steps=max_steps, seed=3, **kwargs)
    for prompt in range(len(QUESTIONS)):
        want_finals, want_pruned = reference_lookahead(n, width, k, max_steps, prompt)
        assert finals_of(result, prompt) == want_finals
        pruned = sorted(tuple(x.text for x in result.tree.path(node.uid)[1:])
                        for node in result.tree.nodes.values() if node.prompt == prompt and node.status == "pruned")
        assert pruned == sorted(want_pruned)
        want_answer, want_weight = weighted_answer(want_finals)
        assert result.results[prompt].answer == want_answer
        assert result.results[prompt].weight == pytest.approx(want_weight, rel=1e-6)
    assert result.spend.generations == n * (k + 1) * len(QUESTIONS)
    check_clean(policy, verifier)


def test_lookahead_scores_are_the_verifier_values_at_the_end_of_greedy_rollouts():
    policy, verifier = toys()
    lookahead_search(policy, verifier, ["q"], 4, 2, k=2, answer_of=answer_of, max_steps=1)
    # 4 candidates scored on their own, then the ends of their roll-outs, which stop early
    # when the solution ends: ("j", "0") is finished, so no roll-out takes its second step
    assert verifier.scored[:4] == [("0",), ("1",), ("2",), ("3",)]
    assert verifier.scored[4:] == [("0", "0"), ("1", "0"), ("2", "0"), ("3", "0")]


def test_beam_search_budget_counts_every_sampled_step():
    policy, verifier = toys()
    n, width = 8, 2
    result = beam_search(policy, verifier, ["q"], n, width, answer_of=answer_of)
    # brute force: n first steps, then width children of each of the n / width best unfinished candidates
    candidates, sampled = [(str(j),) for j in range(n)], n
    while candidates:
        unfinished = [c for c in candidates if not finished(c)]
        survivors = sorted(unfinished, key=lambda c: -value(c))[:n // width]
        candidates = [s + (str(j),) for s in survivors for j in range(width)]
        sampled += len(candidates)
    assert result.spend.generated_tokens == sampled
    assert result.spend.generations == n


@pytest.mark.parametrize("selection", ["max", "weighted", "majority"])
def test_best_of_n_selects_by_the_vote_arithmetic(selection):
    policy, verifier = toys()
    n = 6
    result = best_of_n(policy, verifier, QUESTIONS, n, answer_of=answer_of, selection=selection)
    for prompt in range(len(QUESTIONS)):
        # every chain: child j of the root, then the first child ("0") until finished
        want = []
        for j in range(n):
            path = (str(j),)
            while not finished(path):
                path += ("0",)
            want.append((path, value(path, prompt)))
        got = finals_of(result, prompt)
        assert [p for p, _ in got] == [p for p, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-6)
        if selection == "max":
            best = max(range(n), key=lambda i: (want[i][1], -i))
            expected = answer(want[best][0])
        elif selection == "weighted":
            expected, _ = weighted_answer(want)
        else:
            expected, _ = weighted_answer([(p, 1.0) for p, _ in want])
        assert result.results[prompt].answer == expected
    assert result.spend.generations == n * len(QUESTIONS)
    check_clean(policy, verifier)


@pytest.mark.parametrize("n, width, max_steps", [(8, 2, 40), (12, 4, 40), (4, 4, 2)])
def test_dvts_subtrees_are_independent_greedy_beams(n, width, max_steps):
    policy, verifier = toys()
    result = dvts(policy, verifier, QUESTIONS, n, width, answer_of=answer_of, max_steps=max_steps)
    for prompt in range(len(QUESTIONS)):
        assert finals_of(result, prompt) == reference_dvts(n, width, max_steps, prompt)
        # independence: each final beam's path has a distinct first node (its own subtree)
        firsts = [result.tree.path(c.uid)[1].uid for c in result.results[prompt].candidates]
        assert len(set(firsts)) == n // width
    check_clean(policy, verifier)


def test_methods_reject_bad_shapes():
    policy, verifier = toys()
    with pytest.raises(ValueError, match="multiple of the beam width"):
        beam_search(policy, verifier, ["q"], 6, 4, answer_of=answer_of)
    with pytest.raises(ValueError, match="n must be >= 1"):
        best_of_n(policy, verifier, ["q"], 0, answer_of=answer_of)
    with pytest.raises(ValueError, match="selection must be one of"):
        best_of_n(policy, verifier, ["q"], 2, answer_of=answer_of, selection="best")
    check_clean(policy, verifier)  # a failed search frees what it made


def test_the_tree_exports_and_marks_the_chosen_path(tmp_path):
    policy, verifier = toys()
    result = beam_search(policy, verifier, ["q"], 4, 2, answer_of=answer_of, sampling=Sampling(temperature=0.5))
    data = result.to_dict()
    assert data["method"] == "beam_search" and data["config"]["width"] == 2
    chosen = [n for n in data["tree"]["nodes"] if n["status"] == "chosen"]
    assert [n["text"] for n in chosen][1:] == result.results[0].solution.steps
    result.tree.save_json(tmp_path / "tree.json")
    assert (tmp_path / "tree.json").stat().st_size > 0


@pytest.mark.parametrize("k, iterations, c, puct, widening", [
    (3, 12, 1.0, False, None), (2, 30, 0.3, False, None), (4, 10, 2.0, True, None), (2, 60, 1.0, False, None),
    (2, 60, 0.1, False, 0.5), (2, 40, 0.5, True, 0.5), (1, 30, 1.0, False, 1.0)])
def test_mcts_visits_and_values_match_brute_force_uct(k, iterations, c, puct, widening):
    policy, verifier = toys(continue_labels=True)
    result = mcts(policy, verifier, QUESTIONS, answer_of=answer_of, k=k, iterations=iterations, c=c, puct=puct,
                  widening=widening)
    for prompt in range(len(QUESTIONS)):
        want = reference_mcts(k, iterations, c, puct, prompt, widening)
        got = {}
        for node in result.tree.nodes.values():
            if node.prompt == prompt:
                path = tuple(x.text for x in result.tree.path(node.uid)[1:])
                got[path] = (node.visits, node.value * node.visits)
        assert set(got) == set(want)
        for path, (visits, total) in want.items():
            assert got[path][0] == visits, path
            assert got[path][1] == pytest.approx(total, rel=1e-9, abs=1e-9), path
        # the answer: follow the most visited children
        node, best = (), None
        while any(p[:-1] == node and len(p) == len(node) + 1 for p in want):
            kids = [p for p in want if len(p) == len(node) + 1 and p[:-1] == node]
            node = max(kids, key=lambda p: (want[p][0], want[p][1] / want[p][0], -kids.index(p)))
        assert result.results[prompt].solution.steps == list(node)
    check_clean(policy, verifier)


def test_mcts_stops_at_the_token_budget_and_when_the_tree_is_exhausted():
    policy, verifier = toys()
    result = mcts(policy, verifier, ["q"], answer_of=answer_of, k=2, iterations=1000, max_tokens=9)
    assert 9 <= result.spend.generated_tokens < 9 + 2  # one expansion of k=2 may cross the budget
    policy, verifier = toys()
    result = mcts(policy, verifier, ["q"], answer_of=answer_of, k=2, iterations=10_000)
    leaves = [n for n in result.tree.nodes.values() if not any(m.parent == n.uid for m in result.tree.nodes.values())]
    assert all(n.finished for n in leaves)  # it stopped because nothing was left to expand
    assert result.spend.generated_tokens == len(result.tree.nodes) - 1
    check_clean(policy, verifier)


def test_mcts_with_widening_keeps_sampling_where_a_small_tree_would_be_exhausted():
    policy, verifier = toys()
    narrow = mcts(policy, verifier, ["q"], answer_of=answer_of, k=1, iterations=200)
    assert len(narrow.tree.nodes) - 1 == 2  # one child a node: the single path "0", "0", exhausted
    policy, verifier = toys(continue_labels=True)
    wide = mcts(policy, verifier, ["q"], answer_of=answer_of, k=1, iterations=200, widening=0.5)
    root = next(n for n in wide.tree.nodes.values() if n.parent is None)
    assert len(wide.tree.nodes) - 1 == wide.spend.generated_tokens > 40  # the tree kept growing
    assert 1 < sum(n.parent == root.uid for n in wide.tree.nodes.values()) <= math.floor(root.visits ** 0.5)
    check_clean(policy, verifier)  # expanded nodes stayed live to be forked again, and are freed at the end
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match=f"widening .* must be in \\(0, 1\\] or None, got {bad}"):
            mcts(policy, verifier, ["q"], answer_of=answer_of, widening=bad)


@pytest.mark.parametrize("by", ["value", "vote"])
def test_mcts_answer_by_best_value_or_vote_over_finished_leaves(by):
    policy, verifier = toys()
    result = mcts(policy, verifier, ["q"], answer_of=answer_of, k=3, iterations=40, answer=by)
    finished_leaves = [(tuple(x.text for x in result.tree.path(n.uid)[1:]), n.score)
                       for n in result.tree.nodes.values() if n.finished]
    if by == "value":
        best = max(range(len(finished_leaves)), key=lambda i: (finished_leaves[i][1], -i))
        assert result.results[0].answer == answer(finished_leaves[best][0])
    else:
        assert result.results[0].answer == weighted_answer(finished_leaves)[0]
    check_clean(policy, verifier)


@pytest.mark.parametrize("chains, length, max_context", [(2, 3, 4), (3, 6, 4), (1, 5, 2), (2, 2, 0)])
def test_revisions_see_the_last_attempts_and_select_hierarchically(chains, length, max_context):
    policy, verifier = toys()
    result = revisions(policy, verifier, QUESTIONS[:2], answer_of=answer_of, chains=chains, length=length,
                       max_context=max_context)
    for q in range(2):
        # attempt r of a chain sees min(r, max_context) earlier attempts: its first step is that count
        attempts = []
        for r in range(length):
            path = (str(min(r, max_context)),)
            while not finished(path):
                path += ("0",)
            attempts.append((path, float(torch.tensor(value(path, q), dtype=torch.float32))))
        listed = [(tuple(c.steps), c.score) for c in result.results[q].candidates]
        assert listed == attempts * chains
        # hierarchical: weighted best-of-N in each chain (all chains alike here), then across the chains' picks
        best_answer, _ = weighted_answer(attempts)
        pick = max((i for i, (p, _) in enumerate(attempts) if answer(p) == best_answer),
                   key=lambda i: (attempts[i][1], -i))
        assert result.results[q].answer == best_answer
        assert result.results[q].weight == pytest.approx(chains * attempts[pick][1], rel=1e-6)
    assert result.spend.generations == chains * length * 2
    contexts = policy.contexts  # the last round's prompts: one per chain and question
    assert all(c.count("Attempt ") == min(length - 1, max_context) for c in contexts)
    check_clean(policy, verifier)


def test_revisions_majority_counts_every_attempt():
    policy, verifier = toys()
    result = revisions(policy, verifier, ["q"], answer_of=answer_of, chains=3, length=4, selection="majority")
    answers = [c.answer for c in result.results[0].candidates]
    assert len(answers) == 12
    assert result.results[0].weight == max(answers.count(a) for a in set(answers))


def test_tree_renders_to_png(tmp_path):
    pytest.importorskip("matplotlib")  # installed with the test extras; CI has it
    policy, verifier = toys()
    result = mcts(policy, verifier, ["q"], answer_of=answer_of, k=3, iterations=12)
    path = result.tree.render(tmp_path / "tree.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no node of prompt 3"):
        result.tree.render(tmp_path / "none.png", prompt=3)


def test_verified_solutions_export_as_jsonl(tmp_path):
    import json

    policy, verifier = toys()
    result = best_of_n(policy, verifier, QUESTIONS[:2], 4, answer_of=answer_of)
    path = tmp_path / "verified.jsonl"
    written = result.export_verified(path, lambda p, c: c.answer == 0)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    want = [(r.question, c.text) for r in result.results for c in r.candidates if c.answer == 0]
    assert written == len(lines) == len(want) > 0
    assert [(x["question"], x["solution"]) for x in lines] == want


def test_progress_line_reports_rounds(capsys):
    policy, verifier = toys()
    beam_search(policy, verifier, ["q"], 4, 2, answer_of=answer_of, progress=True)
    err = capsys.readouterr().err
    assert "beam_search [" in err and "tokens=" in err and err.endswith("\n")
    beam_search(policy, verifier, ["q"], 4, 2, answer_of=answer_of, progress=False)
    assert capsys.readouterr().err == ""
