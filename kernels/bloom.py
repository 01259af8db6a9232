"""Bloom filters over the keys of a record run (docs/format/bloom.md).

Filter bytes (all integers little-endian)::

    +0   u8   version        1
    +1   u8   num_probes     k, 1 .. 30
    +2   u16  reserved       0
    +4   u32  num_keys       keys added when built (informational; saturates at 2**32-1)
    +8   u64  num_bits       m, a multiple of 64, 64 <= m < 2**32
    +16  m/8 bytes of bits   bit b is (byte 16 + b // 8) >> (b % 8) & 1

A key sets (and a probe tests) k bits derived from one ``h = XXH64(key, seed=0)``
by double hashing on 32 bits: with ``a = h mod 2**32`` and ``d = h >> 32``,
probe ``i`` (0 <= i < k) uses ``x = (a + i*d) mod 2**32`` and bit
``(x * m) >> 32`` (a multiply-shift range reduction: no division).

``bloom_build(buf, offs, bits_per_key=10)`` picks ``k = round(bits_per_key * ln 2)``
(clamped to 1..30) and ``m = max(64, ceil(n * bits_per_key / 64) * 64)`` for n
records (duplicate keys included).  ``bloom_build_from_hashes(hashes,
bits_per_key=10)`` builds the same filter from the keys' hashes, computed
earlier in the flush path (``dedupe_sorted(..., key_hashes=True)``), without
reading the records again.  ``bloom_may_contain(filter, key)`` never
answers False for a key that was added.  Other kernels probe a filter with
``bloom_probe(filt, buf, start, length)`` or ``bloom_probe_hash(filt, h)``.
"""

from __future__ import annotations

import math

import numpy as np

from shaledb.errors import Corruption, InvalidArgument
from shaledb.format.record import RECORD_HEADER
from shaledb.kernels._jit import kernel
from shaledb.kernels.hashing import xxh64_range
from shaledb.kernels.mem import as_u8, load_u64, prefetch
from shaledb.kernels.record import check_run, key_len, raise_bad_record, record_ok

__all__ = [
    "bloom_build",
    "bloom_build_from_hashes",
    "bloom_may_contain",
    "bloom_num_probes",
    "bloom_probe",
    "bloom_probe_hash",
    "check_filter",
]

BLOOM_VERSION = 1
BLOOM_HEADER = 16
MAX_PROBES = 30
MAX_BITS = (1 << 32) - 64

_M32 = np.uint64(0xFFFFFFFF)
_AHEAD = 8  # keys whose probe lines are prefetched ahead


@kernel
def _set_bits(filt, h, k, m):
    a = h & _M32
    d = h >> np.uint64(32)
    mm = np.uint64(m)
    for i in range(k):
        x = (a + np.uint64(i) * d) & _M32
        bit = np.int64((x * mm) >> np.uint64(32))
        p = BLOOM_HEADER + (bit >> 3)
        filt[p] = filt[p] | np.uint8(1 << (bit & 7))


@kernel
def bloom_probe_hash(filt, h):
    """True when the filter may contain a key whose XXH64 is ``h``.

    REQUIRES: ``filt`` is a well-formed filter (see ``bloom_may_contain``).
    """
    mm = load_u64(filt, 8)
    for i in range(np.int64(filt[1])):
        bit = _probe_bit(h, i, mm)
        if (filt[BLOOM_HEADER + (bit >> 3)] >> (bit & 7)) & 1 == 0:
            return False
    return True


@kernel
def _probe_bit(h, i, mm):
    """Bit number of probe ``i`` of hash ``h`` in a filter of ``mm`` bits
    (double hashing over the 32-bit halves, scaled by multiply-shift)."""
    x = ((h & _M32) + np.uint64(i) * (h >> np.uint64(32))) & _M32
    return np.int64((x * mm) >> np.uint64(32))


@kernel
def bloom_prefetch(filt, h):
    """Hint the cache lines ``bloom_probe_hash(filt, h)`` reads (a probe of a
    large filter misses the cache once per bit).  Same REQUIRES."""
    mm = load_u64(filt, 8)
    for i in range(np.int64(filt[1])):
        prefetch(filt, BLOOM_HEADER + (_probe_bit(h, i, mm) >> 3))


@kernel
def bloom_probe(filt, buf, start, length):
    """True when the filter may contain the key ``buf[start:start+length]``."""
    return bloom_probe_hash(filt, xxh64_range(buf, start, length, np.uint64(0)))


@kernel
def _hash_keys(buf, offs, hashes):
    """``hashes[i]`` = XXH64 of the key of record ``offs[i]``; returns -1, or
    the index of a record out of bounds."""
    for i in range(offs.shape[0]):
        off = offs[i]
        if not record_ok(buf, off):
            return i
        hashes[i] = xxh64_range(buf, off + RECORD_HEADER, key_len(buf, off), np.uint64(0))
    return -1


