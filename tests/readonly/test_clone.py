"""Clones (``shaledb.clone``): the clone equals its source at the
checkpoint, shares the source's SSTs without copying them, takes writes
independently of the source (both ways), never deletes a source object (its
own compaction and GC run with ``gc_min_age=0``), and a clone SIGKILLed at a
named failpoint finishes correctly when run again."""

from __future__ import annotations

import os

import pytest
from engine_util import SPAWN, open_db, reap, s3_opts, scan_all
from readonly_util import OPTS, kv, listing

import shaledb
from shaledb.storage import open_store


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def roots(request, tmp_path):
    """(source url, dest url, extra options)."""
    if request.param == "local":
        return str(tmp_path / "src"), str(tmp_path / "dst"), {}
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/src", f"s3://{bucket}/dst", s3_opts(request.getfixturevalue("moto_server"))


def _load(db, lo, hi, gen, memtable):
    for i in range(lo, hi):
        db.put(*kv(i, gen), await_durable=False)
    db.flush(memtable=memtable)


def _so(extra):
    return extra.get("store_options", {})


def test_clone_shares_ssts_and_diverges(roots):
    src, dst, extra = roots
    with open_db(src, **OPTS, **extra) as db:
        _load(db, 0, 400, 0, memtable=True)
        db.compact(full=True)
        _load(db, 0, 200, 1, memtable=True)
        _load(db, 300, 500, 2, memtable=False)  # in the source's WAL only: the clone copies it
        want = scan_all(db)
        res = shaledb.clone(src, dst, **extra)
        assert res.wal_objects >= 1 and res.shared_ssts >= 2
        assert shaledb.clone(src, dst, **extra) == res  # idempotent
        assert not any(k.startswith("compacted/") for k in listing(open_store(dst, **_so(extra))))  # nothing copied
        with open_db(dst, **OPTS, **extra) as c:
            assert scan_all(c) == want
            c.put(b"only-in-clone", b"c")
            db.put(b"only-in-source", b"s")
            assert c.get(b"only-in-source") is None and db.get(b"only-in-clone") is None
            src_ssts = {k for k in listing(open_store(src, **_so(extra))) if k.startswith("compacted/")}
            for gen in (3, 4):
                _load(c, 0, 500, gen, memtable=True)
            c.compact(full=True)
            assert c.gc()["deleted"]["sst"] >= 1  # the clone's own L0s went
            assert {k for k in listing(open_store(src, **_so(extra))) if k.startswith("compacted/")} >= src_ssts
            assert scan_all(c)[kv(5)[0]] == kv(5, 4)[1]
        with shaledb.open_reader(dst, **extra) as r:  # a reader of the clone reads through to the source
            assert r.get(b"only-in-clone") == b"c" and r.get(b"only-in-source") is None
        assert db.get(kv(5)[0]) == want[kv(5)[0]]
        assert any(c.id == res.checkpoint for c in db.list_checkpoints())  # the source keeps the shared SSTs


def test_clone_of_a_checkpoint(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    with open_db(src, **OPTS) as db:
        _load(db, 0, 300, 0, memtable=False)
        cp = db.create_checkpoint()
        want = scan_all(db)
        _load(db, 0, 300, 1, memtable=False)  # after the checkpoint: not in the clone
        res = shaledb.clone(src, dst, checkpoint=cp.id)
        assert res.checkpoint == cp.id and res.wal_objects == 0
        with open_db(dst, **OPTS) as c:
            assert scan_all(c) == want
        with pytest.raises(shaledb.InvalidArgument, match="not the one asked for"):
            shaledb.clone(src, dst)  # a different clone than the one there
        os.makedirs(tmp_path / "busy")
        open_store(str(tmp_path / "busy")).put("stray", b"x")
        with pytest.raises(shaledb.InvalidArgument, match="not empty"):
            shaledb.clone(src, str(tmp_path / "busy"))
        with pytest.raises(shaledb.InvalidArgument, match="no checkpoint"):
            shaledb.clone(src, str(tmp_path / "d3"), checkpoint="01ARZ3NDEKTSV4RRFFQ69G5FAV")
    with pytest.raises(shaledb.InvalidArgument, match="no ShaleDB database"):
        shaledb.clone(str(tmp_path / "nothing"), str(tmp_path / "d4"))


def _clone_child(src, dst, failpoint):
    import shaledb

    shaledb.clone(src, dst, failpoints=f"{failpoint}=kill")


@pytest.mark.parametrize("failpoint", ["clone-mid-wal-copy", "clone-before-manifest"])
def test_clone_killed_then_retried(tmp_path, failpoint):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    with open_db(src, **OPTS) as db:
        _load(db, 0, 300, 0, memtable=True)
        for gen in (1, 2, 3):  # several WAL objects past the replay point
            _load(db, gen * 50, gen * 50 + 50, gen, memtable=False)
        want = scan_all(db)
        p = SPAWN.Process(target=_clone_child, args=(src, dst, failpoint))
        p.start()
        reap([p], timeout=120)
        assert p.exitcode == -9  # killed at the failpoint
        assert not any(k.startswith("manifest/") for k in listing(open_store(dst)))
        res = shaledb.clone(src, dst)
        assert [c.id for c in db.list_checkpoints()] == [res.checkpoint]  # the retry reused the first checkpoint
        with open_db(dst, **OPTS) as c:
            assert scan_all(c) == want


def test_release_source_once_the_clone_needs_nothing_of_it(tmp_path):
    """release_source deletes the source checkpoint only when no manifest the
    clone still stores lists a shared SST."""
    import time

    from shaledb.clones import release_source
    from shaledb.gc import collect

    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    with open_db(src, **OPTS) as db:
        _load(db, 0, 300, 0, memtable=True)
        res = shaledb.clone(src, dst)
        assert not release_source(dst)  # manifest 1 lists the shared SSTs
        with open_db(dst, **OPTS) as c:
            _load(c, 0, 300, 1, memtable=True)
            c.compact(full=True)  # every key rewritten into the clone's own run
            want = scan_all(c)
        assert not release_source(dst)  # older manifests of the clone still list them
        # the clone's GC, an hour from now: its old manifests go
        collect(open_store(dst), min_age=0, now=time.time() + 3600)
        assert release_source(dst)
        assert all(c.id != res.checkpoint for c in db.list_checkpoints())
        with open_db(dst, **OPTS) as c:
            assert scan_all(c) == want
    with pytest.raises(shaledb.InvalidArgument, match="not a clone"):
        release_source(src)
