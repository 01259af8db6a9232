"""A bulk ingest is atomic: the flusher SIGKILLed just before or just after
its one manifest update leaves none or all of the load visible, and GC
collects the uploads of a load that is never ingested (docs/bulk.md)."""

from __future__ import annotations

import time

import pytest

import shaledb
from shaledb.bulk import SstWriter, new_load_id
from shaledb.gc.collector import collect
from shaledb.storage import open_store

from bulk_util import open_db, pairs, scan_all, wait_gone


def _build(root, keys, values, **kw):
    with SstWriter(root, sst_target_bytes=16 << 10, **kw) as w:
        w.add(keys, values)
        return w.finish()


@pytest.mark.parametrize("point, visible", [("ingest-before-commit", False), ("ingest-after-commit", True)])
def test_flusher_killed_around_the_commit(tmp_path, point, visible):
    root = str(tmp_path / "db")
    old_k, old_v = pairs(1000, tag=b"old")
    keys, values = pairs(3000, start=500, tag=b"new")
    with open_db(root, compactor=False) as db:
        db.put_many(old_k, old_v)  # acknowledged durable (WAL)
        descs = _build(root, keys, values)
    db = open_db(root, compactor=False, failpoints=f"{point}=kill", request_timeout=30.0)
    try:
        pid = db.status()["pid"]
        db.put(b"acked", b"before")  # in the WAL, flushed to L0 by the ingest
        with pytest.raises(shaledb.Unavailable):
            db.ingest(descs)
        assert wait_gone(pid, 30)
    finally:
        try:
            db.close()
        except shaledb.ShaleDBError:
            pass
    model = dict(zip(old_k, old_v))
    model[b"acked"] = b"before"
    if visible:
        model.update(zip(keys, values))
    with open_db(root, compactor=False) as db:
        assert scan_all(db) == model
        if not visible:  # the uploads are still there: the same load ingests now
            db.ingest(descs)
            model.update(zip(keys, values))
        db.put(b"k%08d" % 600, b"later")
        model[b"k%08d" % 600] = b"later"
        assert scan_all(db) == model
    with open_db(root, compactor=False) as db:
        assert scan_all(db) == model


def test_gc_collects_a_failed_load_after_its_lease(tmp_path):
    root = str(tmp_path / "db")
    store = open_store(root)
    with open_db(root, compactor=False) as db:
        past = new_load_id(lease=0, now_ms=time.time_ns() // 1_000_000 - 60_000)  # lease ended a minute ago
        dead = _build(root, *pairs(2000), load_id=past)
        live = _build(root, *pairs(2000), load_id=new_load_id(lease=3600))  # not ingested yet, lease running
        done = _build(root, *pairs(500, start=10_000), load_id=past, partition=1)
        db.ingest(done)
        db.put(b"x", b"y")
        db.flush(memtable=True)  # raises the writer's SST watermark past the dead load's ids
        res = collect(store, min_age=0, now=time.time() + 1)
        assert sorted(res.keys["sst"]) == sorted(d.key for d in dead)
        for d in live + done:
            assert store.head(d.key).size == d.size
        db.ingest(live)  # its lease kept it
        assert len(scan_all(db)) == 2000 + 500 + 1
