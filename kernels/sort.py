"""Sorting record runs, plus the record accessors the other kernels share.

A record run is ``(buf: uint8[:], offs: int64[:])``: records in the layout of
``kernels/layout.py`` (docs/format/record.md) inside ``buf``, ``offs`` the byte
offsets of their starts.  Records order by (key ascending bytewise, trailer
descending), so the newest version of a key comes first.

``sort_records`` is an MSD radix sort over 7-byte key chunks:

* every record gets a uint64 sort word for the chunk at byte ``depth``: the 7
  key bytes ``key[depth:depth+7]`` big-endian (zero padded) in the high 56
  bits, and in the low byte ``min(len(key) - depth, 8)``.  Comparing words
  compares keys correctly up to ``depth + 7``: a key that ends inside the
  chunk sorts before a longer key with the same bytes (it is its prefix), and
  two words with a low byte < 8 that are equal mean the keys are equal;
* a segment of records is ordered by its words with a stable LSD byte radix
  sort (passes whose byte is the same for every word are skipped); each run of
  equal words then becomes a new segment, one chunk deeper (low byte 8) or
  ordered by trailer descending (keys equal);
* segments of at most ``_SMALL`` records are finished by an insertion sort with
  a full comparison.

Every step is stable, so records that are fully equal keep their input order.
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.kernels._jit import kernel
from shaledb.kernels.hashing import _load_u32, _load_u64, _prefetch, as_u8, readonly
from shaledb.kernels.layout import MAX_KEY_LEN, RECORD_ALIGN, RECORD_HEADER

__all__ = ["check_run", "concat_runs", "sort_records"]

_SMALL = 24
_AHEAD = 16  # records prefetched ahead when walking offsets in sorted (random) order
_TRAILER_DEPTH = -1


# ---------------------------------------------------------------- record access


@kernel
def _key_len(buf, off):
    return np.int64(_load_u32(buf, off))


@kernel
def _value_len(buf, off):
    return np.int64(_load_u32(buf, off + 4))


@kernel
def _trailer(buf, off):
    return _load_u64(buf, off + 8)


@kernel
def _compare_keys_from(buf, a, b, depth):
    """Compare the keys of the records at ``a`` and ``b`` from byte ``depth`` on.

    Returns -1, 0 or 1.  REQUIRES: both keys are at least ``depth`` bytes long.
    """
    la = _key_len(buf, a)
    lb = _key_len(buf, b)
    n = la if la < lb else lb
    pa = a + RECORD_HEADER
    pb = b + RECORD_HEADER
    i = depth
    while i + 8 <= n and _load_u64(buf, pa + i) == _load_u64(buf, pb + i):
        i += 8
    while i < n:
        ca = buf[pa + i]
        cb = buf[pb + i]
        if ca != cb:
            return -1 if ca < cb else 1
        i += 1
    if la == lb:
        return 0
    return -1 if la < lb else 1


@kernel
def _compare_keys(buf, a, b):
    return _compare_keys_from(buf, a, b, 0)


@kernel
def _compare_records_from(buf, a, b, depth):
    """Order of the records at ``a`` and ``b``: key asc, then trailer desc (-1, 0, 1)."""
    c = _compare_keys_from(buf, a, b, depth)
    if c != 0:
        return c
    ta = _trailer(buf, a)
    tb = _trailer(buf, b)
    if ta == tb:
        return 0
    return -1 if ta > tb else 1


@kernel
def _compare_records(buf, a, b):
    return _compare_records_from(buf, a, b, 0)


@kernel
def _check_run(buf, offs):
    """Index of the first record that does not fit the layout, or -1."""
    size = buf.shape[0]
    for i in range(offs.shape[0]):
        off = offs[i]
        if off < 0 or off % RECORD_ALIGN != 0 or off + RECORD_HEADER > size:
            return i
        klen = _key_len(buf, off)
        vlen = _value_len(buf, off)
        if klen > MAX_KEY_LEN or off + RECORD_HEADER + klen + vlen > size:
            return i
    return -1


def as_offsets(offs, name: str = "offs") -> np.ndarray:
    """``offs`` as a read-only contiguous 1-D int64 array (no copy when it already is one)."""
    if not isinstance(offs, np.ndarray):
        try:
            offs = np.asarray(offs, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgument(f"{name} must be int64 offsets: {exc}") from None
    if offs.ndim != 1 or (offs.dtype != np.int64 and not (offs.size == 0 or np.issubdtype(offs.dtype, np.integer))):
        raise InvalidArgument(f"{name} must be a 1-D integer array, got {offs.dtype}[{offs.ndim}d]")
    if offs.dtype != np.int64:
        offs = offs.astype(np.int64)
    return readonly(np.ascontiguousarray(offs))


def check_run(buf, offs, *, validate: bool = True):
    """Validate a record run; returns ``(buf, offs)`` as read-only contiguous uint8 / int64 arrays.

    Raises InvalidArgument when an offset is misaligned or a record does not
    fit in ``buf``: the kernels trust their inputs and do no bounds checks.
    """
    buf = as_u8(buf, "buf")
    offs = as_offsets(offs)
    if validate and offs.shape[0]:
        bad = int(_check_run(buf, offs))
        if bad >= 0:
            raise InvalidArgument(
                f"record {bad} at offset {int(offs[bad])} does not fit the record layout "
                f"in a buffer of {buf.shape[0]} bytes"
            )
    return buf, offs


# ---------------------------------------------------------------- sort kernels


@kernel
def _chunk_word(buf, off, depth):
    """Sort word of the key of the record at ``off`` for the chunk at ``depth``."""
    klen = _key_len(buf, off)
    rem = klen - depth
    p = off + RECORD_HEADER + depth
    w = np.uint64(0)
    if rem >= 7:
        for j in range(7):
            w = (w << np.uint64(8)) | np.uint64(buf[p + j])
    else:
        for j in range(7):
            w = w << np.uint64(8)
            if j < rem:
                w = w | np.uint64(buf[p + j])
    tag = rem if rem < 8 else 8
    return (w << np.uint64(8)) | np.uint64(tag)


@kernel
def _radix_sort(vals, idx, lo, hi, tv, ti, counts):
    """Stable sort of ``vals[lo:hi]`` ascending, permuting the payload ``idx[lo:hi]`` alike.

    ``tv``/``ti`` are scratch arrays as long as ``vals``; ``counts`` is int64[8, 256].
    """
    counts[:, :] = 0
    for i in range(lo, hi):
        v = vals[i]
        for d in range(8):
            counts[d, (v >> np.uint64(8 * d)) & np.uint64(0xFF)] += 1
    n = hi - lo
    src_v = vals
    src_i = idx
    dst_v = tv
    dst_i = ti
    passes = 0
    for d in range(8):
        trivial = False
        for b in range(256):
            c = counts[d, b]
            if c == n:
                trivial = True
                break
            if c != 0:
                break
        if trivial:
            continue
        pos = lo
        for b in range(256):
            c = counts[d, b]
            counts[d, b] = pos
            pos += c
        shift = np.uint64(8 * d)
        for i in range(lo, hi):
            v = src_v[i]
            b = (v >> shift) & np.uint64(0xFF)
            p = counts[d, b]
            counts[d, b] = p + 1
            dst_v[p] = v
            dst_i[p] = src_i[i]
        src_v, dst_v = dst_v, src_v
        src_i, dst_i = dst_i, src_i
        passes += 1
    if passes % 2 == 1:
        for i in range(lo, hi):
            vals[i] = src_v[i]
            idx[i] = src_i[i]


@kernel
def _insertion_sort(buf, ro, lo, hi, depth):
    """Stable insertion sort of the offsets ``ro[lo:hi]`` by record order, keys equal before ``depth``."""
    for i in range(lo + 1, hi):
        x = ro[i]
        j = i - 1
        while j >= lo and _compare_records_from(buf, ro[j], x, depth) > 0:
            ro[j + 1] = ro[j]
            j -= 1
        ro[j + 1] = x


@kernel
def _sort_records(buf, offs):
    n = offs.shape[0]
    ro = offs.copy()  # the offsets themselves are permuted (one indirection less than indices)
    vals = np.empty(n, dtype=np.uint64)
    tv = np.empty(n, dtype=np.uint64)
    ti = np.empty(n, dtype=np.int64)
    counts = np.zeros((8, 256), dtype=np.int64)
    cap = n // 2 + 2
    st_lo = np.empty(cap, dtype=np.int64)
    st_hi = np.empty(cap, dtype=np.int64)
    st_depth = np.empty(cap, dtype=np.int64)
    st_lo[0] = 0
    st_hi[0] = n
    st_depth[0] = 0
    top = 1
    while top > 0:
        top -= 1
        lo = st_lo[top]
        hi = st_hi[top]
        depth = st_depth[top]
        m = hi - lo
        if m <= 1:
            continue
        if m <= _SMALL:
            if depth == _TRAILER_DEPTH:
                # keys are equal: compare from the end of the key
                _insertion_sort(buf, ro, lo, hi, _key_len(buf, ro[lo]))
            else:
                _insertion_sort(buf, ro, lo, hi, depth)
            continue
        if depth == _TRAILER_DEPTH:
            for i in range(lo, hi):
                _prefetch(buf, ro[min(i + _AHEAD, hi - 1)] + 8)
                vals[i] = ~_trailer(buf, ro[i])
            _radix_sort(vals, ro, lo, hi, tv, ti, counts)
            continue
        for i in range(lo, hi):
            _prefetch(buf, ro[min(i + _AHEAD, hi - 1)] + RECORD_HEADER + depth)
            vals[i] = _chunk_word(buf, ro[i], depth)
        _radix_sort(vals, ro, lo, hi, tv, ti, counts)
        i = lo
        while i < hi:
            v = vals[i]
            j = i + 1
            while j < hi and vals[j] == v:
                j += 1
            if j - i > 1:
                st_lo[top] = i
                st_hi[top] = j
                if (v & np.uint64(0xFF)) == np.uint64(8):
                    st_depth[top] = depth + 7
                else:
                    st_depth[top] = _TRAILER_DEPTH
                top += 1
            i = j
    return ro


def sort_records(buf, offs, *, validate: bool = True) -> np.ndarray:
    """Offsets of the records of ``(buf, offs)`` ordered by (key asc, trailer desc).

    Stable: records with equal key and trailer keep their input order.
    """
    buf, offs = check_run(buf, offs, validate=validate)
    if offs.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    return _sort_records(buf, offs)


def concat_runs(runs) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate record runs ``[(buf, offs), ...]`` into one ``(buf, offs)``.

    Each buffer is copied whole (memcpy) to an 8-byte aligned position and its
    offsets are shifted by that position.  A single run is returned unchanged
    (as validated arrays); no runs give an empty run.
    """
    runs = [check_run(b, o) for b, o in runs]
    if len(runs) == 1:
        return runs[0]
    bases = []
    pos = 0
    for b, _ in runs:
        bases.append(pos)
        pos += (b.shape[0] + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)
    out = np.empty(pos, dtype=np.uint8)
    total = sum(o.shape[0] for _, o in runs)
    out_offs = np.empty(total, dtype=np.int64)
    k = 0
    for (b, o), base in zip(runs, bases):
        out[base : base + b.shape[0]] = b
        pad_end = base + ((b.shape[0] + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1))
        out[base + b.shape[0] : pad_end] = 0
        np.add(o, base, out=out_offs[k : k + o.shape[0]])
        k += o.shape[0]
    return out, out_offs
