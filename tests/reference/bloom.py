"""Plain-Python bloom filter in the format of docs/format/bloom.md."""

from __future__ import annotations

import math

from reference.hashing import xxh64


def num_probes(bits_per_key: float) -> int:
    return max(1, min(30, int(round(bits_per_key * math.log(2)))))


def _bits(key: bytes, k: int, m: int):
    h = xxh64(key, 0)
    a = h & 0xFFFFFFFF
    d = h >> 32
    for i in range(k):
        x = (a + i * d) & 0xFFFFFFFF
        yield (x * m) >> 32


def build(keys, bits_per_key: float = 10) -> bytes:
    keys = list(keys)
    n = len(keys)
    k = num_probes(bits_per_key)
    m = min(max(64, math.ceil(n * bits_per_key / 64) * 64), (1 << 32) - 64)
    bits = bytearray(m // 8)
    for key in keys:
        for b in _bits(key, k, m):
            bits[b // 8] |= 1 << (b % 8)
    header = bytes([1, k, 0, 0]) + min(n, 2**32 - 1).to_bytes(4, "little") + m.to_bytes(8, "little")
    return header + bytes(bits)


def may_contain(filt: bytes, key: bytes) -> bool:
    k = filt[1]
    m = int.from_bytes(filt[8:16], "little")
    return all(filt[16 + b // 8] >> (b % 8) & 1 for b in _bits(key, k, m))


def false_positive_rate(bits_per_key: float) -> float:
    """Theoretical false-positive rate for ``bits_per_key`` with ``num_probes`` probes."""
    k = num_probes(bits_per_key)
    return (1 - math.exp(-k / bits_per_key)) ** k
