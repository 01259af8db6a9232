"""Pack key/value batches into a record run (layout: shaledb.format.record).

``pack_records(keys, key_offs, values, value_offs, first_seq)`` writes one PUT
record per pair, in input order, with seqs ``first_seq, first_seq + 1, ...``
into a fresh uint8 buffer and returns ``(buf, offs)``: the run the sort,
dedupe and SST kernels take.  Used by bulk loads (``shaledb.bulk``), which
build SSTs without arenas.

Thread safety: pure; the kernel runs without the GIL.
"""

from __future__ import annotations

import sys

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.format.record import KIND_BITS, KIND_PUT, MAX_KEY_BYTES, MAX_SEQ, MAX_VALUE_BYTES, RECORD_ALIGN, RECORD_HEADER
from shaledb.kernels._jit import kernel
from shaledb.kernels.mem import memcpy

__all__ = ["pack_records", "packed_size"]


@kernel
def _pack(keys, key_offs, values, value_offs, first_seq, buf, offs):
    n = key_offs.shape[0] - 1
    words = buf.view(np.uint64)  # records start 8-aligned: headers are whole (native = little-endian) words
    pos = 0
    for i in range(n):
        k0 = key_offs[i]
        klen = key_offs[i + 1] - k0
        v0 = value_offs[i]
        vlen = value_offs[i + 1] - v0
        offs[i] = pos
        end = (pos + RECORD_HEADER + klen + vlen + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)
        w = pos // 8
        words[w] = np.uint64(klen) | (np.uint64(vlen) << np.uint64(32))
        words[w + 1] = ((first_seq + np.uint64(i)) << np.uint64(KIND_BITS)) | np.uint64(KIND_PUT)
        words[end // 8 - 1] = 0  # the padding (the copies below overwrite the rest of this word)
        p = pos + RECORD_HEADER
        memcpy(buf, p, keys, k0, klen)  # (one libc memcpy each: a slice assignment costs ~50 ns more per call)
        memcpy(buf, p + klen, values, v0, vlen)
        pos = end
    return pos


def packed_size(key_offs: np.ndarray, value_offs: np.ndarray) -> int:
    """Bytes ``pack_records`` needs for these pairs (headers and padding included)."""
    n = len(key_offs) - 1
    raw = RECORD_HEADER * n + int(key_offs[-1] - key_offs[0]) + int(value_offs[-1] - value_offs[0])
    # an upper bound (at most RECORD_ALIGN - 1 padding each), whole words
    return (raw + RECORD_ALIGN * n + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)


def pack_records(keys, key_offs, values, value_offs, first_seq: int, *, out: np.ndarray | None = None):
    """One PUT record per (key, value) pair, seqs rising from ``first_seq``.

    ``out``: a uint8 buffer of at least ``packed_size`` bytes, length a
    multiple of 8, to write into (a reused, already faulted-in buffer);
    default a new one.

    REQUIRES: ``keys``/``values`` uint8 arrays, ``key_offs``/``value_offs``
    int64 offsets of equal length n+1, non-decreasing; keys of 1 ..
    MAX_KEY_BYTES bytes, values up to MAX_VALUE_BYTES (InvalidArgument
    otherwise).  Returns ``(buf, offs)`` with ``len(offs) == n``.
    """
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    values = np.ascontiguousarray(values, dtype=np.uint8)
    key_offs = np.ascontiguousarray(key_offs, dtype=np.int64)
    value_offs = np.ascontiguousarray(value_offs, dtype=np.int64)
    if key_offs.ndim != 1 or key_offs.shape != value_offs.shape or key_offs.shape[0] < 1:
        raise InvalidArgument("key_offs and value_offs must be 1-D offsets of the same length n+1")
    n = key_offs.shape[0] - 1
    klens = np.diff(key_offs)
    vlens = np.diff(value_offs)
    if n and (klens.min() < 1 or klens.max() > MAX_KEY_BYTES):
        raise InvalidArgument(f"keys must be 1..{MAX_KEY_BYTES} bytes")
    if n and (vlens.min() < 0 or vlens.max() > MAX_VALUE_BYTES):
        raise InvalidArgument(f"values must be 0..{MAX_VALUE_BYTES} bytes")
    if key_offs[0] < 0 or key_offs[-1] > keys.shape[0] or value_offs[0] < 0 or value_offs[-1] > values.shape[0]:
        raise InvalidArgument("offsets point outside their data")
    if isinstance(first_seq, bool) or not (0 <= int(first_seq) and int(first_seq) + n - 1 <= MAX_SEQ):
        raise InvalidArgument(f"seqs {first_seq}..{first_seq}+{n} do not fit in 56 bits")
    if sys.byteorder != "little":  # the kernel stores header words natively
        raise InvalidArgument("pack_records needs a little-endian machine")
    need = packed_size(key_offs, value_offs)
    if out is None:
        buf = np.empty(need, dtype=np.uint8)
    else:
        if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 1 and out.flags.c_contiguous
                and out.shape[0] >= need and out.shape[0] % RECORD_ALIGN == 0):
            raise InvalidArgument(f"out must be a contiguous uint8 buffer of >= {need} bytes, a multiple of 8")
        buf = out
    offs = np.empty(n, dtype=np.int64)
    used = _pack(keys, key_offs, values, value_offs, np.uint64(first_seq), buf, offs) if n else 0
    return buf[:used], offs
