"""SST data blocks: encode, verify, decode and seek (docs/format/block.md).

A block holds a key-ordered slice of records (shaledb.format.record), keys
prefix-compressed against the previous key, with a restart point (full key)
every ``restart_interval`` entries.  All integers are little-endian::

    block := entry* restart* num_restarts checksum
    entry := shared:varint unshared:varint value_len:varint trailer:u64
             key[shared:] (unshared bytes) value (value_len bytes)
    restart      := u32   byte offset of a restart entry from the block start
    num_restarts := u32   >= 1; restart[0] == 0; strictly increasing
    checksum     := u64   xxh64(seed 0) of every byte of the block before it

``varint`` is unsigned LEB128 of at most 5 bytes (values < 2**32).
``trailer`` is the record trailer ``(seq << 8) | kind``.  A restart entry
has ``shared == 0``.  Entries at restart points are exactly the entries
whose index within the block is a multiple of ``restart_interval``.

Block boundaries: an entry goes into the current block unless the block is
non-empty and the entry (plus its restart slot, if any) would push the
finished block past ``block_size``; then the block is closed and the entry
starts a new one.  So a block is at most ``block_size`` bytes, except a
block of one entry that is larger on its own.

Public wrappers (they validate and allocate):

* ``encode_blocks(buf, offs, block_size=4096, restart_interval=16)
  -> EncodedBlocks(data, block_starts, first_idx, last_idx)``
* ``block_checksum_ok(block) -> bool``
* ``decode_block(block) -> (buf, offs)``: every entry, in the record layout.
* ``seek_block(block, key) -> (buf, offs)``: the entries whose key is
  ``>= key``, in order (binary search over restarts, then a scan).
* ``decode_block_range(block, start=None, end=None) -> (buf, offs)``: the
  entries with ``start <= key < end``.
* ``decode_blocks_range(data, starts, start=None, end=None)``: the same over
  several consecutive blocks in one call (one run; used by SST scans).
* ``block_get(block, key) -> (kind, seq, value | None) | None``: the first
  (newest) entry whose key equals ``key``.
* Helpers for the SST and WAL codecs: ``index_separators``,
  ``seq_range``, ``gather_records``, ``scan_records``, ``as_offs``,
  ``raise_corruption``.

Kernels other modules call (REQUIRES: arguments already validated):
``check_block``, ``seek_restart``, ``find_entry`` (the read path's point
lookup), ``gather`` / ``gather_bound`` (the one record-copy kernel: SST, WAL
and scan merges all use it).

Every decoding function raises :class:`shaledb.Corruption` on a malformed
block (bad checksum, bad restart array, entry running past the data, bad
varint, bad key length or kind); the kernels never read out of bounds: they
check every length before they use it and report an error code.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from shaledb.errors import Corruption, Internal, InvalidArgument
from shaledb.format.record import (
    KIND_BITS,
    KIND_DELETE,
    KIND_MASK,
    MAX_KEY_BYTES,
    MAX_KIND,
    RECORD_ALIGN,
    RECORD_HEADER,
    TRAILER_OFF,
    VALUE_LEN_OFF,
)
from shaledb.kernels._jit import kernel
from shaledb.kernels.hashing import xxh64_range
from shaledb.kernels.mem import as_u8, load_u32, load_u64, memcpy, prefetch, readonly, store_u32, store_u64, unowned

__all__ = [
    "BLOCK_TAIL",
    "EncodedBlocks",
    "as_offs",
    "block_checksum_ok",
    "stored_blocks_ok",
    "block_get",
    "check_block",
    "decode_block",
    "decode_block_range",
    "decode_blocks_range",
    "encode_blocks",
    "find_entry",
    "first_descent",
    "gather",
    "gather_bound",
    "gather_parts",
    "gather_records",
    "index_separators",
    "raise_corruption",
    "scan_records",
    "seek_block",
    "seek_restart",
    "seq_range",
]

MIN_BLOCK_SIZE = 64
MAX_BLOCK_SIZE = 1 << 24
BLOCK_TAIL = 12  # num_restarts u32 + checksum u64
_MAX_ENTRY_OVERHEAD = 5 + 5 + 5 + 8  # three varints + trailer
_AHEAD = 16  # records prefetched ahead by the encoder (it reads them in key order)

# Error codes returned by the kernels (negative); see raise_corruption().
_OK = 0
E_SHORT = -1
E_CHECKSUM = -2
E_RESTARTS = -3
E_ENTRY = -4
E_KEYLEN = -5
E_KIND = -6
E_OUTPUT = -7  # output buffer too small (internal: the wrapper retries)
E_RECORD = -8  # input record out of bounds / bad key length (encode side)
E_ORDER = -9  # input not sorted by (key asc, trailer desc)

_MESSAGES = {
    E_SHORT: "block too short",
    E_CHECKSUM: "block checksum mismatch",
    E_RESTARTS: "bad restart array",
    E_ENTRY: "entry runs past the block data or has a bad varint",
    E_KEYLEN: "bad key length",
    E_KIND: "bad value kind",
    E_RECORD: "record out of bounds or bad key length",
}


# ---------------------------------------------------------------- primitives


# Fixed-width little-endian loads and stores: one unaligned access each
# (kernels/mem.py).


@kernel
def _ld32(a, p):
    return np.int64(load_u32(a, p))


@kernel
def _ld64(a, p):
    return load_u64(a, p)


@kernel
def _st32(a, p, v):
    store_u32(a, p, v)


@kernel
def _st64(a, p, v):
    store_u64(a, p, v)


@kernel
def _varint_len(v):
    n = 1
    while v >= 128:
        v >>= 7
        n += 1
    return n


@kernel
def _put_varint(a, p, v):
    while v >= 128:
        a[p] = np.uint8((v & 0x7F) | 0x80)
        v >>= 7
        p += 1
    a[p] = np.uint8(v)
    return p + 1


@kernel
def _get_varint(a, p, end):
    """(value, new_p); new_p < 0 on a truncated or over-long varint."""
    v = np.int64(0)
    shift = 0
    for _ in range(5):
        if p >= end:
            return np.int64(0), np.int64(-1)
        b = np.int64(a[p])
        p += 1
        v |= (b & 0x7F) << shift
        if b < 128:
            if v >= np.int64(1) << 32:
                return np.int64(0), np.int64(-1)
            return v, np.int64(p)
        shift += 7
    return np.int64(0), np.int64(-1)


@kernel
def _compare(a, ap, alen, b, bp, blen):
    """Bytewise three-way compare of a[ap:ap+alen] and b[bp:bp+blen]."""
    n = min(alen, blen)
    for i in range(n):
        x = a[ap + i]
        y = b[bp + i]
        if x != y:
            return -1 if x < y else 1
    if alen == blen:
        return 0
    return -1 if alen < blen else 1


@kernel
def first_descent(keys, koffs):
    """The first ``i`` whose key ``keys[koffs[i]:koffs[i+1]]`` is greater than
    key ``i + 1`` (an SST index's keys out of order), or -1."""
    for i in range(koffs.shape[0] - 2):
        a = koffs[i]
        b = koffs[i + 1]
        if _compare(keys, a, b - a, keys, b, koffs[i + 2] - b) > 0:
            return i
    return -1


@kernel
def _common_prefix(a, ap, alen, b, bp, blen):
    n = min(alen, blen)
    i = 0
    while i + 8 <= n and _ld64(a, ap + i) == _ld64(b, bp + i):
        i += 8
    while i < n and a[ap + i] == b[bp + i]:
        i += 1
    return i


@kernel
def _record_lens(buf, r, blen):
    """(key_len, value_len) of the record at ``r``, or (-1, 0) when it lies
    outside ``buf[:blen]`` or its key length is not 1..MAX_KEY_BYTES."""
    if r < 0 or r + RECORD_HEADER > blen:
        return np.int64(-1), np.int64(0)
    k = _ld32(buf, r)
    v = _ld32(buf, r + VALUE_LEN_OFF)
    if k < 1 or k > MAX_KEY_BYTES or r + RECORD_HEADER + k + v > blen:
        return np.int64(-1), np.int64(0)
    return k, v


# ------------------------------------------------------------------ encoding


@kernel
def _encode_bound(buf, offs):
    """(error, bound): upper bound of the encoded size; checks every record."""
    total = np.int64(0)
    blen = buf.shape[0]
    for i in range(offs.shape[0]):
        k, v = _record_lens(buf, offs[i], blen)
        if k < 0:
            return E_RECORD, np.int64(0)
        total += k + v + _MAX_ENTRY_OVERHEAD + 4 + BLOCK_TAIL
    return _OK, total


@kernel
def _finish_block(out, pos, blk_start, restarts, nrestart):
    for j in range(nrestart):
        store_u32(out, pos, restarts[j])
        pos += 4
    store_u32(out, pos, nrestart)
    pos += 4
    h = xxh64_range(out, blk_start, pos - blk_start, np.uint64(0))
    store_u64(out, pos, h)
    return pos + 8


@kernel
def _prefetch_record(buf, r, blen):
    """Prefetch the cache lines of the record at ``r`` past its first one
    (whose header must already be cached; bogus offsets are skipped)."""
    if r >= 0 and r + RECORD_HEADER <= blen:
        end = r + RECORD_HEADER + _ld32(buf, r) + _ld32(buf, r + VALUE_LEN_OFF)
        q = (r | 63) + 1
        while q < end:
            prefetch(buf, q)
            q += 64


@kernel
def _encode(buf, offs, block_size, restart_interval, out, block_starts, first_idx, last_idx):
    """Encode sorted records into blocks.  Returns (error, num_blocks, bytes).

    Records are read in key order (random addresses): the header line of the
    record _AHEAD positions on is prefetched, and the rest of the record
    _AHEAD // 2 positions on (its header is cached by then).
    """
    n = offs.shape[0]
    restarts = np.empty(block_size // 11 + 2, dtype=np.int64)
    pos = np.int64(0)
    nb = 0
    blk_start = np.int64(0)
    blk_entries = 0
    nrestart = 0
    prev_r = np.int64(-1)
    prev_k = np.int64(0)
    prev_t = np.uint64(0)
    blen = buf.shape[0]
    cap = out.shape[0]
    last = n - 1
    for i in range(n):
        prefetch(buf, offs[min(i + _AHEAD, last)])
        _prefetch_record(buf, offs[min(i + _AHEAD // 2, last)], blen)
        r = offs[i]
        k, v = _record_lens(buf, r, blen)
        if k < 0:
            return E_RECORD, 0, np.int64(0)
        t = load_u64(buf, r + TRAILER_OFF)
        kp = r + RECORD_HEADER
        cp = 0
        if prev_r >= 0:
            pkp = prev_r + RECORD_HEADER
            cp = _common_prefix(buf, pkp, prev_k, buf, kp, k)
            # (key asc, trailer desc): strictly after the previous record
            if cp == k and cp == prev_k:
                if t >= prev_t:
                    return E_ORDER, 0, np.int64(0)
            elif cp == k or (cp < prev_k and buf[pkp + cp] > buf[kp + cp]):
                return E_ORDER, 0, np.int64(0)
        restart = blk_entries % restart_interval == 0
        shared = 0 if restart else cp
        elen = _varint_len(shared) + _varint_len(k - shared) + _varint_len(v) + 8 + (k - shared) + v
        if blk_entries > 0:
            after = (pos - blk_start) + elen + 4 * (nrestart + (1 if restart else 0)) + BLOCK_TAIL
            if after > block_size:
                pos = _finish_block(out, pos, blk_start, restarts, nrestart)
                last_idx[nb] = i - 1
                nb += 1
                blk_entries = 0
                nrestart = 0
                restart = True
                shared = 0
                elen = 1 + _varint_len(k) + _varint_len(v) + 8 + k + v
        if blk_entries == 0:
            blk_start = pos
            block_starts[nb] = pos
            first_idx[nb] = i
        if pos + elen + 4 * (nrestart + 1) + BLOCK_TAIL > cap:
            return E_OUTPUT, 0, np.int64(0)
        if restart:
            restarts[nrestart] = pos - blk_start
            nrestart += 1
        unshared = k - shared
        if shared < 128 and unshared < 128 and v < 128:
            out[pos] = np.uint8(shared)
            out[pos + 1] = np.uint8(unshared)
            out[pos + 2] = np.uint8(v)
            pos += 3
        else:
            pos = _put_varint(out, pos, shared)
            pos = _put_varint(out, pos, unshared)
            pos = _put_varint(out, pos, v)
        store_u64(out, pos, t)
        pos += 8
        # key[shared:] and the value are adjacent in the record: one copy
        memcpy(out, pos, buf, kp + shared, unshared + v)
        pos += unshared + v
        blk_entries += 1
        prev_r = r
        prev_k = k
        prev_t = t
    if blk_entries > 0:
        pos = _finish_block(out, pos, blk_start, restarts, nrestart)
        last_idx[nb] = n - 1
        nb += 1
    block_starts[nb] = pos
    return _OK, nb, pos


class EncodedBlocks(NamedTuple):
    """Encoded data blocks: block ``i`` is ``data[block_starts[i]:block_starts[i+1]]``;
    ``first_idx[i]``/``last_idx[i]`` index its first/last record in ``offs``."""

    data: np.ndarray
    block_starts: np.ndarray
    first_idx: np.ndarray
    last_idx: np.ndarray

    @property
    def num_blocks(self) -> int:
        return int(self.first_idx.shape[0])

    def block(self, i: int) -> np.ndarray:
        return self.data[self.block_starts[i] : self.block_starts[i + 1]]


def as_offs(offs) -> np.ndarray:
    """``offs`` as a read-only contiguous 1-D int64 array; any other dtype is InvalidArgument."""
    offs = np.ascontiguousarray(offs)
    if offs.dtype != np.int64 or offs.ndim != 1:
        raise InvalidArgument("offs must be a 1-D int64 array")
    return readonly(offs)


def _as_key(key) -> np.ndarray:
    """A read-only uint8 view of ``key`` (one array type for the kernels)."""
    if not isinstance(key, (bytes, bytearray, memoryview, np.ndarray)):
        raise InvalidArgument(f"key must be bytes, not {type(key).__name__}")
    return as_u8(key, "key")


def encode_blocks(buf, offs, block_size: int = 4096, restart_interval: int = 16) -> EncodedBlocks:
    """Encode the records ``offs`` (sorted by key asc, trailer desc) into blocks.

    REQUIRES: ``offs`` sorted; raises InvalidArgument when it is not, or when a
    record lies outside ``buf``.
    """
    buf = as_u8(buf, "buf")
    offs = as_offs(offs)
    if not MIN_BLOCK_SIZE <= int(block_size) <= MAX_BLOCK_SIZE:
        raise InvalidArgument(f"block_size must be in [{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}]")
    if not 1 <= int(restart_interval) <= 1 << 16:
        raise InvalidArgument("restart_interval must be in [1, 65536]")
    n = offs.shape[0]
    block_starts = np.empty(n + 1, dtype=np.int64)
    first_idx = np.empty(n, dtype=np.int64)
    last_idx = np.empty(n, dtype=np.int64)
    # Records that do not overlap in buf need at most len(buf) + 23 bytes
    # each; only overlapping (bogus) offsets need the exact bound pass.
    cap = buf.shape[0] + 40 * n + 64
    for _ in range(2):
        out = np.empty(cap, dtype=np.uint8)
        err, nb, size = _encode(
            buf, offs, np.int64(block_size), np.int64(restart_interval), out, block_starts, first_idx, last_idx
        )
        if err != E_OUTPUT:
            break
        err, bound = _encode_bound(buf, offs)
        if err != _OK:
            break
        cap = int(bound) + 64
    if err == E_RECORD:
        raise InvalidArgument("encode_blocks: a record lies outside buf or has a bad key length")
    if err == E_ORDER:
        raise InvalidArgument("encode_blocks: records are not sorted by (key asc, seq desc) without duplicates")
    if err != _OK:  # pragma: no cover - the exact bound always fits
        raise Internal(f"encode_blocks: kernel error {int(err)}")
    return EncodedBlocks(out[:size], block_starts[: nb + 1].copy(), first_idx[:nb].copy(), last_idx[:nb].copy())


# ------------------------------------------------------------------ decoding


@kernel
def stored_blocks_ok(data, starts):
    """Index of the first compressed stored block ``data[starts[i]:starts[i+1]]``
    (``raw_len:u32 frame xxh64:u64``, docs/values.md) that is too short or
    whose XXH64 of all but its last 8 bytes is not those 8 bytes; -1 when
    every one checks out."""
    for i in range(starts.shape[0] - 1):
        a = starts[i]
        n = starts[i + 1] - a
        if n < 4 + 8 or xxh64_range(data, a, n - 8, np.uint64(0)) != _ld64(data, a + n - 8):
            return i
    return -1


@kernel
def check_block(block):
    """(error, data_end, num_restarts) after checksum and restart checks."""
    n = block.shape[0]
    if n < BLOCK_TAIL + 4 + 11:
        return E_SHORT, np.int64(0), np.int64(0)
    if xxh64_range(block, 0, n - 8, np.uint64(0)) != _ld64(block, n - 8):
        return E_CHECKSUM, np.int64(0), np.int64(0)
    nr = _ld32(block, n - BLOCK_TAIL)
    if nr < 1 or nr > (n - BLOCK_TAIL) // 4:
        return E_RESTARTS, np.int64(0), np.int64(0)
    data_end = n - BLOCK_TAIL - 4 * nr
    prev = np.int64(-1)
    for j in range(nr):
        r = _ld32(block, data_end + 4 * j)
        if (j == 0 and r != 0) or r <= prev or r >= data_end:
            return E_RESTARTS, np.int64(0), np.int64(0)
        prev = r
    return _OK, data_end, nr


@kernel
def _entry_head(block, p, data_end):
    """Parse an entry header at p: (error, shared, unshared, vlen, trailer, key_at)."""
    shared, p = _get_varint(block, p, data_end)
    if p < 0:
        return E_ENTRY, 0, 0, 0, np.uint64(0), 0
    unshared, p = _get_varint(block, p, data_end)
    if p < 0:
        return E_ENTRY, 0, 0, 0, np.uint64(0), 0
    vlen, p = _get_varint(block, p, data_end)
    if p < 0 or p + 8 > data_end:
        return E_ENTRY, 0, 0, 0, np.uint64(0), 0
    t = _ld64(block, p)
    p += 8
    if unshared > data_end - p or vlen > data_end - p - unshared:
        return E_ENTRY, 0, 0, 0, np.uint64(0), 0
    if (t & np.uint64(KIND_MASK)) > np.uint64(MAX_KIND):
        return E_KIND, 0, 0, 0, np.uint64(0), 0
    return _OK, shared, unshared, vlen, t, p


@kernel
def seek_restart(block, data_end, nr, key):
    """(error, index of the last restart whose key < key, or 0)."""
    lo = 0
    hi = nr - 1
    # invariant: restart lo has key < key, or lo == 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        p = _ld32(block, data_end + 4 * mid)
        err, shared, unshared, vlen, t, kp = _entry_head(block, p, data_end)
        if err != _OK:
            return err, 0
        if shared != 0 or unshared < 1 or unshared > MAX_KEY_BYTES:
            return E_KEYLEN, 0
        if _compare(block, kp, unshared, key, 0, key.shape[0]) < 0:
            lo = mid
        else:
            hi = mid - 1
    return _OK, lo


@kernel
def _scan(block, data_end, nr, ri, lo_key, use_lo, hi_key, use_hi, out, out_offs):
    """Walk entries from restart ``ri``, emitting the records with
    lo_key <= key < hi_key into ``out``/``out_offs`` (record layout).

    Returns (error, n_emitted, bytes_used, stopped_at_hi); E_OUTPUT with the
    bytes needed so far when ``out`` is too small.
    """
    scratch = np.empty(min(data_end, MAX_KEY_BYTES) + 1, dtype=np.uint8)
    p = _ld32(block, data_end + 4 * ri)
    next_ri = ri
    next_restart = p
    klen = 0
    nout = 0
    op = np.int64(0)
    cap = out.shape[0]
    cap_offs = out_offs.shape[0]
    while p < data_end:
        is_restart = False
        if p == next_restart:
            is_restart = True
            next_ri += 1
            next_restart = _ld32(block, data_end + 4 * next_ri) if next_ri < nr else data_end
        elif p > next_restart:
            return E_RESTARTS, 0, np.int64(0), False
        err, shared, unshared, vlen, t, kp = _entry_head(block, p, data_end)
        if err != _OK:
            return err, 0, np.int64(0), False
        if (is_restart and shared != 0) or shared > klen:
            return E_KEYLEN, 0, np.int64(0), False
        newk = shared + unshared
        if newk < 1 or newk > MAX_KEY_BYTES or newk > scratch.shape[0]:
            return E_KEYLEN, 0, np.int64(0), False
        vp = kp + unshared
        p = vp + vlen
        if p > next_restart:
            return E_ENTRY, 0, np.int64(0), False
        memcpy(scratch, shared, block, kp, unshared)
        klen = newk
        if use_lo and _compare(scratch, 0, klen, lo_key, 0, lo_key.shape[0]) < 0:
            continue
        if use_hi and _compare(scratch, 0, klen, hi_key, 0, hi_key.shape[0]) >= 0:
            return _OK, nout, op, True
        rec = RECORD_HEADER + klen + vlen
        size = (rec + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)
        if op + size > cap or nout >= cap_offs:
            return E_OUTPUT, 0, op + size, False
        _st32(out, op, klen)
        _st32(out, op + 4, vlen)
        _st64(out, op + 8, t)
        memcpy(out, op + RECORD_HEADER, scratch, 0, klen)
        memcpy(out, op + RECORD_HEADER + klen, block, vp, vlen)
        for z in range(op + rec, op + size):
            out[z] = 0
        out_offs[nout] = op
        nout += 1
        op += size
    if p != data_end:
        return E_ENTRY, 0, np.int64(0), False
    return _OK, nout, op, False


@kernel
def find_entry(block, data_end, nr, ri, key):
    """First entry >= key, scanning from restart ``ri``.

    Returns (error, found, trailer, value_pos, value_len); found means the
    entry's key equals ``key``.
    """
    scratch = np.empty(min(data_end, MAX_KEY_BYTES) + 1, dtype=np.uint8)
    p = _ld32(block, data_end + 4 * ri)
    next_ri = ri
    next_restart = p
    klen = 0
    while p < data_end:
        is_restart = False
        if p == next_restart:
            is_restart = True
            next_ri += 1
            next_restart = _ld32(block, data_end + 4 * next_ri) if next_ri < nr else data_end
        elif p > next_restart:
            return E_RESTARTS, False, np.uint64(0), 0, 0
        err, shared, unshared, vlen, t, kp = _entry_head(block, p, data_end)
        if err != _OK:
            return err, False, np.uint64(0), 0, 0
        if (is_restart and shared != 0) or shared > klen:
            return E_KEYLEN, False, np.uint64(0), 0, 0
        newk = shared + unshared
        if newk < 1 or newk > MAX_KEY_BYTES or newk > scratch.shape[0]:
            return E_KEYLEN, False, np.uint64(0), 0, 0
        vp = kp + unshared
        p = vp + vlen
        if p > next_restart:
            return E_ENTRY, False, np.uint64(0), 0, 0
        memcpy(scratch, shared, block, kp, unshared)
        klen = newk
        c = _compare(scratch, 0, klen, key, 0, key.shape[0])
        if c >= 0:
            return _OK, c == 0, t, vp, vlen
    if p != data_end:
        return E_ENTRY, False, np.uint64(0), 0, 0
    return _OK, False, np.uint64(0), 0, 0


def raise_corruption(err: int, what: str):
    """Raise Corruption for the kernel error code ``err`` of the block named ``what``."""
    raise Corruption(f"{what}: {_MESSAGES.get(err, f'error {err}')}")


_EMPTY_KEY = np.zeros(1, dtype=np.uint8)
_EMPTY_KEY.flags.writeable = False


def _checked(block, what):
    block = as_u8(block, "block")
    err, data_end, nr = check_block(block)
    if err != _OK:
        raise_corruption(err, what)
    return block, int(data_end), int(nr)


def block_checksum_ok(block) -> bool:
    """True when ``block``'s trailing xxh64 matches its contents."""
    block = as_u8(block, "block")
    return int(check_block(block)[0]) != E_CHECKSUM and block.shape[0] >= BLOCK_TAIL + 4 + 11


def _bounds(lo, hi):
    """``(use_lo, lo_key, use_hi, hi_key)`` for the scan kernels (a missing bound is a dummy key)."""
    use_lo = lo is not None
    use_hi = hi is not None
    return use_lo, _as_key(lo) if use_lo else _EMPTY_KEY, use_hi, _as_key(hi) if use_hi else _EMPTY_KEY


def _decode_growing(size: int, decode):
    """Run ``decode(out, out_offs) -> (error, extra, n, used)`` with output
    buffers for ``size`` input bytes, growing ``out`` while it reports
    E_OUTPUT; returns ``(error, extra, buf, offs)``."""
    cap = 2 * size + 4096
    out_offs = np.empty(size // 11 + 1, dtype=np.int64)
    while True:
        out = np.empty(cap, dtype=np.uint8)
        err, extra, n, used = decode(out, out_offs)
        if err != E_OUTPUT:
            return err, extra, out[:used], out_offs[:n]
        cap = max(2 * cap, 2 * int(used))


def _run_scan(block, data_end, nr, ri, lo, hi, what):
    use_lo, lo_a, use_hi, hi_a = _bounds(lo, hi)

    def decode(out, out_offs):
        err, n, used, _ = _scan(block, data_end, nr, ri, lo_a, use_lo, hi_a, use_hi, out, out_offs)
        return err, 0, n, used

    err, _, buf, offs = _decode_growing(block.shape[0], decode)
    if err != _OK:
        raise_corruption(err, what)
    return buf, offs


def decode_block(block, *, what: str = "block") -> tuple[np.ndarray, np.ndarray]:
    """Every entry of ``block`` as a record run ``(buf, offs)``.

    ``what`` names the block in a Corruption message.
    """
    block, data_end, nr = _checked(block, what)
    return _run_scan(block, data_end, nr, 0, None, None, what)


def decode_block_range(block, start=None, end=None, *, what: str = "block") -> tuple[np.ndarray, np.ndarray]:
    """The entries with ``start <= key < end`` (either bound may be None)."""
    block, data_end, nr = _checked(block, what)
    ri = 0
    if start is not None:
        err, ri = seek_restart(block, data_end, nr, _as_key(start))
        if err != _OK:
            raise_corruption(err, what)
    return _run_scan(block, data_end, nr, int(ri), start, end, what)


@kernel
def _scan_blocks(data, starts, lo_key, use_lo, hi_key, use_hi, out, out_offs, verified):
    """Decode consecutive blocks ``data[starts[i]:starts[i+1]]`` into one run,
    keeping lo_key <= key < hi_key.  Blocks are in key order, so lo_key is
    applied until a block yields a record (a first block wholly below lo_key
    yields none, and the next one is sought too).  ``verified`` (empty, or
    one flag per block): a block whose flag is set had its checksum and
    restart array checked before and is not hashed again; a block checked
    here gets its flag.  Returns (error, failing block, n, bytes)."""
    data = unowned(data)  # the per-entry helpers take no atomic reference counts
    out = unowned(out)
    out_offs = unowned(out_offs)
    nout = 0
    op = np.int64(0)
    seek = use_lo
    for b in range(starts.shape[0] - 1):
        block = data[starts[b] : starts[b + 1]]
        if b < verified.shape[0] and verified[b] != 0:
            nr = _ld32(block, block.shape[0] - BLOCK_TAIL)
            data_end = block.shape[0] - BLOCK_TAIL - 4 * nr
        else:
            err, data_end, nr = check_block(block)
            if err != _OK:
                return err, b, 0, np.int64(0)
            if b < verified.shape[0]:
                verified[b] = 1
        ri = 0
        if seek:
            err, ri = seek_restart(block, data_end, nr, lo_key)
            if err != _OK:
                return err, b, 0, np.int64(0)
        err, n, used, stopped = _scan(
            block, data_end, nr, ri, lo_key, seek, hi_key, use_hi, out[op:], out_offs[nout:]
        )
        if n > 0:
            seek = False  # every later key is above this block's records
        if err == E_OUTPUT:
            return err, b, 0, op + used
        if err != _OK:
            return err, b, 0, np.int64(0)
        for j in range(nout, nout + n):
            out_offs[j] += op
        nout += n
        op += used
        if stopped:  # reached hi_key: every later block is beyond it
            break
    return _OK, 0, nout, op


_NO_FLAGS = np.zeros(0, dtype=np.uint8)


def decode_blocks_range(data, starts, start=None, end=None, *, what: str = "block", first_block: int = 0,
                        verified=None):
    """Decode consecutive raw blocks (block ``i`` = ``data[starts[i]:starts[i+1]]``,
    in key order) into one record run of the entries with ``start <= key < end``.

    ``verified``: optional per-block flags (uint8, one per block, shared
    with the point reads of a mapped SST): set flags skip the checksum,
    blocks checked here get theirs.  A Corruption message reads ``"{what}
    {first_block + i}: ..."`` for the failing block ``i``.  Decoding stops at
    the first block that reaches ``end``."""
    data = as_u8(data, "data")
    starts = as_offs(starts)
    if starts.shape[0] < 1 or starts[0] < 0 or starts[-1] > data.shape[0] or np.any(np.diff(starts) < 0):
        raise InvalidArgument("decode_blocks_range: bad block starts")
    use_lo, lo_a, use_hi, hi_a = _bounds(start, end)
    if verified is None:
        verified = _NO_FLAGS
    elif verified.dtype != np.uint8 or verified.ndim != 1 or not verified.flags.writeable:
        raise InvalidArgument("decode_blocks_range: verified must be a writable 1-d uint8 array")

    def decode(out, out_offs):
        return _scan_blocks(data, starts, lo_a, use_lo, hi_a, use_hi, out, out_offs, verified)

    err, bad, buf, offs = _decode_growing(data.shape[0], decode)
    if err != _OK:
        raise_corruption(err, f"{what} {first_block + int(bad)}")
    return buf, offs


def seek_block(block, key, *, what: str = "block") -> tuple[np.ndarray, np.ndarray]:
    """The entries of ``block`` whose key is ``>= key``, as a record run.

    Binary search over the restart points for the last restart key ``< key``,
    then a forward scan.  The rest of the block after the restart is still
    walked (and validated), so a malformed block raises Corruption.
    """
    return decode_block_range(block, key, None, what=what)


def block_get(block, key, *, what: str = "block"):
    """``(kind, seq, value | None)`` of the first entry whose key is ``key``,
    or None.  The first such entry is the newest version (trailer descending).
    A tombstone gives ``(0, seq, None)``."""
    block, data_end, nr = _checked(block, what)
    k = _as_key(key)
    err, ri = seek_restart(block, data_end, nr, k)
    if err != _OK:
        raise_corruption(err, what)
    err, found, trailer, vp, vlen = find_entry(block, data_end, nr, ri, k)
    if err != _OK:
        raise_corruption(err, what)
    if not found:
        return None
    trailer = int(trailer)
    kind = trailer & KIND_MASK
    if kind == KIND_DELETE:
        return kind, trailer >> KIND_BITS, None
    return kind, trailer >> KIND_BITS, block[vp : vp + vlen].tobytes()


# ------------------------------------------------- helpers for SST and WAL


@kernel
def _separators(buf, offs, first_idx, last_idx, b0, b1, out, out_offs):
    """Index keys of blocks b0..b1-1: for each block but the last a short key s
    with last_key(i) <= s < first_key(i+1); for block b1-1 its last key."""
    op = 0
    for i in range(b0, b1):
        out_offs[i - b0] = op
        ra = offs[last_idx[i]]
        alen = _ld32(buf, ra)
        ap = ra + RECORD_HEADER
        slen = alen
        src = buf
        sp = ap
        if i + 1 < b1:
            rb = offs[first_idx[i + 1]]
            blen = _ld32(buf, rb)
            bp = rb + RECORD_HEADER
            cp = _common_prefix(buf, ap, alen, buf, bp, blen)
            if cp < alen and blen > cp + 1:
                slen = cp + 1
                sp = bp
        memcpy(out, op, src, sp, slen)
        op += slen
    out_offs[b1 - b0] = op
    return op


def index_separators(buf, offs, blocks: EncodedBlocks, b0: int, b1: int) -> tuple[np.ndarray, np.ndarray]:
    """Index keys for blocks ``b0..b1-1`` as (key bytes, int64 key offsets[n+1]).

    Key ``i`` is ``>=`` every key of block ``b0+i`` and ``<`` every key of the
    next block; the last one is the last key of block ``b1-1``.
    """
    buf = as_u8(buf, "buf")
    offs = as_offs(offs)
    if not 0 <= b0 < b1 <= blocks.num_blocks:
        raise InvalidArgument("bad block range")
    out_offs = np.empty(b1 - b0 + 1, dtype=np.int64)
    out = np.empty(int(_key_bytes(buf, offs, blocks.last_idx, b0, b1)), dtype=np.uint8)
    used = _separators(buf, offs, blocks.first_idx, blocks.last_idx, b0, b1, out, out_offs)
    return out[:used], out_offs


@kernel
def _key_bytes(buf, offs, last_idx, b0, b1):
    total = np.int64(0)
    for i in range(b0, b1):
        total += _ld32(buf, offs[last_idx[i]])
    return total


@kernel
def _seq_range(buf, offs, lo, hi):
    mn = np.uint64(0xFFFFFFFFFFFFFFFF)
    mx = np.uint64(0)
    for i in range(lo, hi):
        s = _ld64(buf, offs[i] + TRAILER_OFF) >> np.uint64(KIND_BITS)
        if s < mn:
            mn = s
        if s > mx:
            mx = s
    return mn, mx


def seq_range(buf, offs, lo: int = 0, hi: int | None = None) -> tuple[int, int]:
    """(min_seq, max_seq) of records ``offs[lo:hi]`` (REQUIRES: in bounds, non-empty)."""
    buf = as_u8(buf, "buf")
    offs = as_offs(offs)
    hi = offs.shape[0] if hi is None else hi
    if not 0 <= lo < hi <= offs.shape[0]:
        raise InvalidArgument("seq_range needs a non-empty range of offs")
    mn, mx = _seq_range(buf, offs, np.int64(lo), np.int64(hi))
    return int(mn), int(mx)


@kernel
def gather(src, offs, dst, dpos, out_offs, k):
    """Copy the records ``offs`` of ``src`` back to back into ``dst`` from
    ``dpos`` on (padding zeroed; ``dpos`` 8-byte aligned), their new offsets to
    ``out_offs[k:]``.  Every record is checked (bounds, key length, kind).

    Returns (error, end position, min_seq, max_seq); E_OUTPUT when ``dst`` is
    too small (``gather_bound`` or the run's exact size always fits).
    """
    op = dpos
    blen = src.shape[0]
    mn = np.uint64(0xFFFFFFFFFFFFFFFF)
    mx = np.uint64(0)
    for i in range(offs.shape[0]):
        r = offs[i]
        kl, vl = _record_lens(src, r, blen)
        if kl < 0:
            return E_RECORD, op, mn, mx
        t = _ld64(src, r + TRAILER_OFF)
        if (t & np.uint64(KIND_MASK)) > np.uint64(MAX_KIND):
            return E_KIND, op, mn, mx
        s = t >> np.uint64(KIND_BITS)
        if s < mn:
            mn = s
        if s > mx:
            mx = s
        rec = RECORD_HEADER + kl + vl
        size = (rec + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)
        if op + size > dst.shape[0]:
            return E_OUTPUT, op, mn, mx
        memcpy(dst, op, src, r, rec)
        for z in range(op + rec, op + size):
            dst[z] = 0
        out_offs[k + i] = op
        op += size
    return _OK, op, mn, mx


@kernel
def gather_bound(buf, offs):
    """Bytes that ``gather`` may need for ``offs`` (an upper bound), or -1
    when a record header lies outside ``buf``."""
    total = np.int64(0)
    blen = buf.shape[0]
    for i in range(offs.shape[0]):
        r = offs[i]
        if r < 0 or r + RECORD_HEADER > blen:
            return np.int64(-1)
        total += RECORD_HEADER + RECORD_ALIGN + _ld32(buf, r) + _ld32(buf, r + VALUE_LEN_OFF)
    return total


def gather_records(buf, offs) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Copy the records ``offs`` (in that order) into one compact buffer.

    Returns ``(out_buf, out_offs, min_seq, max_seq)``; seqs are 0/0 when empty.
    Raises InvalidArgument on a record outside ``buf``, a bad key length or kind.
    """
    buf = as_u8(buf, "buf")
    offs = as_offs(offs)
    bound = int(gather_bound(buf, offs))
    if bound < 0:
        raise InvalidArgument("gather_records: a record lies outside buf")
    out = np.empty(bound, dtype=np.uint8)
    out_offs = np.empty(offs.shape[0], dtype=np.int64)
    err, used, mn, mx = gather(buf, offs, out, 0, out_offs, 0)
    if err != _OK:
        raise InvalidArgument(f"gather_records: {_MESSAGES.get(int(err), err)}")
    if offs.shape[0] == 0:
        return out[:0], out_offs, 0, 0
    return out[:used], out_offs, int(mn), int(mx)


def gather_parts(parts) -> tuple[np.ndarray, np.ndarray]:
    """Copy the records of several ``(buf, offs)`` parts, part after part
    and each in its ``offs`` order, into one compact buffer: ``(out_buf,
    out_offs)``.  One copy of each record, whatever the number of parts.
    Raises InvalidArgument as :func:`gather_records`."""
    parts = [(as_u8(b, "buf"), as_offs(o)) for b, o in parts]
    total = 0
    for b, o in parts:
        bound = int(gather_bound(b, o))
        if bound < 0:
            raise InvalidArgument("gather_parts: a record lies outside its buffer")
        total += bound
    out = np.empty(total, dtype=np.uint8)
    out_offs = np.empty(sum(o.shape[0] for _, o in parts), dtype=np.int64)
    pos = k = 0
    for b, o in parts:
        err, pos = gather(b, o, out, pos, out_offs, k)[:2]
        if err != _OK:
            raise InvalidArgument(f"gather_parts: {_MESSAGES.get(int(err), err)}")
        pos = int(pos)
        k += o.shape[0]
    return out[:pos], out_offs


@kernel
def _scan_records(body, out_offs):
    """Walk a compact record body.  Returns (error, count, min_seq, max_seq)."""
    p = np.int64(0)
    n = body.shape[0]
    cnt = 0
    mn = np.uint64(0xFFFFFFFFFFFFFFFF)
    mx = np.uint64(0)
    while p < n:
        if p + RECORD_HEADER > n or cnt >= out_offs.shape[0]:
            return E_ENTRY, 0, mn, mx
        k = _ld32(body, p)
        v = _ld32(body, p + VALUE_LEN_OFF)
        if k < 1 or k > MAX_KEY_BYTES:
            return E_KEYLEN, 0, mn, mx
        rec = RECORD_HEADER + k + v
        size = (rec + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)
        if size > n - p:
            return E_ENTRY, 0, mn, mx
        t = _ld64(body, p + TRAILER_OFF)
        if (t & np.uint64(KIND_MASK)) > np.uint64(MAX_KIND):
            return E_KIND, 0, mn, mx
        s = t >> np.uint64(KIND_BITS)
        if s < mn:
            mn = s
        if s > mx:
            mx = s
        out_offs[cnt] = p
        cnt += 1
        p += size
    return _OK, cnt, mn, mx


def scan_records(body, *, what: str = "records") -> tuple[np.ndarray, int, int]:
    """Offsets of the records packed back to back in ``body`` (record layout,
    padded), with (min_seq, max_seq).  Corruption when they do not parse."""
    body = as_u8(body, "body")
    out_offs = np.empty(body.shape[0] // (RECORD_HEADER + RECORD_ALIGN) + 1, dtype=np.int64)
    err, n, mn, mx = _scan_records(body, out_offs)
    if err != _OK:
        raise Corruption(f"{what}: {_MESSAGES.get(int(err), err)}")
    if n == 0:
        return out_offs[:0], 0, 0
    return out_offs[:n], int(mn), int(mx)


# ------------------------------------------------------------------- warmup


def _warmup() -> None:
    """Compile every kernel of this module for the array types used in
    production (writable and read-only inputs)."""
    from shaledb.format.record import encode_record

    raw = b"".join(encode_record(k, b"val", 5, 1) for k in (b"a", b"ab", b"b"))
    buf = np.frombuffer(bytearray(raw), dtype=np.uint8)
    offs = np.array([0, 24, 48], dtype=np.int64)
    ro = buf.copy()
    ro.flags.writeable = False
    for b in (buf, ro):
        enc = encode_blocks(b, offs)
        keys, koffs = index_separators(b, offs, enc, 0, enc.num_blocks)
        first_descent(np.frombuffer(keys.tobytes(), dtype=np.uint8), koffs)  # an SST's index, as it opens
        seq_range(b, offs)
        gather_records(b, offs)
    blk = enc.block(0)
    for blk_bytes in (blk, np.frombuffer(blk.tobytes(), dtype=np.uint8)):
        block_checksum_ok(blk_bytes)
        decode_block(blk_bytes)
        seek_block(blk_bytes, b"ab")
        decode_block_range(blk_bytes, b"a", b"b")
        decode_block_range(blk_bytes, None, b"b")
    starts = np.array([0, blk.shape[0]], dtype=np.int64)
    for d in (blk, np.frombuffer(blk.tobytes(), dtype=np.uint8)):
        stored_blocks_ok(d, starts)  # compressed SSTs' stored blocks (sst.format.decompress_blocks)
        decode_blocks_range(d, starts)
        decode_blocks_range(d, starts, b"a", b"b")
        decode_blocks_range(d, starts, verified=np.zeros(starts.shape[0] - 1, dtype=np.uint8))
        block_get(blk_bytes, b"ab")
    body = gather_records(buf, offs)[0]
    scan_records(body)
    scan_records(np.frombuffer(body.tobytes(), dtype=np.uint8))
