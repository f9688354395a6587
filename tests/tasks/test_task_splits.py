"""ponder.tasks.splits: disjoint, stable, balanced across levels."""

import hashlib
from collections import Counter

import pytest

from ponder.tasks.arithmetic import LEVELS
from ponder.tasks.splits import SIZES, SPLITS, split, split_of


@pytest.fixture(scope="module")
def splits():
    return {"train": split("train", 4000), "validation": split("validation"), "test": split("test")}


def test_sizes(splits):
    assert SIZES == {"train": 20_000, "validation": 500, "test": 500}
    assert [len(splits[name]) for name in SPLITS] == [4000, 500, 500]
    assert split("test", 0) == []


def test_disjoint_and_deduplicated(splits):
    prompts = {name: [p.prompt for p in problems] for name, problems in splits.items()}
    for name in SPLITS:
        assert len(set(prompts[name])) == len(prompts[name])
        assert all(split_of(prompt) == name for prompt in prompts[name])
    assert not set(prompts["train"]) & set(prompts["validation"])
    assert not set(prompts["train"]) & set(prompts["test"])
    assert not set(prompts["validation"]) & set(prompts["test"])


def test_equal_mix_of_levels_round_robin(splits):
    for problems in splits.values():
        assert [p.difficulty.level for p in problems[:10]] == [1, 2, 3, 4, 5] * 2
        counts = Counter(p.difficulty.level for p in problems)
        assert set(counts) == set(LEVELS) and max(counts.values()) - min(counts.values()) <= 1


def test_prefix_stable(splits):
    assert split("test", 37) == splits["test"][:37]
    assert split("train", 1000) == splits["train"][:1000]


def test_test_split_is_pinned(splits):
    """The fixed test split: if this fails, generation or splitting changed and every
    earlier result on the test split is no longer comparable."""
    digest = hashlib.sha256("\n".join(p.prompt for p in splits["test"]).encode()).hexdigest()
    assert digest == "b97d9e09c3913a886e085b057d55584c613c64352e45bf4b594086ba8275e3e3"  # levels 4-5: 2-digit +- chains


def test_bucket_shares():
    counts = Counter(split_of(f"Compute {i} + 1.") for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.90) < 0.01
    assert abs(counts["validation"] / 20_000 - 0.05) < 0.01


def test_errors():
    with pytest.raises(ValueError, match="split must be one of"):
        split("dev")
    with pytest.raises(ValueError, match="n must be a non-negative int, got -1"):
        split("test", -1)
