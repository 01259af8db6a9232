"""Kernels of the read path (point gets and scans): the read path's interface.

* ``block_find(block, key)``: the first entry of a *validated* SST block
  (checksum and restart array checked when it was read) whose key is >= key:
  ``(error, found, trailer, value_pos, value_len)``.  No checksum per call.
* ``check_blocks(data, boffs)`` / ``pinned_get(bloom, data, boffs, ikeys,
  ioffs, key)``: a whole SST's data region held in memory, validated once,
  then a point read in one call (bloom, index search, block search).
* ``probe_blooms(filters, starts, key, out)``: hash ``key`` once (XXH64,
  seed 0) and probe every filter ``filters[starts[i]:starts[i+1]]`` (an empty
  slice means "no filter": always a candidate); ``out[i]`` = may contain.
* ``probe_mask(filters, starts, key)``: the same for at most 64 filters,
  returned as a bit mask (bit i: filter i may contain the key).
* ``lower_bound`` / ``upper_bound(buf, offs, lo, hi, key)``: first index in
  ``offs[lo:hi]`` (a run in record order) whose record key is >= / > key.
* ``run_bytes(buf, offs)``: the bytes (padding included) of a run's records.
* ``override_seq(buf, offs, seq)``: rewrite every record's trailer seq to
  ``seq`` in place, kinds kept (an SST read with a global sequence number).
* ``gather(src, offs, dst, dpos, out_offs, k)`` (kernels/block.py): copy
  records back to back; ``(error, end, min_seq, max_seq)``.
* ``visible(buf, offs, prev, use_prev, dst, bounds)``: for a run in record
  order, the newest version of each key (the first), tombstones dropped and
  a first key equal to ``prev`` skipped; key and value bytes are packed into
  ``dst`` back to back, ``bounds`` gets the 2r+1 boundaries.

Records are in the layout of shaledb.format.record.  REQUIRES: the callers
(shaledb.read.reader, shaledb.sst.reader) keep the arguments well-formed.
"""

from __future__ import annotations

import numpy as np

from shaledb.format.record import KIND_PUT, RECORD_HEADER, TRAILER_OFF
from shaledb.kernels._jit import kernel
from shaledb.kernels.block import BLOCK_TAIL, check_block, find_entry, gather, seek_restart
from shaledb.kernels.bloom import bloom_probe_hash
from shaledb.kernels.hashing import xxh64_range
from shaledb.kernels.mem import load_u32, load_u64, memcpy, store_u64
from shaledb.kernels.record import compare_key, key_len, same_key, value_len

__all__ = [
    "block_find",
    "check_blocks",
    "gather",
    "lower_bound",
    "override_seq",
    "pinned_get",
    "probe_blooms",
    "probe_mask",
    "run_bytes",
    "upper_bound",
    "visible",
]

_OK = 0


@kernel
def block_find(block, key):
    n = block.shape[0]
    nr = np.int64(load_u32(block, n - BLOCK_TAIL))
    data_end = n - BLOCK_TAIL - 4 * nr
    err, ri = seek_restart(block, data_end, nr, key)
    if err != _OK:
        return err, False, np.uint64(0), 0, 0
    return find_entry(block, data_end, nr, ri, key)


@kernel
def check_blocks(data, boffs):
    """Validate every block ``data[boffs[i]:boffs[i+1]]`` (checksum and
    restarts): (error, index of the first bad block) or (0, -1)."""
    for i in range(boffs.shape[0] - 1):
        err, _de, _nr = check_block(data[boffs[i] : boffs[i + 1]])
        if err != _OK:
            return err, i
    return _OK, -1


@kernel
def pinned_get(bloom, data, boffs, ikeys, ioffs, key):
    """A point read in a whole SST held in memory (blocks validated by
    ``check_blocks``): bloom (empty = none), index search, block search.
    Returns (error, found, trailer, value position in data, value length)."""
    if bloom.shape[0] and not bloom_probe_hash(bloom, xxh64_range(key, 0, key.shape[0], np.uint64(0))):
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
    err, found, t, vp, vlen = block_find(data[b0 : boffs[lo + 1]], key)
    return err, found, t, b0 + vp, vlen


