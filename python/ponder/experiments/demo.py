"""``ponder demo``: every search method at several generation budgets on held-out problems.

On the built-in task with the shipped policy and PRM (or a user's own checkpoint
directories), each method of :data:`~ponder.experiments.methods.METHODS` runs at each
budget on the same problems (the first ``problems`` of the test split, an equal mix of
levels). It writes into ``out``:

* ``results.json``: per method and budget the accuracy (overall and per level), the
  spend per problem (generations, sampled tokens, policy forward tokens, PRM tokens),
  the wall time and its split into sampling / model / PRM / other, and each problem's
  answer;
* ``accuracy.png``: accuracy against budget (log scale), one line per method;
* ``tree.png`` and ``tree.json``: the search tree of one beam search.

and prints the table as it goes, with a progress line on a terminal.
"""

from __future__ import annotations

import json
import time
from statistics import fmean
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ponder.experiments import plots
from ponder.experiments.methods import METHODS, MethodRun, feasible
from ponder.experiments.searchers import Searchers
from ponder.search.progress import Progress
from ponder.tasks import Problem, split

__all__ = ["DemoConfig", "run_demo", "format_table", "plot_accuracy"]

@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. ``policy``/``prm``: checkpoint directories (None: the shipped ones)."""

    methods: tuple[str, ...] = METHODS
    budgets: tuple[int, ...] = (1, 4, 16, 64)
    problems: int = 30
    seed: int = 0
    temperature: float = 1.0
    aggregate: str = "last"
    policy: str | None = None
    prm: str | None = None
    out: str = "ponder-demo"


def _row(run: MethodRun, problems: Sequence[Problem]) -> dict:
    spend = run.result.spend
    right = [answer == p.answer for answer, p in zip(run.answers, problems)]
    levels = sorted({p.difficulty.level for p in problems})
    n = len(problems)
    return {"method": run.method, "budget": run.budget, "accuracy": sum(right) / n,
            "accuracy_by_level": {str(level): fmean([r for r, p in zip(right, problems) if p.difficulty.level == level])
                                  for level in levels},
            "generations": spend.generations / n, "generated_tokens": spend.generated_tokens / n,
            "policy_forward_tokens": spend.policy_forward_tokens / n, "prm_tokens": spend.prm_tokens / n,
            "wall_s": spend.wall_s, "phase_s": {**spend.phase_s, "other": spend.other_s},
            "answers": run.answers}


def run_demo(config: DemoConfig, searchers: Searchers | None = None, *, log=print,
             progress: bool | None = None) -> dict:
    """Run the grid, write ``results.json``, ``accuracy.png``, ``tree.png``/``tree.json``; return the results."""
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}: expected some of {METHODS}")
    if not config.budgets or any(b < 1 for b in config.budgets):
        raise ValueError(f"budgets must be positive generation counts, got {config.budgets}")
    if config.problems < 1:
        raise ValueError(f"problems must be >= 1, got {config.problems}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    searchers = searchers or Searchers.load(config.policy, config.prm)
    problems = split("test", config.problems)
    grid = [(b, m) for b in sorted(config.budgets) for m in config.methods if feasible(m, b)]
    bar = Progress("demo", progress)
    rows, runs = [], []
    best_of_n_runs = {}  # budget -> the best-of-N result its three selections share
    start = time.perf_counter()
    log(format_table([], header=True))
    for i, (budget, method) in enumerate(grid):
        bar.update(i, len(grid), running=f"{method}@{budget}")
        run = searchers.run(method, budget, problems, seed=config.seed, temperature=config.temperature,
                            aggregate=config.aggregate, best_of_n_result=best_of_n_runs.get(budget))
        if run.result.method == "best_of_n":
            best_of_n_runs[budget] = run.result
        runs.append(run)
        rows.append(_row(run, problems))
        bar.clear()
        log(format_table(rows[-1:]))
    results = {"config": asdict(config), "checkpoints": searchers.names,
               "problems": [{"prompt": p.prompt, "answer": p.answer, "level": p.difficulty.level} for p in problems],
               "rows": rows, "wall_s": time.perf_counter() - start}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_accuracy(rows, out / "accuracy.png", title=f"{len(problems)} held-out problems")
    # A beam search's tree, at the largest budget up to 16 (big enough to show pruning, small enough
    # to read); else the smallest beam search, else the last run.
    beams = [r for r in runs if r.method == "beam_search"]
    tree_run = max((r for r in beams if r.budget <= 16), key=lambda r: r.budget,
                   default=beams[0] if beams else runs[-1])
    prompt = _most_branched(tree_run)
    tree_run.result.tree.render(out / "tree.png", prompt)
    tree_run.result.tree.save_json(out / "tree.json")
    log(f"\nwrote {out / 'results.json'}, {out / 'accuracy.png'}, {out / 'tree.png'} "
        f"({tree_run.method} at budget {tree_run.budget}, problem {prompt}) in {results['wall_s']:.0f} s")
    return results


def _most_branched(run: MethodRun) -> int:
    """The problem whose tree has the most nodes (the most telling picture)."""
    counts: dict[int, int] = {}
    for node in run.result.tree.nodes.values():
        counts[node.prompt] = counts.get(node.prompt, 0) + 1
    return max(sorted(counts), key=counts.get)


_COLUMNS = (("method", "{:<20}", "{:<20}"), ("budget", "{:>6}", "{:>6d}"), ("accuracy", "{:>8}", "{:>8.3f}"),
            ("generations", "{:>11}", "{:>11.1f}"), ("generated_tokens", "{:>16}", "{:>16.0f}"),
            ("prm_tokens", "{:>10}", "{:>10.0f}"), ("wall_s", "{:>7}", "{:>7.1f}"))


def format_table(rows: Sequence[dict], header: bool = False) -> str:
    """Rows of the results as fixed-width text (spend per problem); ``header`` for the column names."""
    lines = ["".join(head.format(name) + " " for name, head, _ in _COLUMNS).rstrip()] if header else []
    lines += ["".join(cell.format(row[name]) + " " for name, _, cell in _COLUMNS).rstrip() for row in rows]
    return "\n".join(lines)


def plot_accuracy(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Accuracy against generation budget (log2 axis), one line per method, as a PNG."""
    curves: dict[str, dict[int, float]] = {}
    for row in rows:
        curves.setdefault(row["method"], {})[row["budget"]] = row["accuracy"]
    fig, ax = plots.pyplot().subplots(figsize=(6.5, 4.2))
    plots.plot_curves(ax, curves, title)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return plots.save(fig, path)
