"""Benchmark ``ponder.sample`` against the reference, the transformers warper chain and a read floor.

Run ``python benchmarks/bench_sampling.py`` (``--help`` lists the flags). For every
batch size B, vocabulary size V, logits dtype and filter setting, four methods are
timed in the same run on the same logits tensor:

ponder
    ``ponder.sample(logits, ..., seed=0, backend=<--backend>)``: the public call,
    argument checks included (default backend: ``cpu`` on a CPU device).
ref
    The same call with ``backend="reference"`` (pure PyTorch, sort-based). It is slow,
    so it gets 3 timed calls after one probe call, and it is skipped where one call is
    expected to take longer than ``--reference-max-s`` seconds (the estimate scales
    the time at the previous batch size of the same V, dtype and setting); where the
    probe call alone takes longer, it is the one call reported.
chain
    What ``transformers``' ``generate`` does per sampling step: copy the logits to
    float32, apply the real ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
    ``TopPLogitsWarper`` and ``MinPLogitsWarper`` in that order (each only when the
    setting enables it, as ``generate`` builds its list), then ``softmax`` and
    ``torch.multinomial(num_samples=1)``.
floor
    ``torch.amax(logits, dim=-1)``: one streaming read of the logits, in their dtype.
    It reads the same, cache-warm tensor as the other methods; where B x V fits in the
    last-level cache it is a cache-bandwidth floor rather than a DRAM one.

Settings
--------
plain
    temperature 1, no filters (``chain`` is then float32 copy + softmax + multinomial).
filtered
    temperature 0.7, top_k 50, top_p 0.95, min_p off: the issue's target setting
    (top-k 50 and top-p 0.95) under a typical sampling temperature. min_p is left
    off so that the chain is not charged for a warper the target does not name.

Logits
------
``llm_like_logits`` draws rows that look like a language model's output rather than
``randn``: each token's logit is drawn i.i.d. as ``20 - e * log(V * u)`` with
``u ~ U(1/V, 1)``, so that the row sorted in decreasing order follows a Zipf profile,
``p(rank r) ∝ r^-e``. The exponent ``e ~ U(1, 2.5)`` is drawn per row: rows near
``e = 1`` are uncertain (the top-p 0.95 nucleus spans thousands of tokens), steep rows
are confident. In 30% of rows one random token is also lifted 3 to 8 above the row's
maximum (a single dominant continuation). With a fixed seed, at temperature 1 the
top-p 0.95 nucleus has a median of 7 to 15 tokens and a 90th percentile in the
thousands; the script prints these statistics per V. Top-p cost depends on this shape,
which is why it is not ``randn``.

Targets (from the issue, checked at B=64, V=128256, ``filtered``, both dtypes): the
ponder backend at least 10x faster than ``chain``, and within 3x of ``floor``. The
script ends with one PASS/FAIL line per target and dtype.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass

import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import ponder
from common import Column, Timing, make_parser, measure, print_table, profiling, setup, write_json

NAME = "sampling"
BATCHES = (1, 8, 64, 256)
VOCABS = (32000, 128256, 151936)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
QUICK_BATCHES = (1, 8)
QUICK_VOCABS = (32000,)
LOGITS_SEED = 0
SAMPLE_SEED = 0
PROFILE_MAX_REPS = 5

TARGET_BATCH, TARGET_VOCAB, TARGET_SETTING = 64, 128256, "filtered"
TARGET_CHAIN_SPEEDUP = 10.0  # chain time / ponder time, at least
TARGET_FLOOR_RATIO = 3.0  # ponder time / floor time, at most


@dataclass(frozen=True)
class Setting:
    """One filter configuration, in ``ponder.sample``'s terms (0 / 1 disable a filter)."""

    name: str
    temperature: float
    top_k: int
    top_p: float
    min_p: float

    def sample_kwargs(self) -> dict:
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p, "min_p": self.min_p}

    def warpers(self) -> list:
        """The warpers ``generate`` would build for this setting, in its order."""
        chain = []
        if self.temperature != 1.0:
            chain.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k != 0:
            chain.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            chain.append(TopPLogitsWarper(self.top_p))
        if self.min_p > 0.0:
            chain.append(MinPLogitsWarper(self.min_p))
        return chain


