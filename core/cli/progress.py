"""A tiny progress bar for long commands, drawn on stderr only when stderr is
a terminal (so pipes, logs and tests see nothing)."""

from __future__ import annotations

import sys

__all__ = ["Progress"]


class Progress:
    """``Progress(label)(done, total)`` redraws one line; ``close()`` ends it.

    Not thread-safe; one bar at a time.
    """

    WIDTH = 30

    def __init__(self, label: str, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.on = bool(getattr(self.stream, "isatty", lambda: False)())
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.on:
            return
        frac = done / total if total else 1.0
        fill = int(frac * self.WIDTH)
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (self.WIDTH - fill)}] {done}/{total}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
