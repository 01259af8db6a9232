"""Batch lookups in one arena: ``arena_lookup_many`` (the arena side of
``Db.get_many``; the SST side is shaledb.kernels.point.plan_get_many).

* ``arena_lookup_many(arena, kdata, koffs, best_seq, out)``: for every key
  ``kdata[koffs[i]:koffs[i+1]]``, the newest version in ``arena``
  (``kernels.arena.lookup_record``) when its seq is above ``best_seq[i]``:
  row i of ``out`` (int64, ``A_COLS`` columns) gets ``(record offset, kind,
  seq, value start, value length)`` and ``best_seq[i]`` the seq; rows of
  keys not found (or not newer) get offset -1.  Returns the rows set.
* ``copy_values(arena, out, rows, vdata, voffs)``: the values of ``rows``
  back to back (``voffs`` has ``len(rows) + 1`` bounds).

REQUIRES: ``arena`` an initialised arena (the caller, the arena pool, checks
its incarnation after reading values, as for single lookups); keys 1-d uint8.
"""

from __future__ import annotations

import numpy as np

from shaledb.kernels._jit import kernel
from shaledb.kernels.arena import lookup_record
from shaledb.kernels.mem import memcpy

__all__ = ["A_COLS", "A_KIND", "A_OFF", "A_SEQ", "A_VLEN", "A_VPOS", "arena_lookup_many", "copy_values"]

A_OFF, A_KIND, A_SEQ, A_VPOS, A_VLEN = range(5)
A_COLS = 5


@kernel
def arena_lookup_many(arena, kdata, koffs, best_seq, out):
    hits = 0
    for i in range(koffs.shape[0] - 1):
        off, kind, seq, vs, vl = lookup_record(arena, kdata[koffs[i] : koffs[i + 1]])
        s = np.int64(seq)
        if off >= 0 and s > best_seq[i]:
            out[i, A_OFF] = off
            out[i, A_KIND] = kind
            out[i, A_SEQ] = s
            out[i, A_VPOS] = vs
            out[i, A_VLEN] = vl
            best_seq[i] = s
            hits += 1
        else:
            out[i, A_OFF] = -1
    return hits


@kernel
def copy_values(arena, out, rows, vdata, voffs):
    d = np.int64(0)
    voffs[0] = 0
    for x in range(rows.shape[0]):
        i = rows[x]
        n = out[i, A_VLEN]
        vs = out[i, A_VPOS]
        memcpy(vdata, d, arena, vs, n)
        d += n
        voffs[x + 1] = d
    return d


def _warmup() -> None:
    """Compile ``arena_lookup_many`` for keys from ``bytes`` (read-only) and
    from user arrays (writable), offsets either way."""
    from shaledb.kernels.arena import arena_append, arena_init

    arena = np.zeros(1 << 14, dtype=np.uint8)
    arena_init(arena, 64)
    keys = np.frombuffer(b"k1k2", dtype=np.uint8)
    arena_append(arena, keys, np.array([0, 2, 4], dtype=np.int64), np.frombuffer(b"v", dtype=np.uint8),
                 np.array([0, 1, 1], dtype=np.int64), np.array([1, 0], dtype=np.uint8), 1)
    ko = np.array([0, 2, 4], dtype=np.int64)
    for kd in (keys, keys.copy()):
        for o in (ko, np.frombuffer(ko.tobytes(), dtype=np.int64)):
            out = np.empty((2, A_COLS), dtype=np.int64)
            arena_lookup_many(arena, kd, o, np.full(2, -1, dtype=np.int64), out)
    rows = np.flatnonzero(out[:, A_OFF] >= 0)
    copy_values(arena, out, rows, np.empty(int(out[rows, A_VLEN].sum()), dtype=np.uint8),
                np.empty(rows.shape[0] + 1, dtype=np.int64))