SETTINGS = {
    "plain": Setting("plain", temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
    "filtered": Setting("filtered", temperature=0.7, top_k=50, top_p=0.95, min_p=0.0),
}


def llm_like_logits(batch: int, vocab: int, *, seed: int = LOGITS_SEED) -> torch.Tensor:
    """float32 [batch, vocab] logits with a per-row Zipf profile (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    exponent = 1.0 + 1.5 * torch.rand(batch, 1, generator=gen)
    quantile = torch.rand(batch, vocab, generator=gen).clamp_min_(1.0 / vocab)  # ~ rank / V
    logits = 20.0 - exponent * torch.log(quantile * vocab)
    dominant = torch.nonzero(torch.rand(batch, generator=gen) < 0.3).squeeze(-1)
    lift = 3.0 + 5.0 * torch.rand(batch, generator=gen)
    column = torch.randint(vocab, (batch,), generator=gen)
    logits[dominant, column[dominant]] = logits[dominant].amax(-1) + lift[dominant]
    return logits


def nucleus_stats(logits: torch.Tensor, top_p: float = 0.95) -> dict[str, float]:
    """Size of the top-p nucleus at temperature 1 (quartiles and 90th percentile) and the median top-1 probability."""
    probs = torch.softmax(logits.float(), dim=-1).sort(dim=-1, descending=True).values
    size = ((probs.cumsum(-1) - probs) < top_p).sum(-1).double()
    q = size.quantile(torch.tensor([0.25, 0.5, 0.75, 0.9], dtype=torch.float64)).tolist()
    return {"nucleus_q1": q[0], "nucleus_median": q[1], "nucleus_q3": q[2], "nucleus_p90": q[3],
            "top1_prob_median": probs[:, 0].median().item()}


def transformers_chain(setting: Setting, batch: int, device: torch.device):
    """A function of the logits doing ``generate``'s sampling step with the real warpers."""
    warpers = setting.warpers()
    input_ids = torch.zeros((batch, 0), dtype=torch.long, device=device)  # the warpers above ignore it

    def run(logits: torch.Tensor) -> torch.Tensor:
        scores = logits.to(torch.float32, copy=True)
        for warper in warpers:
            scores = warper(input_ids, scores)
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)

    return run


def ponder_unavailable(backend: str, device: torch.device) -> str | None:
    """Why ``ponder.sample`` cannot run on ``backend`` here, or None when it can."""
    try:
        ponder.sample(torch.randn(2, 100, device=device), seed=0, backend=backend)
    except (RuntimeError, ValueError, NotImplementedError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def parse_args(argv=None):
    parser = make_parser(NAME, __doc__.split("\n", 1)[0])
    parser.add_argument("--backend", default=None,
                        help="ponder backend to time (default: cpu on a CPU device, cuda on a CUDA device)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help=f"batch sizes (default {BATCHES})")
    parser.add_argument("--vocab", type=int, nargs="+", default=None, help=f"vocabulary sizes (default {VOCABS})")
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES), help="logits dtypes (default all)")
    parser.add_argument("--setting", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                        help="filter settings (default all)")
    parser.add_argument("--reference-max-s", type=float, default=2.0,
                        help="skip the reference where one call is expected to take longer (default 2; inf: never skip; 0: never run it)")
    args = parser.parse_args(argv)
    args.batch = sorted(args.batch or (QUICK_BATCHES if args.quick else BATCHES))
    args.vocab = sorted(args.vocab or (QUICK_VOCABS if args.quick else VOCABS))
    if args.backend is None:
        args.backend = "cuda" if args.device.startswith("cuda") else "cpu"
    return args


