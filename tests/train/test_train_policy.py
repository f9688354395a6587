"""The policy trainer: examples, batches, a short run that learns, and a checkpoint that loads."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from task_models import other_vocabulary_lm

import ponder
from ponder.cli import main
from ponder.tasks import tokenizer as task_tokenizer
from ponder.train import PolicyTrainConfig, save_policy, train_policy
from ponder.train.policy import IGNORE, encode_example, make_batch

TINY = PolicyTrainConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                         batch_size=8, lr=1e-2, warmup_steps=5, steps=40, train_problems=400, seed=1)


def test_examples_carry_loss_on_the_solution_only():
    tokenizer = task_tokenizer.build_tokenizer()
    ids, labels = encode_example(tokenizer, "Q: Compute 1 + 2.\nA:\n", "1 + 2 = 3\nAnswer: 3\n")
    prompt_len = len(tokenizer.encode("Q: Compute 1 + 2.\nA:\n").ids)
    assert labels[:prompt_len] == [IGNORE] * prompt_len and labels[prompt_len:] == ids[prompt_len:]
    assert ids[0] == tokenizer.token_to_id("<bos>") and ids[-1] == tokenizer.token_to_id("<eos>")
    input_ids, mask, batch_labels = make_batch([(ids, labels), (ids[:5], labels[:5])])
    assert input_ids.shape == (2, len(ids)) and mask[1].sum() == 5 and (batch_labels[1, 5:] == IGNORE).all()


def test_a_short_run_learns_and_is_deterministic(tmp_path):
    model, losses = train_policy(TINY)
    assert sum(losses[-10:]) / 10 < 0.75 * sum(losses[:10]) / 10  # from ~ln(39) = 3.7 to ~2.2
    # The same seed gives the same run; a shorter one shares the warm-up steps' learning rates.
    _, again = train_policy(dataclasses.replace(TINY, steps=8))
    warm = TINY.warmup_steps + 1
    assert again[:warm] == losses[:warm]
    path = save_policy(model, tmp_path / "policy", TINY)
    loaded = ponder.load_model(path)
    ids = torch.tensor([task_tokenizer.build_tokenizer().encode("Q: Compute 4 + 5.\nA:\n").ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_dense(ids), model.forward_dense(ids), atol=1e-5, rtol=0)
    assert (path / "tokenizer.json").is_file() and (path / "ponder_train.json").is_file()


def test_cli_trains_and_writes_a_checkpoint(tmp_path, capsys):
    main(["train", "policy", "--out", str(tmp_path / "p"), "--steps", "2", "--minutes", "1", "--train-problems", "50"])
    assert "trained 2 steps" in capsys.readouterr().out
    assert ponder.load_model(tmp_path / "p").config.vocab_size == task_tokenizer.build_tokenizer().get_vocab_size()


def test_training_on_from_a_checkpoint_starts_from_its_weights_and_shape(tmp_path):
    trained, losses = train_policy(TINY)
    path = save_policy(trained, tmp_path / "policy", TINY)
    # The config's shape is the shipped policy's; the checkpoint's (TINY's) wins.
    on = dataclasses.replace(PolicyTrainConfig(), batch_size=8, lr=1e-3, warmup_steps=2, steps=3, train_problems=400)
    model, more = train_policy(on, init=path)
    assert model.config.hidden_size == TINY.hidden_size and model.config.num_layers == TINY.num_layers
    _, scratch = train_policy(dataclasses.replace(TINY, steps=1))
    # It starts where the checkpoint's training left off, not from scratch.
    assert more[0] < 1.25 * sum(losses[-10:]) / 10 < 0.8 * scratch[0]


def test_cli_trains_on_from_a_checkpoint(tmp_path, capsys):
    trained, _ = train_policy(dataclasses.replace(TINY, steps=2))
    save_policy(trained, tmp_path / "start")
    main(["train", "policy", "--init", str(tmp_path / "start"), "--out", str(tmp_path / "p"), "--steps", "2",
          "--lr", "1e-4", "--minutes", "1", "--train-problems", "50"])
    assert "trained 2 steps" in capsys.readouterr().out
    assert ponder.load_model(tmp_path / "p").config.hidden_size == TINY.hidden_size


def test_training_on_from_another_vocabulary_is_a_clear_error(tmp_path):
    path = other_vocabulary_lm(tmp_path / "other")
    with pytest.raises(ValueError, match=r"vocabulary of 50 tokens, the task's tokenizer 39"):
        train_policy(dataclasses.replace(TINY, steps=1), init=path)
