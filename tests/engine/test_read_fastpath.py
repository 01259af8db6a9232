"""The read path's fast paths: buffered writes, several L0 SSTs, read-around."""

from __future__ import annotations

import uuid

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


def test_gets_across_many_l0_ssts_newest_wins():
    with shaledb.open(_url(), block_size=256) as db:
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
