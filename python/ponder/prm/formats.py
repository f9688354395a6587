"""How a process reward model reads a question and its steps: the text around them and the tag.

A PRM sees ``prompt.format(question=...)`` followed by every step as::

    <step text> <tag> <separator>

and gives the step's score at the tag token (or, for a format without a tag, at the last
token of the step). Each piece is tokenized on its own and the ids are concatenated, so
the PRM sequence of a partial solution grows by exactly the new step's ids and a branch
can be extended without re-tokenizing its prefix. That equals tokenizing the whole text
whenever the pieces meet at token boundaries, which holds for the presets (their tags
are special tokens and their separators start new words).

Presets (``FORMATS``), text formats only:

* ``math-shepherd``: ``"{question} "``, steps ending in the tag ``ки`` and ``"\\n"``,
  scored by the LM-head logits of ``+`` against ``-`` at the tag;
* ``qwen2.5-math-prm``: the Qwen chat template, steps separated by the special token
  ``<extra_0>``, scored by a 2-class head (class 1 = good);
* ``ponder-arith``: the built-in task's ``"Q: {question}\\nA:\\n"``, one step per line
  with the tag ``<step>`` before the newline, scored by a value head that also reads the
  LM head's surprise at the steps (one logit, sigmoid; :mod:`ponder.prm.surprise`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRMFormat", "FORMATS", "resolve_format"]


@dataclass(frozen=True)
class PRMFormat:
    """The text layout a PRM was trained on.

    Attributes
    ----------
    name : a label for messages
    prompt : template (``str.format``) with one ``{question}`` field, placed before the first
        step; literal braces doubled
    tag : the token (one entry of the tokenizer's vocabulary, not text to tokenize) placed
        after each step, where the score is read; None for no tag (score at the step's
        last token)
    separator : text after the tag (or after the step when there is no tag); may be empty
    good_token, bad_token : for a tag-pair head, the vocabulary entries whose LM-head logits
        are compared at the tag (softmax over the two, the good one's probability)
    head : the head this format's public checkpoints use: ``"pair"``, ``"classifier"``,
        ``"value"`` or ``"value-surprisal"`` (see :mod:`ponder.prm.heads`)
    """

    name: str
    prompt: str
    tag: str | None
    separator: str
    good_token: str | None = None
    bad_token: str | None = None
    head: str = "value"

    def __post_init__(self):
        if "{question}" not in self.prompt:
            raise ValueError(f"format {self.name!r}: the prompt template {self.prompt!r} has no {{question}} field")
        if self.head == "pair" and (self.good_token is None or self.bad_token is None or self.tag is None):
            raise ValueError(f"format {self.name!r}: a tag-pair head needs a tag, a good_token and a bad_token")

    def render(self, question: str, steps: list[str]) -> str:
        """The whole text of a partial solution, as the PRM reads it (for display and checks)."""
        tag = self.tag or ""
        return self.prompt.format(question=question) + "".join(step + tag + self.separator for step in steps)


_QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{{}}."  # {{}}: a template

FORMATS: dict[str, PRMFormat] = {
    "math-shepherd": PRMFormat("math-shepherd", "{question} ", tag="ки", separator="\n",
                               good_token="+", bad_token="-", head="pair"),
    "qwen2.5-math-prm": PRMFormat(
        "qwen2.5-math-prm",
        f"<|im_start|>system\n{_QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n{{question}}<|im_end|>\n"
        "<|im_start|>assistant\n",
        tag="<extra_0>", separator="", head="classifier"),
    "ponder-arith": PRMFormat("ponder-arith", "Q: {question}\nA:\n", tag="<step>", separator="\n",
                              head="value-surprisal"),
}


def resolve_format(format: str | PRMFormat) -> PRMFormat:
    """A preset by name, or the given :class:`PRMFormat`."""
    if isinstance(format, PRMFormat):
        return format
    if format not in FORMATS:
        raise ValueError(f"unknown PRM format {format!r}: expected one of {sorted(FORMATS)} or a PRMFormat")
    return FORMATS[format]
