"""A tiny policy and PRM of the built-in task, trained once for the experiment tests."""

import pytest
from task_models import tiny_policy, tiny_prm


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """(policy directory, PRM directory)."""
    root = tmp_path_factory.mktemp("task-models")
    policy = tiny_policy(root / "policy")
    return policy, tiny_prm(root / "prm", policy)
