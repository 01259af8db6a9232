"""shaledb.sst.prefetch: scans of SSTs on stores that do not map objects keep
several ranged GETs in flight, in order, within a byte bound; and SstReader
scans through it (memory store) give the same runs as before."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from formats_testlib import golden_records, ids, run_arrays
from reference.block import read_run

import shaledb
from shaledb.format.keys import sst_key
from shaledb.sst.prefetch import fetch_groups
from shaledb.sst.reader import SstReader
from shaledb.sst.writer import build_ssts
from shaledb.storage import MemoryStore
from shaledb.storage.wrappers import call_deadline, deadline_left

OFFS = np.arange(0, 41 * 100, 100, dtype=np.int64)  # 40 blocks of 100 bytes


OBJ = bytes(x % 251 for x in range(int(OFFS[-1])))  # the object the blocks are cut from


def _data(i, j):
    """Bytes of blocks i..j-1 (what a ranged GET returns)."""
    return OBJ[int(OFFS[i]) : int(OFFS[j])]


def test_groups_in_order_and_complete():
    got = list(fetch_groups(_data, OFFS, 3, 37, group_bytes=350, max_in_flight=1000))
    assert [(i, j) for i, j, _ in got] == [(b, min(b + 3, 37)) for b in range(3, 37, 3)]
    assert all(d == _data(i, j) for i, j, d in got)
    assert list(fetch_groups(_data, OFFS, 5, 5)) == []
    assert list(fetch_groups(_data, OFFS, 5, 6)) == [(5, 6, _data(5, 6))]


def test_one_get_serves_several_groups():
    calls = []

    def fetch(i, j):
        calls.append((i, j))
        return _data(i, j)

    got = list(fetch_groups(fetch, OFFS, 0, 40, group_bytes=200, get_bytes=1000))
    assert [(i, j) for i, j, _ in got] == [(b, b + 2) for b in range(0, 40, 2)]
    assert all(bytes(d) == _data(i, j) for i, j, d in got)
    assert calls == [(b, b + 10) for b in range(0, 40, 10)]


def test_several_fetches_in_flight():
    """Three fetches wait for each other at a barrier: the test passes only if
    the three are running at the same time."""
    barrier = threading.Barrier(3, timeout=30)

    def fetch(i, j):
        if i < 3:
            barrier.wait()
        return _data(i, j)

    got = list(fetch_groups(fetch, OFFS, 0, 10, group_bytes=100, get_bytes=100, max_in_flight=400))
    assert [d for _i, _j, d in got] == [_data(b, b + 1) for b in range(10)]


def test_bytes_in_flight_are_bounded():
    lock = threading.Lock()
    state = {"ahead": 0, "max": 0}
    handed = []

    def fetch(i, j):
        with lock:
            state["ahead"] = (j * 100) - (handed[-1][1] * 100 if handed else 0)
            state["max"] = max(state["max"], state["ahead"])
        return _data(i, j)

    for i, j, _d in fetch_groups(fetch, OFFS, 0, 40, group_bytes=200, get_bytes=200, max_in_flight=600):
        handed.append((i, j))
    assert len(handed) == 20
    assert state["max"] <= 600 + 200  # requested ahead of the last group handed out


def test_error_comes_in_its_turn_and_early_stop_cancels():
    def fetch(i, j):
        if i == 4:
            raise shaledb.Corruption("block 4 is bad")
        return _data(i, j)

    seen = []
    with pytest.raises(shaledb.Corruption, match="block 4"):
        for i, _j, _d in fetch_groups(fetch, OFFS, 0, 10, group_bytes=100, get_bytes=100):
            seen.append(i)
    assert seen == [0, 1, 2, 3]
    it = fetch_groups(_data, OFFS, 0, 40, group_bytes=100)
    assert next(it)[0] == 0
    it.close()  # pending fetches cancelled; the pool stays usable
    assert len(list(fetch_groups(_data, OFFS, 0, 40, group_bytes=100))) == 40


def test_fetches_run_under_the_callers_deadline():
    lefts = []

    def fetch(i, j):
        lefts.append(deadline_left())
        return _data(i, j)

    with call_deadline(60):
        list(fetch_groups(fetch, OFFS, 0, 8, group_bytes=100, get_bytes=100))
    assert len(lefts) == 8 and all(x is not None and 0 < x <= 60 for x in lefts)


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_sst_scan_through_prefetch(compression):
    pytest.importorskip("zstandard") if compression == "zstd" else None
    store = MemoryStore()
    recs = golden_records(3000)
    (sid, data, info), = build_ssts(*run_arrays(recs), target_bytes=1 << 30, block_size=512,
                                    compression=compression, new_id=ids())
    store.put(sst_key(sid), data)
    r = SstReader(store, sst_key(sid), read_ahead_bytes=2048)
    runs = list(r.iter_range())
    assert len(runs) > 4
    assert [rec for buf, offs in runs for rec in read_run(buf, offs)] == recs
    keys = sorted({rec[0] for rec in recs})
    lo, hi = keys[100], keys[2000]
    part = [rec for buf, offs in r.iter_range(lo, hi) for rec in read_run(buf, offs)]
    assert part == [rec for rec in recs if lo <= rec[0] < hi]


def test_corrupt_block_in_a_prefetched_group_names_the_object():
    store = MemoryStore()
    recs = golden_records(3000)
    (sid, data, info), = build_ssts(*run_arrays(recs), target_bytes=1 << 30, block_size=512,
                                    compression="none", new_id=ids())
    bad = bytearray(data)
    bad[len(data) // 3] ^= 0xFF  # a data block in the middle
    store.put(sst_key(sid), bytes(bad))
    r = SstReader(store, sst_key(sid), read_ahead_bytes=2048)
    with pytest.raises(shaledb.Corruption, match=sid):
        for _ in r.iter_range():
            pass
