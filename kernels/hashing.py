"""xxHash64 (XXH64) in numba, bit-exact with the ``xxhash`` package.

``xxh64_range(buf, start, length, seed) -> uint64`` is the jitted kernel other
kernels call (bloom filters, block checksums, arena hash index);
``xxh64(data, seed=0) -> int`` is the validating Python wrapper.

All arithmetic is on ``np.uint64`` with explicit casts: numba turns a mix of
int64 and uint64 into float64, which would silently break the hash.
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.kernels._jit import kernel  # first: it settles numba's cache directory
from shaledb.kernels.mem import as_u8, load_u32, load_u64

__all__ = ["xxh64", "xxh64_range"]

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_U64_MASK = (1 << 64) - 1


@kernel
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@kernel
def _round(acc, lane):
    acc = acc + lane * _P2
    acc = _rotl(acc, 31)
    return acc * _P1


@kernel
def _merge_round(acc, val):
    acc = acc ^ _round(np.uint64(0), val)
    return acc * _P1 + _P4


@kernel
def xxh64_range(buf, start, length, seed):
    """XXH64 of ``buf[start:start+length]`` with a uint64 ``seed``.

    REQUIRES: 0 <= start, start + length <= len(buf).
    """
    seed = np.uint64(seed)
    p = start
    end = start + length
    if length >= 32:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        limit = end - 32
        while p <= limit:
            v1 = _round(v1, load_u64(buf, p))
            v2 = _round(v2, load_u64(buf, p + 8))
            v3 = _round(v3, load_u64(buf, p + 16))
            v4 = _round(v4, load_u64(buf, p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge_round(h, v1)
        h = _merge_round(h, v2)
        h = _merge_round(h, v3)
        h = _merge_round(h, v4)
    else:
        h = seed + _P5
    h = h + np.uint64(length)
    while p + 8 <= end:
        h = h ^ _round(np.uint64(0), load_u64(buf, p))
        h = _rotl(h, 27) * _P1 + _P4
        p += 8
    if p + 4 <= end:
        h = h ^ (load_u32(buf, p) * _P1)
        h = _rotl(h, 23) * _P2 + _P3
        p += 4
    while p < end:
        h = h ^ (np.uint64(buf[p]) * _P5)
        h = _rotl(h, 11) * _P1
        p += 1
    h = h ^ (h >> np.uint64(33))
    h = h * _P2
    h = h ^ (h >> np.uint64(29))
    h = h * _P3
    h = h ^ (h >> np.uint64(32))
    return h


def xxh64(data, seed: int = 0) -> int:
    """XXH64 of ``data`` (bytes-like or 1-D uint8 array) as a Python int."""
    arr = as_u8(data)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= _U64_MASK:
        raise InvalidArgument(f"seed must be an int in [0, 2**64), got {seed!r}")
    return int(xxh64_range(arr, 0, arr.shape[0], np.uint64(seed)))

