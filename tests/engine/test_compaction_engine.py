"""The compactor service in the engine (issue 11): ``Options.compactor``,
``db.compact()``, ``db.gc()``, ``db.status()['compactor']``, and what happens
to the compactor process when the user's process dies.

GC runs with ``gc_min_age=0`` here, so the open Db's reads must follow the
compactor's manifests (the read path retries on the latest manifest when a
listed SST is gone).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from engine_util import open_db, process_gone, s3_opts, s3_url, scan_all

import shaledb
from shaledb.compact import Compactor
from shaledb.format.keys import COMPACTED_PREFIX, WAL_PREFIX, parse_sst_key, parse_wal_key, sst_key
from shaledb.manifest.store import ManifestStore
from shaledb.storage import open_store

#: Small memtables and SSTs, a fast compactor, no background GC.
TREE = dict(
    arena_bytes=256 << 10,
    l0_sst_bytes=64 << 10,
    max_unflushed_bytes=2 << 20,
    sst_target_bytes=32 << 10,
    compaction_interval=0.05,
    compaction_workers=1,
    l0_compaction_threshold=4,
    l0_max_ssts=8,
    gc_interval=3600.0,
)


def _key(i: int) -> bytes:
    return b"key-%06d" % i


def _round(db, model: dict, rng: random.Random, n: int = 400, keyspace: int = 3000) -> None:
    """Puts, overwrites and deletes over one shared key range (so the L0
    SSTs overlap and compactions really merge), then a memtable flush."""
    for _ in range(n):
        k = _key(rng.randrange(keyspace))
        if rng.random() < 0.15:
            db.delete(k, await_durable=False)
            model.pop(k, None)
        else:
            v = rng.randbytes(rng.randrange(1, 120))
            db.put(k, v, await_durable=False)
            model[k] = v
    db.flush(memtable=True)


def _check(db, model: dict, rng: random.Random, keyspace: int = 3000) -> None:
    assert scan_all(db) == model
    for i in rng.sample(range(keyspace), 300):
        assert db.get(_key(i)) == model.get(_key(i))


def _manifest(url: str, **store_kw):
    store = open_store(url, **store_kw)
    try:
        return ManifestStore.open_reader(store).current
    finally:
        store.close()


def _listing(url: str, **store_kw) -> dict:
    store = open_store(url, **store_kw)
    try:
        return {m.key: (m.size, m.etag) for m in store.list("")}
    finally:
        store.close()


def _compact_until_idle(db, limit: int = 50) -> None:
    for _ in range(limit):
        if db.compact()["jobs"] == 0:
            return
    pytest.fail(f"the compactor still had jobs after {limit} passes")


def _reopen_and_check(url, model, rng) -> None:
    """Reopen (no compactor) and check every key against ``model``."""
    db = open_db(url, compactor=False)
    try:
        _check(db, model, rng)
    finally:
        db.close()


# ------------------------------------------------------------ shape of the tree


@pytest.mark.parametrize("where", ["local", "memory"])
def test_many_flushes_keep_the_tree_small_and_read_back(tmp_path, where):
    url = str(tmp_path / "db") if where == "local" else f"memory://cengine-{os.getpid()}-{tmp_path.name}"
    rng = random.Random(11)
    model: dict = {}
    db = open_db(url, **TREE)
    try:
        for _ in range(20):
            _round(db, model, rng)
        _compact_until_idle(db)
        st = db.status()["compactor"]
        assert st["alive"] and not st["fenced"] and st["last_error"] is None
        assert st["l0"] < TREE["l0_compaction_threshold"], st
        # size-tiered: fewer than min_runs runs of each size class; 20 flushes
        # make at most a handful of runs
        assert st["sorted_runs"] <= 6, st
        assert st["jobs"] > 0 and st["bytes_in"] > 0 and st["bytes_out"] > 0
        _check(db, model, rng)
    finally:
        db.close()
    if where == "local":
        m = _manifest(url)
        assert len(m.l0) <= TREE["l0_compaction_threshold"]  # the final close flush may add one
        _reopen_and_check(url, model, rng)


def test_full_compaction_then_gc_deletes_what_was_retired(tmp_path):
    url = str(tmp_path / "db")
    rng = random.Random(12)
    model: dict = {}
    db = open_db(url, **TREE, gc_min_age=0)
    try:
        for _ in range(9):
            _round(db, model, rng)
        before = _manifest(url)
        rep = db.compact(full=True)
        assert set(rep) == {"jobs", "trivial_moves", "bytes_in", "bytes_out", "seconds", "ranges", "workers"}
        assert rep["jobs"] == 1 and rep["bytes_in"] > rep["bytes_out"] > 0  # overwrites and deletes went
        after = _manifest(url)
        assert not after.l0 and len(after.sorted_runs) == 1
        retired = before.sst_ids() - after.sst_ids()
        assert retired == before.sst_ids()  # a full compaction rewrites every SST
        listed = _listing(url)
        dry = db.gc(dry_run=True)
        assert _listing(url) == listed  # a dry run changes nothing
        res = db.gc()
        assert res["deleted"] == dry["deleted"]
        _check(db, model, rng)
        assert {sst_key(s) for s in retired} <= set(res["keys"]["sst"])
        for key in res["keys"]["sst"]:
            assert parse_sst_key(key) not in after.sst_ids()
        wal_ids = [parse_wal_key(k) for k in res["keys"]["wal"]]
        assert wal_ids and max(wal_ids) <= after.replay_after_wal_id
        assert res["deleted"]["sst"] == len(res["keys"]["sst"]) and res["bytes"]["sst"] > 0
        st = db.status()["compactor"]
        assert st["gc_runs"] == 1 and st["gc_deleted"] == res["deleted"]
    finally:
        db.close()
    _reopen_and_check(url, model, rng)


def test_compactor_off_runs_one_shot_in_process(tmp_path):
    url = str(tmp_path / "db")
    rng = random.Random(13)
    model: dict = {}
    db = open_db(url, **dict(TREE, compactor=False), gc_min_age=0)
    try:
        for _ in range(5):
            _round(db, model, rng)
        assert db.status()["compactor"] is None
        assert len(_manifest(url).l0) >= 5  # nothing compacts on its own
        rep = db.compact(full=True)
        assert rep["jobs"] == 1
        m = _manifest(url)
        assert not m.l0 and len(m.sorted_runs) == 1
        res = db.gc()
        assert res["deleted"]["sst"] >= 5 and res["deleted"]["wal"] > 0
    finally:
        db.close()
    _reopen_and_check(url, model, rng)


def test_a_newer_compactor_fences_the_dbs_quietly(tmp_path):
    url = str(tmp_path / "db")
    rng = random.Random(14)
    model: dict = {}
    db = open_db(url, **TREE)
    try:
        _round(db, model, rng)
        # the Db's compactor runs (status() starts it if the flusher's warm
        # event has not yet): the standalone one below is the newer
        assert db.status()["compactor"]["alive"]
        store = open_store(url)
        try:
            with Compactor(store, db.options):  # opens with compactor_epoch + 1
                with pytest.raises(shaledb.Fenced):
                    db.compact()
                with pytest.raises(shaledb.Fenced):
                    db.gc()
        finally:
            store.close()
        st = db.status()["compactor"]
        assert st["fenced"] and st["alive"]
        _round(db, model, rng)  # writes go on
        _check(db, model, rng)
    finally:
        db.close()


# ------------------------------------------------------------ parent death

_CHILD = textwrap.dedent(
    """
    import json, random, sys, time
    import shaledb
    from shaledb.format.keys import COMPACTED_PREFIX, parse_sst_key
    from shaledb.manifest.store import ManifestStore
    from shaledb.storage import open_store

    url, opts = sys.argv[1], json.loads(sys.argv[2])
    db = shaledb.open(url, **opts)
    rng = random.Random(5)
    for r in range(5):
        for i in range(400):
            db.put(b"key-%06d" % rng.randrange(3000), rng.randbytes(60), await_durable=False)
        db.flush(memtable=True)
    # wait until the compactor sits in its failpoint: outputs uploaded, the
    # manifest not updated (an SST in the bucket that no manifest lists)
    store = open_store(url)
    deadline = time.monotonic() + 60
    while True:
        listed = {parse_sst_key(m.key) for m in store.list(COMPACTED_PREFIX)}
        if listed - ManifestStore.open_reader(store).current.sst_ids():
            break
        if time.monotonic() > deadline:
            sys.exit("the compactor never reached compact-after-upload")
        time.sleep(0.05)
    st = db.status()
    print(json.dumps({"flusher": st.get("pid"), "compactor": st["compactor"]["pid"]}), flush=True)
    sys.stdin.read()  # until killed
    """
)


def test_sigkill_of_the_user_process_stops_the_compactor(tmp_path):
    url = str(tmp_path / "db")
    opts = dict(TREE, failpoints="compact-after-upload=sleep:120")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, json.dumps(opts)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=os.path.dirname(__file__),
    )
    pids = []
    try:
        ready, _, _ = select.select([child.stdout], [], [], 120)
        assert ready, "the child did not report its processes"
        line = child.stdout.readline()
        assert line, f"the child failed (exit code {child.wait(30)})"
        info = json.loads(line)
        pids = [p for p in (info["compactor"], info["flusher"]) if p]
        assert info["compactor"] and not process_gone(info["compactor"])
        before = _listing(url)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        deadline = time.monotonic() + 30
        while not all(process_gone(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_gone(info["compactor"]), "the compactor outlived its Db's process"
        # it was in the middle of a job: it published nothing, wrote nothing more
        assert _listing(url) == before
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        for p in pids:
            if not process_gone(p):
                os.kill(p, signal.SIGKILL)
        child.stdout.close()
        child.stdin.close()
    orphans = {k for k in before if k.startswith(COMPACTED_PREFIX)} - {sst_key(s) for s in _manifest(url).sst_ids()}
    assert orphans  # the job's outputs, never published
    rng, model = random.Random(5), {}
    for _ in range(5 * 400):  # what the child wrote
        k = b"key-%06d" % rng.randrange(3000)
        model[k] = rng.randbytes(60)
    # reopen: intact; the new compactor epoch's watermark is above the
    # orphans, so a GC pass collects them
    db = open_db(url, **dict(TREE, gc_min_age=0))
    try:
        assert scan_all(db) == model
        res = db.gc()
        assert orphans <= set(res["keys"]["sst"])
    finally:
        db.close()


# ------------------------------------------------------------ model


def _model_run(url: str, seed: int, steps: int, **kw) -> None:
    rng = random.Random(seed)
    model: dict = {}
    opts = dict(TREE, gc_min_age=0, **kw)
    db = open_db(url, **opts)
    try:
        for _ in range(steps):
            op = rng.random()
            if op < 0.55:
                _round(db, model, rng, n=rng.randrange(50, 400))
            elif op < 0.7:
                full = rng.random() < 0.5
                rep = db.compact(full=full)
                if full and model:
                    assert rep["jobs"] == 1 or db.status()["compactor"]["sorted_runs"] == 1
                _check(db, model, rng)
            elif op < 0.85:
                db.gc()
                _check(db, model, rng)  # the same Db reads on after its SSTs were collected
            else:
                db.close()
                db = open_db(url, **opts)
                _check(db, model, rng)
        _check(db, model, rng)
    finally:
        db.close()
    db = open_db(url, compactor=False, **{k: v for k, v in kw.items() if k == "store_options"})
    try:
        _check(db, model, rng)
    finally:
        db.close()


def test_random_model_local(tmp_path):
    _model_run(str(tmp_path / "db"), seed=2024, steps=30)


@pytest.mark.s3
def test_random_model_s3(s3_bucket, moto_server):
    _model_run(s3_url(s3_bucket), seed=7, steps=10, **s3_opts(moto_server))
