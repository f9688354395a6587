"""The model runner's dense layer on CPU: ``y = x @ weight.T + bias`` in float32.

The ``cpu`` backend (``csrc/include/ponder/linear.h``) is built for the few rows of a
decoding step, where the BLAS's small-M path runs far below the machine's FMA rate; it
is also faster at prefill sizes on the machines measured (``benchmarks/bench_linear.py``).
It is batch-invariant: each output element is one sequential chain of fused
multiply-adds over the K inputs, whatever the number of rows and wherever a row sits,
so a sequence's activations, logits and samples do not depend on what else is batched
with it. Sums are in another order than the BLAS's, so results differ from
:func:`torch.nn.functional.linear` by float32 rounding (~1e-6 relative).

CPU only: on GPUs cuBLAS through ``F.linear`` is the fast path, so this op has no
``cuda`` or ``triton`` backend and the model runner calls ``F.linear`` there.
"""

from __future__ import annotations

import torch

from ponder.ops._backend import has_cpu_kernels, resolve_backend
from ponder.ops._checks import check_tensor
from ponder.reference import linear as reference

BACKENDS = ("reference", "cpu")


def _fake_linear(x, weight, bias):
    return x.new_empty(x.shape[0], weight.shape[0])


if has_cpu_kernels():  # the compiled op's schema exists only when the extension is built
    torch.library.register_fake("ponder::linear")(_fake_linear)


def _check(name: str, value, device: torch.device | None = None, dims: int | None = None) -> None:
    check_tensor(name, value)
    if value.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {value.dtype}")
    if dims is not None and value.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(value.shape)}")
    if device is not None and value.device != device:
        raise ValueError(f"{name} is on {value.device} but x is on {device}")


def linear_backend(requested: str | None, device: torch.device) -> str:
    """The backend :func:`linear` runs: the shared rule (``backend=``, ``$PONDER_BACKEND``, the device), with cuda
    and triton read as the reference."""
    if requested is not None and requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} for linear (a CPU op), got {requested!r}")
    chosen = resolve_backend(requested, device)
    return chosen if chosen in BACKENDS else "reference"  # on GPUs F.linear (cuBLAS) is the fast path


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
           backend: str | None = None) -> torch.Tensor:
    """``x @ weight.T + bias``, as :func:`torch.nn.functional.linear`, batch-invariant on CPU.

    Parameters
    ----------
    x : float32 [..., K], any strides
    weight : float32 [N, K], any strides (an ``nn.Linear`` weight)
    bias : float32 [N], optional
    backend : {"reference", "cpu"}, optional
        Default ``cpu`` for CPU tensors (when ``ponder._C`` is built), else the reference
        (``F.linear``).

    Returns
    -------
    float32 [..., N]. Not differentiable on the ``cpu`` backend (an inference kernel).
    """
    _check("x", x)
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension [..., K], got a 0-D tensor")
    _check("weight", weight, x.device, dims=2)
    if bias is not None:
        _check("bias", bias, x.device, dims=1)
    if weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must have shape [N, {x.shape[-1]}] (K = x.shape[-1]), got {tuple(weight.shape)}")
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ValueError(f"bias must have shape [{weight.shape[0]}] (N = weight.shape[0]), got {tuple(bias.shape)}")
    if linear_backend(backend, x.device) == "reference":
        return reference.linear(x, weight, bias)
    rows = x.reshape(x.shape[:-1].numel(), x.shape[-1])
    return torch.ops.ponder.linear(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])