@kernel
def _set_all_bits(hashes, filt, k, m):
    """Set the bits of every hash, prefetching the probe lines of the hash _AHEAD on."""
    n = hashes.shape[0]
    mm = np.uint64(m)
    for i in range(n):
        if i + _AHEAD < n:
            h = hashes[i + _AHEAD]
            a = h & _M32
            d = h >> np.uint64(32)
            for j in range(k):
                x = (a + np.uint64(j) * d) & _M32
                prefetch(filt, BLOOM_HEADER + np.int64(((x * mm) >> np.uint64(32)) >> np.uint64(3)))
        _set_bits(filt, hashes[i], k, m)


def bloom_num_probes(bits_per_key: float) -> int:
    """Probes per key used for ``bits_per_key`` (round(bits_per_key * ln 2), 1..30)."""
    return max(1, min(MAX_PROBES, int(round(bits_per_key * math.log(2)))))


def _empty_filter(n: int, bits_per_key) -> tuple[np.ndarray, int, int]:
    """A zeroed filter sized for ``n`` keys, its header written; returns (filter, k, m)."""
    if isinstance(bits_per_key, bool) or not isinstance(bits_per_key, (int, float)) or not 1 <= bits_per_key <= 64:
        raise InvalidArgument(f"bits_per_key must be a number in [1, 64], got {bits_per_key!r}")
    k = bloom_num_probes(bits_per_key)
    m = max(64, int(math.ceil(n * bits_per_key / 64)) * 64)
    m = min(m, MAX_BITS)
    filt = np.zeros(BLOOM_HEADER + m // 8, dtype=np.uint8)
    filt[0] = BLOOM_VERSION
    filt[1] = k
    filt[4:8] = np.frombuffer(min(n, 0xFFFFFFFF).to_bytes(4, "little"), dtype=np.uint8)
    filt[8:16] = np.frombuffer(m.to_bytes(8, "little"), dtype=np.uint8)
    return filt, k, m


def bloom_build(buf, offs, bits_per_key: float = 10) -> np.ndarray:
    """Filter bytes (uint8 array) over the keys of the records ``(buf, offs)``."""
    buf, offs = check_run(buf, offs, validate=False)  # the kernel validates each record
    n = offs.shape[0]
    filt, k, m = _empty_filter(n, bits_per_key)
    if n:
        if n > 1024:
            # the filter does not depend on the order of the keys: visit the
            # records in buffer order (sequential reads) rather than key order
            offs = np.sort(offs)
        hashes = np.empty(n, dtype=np.uint64)  # numpy's, not the kernel's: huge pages
        bad = _hash_keys(buf, offs, hashes)
        if bad >= 0:
            raise_bad_record(buf, offs, bad)
        _set_all_bits(hashes, filt, k, m)
    return filt


def bloom_build_from_hashes(hashes, bits_per_key: float = 10) -> np.ndarray:
    """The filter ``bloom_build`` makes for records whose keys hash (XXH64,
    seed 0) to ``hashes``, one per record (duplicates counted, as there).

    REQUIRES: ``hashes`` come from ``XXH64(key, seed=0)``, e.g. from
    ``dedupe_sorted(..., key_hashes=True)``; other hashes build a filter that
    answers wrongly.
    """
    if not isinstance(hashes, np.ndarray) or hashes.ndim != 1 or hashes.dtype != np.uint64:
        raise InvalidArgument(f"hashes must be a 1-D uint64 array, got {type(hashes).__name__}")
    hashes = np.ascontiguousarray(hashes)
    n = hashes.shape[0]
    filt, k, m = _empty_filter(n, bits_per_key)
    if n:
        _set_all_bits(hashes, filt, k, m)
    return filt


def check_filter(filt) -> np.ndarray:
    """``filt`` as a uint8 array after checking its header; raises Corruption if malformed."""
    filt = as_u8(filt, "filter")
    if filt.shape[0] < BLOOM_HEADER:
        raise Corruption(f"bloom filter of {filt.shape[0]} bytes is shorter than its header")
    version = int(filt[0])
    k = int(filt[1])
    m = int.from_bytes(filt[8:16].tobytes(), "little")
    if version != BLOOM_VERSION:
        raise Corruption(f"bloom filter version {version} is not {BLOOM_VERSION}")
    if not 1 <= k <= MAX_PROBES or m < 64 or m % 64 or m > MAX_BITS or filt.shape[0] != BLOOM_HEADER + m // 8:
        raise Corruption(f"malformed bloom filter header (k={k}, m={m}, size={filt.shape[0]})")
    return filt


def bloom_may_contain(filt, key) -> bool:
    """False only if ``key`` was certainly not added to the filter ``filt``."""
    filt = check_filter(filt)
    key = as_u8(key, "key")
    return bool(bloom_probe(filt, key, 0, key.shape[0]))

