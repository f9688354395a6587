"""Shared pieces of ponder's benchmark scripts: timing, tables, JSON, profiling, CLI.

Every ``benchmarks/bench_*.py`` script is run as ``python benchmarks/bench_x.py`` and
imports from here (``from common import ...``; Python puts the script's folder on
``sys.path``). A script

1. builds its parser with :func:`make_parser` (the standard flags ``--quick``,
   ``--json``, ``--profile``, ``--device``, ``--threads``) and adds its own flags;
2. calls :func:`setup` once (threads, device, the JSON path);
3. wraps its run in :func:`profiling` and times each method with :func:`measure`,
   passing ``label`` when profiling so that each call shows up as a named range;
4. prints a :class:`Column` table with :func:`print_table` and writes everything with
   :func:`write_json` (machine information is added there).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
BUSY_LOAD_PER_CORE = 0.5  # setup() warns when the 1-minute load average is above this per core


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Wall-clock statistics of repeated calls, in milliseconds.

    ``median`` is the number to report; ``iqr`` (``q3 - q1``) says how much it moved.
    """

    median: float
    q1: float
    q3: float
    min: float
    reps: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "iqr": self.iqr}


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quartiles(samples: Sequence[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return samples[0], samples[0]
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q3


def measure(
    fn: Callable[[], Any],
    *,
    device: torch.device,
    warmup: int = 1,
    min_reps: int = 5,
    max_reps: int = 200,
    min_time_s: float = 0.3,
    label: str | None = None,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then repeats until enough time or calls.

    Repeats stop once at least ``min_reps`` calls took ``min_time_s`` in total, or
    after ``max_reps`` calls (cap this for slow methods; ``max_reps`` wins over
    ``min_reps``). Each call is timed on its own, with the device synchronised before
    and after, so the statistics are over single calls. With ``label``, every call
    runs inside ``torch.profiler.record_function(label)`` (pass it only when
    profiling: the range itself costs a few microseconds).
    """
    if max_reps < 1:
        raise ValueError(f"max_reps must be >= 1, got {max_reps}")
    scope = (lambda: torch.profiler.record_function(label)) if label else contextlib.nullcontext
    for _ in range(warmup):
        with scope():
            fn()
    synchronize(device)
    samples: list[float] = []
    while len(samples) < max_reps and (len(samples) < min_reps or sum(samples) < min_time_s * 1e3):
        start = time.perf_counter()
        with scope():
            fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1e3)
    q1, q3 = _quartiles(samples)
    return Timing(median=statistics.median(samples), q1=q1, q3=q3, min=min(samples), reps=len(samples))


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    """One column of a printed table: ``key`` into each row dict, a header, a width, a format.

    A missing key or a ``None`` value prints as ``-``; a NaN prints as ``n/a``.
    """

    key: str
    header: str
    width: int
    fmt: str = ""

    def render(self, row: dict[str, Any]) -> str:
        value = row.get(self.key)
        if value is None:
            text = "-"
        elif isinstance(value, float) and math.isnan(value):
            text = "n/a"
        else:
            text = format(value, self.fmt)
        return text.rjust(self.width)


def format_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table: a header line, a rule, one line per row."""
    header = " ".join(c.header.rjust(c.width) for c in columns)
    lines = [header, "-" * len(header)]
    lines += [" ".join(c.render(row) for c in columns) for row in rows]
    return "\n".join(lines)


def print_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]], *, title: str | None = None) -> None:
    if title:
        print(title)
    print(format_table(columns, rows), flush=True)


# --------------------------------------------------------------------------- machine / JSON


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """HEAD of the repository holding the benchmarks, with ``-dirty`` when the tree has edits."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()

        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a result depends on: versions, cores, threads, device, date, commit."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "load_average_1min": _load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
    }


def write_json(path: str | Path, *, name: str, device: torch.device, config: dict[str, Any], results: Any,
               **extra: Any) -> Path:
    """Write ``{name, machine, config, results, **extra}`` to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "machine": machine_info(device), "config": config, "results": results, **extra}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------- profiling


@contextlib.contextmanager
def profiling(trace_path: str | Path | None, device: torch.device) -> Iterator[None]:
    """Run the body under ``torch.profiler.profile`` and write a Chrome/Perfetto trace.

    ``None`` runs the body unprofiled. Open the trace in https://ui.perfetto.dev or
    ``chrome://tracing``; ranges made with ``torch.profiler.record_function`` (see
    :func:`measure`'s ``label``) name each method.
    """
    if trace_path is None:
        yield
        return
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        yield
    Path(trace_path).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace_path))
    print(f"profiler trace written to {trace_path}")


# --------------------------------------------------------------------------- CLI


def make_parser(name: str, description: str) -> argparse.ArgumentParser:
    """A parser with the flags every benchmark script takes."""
    parser = argparse.ArgumentParser(prog=f"bench_{name}.py", description=description)
    parser.add_argument("--quick", action="store_true", help="a tiny subset of shapes and few repeats (CI smoke test)")
    parser.add_argument("--json", metavar="PATH", default=str(RESULTS_DIR / f"{name}.json"),
                        help=f"where to write the results (default benchmarks/results/{name}.json)")
    parser.add_argument("--profile", metavar="PATH", default=None,
                        help="write a torch.profiler Chrome/Perfetto trace of the run here (timings then include profiler overhead)")
    parser.add_argument("--device", default="cpu", help="torch device to run on, e.g. cpu or cuda:0 (default cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N) for the run (default: torch's own, all cores)")
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Apply the standard flags (threads, device check), warn when the machine is busy, return the device."""
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch has no CUDA device (torch {torch.__version__})")
    load, cores = _load_average(), os.cpu_count() or 1
    if load is not None and load > BUSY_LOAD_PER_CORE * cores:
        print(f"warning: load average {load:.1f} on {cores} cores: other processes are running, timings will be noisy",
              file=sys.stderr)
    return device
