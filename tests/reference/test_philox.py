"""The reference Philox4x32-10 against the published known-answer vectors."""

import pytest
import torch

from ponder.reference.philox import philox4x32_10, sampling_uniforms, uniform_from_bits

# Known-answer vectors of Philox4x32-10 (Salmon et al., Random123 distribution).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_known_answers(counter, key, expected):
    as_tensor = lambda v: torch.tensor([v], dtype=torch.int64)  # noqa: E731
    out = philox4x32_10(*map(as_tensor, counter), *map(as_tensor, key))
    assert tuple(int(o) for o in out) == expected


def test_uniforms_are_open_interval_and_exact():
    bits = torch.tensor([0, 255, 256, 0xFFFFFFFF, 0x80000000], dtype=torch.int64)
    u = uniform_from_bits(bits)
    assert u.min() > 0 and u.max() < 1
    assert u[0] == 2.0**-24 and u[3] == 1 - 2.0**-24
    assert torch.equal(u[0], u[1])  # the low 8 bits are dropped


def test_sampling_uniforms_layout():
    seeds = torch.tensor([7, -3, 2**40 + 5], dtype=torch.int64)
    u = sampling_uniforms(seeds, vocab=10, draw=2)
    assert u.shape == (3, 10)
    # Column 6 of row 1 is word 2 of counter (1, 2, 1, 0) under key (seed lo, seed hi).
    seed = -3 & 0xFFFFFFFFFFFFFFFF
    words = philox4x32_10(*(torch.tensor([v]) for v in (1, 2, 1, 0, seed & 0xFFFFFFFF, seed >> 32)))
    assert u[1, 6] == uniform_from_bits(words[2])[0]
    assert len(set(u.flatten().tolist())) == 30  # no repeated streams across rows


def test_sampling_uniforms_for_a_range_of_draws_stack_the_single_draws():
    seeds = torch.tensor([7, -3, 2**40 + 5], dtype=torch.int64)
    many = sampling_uniforms(seeds, vocab=11, draw=range(3, 9, 2))
    assert many.shape == (3, 3, 11)
    for i, draw in enumerate(range(3, 9, 2)):
        assert torch.equal(many[i], sampling_uniforms(seeds, vocab=11, draw=draw))
