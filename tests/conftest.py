"""Test-suite set-up.

Without a GPU, Triton kernels run in Triton's interpreter: TRITON_INTERPRET must be set
before any @triton.jit function is created, so it is set here, before ponder (and with
it ponder.kernels) is imported by any test module.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from ponder.ops._backend import available_backends  # noqa: E402


def backend_devices() -> list[tuple[str, str]]:
    """Every (backend, device) pair that can run in this process."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [(backend, device) for device in devices for backend in available_backends(torch.device(device))]


@pytest.fixture(params=backend_devices(), ids=lambda bd: f"{bd[0]}-{bd[1]}")
def backend_device(request) -> tuple[str, str]:
    return request.param
