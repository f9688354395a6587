"""The surprise features: each step's least likely token, and the least so far along its solution."""

from __future__ import annotations

import math

import torch

from ponder.prm.surprise import running_surprise, step_surprise, surprise_tokens


def test_step_surprise_is_the_least_log_probability_of_each_steps_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]))
    targets = torch.tensor([0, 2, 2])  # probabilities 0.5, 0.1, 0.6
    got = step_surprise(logits, targets, torch.tensor([0, 0, 2]), num_steps=3)
    torch.testing.assert_close(got, torch.tensor([math.log(0.1), 0.0, math.log(0.6)]))  # step 1 reads no token
    assert step_surprise(logits[:0], targets[:0], targets[:0], num_steps=2).tolist() == [0.0, 0.0]


def test_running_surprise_carries_each_solutions_minimum_from_its_prior():
    surprise = torch.tensor([-1.0, -3.0, -0.5, -2.0, -0.1])
    solution = torch.tensor([0, 1, 0, 1, 0])  # solutions interleave; each one's steps are in order
    got = running_surprise(surprise, solution, prior=torch.tensor([0.0, -2.5]))
    torch.testing.assert_close(got[:, 0], surprise)
    torch.testing.assert_close(got[:, 1], torch.tensor([-1.0, -3.0, -1.0, -3.0, -1.0]))


def test_a_steps_first_token_is_not_read():
    assert list(surprise_tokens(4)) == [1, 2, 3] and list(surprise_tokens(1)) == []
