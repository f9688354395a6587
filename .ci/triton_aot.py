"""Compile every Triton kernel under kernels/ ahead of time for sm_80 and sm_90 (no GPU needed).

Each module in kernels/ describes what to compile next to its kernels:

* ``aot_variants()``: ``{kernel: [dict(signature=..., constexprs=..., num_warps=...), ...]}``,
  one entry per launch configuration the module's launchers use on a GPU (a function:
  under the interpreter the kernels lack the parameter details it reads);
* ``DEVICE_FUNCTIONS``: the @triton.jit helpers that only run inside those kernels.

A @triton.jit function in neither is an error, so a new kernel cannot go uncompiled.
Prints one line per compiled kernel (registers and spills as ptxas reports them) and
exits non-zero on any failure. Usage: ``python .ci/triton_aot.py``.
"""

import os
import tempfile

# Compilation must see the real backend, not the interpreter: drop the variable before
# Triton is imported. Fusion is Triton's default; setting it silences a 3.9 warning.
os.environ.pop("TRITON_INTERPRET", None)
os.environ["TRITON_DEFAULT_FP_FUSION"] = "1"
# ptxas's -v report (registers, spill bytes) is printed by Triton only when asked for,
# and only when it really compiles: a fresh cache makes every run compile.
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
_CACHE = tempfile.TemporaryDirectory(prefix="triton_aot_")
os.environ["TRITON_CACHE_DIR"] = _CACHE.name

import contextlib  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import pkgutil  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

import ponder.kernels  # noqa: E402

CAPABILITIES = (80, 90)


def kernel_modules():
    """Every module of the ponder.kernels package."""
    for info in pkgutil.iter_modules(ponder.kernels.__path__):
        yield importlib.import_module(f"ponder.kernels.{info.name}")


def own_jit_functions(module) -> list[JITFunction]:
    """The @triton.jit functions defined in ``module`` (not imported into it)."""
    return [obj for obj in vars(module).values()
            if isinstance(obj, JITFunction) and obj.fn.__module__ == module.__name__]


def aot_variants(module) -> dict:
    return module.aot_variants() if hasattr(module, "aot_variants") else {}


def undeclared(module) -> list[str]:
    """Names of ``module``'s @triton.jit functions with no AOT entry and not declared device functions."""
    declared = set(aot_variants(module)) | set(getattr(module, "DEVICE_FUNCTIONS", ()))
    return [fn.__name__ for fn in own_jit_functions(module) if fn not in declared]


def describe(variant: dict, variants: list[dict]) -> str:
    """What sets ``variant`` apart: its constexprs, warps and the argument types that differ between ``variants``."""
    varying = [name for name, kind in variant["signature"].items()
               if any(other["signature"][name] != kind for other in variants)]
    return " ".join([*(f"{name}={value}" for name, value in variant["constexprs"].items()),
                     f"warps={variant['num_warps']}", *(f"{name}={variant['signature'][name]}" for name in varying)])


def compile_variant(kernel: JITFunction, variant: dict, capability: int) -> str:
    """Compile one variant; returns ptxas's register/spill summary."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        triton.compile(ASTSource(fn=kernel, signature=variant["signature"], constexprs=variant["constexprs"]),
                       target=GPUTarget("cuda", capability, 32), options={"num_warps": variant["num_warps"]})
    registers = re.findall(r"Used (\d+) registers", log.getvalue())
    spills = re.findall(r"(\d+) bytes spill stores", log.getvalue())
    return f"regs={','.join(registers) or '?'} spill_stores={','.join(spills) or '?'}"


def main() -> int:
    failures = 0
    compiled = 0
    for module in kernel_modules():
        missing = undeclared(module)
        if missing:
            print(f"FAIL {module.__name__}: @triton.jit functions without an AOT entry: {', '.join(missing)} "
                  "(add them to aot_variants(), or to DEVICE_FUNCTIONS if kernels call them)")
            failures += 1
        for kernel, variants in aot_variants(module).items():
            for variant in variants:
                for capability in CAPABILITIES:
                    name = f"{module.__name__}.{kernel.__name__} sm_{capability} {describe(variant, variants)}"
                    start = time.perf_counter()
                    try:
                        report = compile_variant(kernel, variant, capability)
                    except Exception as error:  # any compiler failure fails the check
                        print(f"FAIL {name}: {type(error).__name__}: {error}")
                        failures += 1
                        continue
                    compiled += 1
                    print(f"ok   {name} {report} ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"{compiled} kernel variants compiled, {failures} failures")
    return 1 if failures or not compiled else 0


if __name__ == "__main__":
    sys.exit(main())
