"""Plain-Python k-way merge: a stable sort of the concatenated runs."""

from __future__ import annotations

from reference.sort import sort_offsets


def merge_offsets(buf, run_bounds, offs):
    runs = [list(offs[run_bounds[i] : run_bounds[i + 1]]) for i in range(len(run_bounds) - 1)]
    return sort_offsets(buf, [o for run in runs for o in run])
