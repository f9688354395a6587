"""The models an experiment searches with, and one method run on a set of the task's problems.

:class:`Searchers` holds the policy, the PRM, and when asked for them the prover PRM (for
process advantage verifiers) and the revision model (the policy of the revision
methods), loaded from checkpoint directories or the shipped ones. Each run gets a
fresh policy KV cache and fresh PRM scorers sized for its budget, so no run profits
from prefixes another left in a cache, and the runs' spends compare. A run may search
against the policy's own Monte-Carlo values instead of the PRMs (``rollouts``): the
values the PRM and the prover are trained to approximate, to tell what a method can do
from what the trained verifiers let it do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ponder
from ponder.builtin import checkpoint, task_answer, task_checker, task_policy
from ponder.experiments.methods import MethodRun, run_method, uses_revision_model
from ponder.models import load_tokenizer
from ponder.prm import ProgressScorer
from ponder.search import MonteCarloProgressVerifier, ModelPolicy, PRMVerifier, Sampling, SearchResult, Verifier
from ponder.tasks import ArithmeticTask, Problem

__all__ = ["Searchers", "KV_TOKENS_PER_GENERATION", "KV_TOKENS_PER_ROLLOUT", "PROVER_BEST_OF", "solution_tokens",
           "fingerprint"]

KV_TOKENS_PER_GENERATION = 192
"""KV room per generation of the budget: a solution is about 50 tokens, but every tree
node a method keeps (MCTS keeps up to five per generation) holds a partly filled block
of its own."""
KV_TOKENS_PER_ROLLOUT = 64
"""KV room per roll-out of a scored branch: its own copy of the branch's partly filled last
block and the rest of a solution (about 50 tokens at most)."""
PROVER_BEST_OF = 4
"""K of the best-of-K prover whose value the roll-outs estimate for a Monte-Carlo PAV (the
shipped prover PRM is trained on the same kind of labels: ``--prover-best-of 4``)."""


@dataclass
class Searchers:
    """The policy (with its tokenizer), the PRM, optionally the prover PRM and the revision
    model (which shares the policy's tokenizer); ``names`` says where each came from, and
    ``fingerprints`` (when loaded from directories) what each directory held (:func:`fingerprint`)."""

    model: ponder.models.CausalLM
    tokenizer: object
    prm: ponder.prm.PRM
    prover: ponder.prm.PRM | None = None
    reviser: ponder.models.CausalLM | None = None
    names: dict = field(default_factory=dict)
    fingerprints: dict = field(default_factory=dict)

    @classmethod
    def load(cls, policy: str | None = None, prm: str | None = None, prover: str | None = None,
             revision: str | None = None, *, with_prover: bool = False, with_revision: bool = False) -> "Searchers":
        """Load checkpoint directories (None: the shipped ones); the prover only ``with_prover``,
        the revision model only ``with_revision``."""
        paths = {"policy": Path(policy) if policy else checkpoint("policy"),
                 "prm": Path(prm) if prm else checkpoint("prm")}
        names = {"policy": str(policy or "built-in"), "prm": str(prm or "built-in")}
        prover_prm = reviser = None
        if with_prover:
            paths["prover"] = Path(prover) if prover else checkpoint("prover")
            prover_prm = ponder.load_prm(paths["prover"])
            names["prover"] = str(prover or "built-in")
        if with_revision:
            paths["revision"] = Path(revision) if revision else checkpoint("revision")
            reviser = ponder.load_model(paths["revision"])
            names["revision"] = str(revision or "built-in")
        return cls(ponder.load_model(paths["policy"]), load_tokenizer(paths["policy"]), ponder.load_prm(paths["prm"]),
                   prover_prm, reviser, names, {name: fingerprint(path) for name, path in paths.items()})

    def verifier(self, tokens: int, *, aggregate: str = "last", pav_alpha: float | None = None) -> PRMVerifier:
        """A PRM verifier with KV room for ``tokens``; with ``pav_alpha``, PAV's ``Q + alpha * A``
        over the PRM and the prover."""
        base = self.prm.scorer(tokens, aggregate=aggregate)
        if pav_alpha is None:
            return PRMVerifier(base)
        if self.prover is None:
            raise ValueError("a process advantage verifier needs the prover PRM: load with with_prover=True")
        return PRMVerifier(ProgressScorer(base, self.prover.scorer(tokens), alpha=pav_alpha))

    def rollout_verifier(self, policy: ModelPolicy, problems: Sequence[Problem], rollouts: int, *,
                         pav_alpha: float | None = None, seed: int = 0, temperature: float = 1.0) -> Verifier:
        """The policy's Monte-Carlo value over ``rollouts`` roll-outs of each scored branch (a
        finished one scores as the task's checker says); with ``pav_alpha``, the PAV's ``Q +
        alpha * A`` with the best-of-:data:`PROVER_BEST_OF` prover read from the same roll-outs.
        ``policy`` must be the one the search expands (the roll-outs fork its branches).

        Both are a :class:`~ponder.search.MonteCarloProgressVerifier` (``Q`` alone: alpha 0),
        which rolls out the prompts too, so that a search against ``Q`` and one against the
        PAV draw the same samples wherever their rankings agree: the two compare pairwise,
        not through two independent draws."""
        return MonteCarloProgressVerifier(policy, task_checker(problems), k=rollouts,
                                          best_of=1 if pav_alpha is None else PROVER_BEST_OF,
                                          alpha=0.0 if pav_alpha is None else pav_alpha,
                                          sampling=Sampling(temperature=temperature), seed=seed)

    def run(self, method: str, budget: int, problems: Sequence[Problem], *, seed: int = 0, temperature: float = 1.0,
            aggregate: str = "last", pav_alpha: float | None = None, rollouts: int | None = None,
            best_of_n_result: SearchResult | None = None) -> MethodRun:
        """``method`` (see :data:`~ponder.experiments.methods.METHODS`; ``REVISION_METHODS`` and
        ``REVISION_SWEEP`` sample from the revision model) at ``budget`` generations on ``problems``;
        with ``rollouts``, against the policy's Monte-Carlo values (:meth:`rollout_verifier`)
        instead of the PRM and the prover."""
        model = self.model
        if uses_revision_model(method):
            if self.reviser is None:
                raise ValueError(f"{method} needs the revision model: load with with_revision=True")
            model = self.reviser
        tokens = max(8192, budget * len(problems) * KV_TOKENS_PER_GENERATION)
        if rollouts is None:
            policy = task_policy(model, self.tokenizer, cache_tokens=tokens)
            verifier = self.verifier(tokens, aggregate=aggregate, pav_alpha=pav_alpha)
        else:  # every scored branch is forked `rollouts` times at once
            policy = task_policy(model, self.tokenizer,
                                 cache_tokens=tokens + budget * len(problems) * rollouts * KV_TOKENS_PER_ROLLOUT)
            verifier = self.rollout_verifier(policy, problems, rollouts, pav_alpha=pav_alpha, seed=seed,
                                             temperature=temperature)
        return run_method(method, budget, policy, verifier, [p.prompt for p in problems], answer_of=task_answer,
                          seed=seed, sampling=Sampling(temperature=temperature), progress=False,
                          tokens_per_generation=solution_tokens(self.tokenizer, problems),
                          best_of_n_result=best_of_n_result)


def solution_tokens(tokenizer, problems: Sequence[Problem]) -> int:
    """The mean token count of the problems' reference solutions, end of sequence included."""
    task = ArithmeticTask()
    lengths = [len(tokenizer.encode(task.format_solution(p.steps), add_special_tokens=False).ids) + 1
               for p in problems]
    return round(sum(lengths) / len(lengths))


def fingerprint(directory: str | Path) -> str:
    """The SHA-256 of a checkpoint directory's files (names and contents; its top level, as a
    checkpoint is laid out), so that two runs can tell whether they used the same model."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
