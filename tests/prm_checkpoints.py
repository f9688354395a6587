"""Tiny PRM checkpoints of every head kind, the built-in task's tokenizer, and a transformers oracle.

Each checkpoint is a tiny random model (tests/checkpoints.py) with the character
tokenizer of the built-in task saved beside it:

* ``pair``: a causal LM, scored by the LM-head logits of ``+`` against ``-`` at ``<step>``;
* ``classifier`` / ``value``: transformers' ``*ForTokenClassification`` with 2 labels / 1;
* ``mlp``: a decoder with a Linear-ReLU-Linear head under ``score.0`` / ``score.2``, as
  Qwen2.5-Math-PRM stores it (transformers has no class for it: the oracle applies it);
* ``outcome``: ``*ForSequenceClassification`` with 1 label (an outcome reward model);
* ``surprisal``: a causal LM with a value head that also reads the LM head's surprise at
  each step, under ``score.weight`` / ``score.bias`` / ``score.surprise`` (the oracle
  computes the surprise from the full text's logits).

``Oracle.step_scores(question, steps)`` scores every step of a solution from scratch
with transformers' full forward over the whole text.
"""

from __future__ import annotations

import math

import torch

from checkpoints import load_hf_model, save_checkpoint
from ponder.prm import PRMFormat
from ponder.tasks import tokenizer as task_tokenizer

PAIR_FORMAT = PRMFormat("pair-test", "Q: {question}\nA:\n", tag="<step>", separator="\n", good_token="+",
                        bad_token="-", head="pair")
OUTCOME_FORMAT = PRMFormat("outcome-test", "Q: {question}\nA:\n", tag=None, separator="\n")

KINDS = {
    "pair": dict(kind="causal-lm", variant="llama_gqa"),
    "classifier": dict(kind="token-classification", variant="qwen2", num_labels=2),
    "value": dict(kind="token-classification", variant="llama", num_labels=1),
    "mlp": dict(kind="causal-lm", variant="llama_bias"),
    "outcome": dict(kind="sequence-classification", variant="mistral", num_labels=1, pad_token_id=0),
    "surprisal": dict(kind="causal-lm", variant="llama"),
}
LOAD_ARGS = {
    "pair": dict(format=PAIR_FORMAT, head="pair"),
    "classifier": dict(format="ponder-arith", head="classifier"),
    "value": dict(format="ponder-arith", head="value"),
    "mlp": dict(format="ponder-arith", head="classifier"),
    "outcome": dict(format=OUTCOME_FORMAT, head="value", outcome=True),
    "surprisal": dict(format="ponder-arith", head="value-surprisal"),
}


def _add_mlp_head(directory, hidden: int, seed: int) -> dict[str, torch.Tensor]:
    """Replace the causal LM's lm_head by a Linear-ReLU-Linear 2-class head under ``score.``."""
    from safetensors.torch import load_file, save_file

    weights = load_file(directory / "model.safetensors")
    del weights["lm_head.weight"]
    gen = torch.Generator().manual_seed(seed)
    head = {"score.0.weight": torch.randn(hidden, hidden, generator=gen) / math.sqrt(hidden),
            "score.0.bias": 0.2 * torch.randn(hidden, generator=gen),
            "score.2.weight": torch.randn(2, hidden, generator=gen) / math.sqrt(hidden),
            "score.2.bias": 0.2 * torch.randn(2, generator=gen)}
    save_file({**weights, **head}, directory / "model.safetensors", metadata={"format": "pt"})
    return head


def _add_surprisal_head(directory, hidden: int, seed: int) -> dict[str, torch.Tensor]:
    """Add a surprisal value head under ``score.`` beside the causal LM's weights."""
    from safetensors.torch import load_file, save_file

    weights = load_file(directory / "model.safetensors")
    gen = torch.Generator().manual_seed(seed)
    head = {"score.weight": torch.randn(1, hidden, generator=gen) / math.sqrt(hidden),
            "score.bias": 0.2 * torch.randn(1, generator=gen),
            "score.surprise": torch.tensor([[0.3, 0.5]])}
    save_file({**weights, **head}, directory / "model.safetensors", metadata={"format": "pt"})
    return head


