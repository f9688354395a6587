"""Accuracy curves on a log2 axis (against the budget, or the revision ratio), the one kind of plot the experiments
draw (matplotlib, PNG)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["pyplot", "plot_curves", "save"]


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
    return plt


def plot_curves(ax, curves: Mapping[str, Mapping[float, float]], title: str = "", dashed: tuple[str, ...] = (),
                xlabel: str = "generation budget") -> None:
    """One line per ``label -> {x: accuracy}`` on a log2 x axis (the budget unless ``xlabel``
    says otherwise), accuracy 0..1; labels in ``dashed`` drawn dashed."""
    for label, points in curves.items():
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", markersize=3, label=label,
                linestyle="--" if label in dashed else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG and close it."""
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path
