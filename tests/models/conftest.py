"""Fixtures of the model tests: tiny checkpoints (tests/checkpoints.py), loaded by ponder and by transformers."""

from __future__ import annotations

import pytest

import ponder
from checkpoints import Tracker, load_hf_model, save_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(variant) -> the directory of that variant's checkpoint, made once per session."""
    made = {}

    def get(variant: str):
        if variant not in made:
            made[variant] = save_checkpoint(tmp_path_factory.mktemp(variant), variant)
        return made[variant]

    return get


@pytest.fixture(scope="session")
def models(checkpoint):
    """models(variant) -> (ponder model, transformers model) of one checkpoint, float32 on the CPU."""
    loaded = {}

    def get(variant: str):
        if variant not in loaded:
            directory = checkpoint(variant)
            loaded[variant] = ponder.load_model(directory), load_hf_model(directory)
        return loaded[variant]

    return get


@pytest.fixture
def tracker(models):
    """tracker(variant, **cache_kwargs) -> a Tracker on that variant's models."""
    def make(variant: str, **kwargs) -> Tracker:
        return Tracker(*models(variant), **kwargs)

    return make