class Runner:
    """Times the four methods on each shape and keeps the rows of the results table."""

    def __init__(self, args, device: torch.device):
        self.args = args
        self.device = device
        self.label_calls = args.profile is not None
        # Fast methods: enough calls for a stable median. Slow ones: few calls.
        self.fast = dict(warmup=2, min_reps=10, max_reps=2000, min_time_s=0.05 if args.quick else 0.3)
        self.slow = dict(warmup=1, min_reps=3, max_reps=20, min_time_s=0.05 if args.quick else 0.3)
        # The reference's first call is its warm-up and probe (see _time_reference).
        reference_calls = 1 if args.quick else 3
        self.reference_reps = dict(warmup=0, min_reps=reference_calls, max_reps=reference_calls, min_time_s=0.0)
        if self.label_calls:  # a trace needs a few calls per method, not thousands
            for reps in (self.fast, self.slow, self.reference_reps):
                reps.update(warmup=min(reps["warmup"], 1), max_reps=min(reps["max_reps"], PROFILE_MAX_REPS))
        self.last_reference: dict[tuple, tuple[int, float]] = {}  # (V, dtype, setting) -> (B, ms)
        self.ponder_error = ponder_unavailable(args.backend, device)
        self.rows: list[dict] = []

    def _time(self, method: str, fn, shape: str, reps: dict) -> Timing:
        label = f"{method} {shape}" if self.label_calls else None
        return measure(fn, device=self.device, label=label, **reps)

    def _time_reference(self, logits: torch.Tensor, dtype_name: str, setting: Setting, shape: str) -> Timing | None:
        """Time the reference backend, or return None where a call would take longer than ``--reference-max-s``.

        The expected time scales the median at the previous batch size of the same V,
        dtype and setting. Where there is none, or it is within the limit, a first call
        probes: if it alone took longer than the limit, it is the only call timed.
        """
        batch, vocab = logits.shape
        limit_ms = self.args.reference_max_s * 1e3
        key = (vocab, dtype_name, setting.name)
        if limit_ms <= 0:
            return None
        if key in self.last_reference:
            prev_batch, prev_ms = self.last_reference[key]
            if prev_ms * batch / prev_batch > limit_ms:
                return None
        kwargs = setting.sample_kwargs()

        def call():
            return ponder.sample(logits, **kwargs, seed=SAMPLE_SEED, backend="reference")

        timing = self._time("ref", call, shape, dict(warmup=0, min_reps=1, max_reps=1, min_time_s=0.0))
        if timing.median <= limit_ms:
            timing = self._time("ref", call, shape, self.reference_reps)
        self.last_reference[key] = (batch, timing.median)
        return timing

    def run_shape(self, logits: torch.Tensor, dtype_name: str, setting: Setting) -> dict:
        batch, vocab = logits.shape
        shape = f"B={batch} V={vocab} {dtype_name} {setting.name}"
        kwargs = setting.sample_kwargs()
        timings: dict[str, Timing | None] = {}

        if self.ponder_error is None:
            timings["ponder"] = self._time(
                "ponder", lambda: ponder.sample(logits, **kwargs, seed=SAMPLE_SEED, backend=self.args.backend),
                shape, self.fast)
        else:
            timings["ponder"] = None

        timings["ref"] = self._time_reference(logits, dtype_name, setting, shape)

        chain = transformers_chain(setting, batch, self.device)
        timings["chain"] = self._time("chain", lambda: chain(logits), shape, self.slow)
        timings["floor"] = self._time("floor", lambda: torch.amax(logits, dim=-1), shape, self.fast)

        row = self._row(logits, dtype_name, setting, timings)
        self.rows.append(row)
        return row

    @staticmethod
    def _row(logits: torch.Tensor, dtype_name: str, setting: Setting, timings: dict[str, Timing | None]) -> dict:
        batch, vocab = logits.shape
        nbytes = logits.numel() * logits.element_size()
        ms = {m: (t.median if t is not None else None) for m, t in timings.items()}

        def ratio(num, den):
            return num / den if num is not None and den is not None else None

        def gbps(t):
            return nbytes / (t * 1e-3) / 1e9 if t is not None else None

        return {
            "batch": batch, "vocab": vocab, "dtype": dtype_name, "setting": setting.name, "bytes": nbytes,
            **{f"{m}_ms": v for m, v in ms.items()},
            "ponder_iqr_ms": timings["ponder"].iqr if timings["ponder"] is not None else None,
            "ponder_gbps": gbps(ms["ponder"]),
            "floor_gbps": gbps(ms["floor"]),
            "chain_over_ponder": ratio(ms["chain"], ms["ponder"]),
            "ref_over_ponder": ratio(ms["ref"], ms["ponder"]),
            "ponder_over_floor": ratio(ms["ponder"], ms["floor"]),
            "timings": {m: (t.to_dict() if t is not None else None) for m, t in timings.items()},
        }


COLUMNS = [
    Column("batch", "B", 4),
    Column("vocab", "V", 7),
    Column("dtype", "dtype", 5),
    Column("setting", "setting", 8),
    Column("ponder_ms", "ponder ms", 10, ".3f"),
    Column("ponder_iqr_ms", "iqr", 7, ".3f"),
    Column("ref_ms", "ref ms", 9, ".1f"),
    Column("chain_ms", "chain ms", 9, ".2f"),
    Column("floor_ms", "floor ms", 9, ".3f"),
    Column("ponder_gbps", "ponder GB/s", 11, ".1f"),
    Column("floor_gbps", "floor GB/s", 10, ".1f"),
    Column("chain_over_ponder", "chain/ponder", 12, ".1f"),
    Column("ref_over_ponder", "ref/ponder", 10, ".1f"),
    Column("ponder_over_floor", "ponder/floor", 12, ".2f"),
]


