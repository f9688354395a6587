"""A dependency-free progress line for long searches, on stderr.

Shown when asked (``progress=True``) or, by default, when stderr is a terminal; a
search reports its rounds (beam steps, MCTS iterations, roll-out steps) and the tokens
it has sampled so far.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """``update(done, total, **info)`` redraws one line; ``close()`` ends it."""

    def __init__(self, label: str, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.start = time.perf_counter()
        self.drawn = False

    def update(self, done: int, total: int | None, **info) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        if total:
            filled = int(20 * min(done, total) / total)
            bar = f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{total}"
        else:
            bar = f"{done}"
        extra = " ".join(f"{k}={v}" for k, v in info.items())
        self.stream.write(f"\r{self.label} {bar} {extra} {elapsed:.1f}s\033[K")
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        """Erase the line, so that other output can be printed before the next update."""
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
