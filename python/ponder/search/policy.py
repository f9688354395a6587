"""The policy protocol, and a policy that runs a model on ponder's paged KV cache.

A policy extends many partial solutions at once. Each partial solution is a
:class:`Branch`; :meth:`Policy.expand` samples ``k`` children of each given branch, each
one reasoning step longer: tokens are drawn until the step delimiter, the end of the
solution (EOS) or the step's token limit. Children share their parent's KV blocks by
fork; :meth:`Policy.free` releases a pruned branch at once.

:class:`ModelPolicy` does this with one batched :meth:`~ponder.models.CausalLM.step` per
token position across every child of every branch, and one fused
:func:`ponder.sample` call per position. Randomness is counter-based: the draw for a
child's t-th token depends only on (seed, the child's id, t), so results do not depend
on batch composition, and a search is reproducible under a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

import ponder
from ponder.models import CausalLM
from ponder.search.budget import Spend

__all__ = ["Sampling", "Branch", "Step", "Policy", "ModelPolicy", "StopRule", "GREEDY"]


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters of a step (see :func:`ponder.sample`); ``temperature=0`` is greedy."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0


GREEDY = Sampling(temperature=0.0)


@dataclass(eq=False)
class Branch:
    """A partial solution: its steps so far and, for a model policy, its KV sequence.

    Attributes
    ----------
    uid : unique within a policy; the seed of its sampling counters
    prompt : index of the prompt it answers
    steps : the text of each step so far (without the delimiter)
    finished : the solution ended (EOS, or an answer the task recognises)
    logprob : sum of the raw log-probabilities of the last step's tokens
    """

    uid: int
    prompt: int
    steps: list[str] = field(default_factory=list)
    finished: bool = False
    logprob: float = 0.0
    seq: int | None = None  # KV sequence in the policy's cache
    ids: list[int] = field(default_factory=list, repr=False)  # every token id, prompt first (reference mode)
    next_logits: torch.Tensor | None = field(default=None, repr=False)  # float32 [V], after the last token

    @property
    def text(self) -> str:
        return "\n".join(self.steps)


@dataclass(frozen=True)
class Step:
    """A child made by :meth:`Policy.expand`: the new branch and what its step cost."""

    branch: Branch
    text: str
    num_tokens: int


class Policy(Protocol):
    """What search methods need from a policy."""

    def start(self, prompts: Sequence[str], spend: Spend, owners: Sequence[int] | None = None) -> list[Branch]:
        """A root branch (no steps) per prompt; root i answers question ``owners[i]`` (default i)."""

    def expand(self, branches: Sequence[Branch], k: int | Sequence[int], sampling: Sampling,
               seed: int, spend: Spend) -> list[list[Step]]:
        """``k`` (or ``k[i]``) children of each unfinished branch, each one step longer."""

    def free(self, branch: Branch) -> None:
        """Release a branch that will not be extended or read again."""


class StopRule:
    """Where a step ends: a token whose text holds the delimiter, an end-of-sequence token, or a length.

    Parameters
    ----------
    token_texts : the text of every token id (index = id)
    delimiter : the step delimiter, e.g. ``"\\n"`` or ``"\\n\\n"``; a delimiter spread over
        several tokens is found in the text of the step's last tokens
    eos_ids : ids that end the solution
    max_step_tokens : a step longer than this ends there
    """

    def __init__(self, token_texts: Sequence[str], delimiter: str, eos_ids: Sequence[int], max_step_tokens: int):
        if not delimiter:
            raise ValueError("the step delimiter must be a non-empty string")
        if max_step_tokens < 1:
            raise ValueError(f"max_step_tokens must be >= 1, got {max_step_tokens}")
        self.texts = list(token_texts)
        self.delimiter = delimiter
        self.eos = set(int(i) for i in eos_ids)
        self.max_step_tokens = max_step_tokens

    def step_text(self, ids: Sequence[int]) -> str:
        """The text of a step's token ids, cut at the delimiter, without end-of-sequence tokens."""
        text = "".join(self.texts[i] for i in ids if i not in self.eos)
        return text.split(self.delimiter, 1)[0]

    def ends(self, ids: Sequence[int]) -> tuple[bool, bool]:
        """(the step ends after ``ids``, the solution ends with it)."""
        if ids[-1] in self.eos:
            return True, True
        tail = "".join(self.texts[i] for i in ids[-len(self.delimiter):])
        return self.delimiter in tail or len(ids) >= self.max_step_tokens, False


