"""The read path's fast paths: buffered writes, several L0 SSTs (pinned or
read block by block), read-around."""

from __future__ import annotations

import uuid

import pytest

import shaledb


def _url():
    return "memory://readfast-" + uuid.uuid4().hex[:12]


def test_buffered_writes_read_back_without_drain():
    with shaledb.open(_url()) as db:
        db.put(b"a", b"1")
        db.put(b"a", b"2", await_durable=False)
        assert db.get(b"a") == b"2"
        db.delete(b"a", await_durable=False)
        assert db.get(b"a") is None
        db.put(b"a", b"3", await_durable=False)
        db.put(b"b", b"x", await_durable=False)
        assert db.get(b"a") == b"3"
        assert db.get(b"b") == b"x"
        assert db.get(b"c") is None
        assert list(db.scan()) == [(b"a", b"3"), (b"b", b"x")]


@pytest.mark.parametrize("cache_bytes", [64 << 20, 4096, 0])  # pinned SSTs, cached blocks, no cache
def test_gets_across_many_l0_ssts_newest_wins(cache_bytes):
    with shaledb.open(_url(), block_size=256, block_cache_bytes=cache_bytes) as db:
        expect = {}
        for gen in range(5):
            for i in range(0, 300, gen + 1):
                k = b"k%05d" % i
                if (i + gen) % 7 == 0:
                    db.delete(k, await_durable=False)
                    expect.pop(k, None)
                else:
                    v = b"g%d-%d" % (gen, i)
                    db.put(k, v, await_durable=False)
                    expect[k] = v
            db.flush(memtable=True)
        # and some newer versions still in the arenas
        for i in range(0, 300, 11):
            k = b"k%05d" % i
            db.put(k, b"arena", await_durable=False)
            expect[k] = b"arena"
        for i in range(310):
            k = b"k%05d" % i
            assert db.get(k) == expect.get(k), k
        assert list(db.scan()) == sorted(expect.items())
        assert list(db.scan(b"k00100", b"k00200")) == sorted(
            (k, v) for k, v in expect.items() if b"k00100" <= k < b"k00200"
        )


@pytest.mark.parametrize("cache_bytes", [64 << 20, 0])
def test_single_l0_hits_and_misses(cache_bytes):
    with shaledb.open(_url(), block_size=256, block_cache_bytes=cache_bytes) as db:
        db.put_many([b"k%05d" % i for i in range(0, 1000, 2)], [b"v%d" % i for i in range(0, 1000, 2)])
        for i in range(0, 1000, 10):
            db.delete(b"k%05d" % i, await_durable=False)  # tombstones in the same L0
        db.flush(memtable=True)
        for i in range(1002):
            assert db.get(b"k%05d" % i) == (b"v%d" % i if i % 2 == 0 and i % 10 and i < 1000 else None)
        assert db.get(b"a") is None and db.get(b"z") is None and db.get(b"k00002\x00") is None
