"""shaledb.kernels.point.sort_keys against Python's sort (the order get_many
walks keys in), including keys that tie on long prefixes, prefixes of each
other, trailing zero bytes, duplicates and one outlier that makes the common
prefix empty (a case that once made the sort quadratic)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shaledb.kernels.point import sort_keys

STEMS = [b"a", b"ab", b"ab\x00", b"key0000", b"key00000000", b"key00000000\x00", b"nope", b"\xff", b"k" * 20]
KEYS = st.builds(lambda s, t: s + t, st.sampled_from(STEMS), st.binary(max_size=12))


def _packed(keys):
    offs = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum([len(k) for k in keys], out=offs[1:])
    return np.frombuffer(b"".join(keys), dtype=np.uint8), offs


@settings(max_examples=200, deadline=None)
@given(st.lists(KEYS, max_size=80))
def test_sort_keys_is_bytewise(keys):
    order = sort_keys(*_packed(keys))
    assert sorted(order.tolist()) == list(range(len(keys)))
    assert [keys[i] for i in order] == sorted(keys)


def test_many_keys_with_one_outlier():
    keys = [b"key%013d" % i for i in range(20000, 0, -1)] + [b"nope"]
    order = sort_keys(*_packed(keys))
    assert [keys[i] for i in order] == sorted(keys)


# block_seek (the get path's block search) against kernels.read.block_find
# (the reference the scan path shares): same answer on every block, and the
# same error on blocks whose entries were damaged behind a valid checksum.

import struct  # noqa: E402

import xxhash  # noqa: E402

from shaledb.format.record import encode_record  # noqa: E402
from shaledb.kernels.block import encode_blocks  # noqa: E402
from shaledb.kernels.point import block_seek  # noqa: E402
from shaledb.kernels.read import block_find  # noqa: E402


def _one_block(keys, restart_interval):
    recs = [encode_record(k, b"v%d" % i * (i % 3), 7 + i, 1 if i % 4 else 0) for i, k in enumerate(keys)]
    offs = np.zeros(len(recs), dtype=np.int64)
    np.cumsum([len(r) for r in recs[:-1]], out=offs[1:])
    enc = encode_blocks(np.frombuffer(b"".join(recs), dtype=np.uint8), offs, 1 << 20, restart_interval)
    return np.frombuffer(enc.block(0).tobytes(), dtype=np.uint8)


def _same(block, key):
    k = np.frombuffer(key, dtype=np.uint8)
    got = tuple(int(x) for x in block_seek(block, k))
    assert got == tuple(int(x) for x in block_find(block, k)), key
    return got


@settings(max_examples=150, deadline=None)
@given(st.sets(KEYS, min_size=1, max_size=60), st.lists(KEYS, max_size=20), st.integers(1, 16))
def test_block_seek_matches_block_find(keys, probes, restart_interval):
    keys = sorted(keys)
    block = _one_block(keys, restart_interval)
    for key in keys + probes:
        err, found, *_ = _same(block, key)
        assert err == 0 and bool(found) == (key in keys)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 255), st.sampled_from([1, 4, 16]))
def test_block_seek_reports_damaged_entries_like_block_find(at, byte, restart_interval):
    keys = sorted({b"key%05d" % (i * 7) for i in range(40)})
    raw = bytearray(_one_block(keys, restart_interval).tobytes())
    (nr,) = struct.unpack_from("<I", raw, len(raw) - 12)
    data_end = len(raw) - 12 - 4 * nr
    raw[at % data_end] = byte  # an entry byte; then a valid checksum over it
    struct.pack_into("<Q", raw, len(raw) - 8, xxhash.xxh64_intdigest(bytes(raw[:-8])))
    block = np.frombuffer(bytes(raw), dtype=np.uint8)
    for key in keys[::5] + [b"key", b"key99999", b"zzz"]:
        _same(block, key)
