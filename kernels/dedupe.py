"""Dropping shadowed versions from a sorted record run.

``dedupe_sorted(buf, offs, snapshot_seq=None)`` takes offsets ordered by
(key asc, trailer desc) (the output of ``sort_records`` or ``merge_runs``)
and returns the offsets of the records that must survive:

* the newest version of every key (the first of its group), tombstones
  included: a delete must keep hiding older versions in older SSTs;
* with ``snapshot_seq`` set, also every version with ``seq > snapshot_seq``
  and, per key, the newest version with ``seq <= snapshot_seq``, which is the
  one a reader at that snapshot sees.

The output keeps the input order.  With ``key_hashes=True`` it also returns
``XXH64(key, seed=0)`` of every kept record, computed while its key is in
cache: the flush path hands them to ``bloom_build_from_hashes``, so a flush
hashes each key once and the bloom build does not read the records again.
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.format.record import KIND_BITS, MAX_SEQ, RECORD_HEADER
from shaledb.kernels._jit import kernel
from shaledb.kernels.hashing import xxh64_range
from shaledb.kernels.mem import prefetch
from shaledb.kernels.record import check_run, key_len, raise_bad_record, record_ok, same_key, trailer

__all__ = ["dedupe_sorted"]

_AHEAD = 16  # records prefetched ahead (offsets are in key order: random addresses)


@kernel
def _dedupe_sorted(buf, offs, snapshot_seq, use_snapshot, out, hashes, want_hashes):
    """Write the kept offsets (and, if ``want_hashes``, their key hashes) to
    ``out`` / ``hashes``; return (number kept, -1), or (0, index of the first
    record found out of bounds).

    REQUIRES: ``offs`` ordered by (key asc, trailer desc); ``out`` as long as
    ``offs``; ``hashes`` too when ``want_hashes``.
    """
    n = offs.shape[0]
    k = 0
    i = 0
    shift = np.uint64(KIND_BITS)
    last = n - 1
    while i < n:
        prefetch(buf, offs[min(i + _AHEAD, last)] + RECORD_HEADER)
        first = offs[i]
        if not record_ok(buf, first):
            return 0, i
        h = np.uint64(0)
        if want_hashes:
            h = xxh64_range(buf, first + RECORD_HEADER, key_len(buf, first), np.uint64(0))
            hashes[k] = h
        out[k] = first
        k += 1
        visible_kept = (trailer(buf, first) >> shift) <= snapshot_seq
        j = i + 1
        while j < n:
            if not record_ok(buf, offs[j]):
                return 0, j
            if not same_key(buf, offs[j], first):
                break
            prefetch(buf, offs[min(j + _AHEAD, last)] + RECORD_HEADER)
            if use_snapshot:
                seq = trailer(buf, offs[j]) >> shift
                if seq > snapshot_seq or not visible_kept:
                    visible_kept = visible_kept or seq <= snapshot_seq
                    if want_hashes:
                        hashes[k] = h  # same key, same hash
                    out[k] = offs[j]
                    k += 1
            j += 1
        i = j
    return k, -1


def dedupe_sorted(buf, offs, snapshot_seq=None, *, key_hashes: bool = False):
    """Offsets of the records of a sorted run that survive deduplication (see module doc).

    With ``key_hashes=True``, returns ``(offsets, hashes)``: ``hashes[i]`` is
    the uint64 XXH64 (seed 0) of the key of record ``offsets[i]``.
    """
    if snapshot_seq is not None and (
        isinstance(snapshot_seq, bool) or not isinstance(snapshot_seq, (int, np.integer)) or not 0 <= int(snapshot_seq) <= MAX_SEQ
    ):
        raise InvalidArgument(f"snapshot_seq must be None or an int in [0, 2**56), got {snapshot_seq!r}")
    buf, offs = check_run(buf, offs, validate=False)  # the kernel validates each record it reads
    n = offs.shape[0]
    key_hashes = bool(key_hashes)
    # outputs allocated by numpy (huge pages for large arrays), not in the kernel
    out = np.empty(n, dtype=np.int64)
    hashes = np.empty(n if key_hashes else 0, dtype=np.uint64)
    if n:
        use = snapshot_seq is not None
        k, bad = _dedupe_sorted(buf, offs, np.uint64(snapshot_seq if use else 0), use, out, hashes, key_hashes)
        if bad >= 0:
            raise_bad_record(buf, offs, bad)
        if k < n:
            out = out[:k].copy()
            hashes = hashes[:k].copy() if key_hashes else hashes
    return (out, hashes) if key_hashes else out
