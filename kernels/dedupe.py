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
from shaledb.kernels._jit import kernel
from shaledb.kernels.layout import MAX_SEQ
from shaledb.kernels.hashing import _load_u32, _load_u64, _prefetch
from shaledb.kernels.layout import RECORD_HEADER
from shaledb.kernels.sort import _AHEAD, _record_ok, _trailer, check_run, raise_bad_record

__all__ = ["dedupe_sorted"]


@kernel
def _same_key(buf, a, b):
    """True when the records at ``a`` and ``b`` have equal keys (lengths
    first, then 8 bytes at a time)."""
    n = np.int64(_load_u32(buf, a))
    if n != np.int64(_load_u32(buf, b)):
        return False
    pa = a + RECORD_HEADER
    pb = b + RECORD_HEADER
    i = 0
    while i + 8 <= n:
        if _load_u64(buf, pa + i) != _load_u64(buf, pb + i):
            return False
        i += 8
    while i < n:
        if buf[pa + i] != buf[pb + i]:
            return False
        i += 1
    return True


@kernel
def _dedupe_sorted(buf, offs, snapshot_seq, use_snapshot):
    """REQUIRES: ``offs`` ordered by (key asc, trailer desc).

    Returns (kept offsets, -1), or (empty, index of the first record found out of bounds).
    """
    n = offs.shape[0]
    out = np.empty(n, dtype=np.int64)
    k = 0
    i = 0
    shift = np.uint64(8)
    last = n - 1
    while i < n:
        _prefetch(buf, offs[min(i + _AHEAD, last)] + RECORD_HEADER)
        first = offs[i]
        if not _record_ok(buf, first):
            return out[:0].copy(), i
        out[k] = first
        k += 1
        visible_kept = (_trailer(buf, first) >> shift) <= snapshot_seq
        j = i + 1
        while j < n:
            if not _record_ok(buf, offs[j]):
                return out[:0].copy(), j
            if not _same_key(buf, offs[j], first):
                break
            _prefetch(buf, offs[min(j + _AHEAD, last)] + RECORD_HEADER)
            if use_snapshot:
                seq = _trailer(buf, offs[j]) >> shift
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
