"""load_prm: formats, heads, and clear errors when a format or a head does not fit the checkpoint."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ponder.prm import FORMATS, PRMFormat, load_prm
from ponder.prm.heads import LinearHead, SurprisalValueHead, TagPairHead
from prm_checkpoints import LOAD_ARGS, PAIR_FORMAT


def test_presets_render_the_public_formats():
    shepherd = FORMATS["math-shepherd"].render("What is 1+1?", ["Step 1: 1+1=2.", "The answer is: 2"])
    assert shepherd == "What is 1+1? Step 1: 1+1=2.ки\nThe answer is: 2ки\n"
    qwen = FORMATS["qwen2.5-math-prm"].render("Q", ["a", "b"])
    assert qwen.endswith("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\na<extra_0>b<extra_0>")
    assert FORMATS["ponder-arith"].render("1 + 2", ["1 + 2 = 3", "Answer: 3"]) == \
        "Q: 1 + 2\nA:\n1 + 2 = 3<step>\nAnswer: 3<step>\n"


def test_format_checks_its_fields():
    with pytest.raises(ValueError, match="no {question} field"):
        PRMFormat("bad", "Q:", tag=None, separator="\n")
    with pytest.raises(ValueError, match="tag-pair head needs a tag, a good_token and a bad_token"):
        PRMFormat("bad", "{question}", tag="<step>", separator="\n", head="pair")
    with pytest.raises(ValueError, match="unknown PRM format 'nope'"):
        load_prm(".", format="nope")


@pytest.mark.parametrize("name, head_type, kind", [("pair", TagPairHead, "pair"), ("classifier", LinearHead, "pair"),
                                                    ("value", LinearHead, "sigmoid"), ("mlp", LinearHead, "pair"),
                                                    ("surprisal", SurprisalValueHead, "sigmoid")])
def test_heads_are_read_from_the_checkpoint(prm_checkpoint, name, head_type, kind):
    directory, _ = prm_checkpoint(name)
    prm = load_prm(directory, **LOAD_ARGS[name])
    assert isinstance(prm.head, head_type) and prm.head.kind == kind
    assert prm.model.has_lm_head == (name in ("pair", "surprisal"))  # the surprise is read from the LM head


def test_a_tag_missing_from_the_tokenizer_is_a_clear_error(prm_checkpoint):
    directory, _ = prm_checkpoint("pair")
    with pytest.raises(ValueError, match="needs the tag 'ки' as one token, but the tokenizer's vocabulary has no"):
        load_prm(directory, format="math-shepherd")  # '+' and '-' exist; the tag does not
    no_good = dataclasses.replace(PAIR_FORMAT, good_token="<good>")
    with pytest.raises(ValueError, match="needs the good token '<good>' as one token"):
        load_prm(directory, format=no_good)


def test_a_separator_the_tokenizer_cannot_encode_is_a_clear_error(prm_checkpoint):
    directory, _ = prm_checkpoint("value")
    odd = dataclasses.replace(FORMATS["ponder-arith"], separator="\n\n§")
    with pytest.raises(ValueError, match="has a separator '\\\\n\\\\n§' that the tokenizer cannot encode"):
        load_prm(directory, format=odd, head="value")


def test_a_head_that_does_not_match_the_checkpoint_is_a_clear_error(prm_checkpoint):
    causal, _ = prm_checkpoint("pair")
    two_class, _ = prm_checkpoint("classifier")
    one_logit, _ = prm_checkpoint("value")
    with pytest.raises(ValueError, match="has no weights under 'score.'"):
        load_prm(causal, format="ponder-arith", head="value")
    with pytest.raises(ValueError, match="head='value' needs 1 output.* has 2"):
        load_prm(two_class, format="ponder-arith", head="value")
    with pytest.raises(ValueError, match="head='classifier' needs 2 output.* has 1"):
        load_prm(one_logit, format="ponder-arith", head="classifier")
    with pytest.raises(ValueError, match="lacks the weight lm_head.weight"):
        load_prm(two_class, format=PAIR_FORMAT, head="pair")
    with pytest.raises(ValueError, match=r"holds the weight score\."):
        load_prm(two_class, format=PAIR_FORMAT, head="value", head_prefix="value_head.")
    with pytest.raises(ValueError, match="head must be one of"):
        load_prm(one_logit, head="ranking")


def test_a_surprisal_head_that_does_not_fit_is_a_clear_error(prm_checkpoint):
    surprisal, _ = prm_checkpoint("surprisal")
    one_logit, _ = prm_checkpoint("value")
    causal, _ = prm_checkpoint("pair")
    # ponder-arith's own head is the surprisal value head, which reads the LM head and score.surprise
    with pytest.raises(ValueError, match="head='value-surprisal' reads the surprise of the model's LM head: .* "
                                         "lacks the weight lm_head.weight"):
        load_prm(one_logit)
    with pytest.raises(ValueError, match=r"holds \[\] under 'score.': a surprisal value head needs "
                                         r"exactly \['score.bias', 'score.surprise', 'score.weight'\]"):
        load_prm(causal)
    with pytest.raises(ValueError, match=r"holds \['score.surprise'\], which a head under 'score.' does not use"):
        load_prm(surprisal, head="value")
    with pytest.raises(ValueError, match="a head that reads surprise needs the model's LM head and every step "
                                         "scored: got outcome=True"):
        load_prm(surprisal, outcome=True)
    weight, bias = torch.zeros(1, 8), torch.zeros(1)
    with pytest.raises(ValueError, match=r"surprise weight must be \[1, 2\], got \[2\]"):
        SurprisalValueHead(weight, bias, torch.zeros(2))
    with pytest.raises(ValueError, match=r"weight must be \[1, hidden_size\], got \[2, 8\]"):
        SurprisalValueHead(torch.zeros(2, 8), bias, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"surprise features must be \[3, 2\] for 3 hidden states, got \[3\]"):
        SurprisalValueHead(weight, bias, torch.zeros(1, 2)).logits(torch.zeros(3, 8), torch.zeros(3))


def test_a_directory_without_a_tokenizer_is_a_clear_error(prm_checkpoint, tmp_path):
    directory, _ = prm_checkpoint("value")
    for file in directory.iterdir():
        if file.name != "tokenizer.json":
            (tmp_path / file.name).write_bytes(file.read_bytes())
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        load_prm(tmp_path, head="value")