class Oracle:
    """Scores every step of a solution from scratch with transformers, over the whole text."""

    def __init__(self, name: str, directory, head: dict | None):
        self.name = name
        kind = KINDS[name]["kind"]
        self.hf = load_hf_model(directory, kind)
        self.head = head  # the weights under score. that transformers has no class for
        self.tokenizer = task_tokenizer.build_tokenizer()
        self.format = LOAD_ARGS[name]["format"]
        if not isinstance(self.format, PRMFormat):
            from ponder.prm import FORMATS
            self.format = FORMATS[self.format]

    def ids(self, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """The token ids of the whole text and the position of each step's score (the tag, else its last token)."""
        return self.ids_and_steps(question, steps)[:2]

    def ids_and_steps(self, question: str, steps: list[str]) -> tuple[list[int], list[int], list[range]]:
        """As :meth:`ids`, and the positions of each step's text tokens."""
        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
        ids = self.tokenizer.encode(self.format.prompt.format(question=question)).ids
        positions, texts = [], []
        for step in steps:
            texts.append(range(len(ids), len(ids) + len(encode(step))))
            ids += encode(step)
            if self.format.tag is not None:
                ids.append(self.tokenizer.token_to_id(self.format.tag))
            positions.append(len(ids) - 1)
            ids += encode(self.format.separator)
        return ids, positions, texts

    @torch.no_grad()
    def surprisal_scores(self, question: str, steps: list[str]) -> torch.Tensor:
        """float64 [len(steps)]: the surprisal value head's scores, every feature from the full text's logits."""
        ids, positions, texts = self.ids_and_steps(question, steps)
        out = self.hf(torch.tensor([ids]), output_hidden_states=True)
        logprobs = out.logits[0].double().log_softmax(-1)
        hidden = out.hidden_states[-1][0, positions].double()
        so_far, features = 0.0, []
        for text in texts:
            written = [logprobs[t - 1, ids[t]].item() for t in text[1:]]  # every token after the step's first
            least = min(written, default=0.0)
            so_far = min(so_far, least)
            features.append([least, so_far])
        h = {name: w.double() for name, w in self.head.items()}
        logits = hidden @ h["score.weight"].T + h["score.bias"] + torch.tensor(features, dtype=torch.float64) @ \
            h["score.surprise"].T
        return torch.sigmoid(logits[:, 0])

    @torch.no_grad()
    def scores_at(self, ids: list[int], positions: list[int]) -> torch.Tensor:
        """float64 [len(positions)]: the head's score at each position of the full text ``ids``."""
        input_ids = torch.tensor([ids])
        if self.name == "pair":
            logits = self.hf(input_ids).logits[0, positions].double()
            plus, minus = self.tokenizer.token_to_id("+"), self.tokenizer.token_to_id("-")
            return torch.softmax(logits[:, [plus, minus]], dim=-1)[:, 0]
        if self.name == "mlp":
            hidden = self.hf.model(input_ids).last_hidden_state[0, positions].double()
            h = self.head
            x = torch.relu(hidden @ h["score.0.weight"].double().T + h["score.0.bias"].double())
            logits = x @ h["score.2.weight"].double().T + h["score.2.bias"].double()
            return torch.softmax(logits, dim=-1)[:, 1]
        if self.name == "outcome":
            # A sequence classifier scores a text's last token: give it the text up to the position.
            logits = self.hf(input_ids[:, :positions[-1] + 1]).logits.double()
            return torch.sigmoid(logits[:, 0])
        logits = self.hf(input_ids).logits[0, positions].double()
        if self.name == "classifier":
            return torch.softmax(logits, dim=-1)[:, 1]
        return torch.sigmoid(logits[:, 0])

    def step_scores(self, question: str, steps: list[str]) -> torch.Tensor:
        """float64 [len(steps)]: each step's score (an outcome model: the final step's only, NaN before)."""
        if self.name == "surprisal":
            return self.surprisal_scores(question, steps)
        ids, positions = self.ids(question, steps)
        if self.name == "outcome":
            out = torch.full((len(steps),), float("nan"), dtype=torch.float64)
            out[-1] = self.scores_at(ids, positions[-1:])[0]
            return out
        return self.scores_at(ids, positions)

    @torch.no_grad()
    def root_value(self, question: str) -> float:
        ids, _ = self.ids(question, [])
        if self.name == "surprisal":  # no step, no surprise: the value head alone at the prompt's last token
            hidden = self.hf.model(torch.tensor([ids])).last_hidden_state[0, -1].double()
            logit = hidden @ self.head["score.weight"][0].double() + self.head["score.bias"][0].double()
            return float(torch.sigmoid(logit))
        return float(self.scores_at(ids, [len(ids) - 1])[0])


def save_prm_checkpoint(directory, name: str, seed: int = 0) -> tuple:
    """Write the tiny PRM checkpoint ``name`` (a key of KINDS) with the task tokenizer; returns (directory, Oracle)."""
    spec = dict(KINDS[name])
    kind, variant = spec.pop("kind"), spec.pop("variant")
    directory = save_checkpoint(directory, variant, seed=seed, kind=kind, **spec)
    task_tokenizer.save(directory)
    add_head = {"mlp": _add_mlp_head, "surprisal": _add_surprisal_head}.get(name)
    head = add_head(directory, 64, seed) if add_head else None
    return directory, Oracle(name, directory, head)
