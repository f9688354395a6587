"""Which implementation of an op runs: reference, cpu, cuda or triton.

The tensor's device picks the default (CPU -> cpu, CUDA -> cuda, else triton, else
reference); ``backend=`` or the environment variable ``PONDER_BACKEND`` forces one.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

BACKENDS = ("reference", "cpu", "cuda", "triton")


@functools.cache
def _extension():
    """The compiled ``ponder._C`` module, or None when it is not built."""
    try:
        from ponder import _C
    except ImportError:
        return None
    return _C


def has_cpu_kernels() -> bool:
    return _extension() is not None


def has_cuda_kernels() -> bool:
    ext = _extension()
    return ext is not None and bool(getattr(ext, "WITH_CUDA", 0))


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def available_backends(device: torch.device) -> list[str]:
    """Backends that can run on tensors of ``device`` in this process, best first."""
    found = []
    if device.type == "cpu" and has_cpu_kernels():
        found.append("cpu")
    if device.type == "cuda" and has_cuda_kernels():
        found.append("cuda")
    if has_triton() and (device.type == "cuda" or (device.type == "cpu" and triton_interpreted())):
        found.append("triton")
    found.append("reference")
    return found


def resolve_backend(requested: str | None, device: torch.device) -> str:
    """The backend to run on ``device``: ``requested``, else ``$PONDER_BACKEND``, else the best available.

    Raises ValueError naming the backend and the device when the choice cannot run.
    """
    choice = requested if requested is not None else os.environ.get("PONDER_BACKEND") or None
    usable = available_backends(device)
    if choice is None:
        return usable[0]
    if choice not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {choice!r}")
    if choice not in usable:
        raise ValueError(
            f"backend {choice!r} cannot run on {device.type} tensors here; available: {usable}"
            + (" (triton on CPU needs TRITON_INTERPRET=1)" if choice == "triton" and device.type == "cpu" else "")
        )
    return choice


def values_checkable(t: torch.Tensor) -> bool:
    """Whether an op may read ``t``'s values to validate them.

    Reading a device tensor's values would synchronise the host with the GPU, and
    reading any tensor's values breaks a torch.compile graph: ops check CPU tensors
    outside compilation only; kernels clamp or skip unchecked values.
    """
    return t.device.type == "cpu" and not torch.compiler.is_compiling()
