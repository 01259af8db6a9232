"""SstReader.pin / find and the pinned point read (shaledb.kernels.read)."""

from __future__ import annotations

import numpy as np
import pytest
from formats_testlib import golden_records, ids, run_arrays

from shaledb.sst.block_cache import BlockCache
from shaledb.errors import Corruption
from shaledb.kernels.read import pinned_get as _pinned_get
from shaledb.sst.reader import SstReader
from shaledb.sst.writer import build_ssts
from shaledb.storage import MemoryStore

NAME = "compacted/pinned.sst"


def _store(data):
    st = MemoryStore()
    st.put(NAME, data)
    return st


def _sst():
    recs = golden_records(40)
    ((_, data, _),) = build_ssts(*run_arrays(recs), target_bytes=1 << 30, block_size=256, min_bloom_keys=1, new_id=ids())
    return recs, data


def _pinned_lookup(pinned, key):
    data, boffs, ikeys, ioffs, bloom = pinned
    err, found, t, vp, vlen = _pinned_get(bloom, data, boffs, ikeys, ioffs, np.frombuffer(key, dtype=np.uint8))
    assert err == 0
    if not found:
        return None
    t = int(t)
    return (t & 0xFF, t >> 8, data[vp : vp + vlen].tobytes() if t & 0xFF else None)


def test_pinned_reads_equal_get():
    recs, data = _sst()
    st = _store(data)
    cache = BlockCache(1 << 20)
    r = SstReader(st, NAME, block_cache=cache, size=len(data))
    pinned = r.pin()
    assert pinned is not None and r.pin() is pinned  # shared through the cache
    keys = sorted({rec[0] for rec in recs})
    probes = keys + [k + b"\x00" for k in keys] + [b"\x00", b"\xff" * 9]
    for k in probes:
        want = r.get(k)
        assert _pinned_lookup(pinned, k) == want
        assert r.find(k, np.frombuffer(k, dtype=np.uint8)) == want  # no bloom: the block search says no
    # without the bloom too
    nobloom = pinned[:4] + (np.empty(0, dtype=np.uint8),)
    for k in probes:
        assert _pinned_lookup(nobloom, k) == r.get(k)


def test_pin_validates_every_block():
    recs, data = _sst()
    bad = bytearray(data)
    bad[300] ^= 1  # inside the second 256-byte block
    r = SstReader(_store(bytes(bad)), NAME, size=len(data))
    with pytest.raises(Corruption, match=rf"{NAME}: block 1"):
        r.pin()


def test_point_read_miss_fetches_a_group_once():
    recs, data = _sst()
    st = _store(data)
    cache = BlockCache(1 << 20)
    r = SstReader(st, NAME, block_cache=cache, size=len(data))
    keys = sorted({rec[0] for rec in recs})
    for k in keys:
        assert r.get(k) is not None
    n = len(cache)
    assert n == r.num_blocks  # every block cached, each fetched with its group
