"""End to end on a tiny random Llama policy and a tiny PRM: the fast path builds exactly the reference path's trees.

The fast path forks the policy's and the PRM's paged KV caches; the reference path
recomputes every prefix from scratch (the policy's ``reference=True`` mode, and a
verifier that scores whole solutions with a dense PRM forward). With the same seeds
both must sample the same tokens, make the same choices, and end with the same tree;
afterwards the fast path's KV pools hold no block.
"""

from __future__ import annotations

import pytest
import torch

from ponder.models import CausalLM, ModelConfig
from ponder.prm import load_prm
from ponder.search import (ModelPolicy, PRMVerifier, Sampling, beam_search, best_of_n, dvts, lookahead_search,
                           mcts)
from ponder.tasks import tokenizer as task_tokenizer
from prm_checkpoints import LOAD_ARGS, save_prm_checkpoint

QUESTIONS = ["3 + 4 * 2", "(12 - 5) * 3"]
SAMPLING = Sampling(temperature=1.0, top_k=8)


class DensePRMVerifier:
    """The reference verifier: each branch's steps scored from scratch, the whole solution every time."""

    def __init__(self, prm):
        self.prm, self.live, self.questions = prm, set(), []

    def attach(self, roots, questions, spend):
        self.questions = list(questions)
        self.live.update(r.uid for r in roots)

    def fork(self, parent, children):
        self.live.update(c.uid for c in children)

    def free(self, branch):
        self.live.remove(branch.uid)

    def score(self, branches, spend):
        out = torch.full((len(branches),), float("nan"))
        scored = [i for i, b in enumerate(branches) if b.steps]
        if scored:
            _, values = self.prm.score([self.questions[branches[i].prompt] for i in scored],
                                       [branches[i].steps for i in scored])
            out[scored] = values
        return out


@pytest.fixture(scope="module")
def policy_model():
    tokenizer = task_tokenizer.build_tokenizer()
    config = ModelConfig("llama", vocab_size=tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=64,
                         num_layers=2, num_heads=4, num_kv_heads=2)
    model = CausalLM(config)
    model.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():  # sharper logits than the default init, so that steps differ; no early end
        model.lm_head.weight.mul_(40.0)
        model.lm_head.weight[tokenizer.token_to_id("<eos>")] = 0.0  # a middling logit: top-k mostly drops it
    return model, tokenizer


@pytest.fixture(scope="module")
def prm(tmp_path_factory):
    directory, _ = save_prm_checkpoint(tmp_path_factory.mktemp("search-prm"), "value")
    return load_prm(directory, **LOAD_ARGS["value"])


def answer_of(branch):
    return len(branch.text) % 3


def run(method, policy_model, prm, reference: bool, **kwargs):
    model, tokenizer = policy_model
    policy = ModelPolicy(model, tokenizer, prompt_template="Q: {question}\nA:\n", max_step_tokens=6, max_steps=4,
                         cache_tokens=4096, block_size=4, reference=reference)
    scorer = None if reference else prm.scorer(num_blocks=1024, block_size=4)
    verifier = DensePRMVerifier(prm) if reference else PRMVerifier(scorer)
    result = method(policy, verifier, QUESTIONS, answer_of=answer_of, sampling=SAMPLING, seed=7, **kwargs)
    assert policy.live_branches == 0
    if not reference:
        assert policy.cache.stats().blocks.used == 0 and scorer.cache.stats().blocks.used == 0
        policy.cache.check_invariants()
        scorer.cache.check_invariants()
    return result


@pytest.mark.parametrize("method, kwargs", [(best_of_n, dict(n=4)), (beam_search, dict(n=4, width=2)),
                                            (lookahead_search, dict(n=4, width=2, k=1)), (dvts, dict(n=4, width=2)),
                                            (mcts, dict(k=2, iterations=6, puct=True)),
                                            (mcts, dict(k=2, iterations=4, evaluate="rollout", answer="vote")),
                                            (mcts, dict(k=1, iterations=8, widening=0.5))],
                         ids=["best_of_n", "beam", "lookahead", "dvts", "mcts", "mcts-rollout", "mcts-widening"])
def test_fast_path_builds_the_reference_paths_tree(policy_model, prm, method, kwargs):
    fast = run(method, policy_model, prm, reference=False, **kwargs)
    slow = run(method, policy_model, prm, reference=True, **kwargs)
    fast_nodes, slow_nodes = fast.tree.to_dict()["nodes"], slow.tree.to_dict()["nodes"]
    assert [(n["uid"], n["parent"], n["text"], n["status"]) for n in fast_nodes] == \
        [(n["uid"], n["parent"], n["text"], n["status"]) for n in slow_nodes]
    fast_scores = torch.tensor([float("nan") if n["score"] is None else n["score"] for n in fast_nodes])
    slow_scores = torch.tensor([float("nan") if n["score"] is None else n["score"] for n in slow_nodes])
    torch.testing.assert_close(fast_scores, slow_scores, atol=1e-4, rtol=0, equal_nan=True)
    assert fast.answers == slow.answers
    assert len({n["text"] for n in fast_nodes if n["parent"] is not None}) > 3  # the steps differ
    spend = fast.spend
    assert spend.generated_tokens == slow.spend.generated_tokens > 0
    assert 0 < spend.prm_tokens and 0 < spend.policy_forward_tokens < slow.spend.policy_forward_tokens


def test_searches_are_deterministic_under_a_seed(policy_model, prm):
    texts = lambda result: [(n["parent"], n["text"]) for n in result.tree.to_dict()["nodes"]]  # noqa: E731
    first = run(beam_search, policy_model, prm, reference=False, n=4, width=2)
    again = run(beam_search, policy_model, prm, reference=False, n=4, width=2)
    assert texts(first) == texts(again) and first.answers == again.answers
    model, tokenizer = policy_model
    other = ModelPolicy(model, tokenizer, prompt_template="Q: {question}\nA:\n", max_step_tokens=6, max_steps=4,
                        cache_tokens=4096, block_size=4)
    different = beam_search(other, PRMVerifier(prm.scorer(num_blocks=1024, block_size=4)), QUESTIONS, 4, 2,
                            answer_of=answer_of, sampling=SAMPLING, seed=8)
    assert texts(different) != texts(first)