def check_targets(rows: list[dict], dtypes: list[str]) -> list[dict]:
    """One verdict per target and dtype at the target shape: PASS, FAIL or NOT MEASURED."""
    verdicts = []
    for dtype_name in dtypes:
        row = next((r for r in rows if (r["batch"], r["vocab"], r["dtype"], r["setting"])
                    == (TARGET_BATCH, TARGET_VOCAB, dtype_name, TARGET_SETTING)), None)
        for metric, goal, bound, passes in (
            ("chain_over_ponder", f"ponder >= {TARGET_CHAIN_SPEEDUP:g}x faster than chain", TARGET_CHAIN_SPEEDUP,
             lambda v: v >= TARGET_CHAIN_SPEEDUP),
            ("ponder_over_floor", f"ponder within {TARGET_FLOOR_RATIO:g}x of floor", TARGET_FLOOR_RATIO,
             lambda v: v <= TARGET_FLOOR_RATIO),
        ):
            value = row[metric] if row is not None else None
            status = "NOT MEASURED" if value is None else ("PASS" if passes(value) else "FAIL")
            verdicts.append({"target": goal, "metric": metric, "bound": bound, "dtype": dtype_name,
                             "batch": TARGET_BATCH, "vocab": TARGET_VOCAB, "setting": TARGET_SETTING,
                             "value": value, "status": status})
    return verdicts


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args)
    torch.manual_seed(0)  # torch.multinomial in the chain draws from the default generator
    runner = Runner(args, device)
    settings = [SETTINGS[name] for name in args.setting]

    print(f"ponder.sample benchmark: device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, ponder backend {args.backend!r}")
    if runner.ponder_error is not None:
        print(f"ponder backend {args.backend!r} cannot run here ({runner.ponder_error}); its columns stay empty")
    for s in settings:
        print(f"  {s.name:8s} temperature={s.temperature:g} top_k={s.top_k} top_p={s.top_p:g} min_p={s.min_p:g}")
    if args.profile:
        print(f"profiling: at most {PROFILE_MAX_REPS} timed calls per method, and timings include profiler overhead")

    logits_stats = {}
    start = time.perf_counter()
    with profiling(args.profile, device):
        for vocab in args.vocab:
            base = llm_like_logits(max(args.batch), vocab)
            logits_stats[vocab] = nucleus_stats(base[:64])  # sorting all 256 rows would take seconds
            stats = logits_stats[vocab]
            print(f"V={vocab}: top-p 0.95 nucleus at T=1: median {stats['nucleus_median']:.0f} tokens, "
                  f"q3 {stats['nucleus_q3']:.0f}, p90 {stats['nucleus_p90']:.0f}; "
                  f"median top-1 prob {stats['top1_prob_median']:.2f}", flush=True)
            for batch in args.batch:
                for dtype_name in args.dtype:
                    logits = base[:batch].to(device=device, dtype=DTYPES[dtype_name], copy=True)
                    for setting in settings:
                        runner.run_shape(logits, dtype_name, setting)
                        print(f"  [{time.perf_counter() - start:6.1f} s] B={batch} V={vocab} {dtype_name} {setting.name} "
                              f"done", file=sys.stderr, flush=True)

    print()
    print_table(COLUMNS, runner.rows,
                title=f"ponder.sample [{args.backend}] vs reference / transformers chain / amax floor; "
                      f"{torch.get_num_threads()} threads; times are medians in ms")
    verdicts = check_targets(runner.rows, args.dtype)
    print()
    for v in verdicts:
        shown = "-" if v["value"] is None else f"{v['value']:.2f}"
        print(f"{v['status']:>12}  {v['target']}  (B={v['batch']} V={v['vocab']} {v['dtype']} {v['setting']}: "
              f"{v['metric']} = {shown})")

    path = write_json(
        args.json, name=NAME, device=device,
        config={"ponder_backend": args.backend, "batches": args.batch, "vocabs": args.vocab, "dtypes": args.dtype,
                "settings": [asdict(s) for s in settings], "quick": args.quick,
                "reference_max_s": args.reference_max_s if math.isfinite(args.reference_max_s) else "inf",
                "logits": {"generator": "llm_like_logits (Zipf rows, see bench_sampling.py)", "seed": LOGITS_SEED,
                           "stats_of_first_64_rows": logits_stats},
                "ponder_error": runner.ponder_error},
        results=runner.rows, targets=verdicts)
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