def _seed(base: int, uid: int, position: int) -> int:
    """A 63-bit seed per (search seed, branch, token position): tuples of ints hash the same in every run."""
    return hash((base, uid, position)) & (2**63 - 1)


class ModelPolicy:
    """A :class:`Policy` that runs a :class:`~ponder.models.CausalLM` on its own paged KV cache.

    Parameters
    ----------
    model : the policy model
    tokenizer : a ``tokenizers.Tokenizer``
    prompt_template : ``str.format`` template with a ``{question}`` field
    delimiter : text that ends a step (default a newline)
    eos_token : the vocabulary entry that ends a solution
    max_step_tokens : a step is cut at this many tokens
    max_steps : a solution is finished after this many steps
    finished : optional predicate on a branch's steps that ends the solution early (e.g.
        the task recognising an answer line)
    cache_tokens : KV cache capacity, tokens
    block_size : KV block size
    reference : the slow path for tests: no KV cache; every token's logits come from a
        dense forward over the branch's whole text, recomputed from scratch. Same
        seeds, same draws: a search returns the same tree on both paths.
    """

    def __init__(self, model: CausalLM, tokenizer, *, prompt_template: str = "{question}", delimiter: str = "\n",
                 eos_token: str = "<eos>", max_step_tokens: int = 64, max_steps: int = 40, finished=None,
                 cache_tokens: int = 1 << 16, block_size: int = 16, reference: bool = False):
        if "{question}" not in prompt_template:
            raise ValueError(f"prompt_template {prompt_template!r} has no {{question}} field")
        eos = tokenizer.token_to_id(eos_token)
        if eos is None:
            raise ValueError(f"the tokenizer has no end-of-sequence token {eos_token!r}")
        vocab = model.config.vocab_size
        texts = [tokenizer.decode([i], skip_special_tokens=True) if i < tokenizer.get_vocab_size() else ""
                 for i in range(vocab)]
        self.model, self.tokenizer = model, tokenizer
        self.prompt_template = prompt_template
        self.stop = StopRule(texts, delimiter, [eos], max_step_tokens)
        self.max_steps = max_steps
        self.is_finished = finished
        self.reference = reference
        self.cache = None if reference else model.new_cache(cache_tokens, block_size=block_size)
        self._live: set[int] = set()  # uids of branches not freed
        self._next_uid = 0

    def _new_branch(self, prompt: int, **fields) -> Branch:
        branch = Branch(self._next_uid, prompt, **fields)
        self._live.add(branch.uid)
        self._next_uid += 1
        return branch

    @property
    def live_branches(self) -> int:
        """Branches made and not freed yet (0 after a search that cleaned up)."""
        return len(self._live)

    def start(self, prompts: Sequence[str], spend: Spend | None = None,
              owners: Sequence[int] | None = None) -> list[Branch]:
        spend = spend or Spend()
        owners = list(range(len(prompts))) if owners is None else list(owners)
        ids = [self.tokenizer.encode(self.prompt_template.format(question=q)).ids for q in prompts]
        with spend.phase("model"):
            if self.reference:
                seqs, logits, forwarded = [None] * len(ids), [self._dense_logits(i) for i in ids], sum(map(len, ids))
            else:
                seqs, out = self.model.start(self.cache, ids)
                logits, forwarded = out.logits, out.num_tokens
        spend.policy_forward_tokens += forwarded
        return [self._new_branch(owners[i], seq=seq, ids=list(ids[i]) if self.reference else [],
                                 next_logits=logits[i]) for i, seq in enumerate(seqs)]

    def free(self, branch: Branch) -> None:
        if branch.uid not in self._live:
            raise ValueError(f"branch {branch.uid} was freed (or is not this policy's)")
        self._live.remove(branch.uid)
        if branch.seq is not None:
            self.cache.free(branch.seq)
        branch.seq, branch.next_logits = None, None

    def _dense_logits(self, ids: list[int]) -> torch.Tensor:
        """The reference path: logits after ``ids``, float32 [V], from a forward over all of them."""
        with torch.inference_mode():
            return self.model.forward_dense(torch.tensor([ids]))[0, -1]

    def _forward(self, children: list[Branch], tokens: list[int]) -> tuple[list[torch.Tensor], int]:
        """Append one token to each child; the logits after it, and the tokens the model ran over."""
        if self.reference:
            return [self._dense_logits(c.ids) for c in children], sum(len(c.ids) for c in children)
        out = self.model.step(self.cache, [c.seq for c in children], [[t] for t in tokens])
        return list(out.logits), out.num_tokens

    def expand(self, branches: Sequence[Branch], k: int | Sequence[int], sampling: Sampling, seed: int,
               spend: Spend) -> list[list[Step]]:
        """``k[i]`` children of each branch, one step longer (see the module docstring).

        A finished branch gets no children (an empty list). Generation runs token
        position by token position over every unfinished child at once.
        """
        counts = [k] * len(branches) if isinstance(k, int) else list(k)
        if len(counts) != len(branches):
            raise ValueError(f"{len(branches)} branches but {len(counts)} child counts")
        children: list[list[Branch]] = []
        for parent, n in zip(branches, counts):
            if parent.uid not in self._live:
                raise ValueError(f"branch {parent.uid} was freed (or is not this policy's)")
            if parent.finished or n == 0:
                children.append([])
                continue
            seqs = [None] * n if self.reference else self.cache.fork(parent.seq, n)
            children.append([self._new_branch(parent.prompt, steps=list(parent.steps), seq=s,
                                               ids=list(parent.ids) if self.reference else [],
                                               next_logits=parent.next_logits) for s in seqs])
        step_ids: dict[int, list[int]] = {}
        active = [c for group in children for c in group]
        for child in active:
            step_ids[child.uid] = []
            child.logprob = 0.0
        position = 0
        while active:
            logits = torch.stack([c.next_logits for c in active])
            seeds = torch.tensor([_seed(seed, c.uid, position) for c in active], dtype=torch.int64)
            with spend.phase("sampling"):
                out = ponder.sample(logits, temperature=sampling.temperature, top_k=sampling.top_k,
                                    top_p=sampling.top_p, min_p=sampling.min_p, seed=seeds.to(logits.device))
            tokens, logprobs = out.tokens.tolist(), out.raw_logprobs.tolist()
            spend.generated_tokens += len(active)
            feed, still = [], []
            for child, token, logprob in zip(active, tokens, logprobs):
                ids = step_ids[child.uid]
                ids.append(token)
                if self.reference:
                    child.ids.append(token)
                child.logprob += logprob
                step_done, solution_done = self.stop.ends(ids)
                if solution_done:
                    child.finished = True
                    child.next_logits = None
                else:
                    feed.append((child, token))  # its K/V, and the logits after it, are needed next
                    if not step_done:
                        still.append(child)
            if feed:
                with spend.phase("model"):
                    logits_after, forwarded = self._forward([c for c, _ in feed], [t for _, t in feed])
                spend.policy_forward_tokens += forwarded
                for (child, _), row in zip(feed, logits_after):
                    child.next_logits = row
            active = still
            position += 1
        steps = []
        for group in children:
            made = []
            for child in group:
                ids = step_ids[child.uid]
                text = self.stop.step_text(ids)
                if text or not child.finished:  # an end-of-sequence token alone adds no step
                    child.steps.append(text)
                if len(child.steps) >= self.max_steps or (self.is_finished and self.is_finished(child.steps)):
                    child.finished = True
                made.append(Step(child, text, len(ids)))
            steps.append(made)
        return steps