@kernel
def probe_blooms(filters, starts, key, out):
    h = xxh64_range(key, 0, key.shape[0], np.uint64(0))
    for i in range(starts.shape[0] - 1):
        a = starts[i]
        b = starts[i + 1]
        if a == b:
            out[i] = True
        else:
            out[i] = bloom_probe_hash(filters[a:b], h)


@kernel
def probe_mask(filters, starts, key):
    """As ``probe_blooms`` for at most 64 filters, as a bit mask."""
    h = xxh64_range(key, 0, key.shape[0], np.uint64(0))
    mask = np.uint64(0)
    for i in range(starts.shape[0] - 1):
        a = starts[i]
        b = starts[i + 1]
        if a == b or bloom_probe_hash(filters[a:b], h):
            mask |= np.uint64(1) << np.uint64(i)
    return mask


@kernel
def upper_bound(buf, offs, lo, hi, key):
    while lo < hi:
        mid = (lo + hi) // 2
        if compare_key(buf, offs[mid], key) <= 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel
def lower_bound(buf, offs, lo, hi, key):
    while lo < hi:
        mid = (lo + hi) // 2
        if compare_key(buf, offs[mid], key) < 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel
def run_bytes(buf, offs):
    t = np.int64(0)
    for i in range(offs.shape[0]):
        o = offs[i]
        t += (RECORD_HEADER + key_len(buf, o) + value_len(buf, o) + 7) & ~7
    return t


@kernel
def override_seq(buf, offs, seq):
    hi = np.uint64(seq) << np.uint64(8)
    for i in range(offs.shape[0]):
        p = offs[i] + TRAILER_OFF
        store_u64(buf, p, hi | (load_u64(buf, p) & np.uint64(0xFF)))


@kernel
def visible(buf, offs, prev, use_prev, dst, bounds):
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
        while i < n and compare_key(buf, offs[i], prev) == 0:
            i += 1
    while i < n:
        o = offs[i]
        klen = key_len(buf, o)
        vlen = value_len(buf, o)
        if buf[o + TRAILER_OFF] == KIND_PUT:
            m = klen + vlen
            memcpy(dst, d, buf, o + RECORD_HEADER, m)
            bounds[2 * r + 1] = d + klen
            bounds[2 * r + 2] = d + m
            d += m
            r += 1
        j = i + 1
        while j < n and same_key(buf, offs[j], o):
            j += 1
        i = j
    return r


def _warmup() -> None:
    """Load (or compile) every kernel of this module with the argument types
    the read path passes: read-only blocks and keys, writable outputs."""
    from shaledb.format.record import encode_record
    from shaledb.kernels.block import encode_blocks
    from shaledb.kernels.bloom import bloom_build

    recs = [(b"a", 9, 1, b"x"), (b"b", 5, 1, b"v"), (b"b", 3, 0, b"")]
    raw = b""
    offs = []
    for key, seq, kind, value in recs:
        offs.append(len(raw))
        raw += encode_record(key, value, seq, kind)
    buf = np.frombuffer(raw, dtype=np.uint8).copy()
    o = np.array(offs, dtype=np.int64)
    key = np.frombuffer(b"b", dtype=np.uint8)
    block = encode_blocks(buf, o).block(0).copy()
    block.flags.writeable = False
    block_find(block, key)
    check_blocks(block, np.array([0, block.shape[0]], dtype=np.int64))  # SstReader.pin: whole data regions
    filt = np.ascontiguousarray(bloom_build(buf, o), dtype=np.uint8)
    starts = np.array([0, filt.shape[0]], dtype=np.int64)
    probe_mask(filt, starts, key)
    n = o.shape[0]
    for b in (buf, np.frombuffer(raw, dtype=np.uint8)):
        lower_bound(b, o, 0, n, key)
        upper_bound(b, o, 0, n, key)
        nb = run_bytes(b, o)
        dst = np.empty(nb, dtype=np.uint8)
        out_offs = np.empty(n, dtype=np.int64)
        gather(b, o, dst, 0, out_offs, 0)
        bounds = np.empty(2 * n + 1, dtype=np.int64)
        visible(b, o, key, True, dst, bounds)
    override_seq(buf, o, 7)
