"""Fixtures of the PRM tests: tiny PRM checkpoints of every head kind (tests/prm_checkpoints.py)."""

from __future__ import annotations

import pytest

from prm_checkpoints import save_prm_checkpoint


@pytest.fixture(scope="session")
def prm_checkpoint(tmp_path_factory):
    """prm_checkpoint(name, seed=0) -> (directory, Oracle), made once per session."""
    made = {}

    def get(name: str, seed: int = 0):
        if (name, seed) not in made:
            made[name, seed] = save_prm_checkpoint(tmp_path_factory.mktemp(f"prm-{name}"), name, seed)
        return made[name, seed]

    return get
