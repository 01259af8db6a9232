"""K-way merge of sorted record runs (compaction).

``merge_runs(buf, run_bounds, offs)``: ``offs`` holds k runs back to back, run
``i`` being ``offs[run_bounds[i]:run_bounds[i+1]]``, each ordered by
(key asc, trailer desc) and all pointing into ``buf`` (``concat_runs`` joins
runs from several buffers).  The result is every offset once, in that order;
records that compare equal come from the lower-numbered run first, so the
merge equals a stable sort of the concatenation.

The kernel keeps a binary min-heap of run numbers keyed by each run's current
record: one full record comparison per heap level per output record.
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.format.record import RECORD_HEADER
from shaledb.kernels._jit import kernel
from shaledb.kernels.mem import prefetch
from shaledb.kernels.record import as_offsets, check_run, compare_records, raise_bad_record, record_ok

__all__ = ["merge_runs"]


@kernel
def _run_less(buf, offs, pos, a, b):
    c = compare_records(buf, offs[pos[a]], offs[pos[b]])
    if c != 0:
        return c < 0
    return a < b


@kernel
def _sift_down(buf, offs, pos, heap, size, i):
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _run_less(buf, offs, pos, heap[right], heap[left]):
            child = right
        if _run_less(buf, offs, pos, heap[child], heap[i]):
            heap[i], heap[child] = heap[child], heap[i]
            i = child
        else:
            return


@kernel
def _merge_runs(buf, run_bounds, offs):
    """REQUIRES: each run sorted; run_bounds non-decreasing from 0 to len(offs).

    Every record is checked before it is compared; returns (merged, -1), or
    (empty, index into ``offs`` of a record out of bounds).
    """
    k = run_bounds.shape[0] - 1
    n = offs.shape[0]
    out = np.empty(n, dtype=np.int64)
    pos = run_bounds[:k].copy()
    ends = run_bounds[1:].copy()
    heap = np.empty(k, dtype=np.int64)
    size = 0
    for r in range(k):
        if pos[r] < ends[r]:
            if not record_ok(buf, offs[pos[r]]):
                return out[:0].copy(), pos[r]
            heap[size] = r
            size += 1
    for i in range(size // 2 - 1, -1, -1):
        _sift_down(buf, offs, pos, heap, size, i)
    j = 0
    while size > 1:
        r = heap[0]
        out[j] = offs[pos[r]]
        j += 1
        pos[r] += 1
        if pos[r] + 2 < ends[r]:
            prefetch(buf, offs[pos[r] + 2] + RECORD_HEADER)
        if pos[r] < ends[r] and not record_ok(buf, offs[pos[r]]):
            return out[:0].copy(), pos[r]
        if pos[r] == ends[r]:
            size -= 1
            heap[0] = heap[size]
        _sift_down(buf, offs, pos, heap, size, 0)
    if size == 1:
        r = heap[0]
        while pos[r] < ends[r]:
            if not record_ok(buf, offs[pos[r]]):
                return out[:0].copy(), pos[r]
            out[j] = offs[pos[r]]
            j += 1
            pos[r] += 1
    return out, -1


def merge_runs(buf, run_bounds, offs) -> np.ndarray:
    """Offsets of k sorted runs (``offs`` split by ``run_bounds``) merged into one sorted run."""
    buf, offs = check_run(buf, offs, validate=False)  # the kernel validates each record
    bounds = as_offsets(run_bounds, "run_bounds")
    if bounds.shape[0] < 1 or bounds[0] != 0 or bounds[-1] != offs.shape[0] or np.any(np.diff(bounds) < 0):
        raise InvalidArgument(
            f"run_bounds must rise from 0 to len(offs)={offs.shape[0]}, got {bounds[:8].tolist()}"
            + ("..." if bounds.shape[0] > 8 else "")
        )
    if offs.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    out, bad = _merge_runs(buf, bounds, offs)
    if bad >= 0:
        raise_bad_record(buf, offs, bad)
    return out
