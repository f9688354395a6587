"""The policy trainer: examples, batches, a short run that learns, and a checkpoint that loads."""

from __future__ import annotations

import dataclasses

import torch

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
