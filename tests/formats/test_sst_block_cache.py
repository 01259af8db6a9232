"""BlockCache: LRU by bytes, thread safety, and SST gets through it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from formats_testlib import golden_records, ids, model_get, run_arrays

from shaledb.sst.block_cache import BlockCache
from shaledb.errors import InvalidArgument
from shaledb.format.keys import sst_key
from shaledb.sst.reader import SstReader
from shaledb.sst.writer import build_ssts


def test_lru_by_bytes():
    c = BlockCache(100)
    c.put(("a", 0), b"x" * 40)
    c.put(("a", 40), np.zeros(40, np.uint8))
    assert c.get(("a", 0)) == b"x" * 40  # now most recent
    c.put(("b", 0), b"y" * 40)  # evicts ("a", 40)
    assert ("a", 40) not in c and ("a", 0) in c and ("b", 0) in c
    assert c.size_bytes == 80 and len(c) == 2
    c.put(("huge", 0), b"z" * 101)  # larger than the cache: not kept
    assert ("huge", 0) not in c and c.size_bytes == 80
    c.put(("a", 0), b"w" * 10)  # replace
    assert c.size_bytes == 50
    c.discard(("b", 0))
    assert c.size_bytes == 10 and c.hits == 1 and c.get(("none", 1)) is None and c.misses == 1
    c.clear()
    assert len(c) == 0 and c.size_bytes == 0
    with pytest.raises(InvalidArgument):
        BlockCache(-1)


def test_threads_share_a_cache():
    c = BlockCache(10_000)

    def work(t):
        for i in range(2000):
            c.put((t, i % 300), b"." * (1 + i % 50))
            c.get((t, (i * 7) % 300))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not any(th.is_alive() for th in threads)
    assert c.size_bytes <= 10_000
    assert c.size_bytes == sum(len(c.get(k) or b"") for k in [(t, i) for t in range(4) for i in range(300)])


def test_get_through_the_cache_fetches_each_block_once():
    from shaledb.storage import InstrumentedStore, MemoryStore

    recs = golden_records(500)
    ((sid, data, info),) = build_ssts(*run_arrays(recs), target_bytes=1 << 30, block_size=1024, new_id=ids())
    st = InstrumentedStore(MemoryStore())
    st.put(sst_key(sid), data)
    cache = BlockCache(1 << 20)
    r = SstReader(st, sst_key(sid), block_cache=cache, size=len(data))
    keys = [rec[0] for rec in recs]
    for _ in range(2):
        for k in keys:
            assert r.get(k) == model_get(recs, k)
    assert st.snapshot()["get_range"].count <= 1 + r.num_blocks
    assert cache.hits > len(keys)
