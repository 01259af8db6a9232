"""Kernels of batch scans (``Db.scan_arrays``): record runs in, packed
key/value arrays out, no per-record Python.

* ``visible_into(buf, offs, lo, max_seq, max_records, max_bytes, kd, ko,
  vd, vo, n, kpos, vpos)``: walk the run ``offs[lo:]`` (record order, every version of
  a key inside the run) key group by key group; for each key take its newest
  version with ``seq <= max_seq``, drop it if it is a tombstone, else append
  its key to ``kd`` and its value to ``vd``: pair ``r`` of the batch is key
  ``kd[ko[r]:ko[r+1]]``, value ``vd[vo[r]:vo[r+1]]``.  ``n``, ``kpos``,
  ``vpos`` are the batch's pair count and fill levels so far.  Returns
  ``(status, next_index, n, kpos, vpos)``: status ``DONE`` (the run is
  used up), ``FULL`` (``n == max_records``, or the next pair would take the
  batch's key + value bytes past ``max_bytes`` while it holds a pair: hand
  the batch out, start a new one and call again from ``next_index``) or
  ``GROW`` (the next pair does not fit ``kd``/``vd``: enlarge them, call
  again).  ``next_index`` is always
  at a key group boundary.
* ``visible_picks(buf, offs, lo, max_seq, max_records, picks)``: the same
  choice as ``visible_into``, the chosen records' offsets instead of copies (the tuple scan
  of large values makes its ``bytes`` from the run itself).

Records are in the layout of shaledb.format.record.  REQUIRES: the run was
validated (records read from SST blocks are; arena copies are written by
the engine), ``ko``/``vo`` hold at least ``max_records + 1`` entries and
``ko[n] == kpos``, ``vo[n] == vpos``.
"""

from __future__ import annotations

import numpy as np

from shaledb.format.record import KIND_BITS, KIND_PUT, RECORD_HEADER, TRAILER_OFF
from shaledb.kernels._jit import inline_kernel, kernel
from shaledb.kernels.mem import memcpy
from shaledb.kernels.record import key_len, same_key, trailer, value_len

__all__ = ["DONE", "FULL", "GROW", "visible_into", "visible_picks"]

DONE = 0
FULL = 1
GROW = 2


@inline_kernel
def _newest_visible(buf, offs, i, max_seq):
    """``(pick, j)``: the offset of the newest version with ``seq <=
    max_seq`` of the key group at ``offs[i]`` (-1: none), and the index of
    the next key group."""
    m = offs.shape[0]
    shift = np.uint64(KIND_BITS)
    o = offs[i]
    j = i + 1
    pick = np.int64(-1)
    if trailer(buf, o) >> shift <= max_seq:
        pick = o
    while j < m and same_key(buf, offs[j], o):
        if pick < 0 and trailer(buf, offs[j]) >> shift <= max_seq:
            pick = offs[j]
        j += 1
    return pick, j


@kernel
def visible_picks(buf, offs, lo, max_seq, max_records, picks):
    """The records ``visible_into`` would copy, as their offsets: from
    ``offs[lo:]``, at most ``max_records`` (and ``picks.shape[0]``) into
    ``picks``.  Returns ``(next_index, n)``, ``next_index`` at a key group
    boundary (``offs.shape[0]``: the run is used up)."""
    m = offs.shape[0]
    cap = min(max_records, picks.shape[0])
    i = lo
    n = 0
    while i < m and n < cap:
        pick, j = _newest_visible(buf, offs, i, max_seq)
        if pick >= 0 and buf[pick + TRAILER_OFF] == KIND_PUT:
            picks[n] = pick
            n += 1
        i = j
    return i, n


@kernel
def visible_into(buf, offs, lo, max_seq, max_records, max_bytes, kd, ko, vd, vo, n, kpos, vpos):
    m = offs.shape[0]
    i = lo
    while i < m:
        if n >= max_records:
            return FULL, i, n, kpos, vpos
        pick, j = _newest_visible(buf, offs, i, max_seq)
        if pick >= 0 and buf[pick + TRAILER_OFF] == KIND_PUT:
            klen = key_len(buf, pick)
            vlen = value_len(buf, pick)
            if n > 0 and kpos + klen + vpos + vlen > max_bytes:
                return FULL, i, n, kpos, vpos
            if kpos + klen > kd.shape[0] or vpos + vlen > vd.shape[0]:
                return GROW, i, n, kpos, vpos
            p = pick + RECORD_HEADER
            memcpy(kd, kpos, buf, p, klen)
            memcpy(vd, vpos, buf, p + klen, vlen)
            kpos += klen
            vpos += vlen
            n += 1
            ko[n] = kpos
            vo[n] = vpos
        i = j
    return DONE, i, n, kpos, vpos


def _warmup() -> None:
    """Compile ``visible_into`` for the argument types scans pass: read-only
    runs (SST blocks, store bytes) and writable ones (arena copies, merges)."""
    from shaledb.format.record import encode_record

    raw = b"".join(
        encode_record(k, v, s, kind)
        for k, v, s, kind in [(b"a", b"x", 9, KIND_PUT), (b"b", b"", 5, 0), (b"b", b"v", 3, KIND_PUT)]
    )
    offs = np.array([0, 24, 48], dtype=np.int64)
    for buf in (np.frombuffer(raw, dtype=np.uint8), np.frombuffer(bytearray(raw), dtype=np.uint8)):
        for o in (offs, np.frombuffer(offs.tobytes(), dtype=np.int64)):
            kd = np.empty(8, dtype=np.uint8)
            vd = np.empty(8, dtype=np.uint8)
            ko = np.zeros(4, dtype=np.int64)
            vo = np.zeros(4, dtype=np.int64)
            visible_into(buf, o, 0, np.uint64(7), 3, 1 << 20, kd, ko, vd, vo, 0, 0, 0)
            visible_picks(buf, o, 0, np.uint64(7), 3, np.empty(3, dtype=np.int64))
