"""Dropping shadowed versions from a sorted record run.

``dedupe_sorted(buf, offs, snapshot_seq=None)`` takes offsets ordered by
(key asc, trailer desc) (the output of ``sort_records`` or ``merge_runs``)
and returns the offsets of the records that must survive:

* the newest version of every key (the first of its group), tombstones
  included: a delete must keep hiding older versions in older SSTs;
* with ``snapshot_seq`` set, also every version with ``seq > snapshot_seq``
  and, per key, the newest version with ``seq <= snapshot_seq``, which is the
  one a reader at that snapshot sees.

The output keeps the input order.
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.format.record import KIND_BITS, MAX_SEQ, RECORD_HEADER
from shaledb.kernels._jit import kernel
from shaledb.kernels.mem import prefetch
from shaledb.kernels.record import check_run, raise_bad_record, record_ok, same_key, trailer

__all__ = ["dedupe_sorted"]

_AHEAD = 16  # records prefetched ahead (offsets are in key order: random addresses)


@kernel
def _dedupe_sorted(buf, offs, snapshot_seq, use_snapshot):
    """REQUIRES: ``offs`` ordered by (key asc, trailer desc).

    Returns (kept offsets, -1), or (empty, index of the first record found out of bounds).
    """
    n = offs.shape[0]
    out = np.empty(n, dtype=np.int64)
    k = 0
    i = 0
    shift = np.uint64(KIND_BITS)
    last = n - 1
    while i < n:
        prefetch(buf, offs[min(i + _AHEAD, last)] + RECORD_HEADER)
        first = offs[i]
        if not record_ok(buf, first):
            return out[:0].copy(), i
        out[k] = first
        k += 1
        visible_kept = (trailer(buf, first) >> shift) <= snapshot_seq
        j = i + 1
        while j < n:
            if not record_ok(buf, offs[j]):
                return out[:0].copy(), j
            if not same_key(buf, offs[j], first):
                break
            prefetch(buf, offs[min(j + _AHEAD, last)] + RECORD_HEADER)
            if use_snapshot:
                seq = trailer(buf, offs[j]) >> shift
                if seq > snapshot_seq:
                    out[k] = offs[j]
                    k += 1
                elif not visible_kept:
                    out[k] = offs[j]
                    k += 1
                    visible_kept = True
            j += 1
        i = j
    return out[:k].copy(), -1


def dedupe_sorted(buf, offs, snapshot_seq=None) -> np.ndarray:
    """Offsets of the records of a sorted run that survive deduplication (see module doc)."""
    if snapshot_seq is not None and (
        isinstance(snapshot_seq, bool) or not isinstance(snapshot_seq, (int, np.integer)) or not 0 <= int(snapshot_seq) <= MAX_SEQ
    ):
        raise InvalidArgument(f"snapshot_seq must be None or an int in [0, 2**56), got {snapshot_seq!r}")
    buf, offs = check_run(buf, offs, validate=False)  # the kernel validates each record it reads
    if offs.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    use = snapshot_seq is not None
    out, bad = _dedupe_sorted(buf, offs, np.uint64(snapshot_seq if use else 0), use)
    if bad >= 0:
        raise_bad_record(buf, offs, bad)
    return out
