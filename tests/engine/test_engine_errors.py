"""Failures around the engine: flaky stores, dead flushers, closed handles."""

from __future__ import annotations

import time

import pytest

import shaledb
from engine_util import SPAWN, kill, open_db, reap, scan_all


def _flaky_store(store):
    from shaledb.storage.wrappers import FailRandomly, FaultyStore

    return FaultyStore(store, FailRandomly(0.2, ops="write", seed=7))


def test_transient_store_errors_are_retried(tmp_path):
    root = str(tmp_path / "db")
    with open_db(root, store_wrapper=_flaky_store) as db:
        for i in range(20):
            db.put(b"k%02d" % i, b"v")
        db.put_many([b"m%04d" % i for i in range(2000)], [b"x"] * 2000, await_durable=False)
        db.flush(memtable=True)
        assert db.status()["failed"] is None
    with open_db(root) as db:
        assert len(scan_all(db)) == 2020


def test_writer_handle_after_close_raises_closed(tmp_path):
    db = open_db(str(tmp_path / "db"))
    h = db.writer()
    db.close()
    with pytest.raises(shaledb.Closed):
        h.put(b"k", b"v")


def _child_durable_put(handle, conn):
    t0 = time.monotonic()
    try:
        with handle as w:
            w.put(b"child", b"x")
        conn.send(("ok", 0.0))
    except shaledb.ShaleDBError as exc:
        conn.send((type(exc).__name__, time.monotonic() - t0))


def test_dead_flusher_fails_a_writer_process_fast(tmp_path):
    db = open_db(str(tmp_path / "db"), request_timeout=20.0)
    try:
        h = db.writer()
        kill(db.status()["pid"])
        db._proc.join(10)
        parent, child = SPAWN.Pipe(duplex=False)
        p = SPAWN.Process(target=_child_durable_put, args=(h, child))
        p.start()
        child.close()
        try:
            assert parent.poll(60), "the writer process hung"
            kind, elapsed = parent.recv()
        finally:
            reap([p], 30)
        assert kind == "Unavailable" and elapsed < 20
        with pytest.raises(shaledb.Unavailable, match="flusher"):
            db.get(b"child")
    finally:
        try:
            db.close()
        except shaledb.ShaleDBError:
            pass
