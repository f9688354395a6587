"""The task's tokenizer: one token per character, plus a few special tokens.

Each digit is its own token, so a small model sees numbers digit by digit. Ids::

    0 <pad>   1 <bos>   2 <eos>   3 <unk>   4 <step>   5.. the characters of CHARACTERS

``<step>`` is a tag a process reward model may place after a step to read its score
there. Encoding puts ``<bos>`` first (``add_special_tokens=False`` leaves it out) and
maps a character outside CHARACTERS to ``<unk>``; decoding (``skip_special_tokens=True``)
gives back exactly the text of every string over CHARACTERS.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, processors

PAD, BOS, EOS, UNK, STEP = "<pad>", "<bos>", "<eos>", "<unk>", "<step>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, STEP)
CHARACTERS = "\n ()*+-./0123456789:=ACQemnoprstuw"
"""Every character the task writes: prompts, ``Q:``/``A:`` framing, steps, answer lines."""


def build_tokenizer() -> Tokenizer:
    """The tokenizer (always the same ids); vocabulary size ``len(SPECIAL_TOKENS) + len(CHARACTERS)``."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(CHARACTERS))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    tokenizer.decoder = decoders.Fuse()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    return tokenizer


def save(directory: str | Path) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (loadable by
    ``transformers.PreTrainedTokenizerFast.from_pretrained(directory)``) into
    ``directory``, creating it; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK,
        "additional_special_tokens": [STEP],
        "add_bos_token": True,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory
