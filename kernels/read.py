"""Kernels of the read path (point gets and scans).

* ``_block_find(block, key)``: the first entry of a *validated* SST block
  (checksum and restart array checked when it was read) whose key is >= key:
  ``(error, found, trailer, value_pos, value_len)``.  No checksum per call.
* ``_check_blocks(data, boffs)`` / ``_pinned_get(bloom, data, boffs, ikeys,
  ioffs, key)``: a whole SST's data region held in memory, validated once,
  then a point read in one call (bloom, index search, block search).
* ``_probe_blooms(filters, starts, key, out)``: hash ``key`` once (XXH64,
  seed 0) and probe every filter ``filters[starts[i]:starts[i+1]]`` (an empty
  slice means "no filter": always a candidate); ``out[i]`` = may contain.
* ``_probe_mask(filters, starts, key)``: the same for at most 64 filters,
  returned as a bit mask (bit i: filter i may contain the key).
* ``_upper_bound(buf, offs, lo, hi, key)``: first index in ``offs[lo:hi]``
  (a run in record order) whose record key is > key.
* ``_gather(src, offs, dst, dpos, out_offs, k)``: copy the records ``offs``
  of ``src`` to ``dst`` from ``dpos`` on (8-byte aligned), their new offsets
  to ``out_offs[k:]``; returns the end position.
* ``_visible(buf, offs, prev, use_prev, dst, bounds)``: for a run in record
  order, the newest version of each key (the first), tombstones dropped and
  a first key equal to ``prev`` skipped; key and value bytes are packed into
  ``dst`` back to back, ``bounds`` gets the 2r+1 boundaries.
* ``_lower_bound``/``_run_bytes``: first index whose key >= key; the bytes
  (padding included) of a run's records.

Records are in the layout of shaledb.kernels.layout.  The wrappers in
shaledb.read.reader / shaledb.sst.reader keep the arguments well-formed.
"""

from __future__ import annotations

import numpy as np

from shaledb.kernels._jit import kernel
from shaledb.kernels.block import BLOCK_TAIL, _check_block, _find, _ld32, _seek_restart
from shaledb.kernels.bloom import _bloom_probe_hash
from shaledb.kernels.hashing import _xxh64
from shaledb.kernels.layout import RECORD_HEADER

__all__: list[str] = []

_OK = 0


@kernel
def _block_find(block, key):
    n = block.shape[0]
    nr = np.int64(_ld32(block, n - BLOCK_TAIL))
    data_end = n - BLOCK_TAIL - 4 * nr
    err, ri = _seek_restart(block, data_end, nr, key)
    if err != _OK:
        return err, False, np.uint64(0), 0, 0
    return _find(block, data_end, nr, ri, key)


@kernel
def _check_blocks(data, boffs):
    """Validate every block ``data[boffs[i]:boffs[i+1]]`` (checksum and
    restarts): (error, index of the first bad block) or (0, -1)."""
    for i in range(boffs.shape[0] - 1):
        err, _de, _nr = _check_block(data[boffs[i] : boffs[i + 1]])
        if err != _OK:
            return err, i
    return _OK, -1


@kernel
def _pinned_get(bloom, data, boffs, ikeys, ioffs, key):
    """A point read in a whole SST held in memory (blocks validated by
    ``_check_blocks``): bloom (empty = none), index search, block search.
    Returns (error, found, trailer, value position in data, value length)."""
    if bloom.shape[0] and not _bloom_probe_hash(bloom, _xxh64(key, 0, key.shape[0], np.uint64(0))):
        return _OK, False, np.uint64(0), 0, 0
    lo = 0
    hi = ioffs.shape[0] - 1
    klen = key.shape[0]
    while lo < hi:  # first index key >= key
        mid = (lo + hi) // 2
        a = ioffs[mid]
        n = ioffs[mid + 1] - a
        c = 0
        for j in range(min(n, klen)):
            x = ikeys[a + j]
            y = key[j]
            if x != y:
                c = -1 if x < y else 1
                break
        if c == 0 and n != klen:
            c = -1 if n < klen else 1
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    if lo >= ioffs.shape[0] - 1:
        return _OK, False, np.uint64(0), 0, 0
    b0 = boffs[lo]
    err, found, t, vp, vlen = _block_find(data[b0 : boffs[lo + 1]], key)
    return err, found, t, b0 + vp, vlen


@kernel
def _probe_blooms(filters, starts, key, out):
    h = _xxh64(key, 0, key.shape[0], np.uint64(0))
    for i in range(starts.shape[0] - 1):
        a = starts[i]
        b = starts[i + 1]
        if a == b:
            out[i] = True
        else:
            out[i] = _bloom_probe_hash(filters[a:b], h)


@kernel
def _probe_mask(filters, starts, key):
    """As ``_probe_blooms`` for at most 64 filters, as a bit mask."""
    h = _xxh64(key, 0, key.shape[0], np.uint64(0))
    mask = np.uint64(0)
    for i in range(starts.shape[0] - 1):
        a = starts[i]
        b = starts[i + 1]
        if a == b or _bloom_probe_hash(filters[a:b], h):
            mask |= np.uint64(1) << np.uint64(i)
    return mask


@kernel
def _key_cmp(buf, off, key):
    """Compare the key of the record at ``off`` with ``key``: -1, 0, 1."""
    klen = np.int64(buf[off]) | (np.int64(buf[off + 1]) << 8) | (np.int64(buf[off + 2]) << 16) | (np.int64(buf[off + 3]) << 24)
    n = min(klen, key.shape[0])
    p = off + RECORD_HEADER
    for i in range(n):
        x = buf[p + i]
        y = key[i]
        if x != y:
            return -1 if x < y else 1
    if klen == key.shape[0]:
        return 0
    return -1 if klen < key.shape[0] else 1


@kernel
def _upper_bound(buf, offs, lo, hi, key):
    while lo < hi:
        mid = (lo + hi) // 2
        if _key_cmp(buf, offs[mid], key) <= 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel
def _ld32r(buf, p):
    return np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8) | (np.int64(buf[p + 2]) << 16) | (np.int64(buf[p + 3]) << 24)


@kernel
def _gather(src, offs, dst, dpos, out_offs, k):
    for i in range(offs.shape[0]):
        o = offs[i]
        size = RECORD_HEADER + _ld32r(src, o) + _ld32r(src, o + 4)
        size = (size + 7) & ~7
        m = min(size, src.shape[0] - o)
        dst[dpos : dpos + m] = src[o : o + m]
        out_offs[k + i] = dpos
        dpos += size
    return dpos


@kernel
def _same_key(buf, a, b):
    ka = _ld32r(buf, a)
    if ka != _ld32r(buf, b):
        return False
    for i in range(ka):
        if buf[a + RECORD_HEADER + i] != buf[b + RECORD_HEADER + i]:
            return False
    return True


@kernel
def _lower_bound(buf, offs, lo, hi, key):
    while lo < hi:
        mid = (lo + hi) // 2
        if _key_cmp(buf, offs[mid], key) < 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel
def _run_bytes(buf, offs):
    t = np.int64(0)
    for i in range(offs.shape[0]):
        o = offs[i]
        t += (RECORD_HEADER + _ld32r(buf, o) + _ld32r(buf, o + 4) + 7) & ~7
    return t


@kernel
def _visible(buf, offs, prev, use_prev, dst, bounds):
    """Newest version per key of a run in record order, tombstones dropped
    (and a first key equal to ``prev`` skipped); key and value bytes are
    packed into ``dst`` back to back: pair r is key ``dst[bounds[2r]:
    bounds[2r+1]]``, value ``dst[bounds[2r+1]:bounds[2r+2]]``.  Returns the
    number of pairs."""
    n = offs.shape[0]
    r = 0
    d = np.int64(0)
    bounds[0] = 0
    i = 0
    if use_prev:
        while i < n and _key_cmp(buf, offs[i], prev) == 0:
            i += 1
    while i < n:
        o = offs[i]
        klen = _ld32r(buf, o)
        vlen = _ld32r(buf, o + 4)
        if buf[o + 8] == 1:
            m = klen + vlen
            dst[d : d + m] = buf[o + RECORD_HEADER : o + RECORD_HEADER + m]
            bounds[2 * r + 1] = d + klen
            bounds[2 * r + 2] = d + m
            d += m
            r += 1
        j = i + 1
        while j < n and _same_key(buf, offs[j], o):
            j += 1
        i = j
    return r


def _warmup() -> None:
    """Load (or compile) every kernel of this module with the argument types
    the read path passes: read-only blocks and keys, writable outputs."""
    import struct

    from shaledb.kernels.block import encode_blocks
    from shaledb.kernels.bloom import bloom_build

    recs = [(b"a", 9, 1, b"x"), (b"b", 5, 1, b"v"), (b"b", 3, 0, b"")]
    raw = b""
    offs = []
    for key, seq, kind, value in recs:
        body = struct.pack("<IIQ", len(key), len(value), (seq << 8) | kind) + key + value
        offs.append(len(raw))
        raw += body + bytes(-len(body) % 8)
    buf = np.frombuffer(raw, dtype=np.uint8).copy()
    o = np.array(offs, dtype=np.int64)
    key = np.frombuffer(b"b", dtype=np.uint8)
    block = encode_blocks(buf, o).block(0).copy()
    block.flags.writeable = False
    _block_find(block, key)
    filt = np.ascontiguousarray(bloom_build(buf, o), dtype=np.uint8)
    starts = np.array([0, filt.shape[0]], dtype=np.int64)
    _probe_mask(filt, starts, key)
    n = o.shape[0]
    for b in (buf, np.frombuffer(raw, dtype=np.uint8)):
        _lower_bound(b, o, 0, n, key)
        _upper_bound(b, o, 0, n, key)
        nb = _run_bytes(b, o)
        dst = np.empty(nb, dtype=np.uint8)
        out_offs = np.empty(n, dtype=np.int64)
        _gather(b, o, dst, 0, out_offs, 0)
        bounds = np.empty(2 * n + 1, dtype=np.int64)
        _visible(b, o, key, True, dst, bounds)
