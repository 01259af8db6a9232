"""The compactor against databases written by ``shaledb.open``: merge,
reopen and read back; the process and its signals; fencing; SIGKILL at each
compaction failpoint; writer and compactor racing on the manifest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from engine_util import s3_opts, s3_url, scan_all
from engine_util import open_db as _open_engine_db

import shaledb
from shaledb.compact import Compactor, SizeTieredScheduler
from shaledb.errors import Fenced
from shaledb.manifest.store import ManifestStore
from shaledb.storage import open_store


def open_db(root, **kw):
    """A Db without its compactor service: these tests drive the compactor
    themselves, and count the objects and epochs it would change."""
    kw.setdefault("compactor", False)
    return _open_engine_db(root, **kw)


SMALL_COMPACT = dict(compaction_workers=1, sst_target_bytes=8 << 10, l0_compaction_threshold=4)


def fill(root, model, *, batches=5, per_batch=300, start=0, **kw):
    """Puts, overwrites and deletes in ``batches`` memtable flushes (each an
    L0 publish); ``model`` follows."""
    db = open_db(root, **kw)
    try:
        for b in range(batches):
            for i in range(per_batch):
                n = start + b * per_batch + i
                key = b"key%05d" % (n * 7 % 1000)
                if n % 9 == 4:
                    db.delete(key, await_durable=False)
                    model.pop(key, None)
                else:
                    value = b"val-%d-" % n * (1 + n % 7)
                    db.put(key, value, await_durable=False)
                    model[key] = value
            db.flush(memtable=True)
    finally:
        db.close()


def check(root, model, **kw):
    db = open_db(root, **kw)
    try:
        assert scan_all(db) == model
        for key in list(model)[:200]:
            assert db.get(key) == model[key]
        assert db.get(b"key99999") is None
    finally:
        db.close()


def manifest(store):
    return ManifestStore.open_reader(store).current


def test_compact_once_merges_l0_and_data_reads_back(tmp_path):
    root = str(tmp_path / "db")
    model = {}
    fill(root, model)
    store = open_store(root)
    assert len(manifest(store).l0) >= 4
    with Compactor(store, shaledb.Options(**SMALL_COMPACT)) as c:
        rep = c.compact_once()
        assert rep.jobs == 1 and rep.bytes_in > 0 and rep.bytes_out > 0
        assert c.inflight_ssts() == frozenset()
        m = manifest(store)
        assert len(m.l0) < 4 and len(m.sorted_runs) == 1 and len(m.sorted_runs[0].ssts) > 1
        assert m.compactor_sst_watermark.epoch == c.epoch
    check(root, model)
    # more L0 on top of the run, then a full compaction into one run
    fill(root, model, start=10_000)
    with Compactor(store, shaledb.Options(**SMALL_COMPACT)) as c:
        rep = c.compact_once(full=True)
        assert rep.jobs == 1
        m = manifest(store)
        assert m.l0 == () and len(m.sorted_runs) == 1
        assert c.compact_once(full=True).jobs == 0
    check(root, model)
    # the bottom run holds no tombstones and one version per key
    entries = sum(s.num_entries for s in m.sorted_runs[0].ssts)
    assert entries == len(model)


def test_an_older_compactor_is_fenced(tmp_path):
    root = str(tmp_path / "db")
    model = {}
    fill(root, model)
    store = open_store(root)
    old = Compactor(store, shaledb.Options(**SMALL_COMPACT))
    new = Compactor(store, shaledb.Options(**SMALL_COMPACT))
    assert new.epoch == old.epoch + 1
    before = ManifestStore.open_reader(store).manifest_id
    with pytest.raises(Fenced):
        old.compact_once()
    assert ManifestStore.open_reader(store).manifest_id == before  # wrote nothing
    stop = threading.Event()
    old.run_until(stop, interval=0.01)  # returns: fenced
    assert new.compact_once().jobs == 1
    check(root, model)


def _env(failpoints=""):
    env = dict(os.environ)
    env["SHALEDB_FAILPOINTS"] = failpoints
    return env


def _compactor_proc(root, failpoints=""):
    return subprocess.Popen(
        [sys.executable, "-m", "shaledb.compact", root, "--workers", "1", "--interval", "0.05",
         "--sst-target-bytes", str(8 << 10)],
        env=_env(failpoints),
    )


def _wait(proc, timeout=120):
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def test_process_compacts_and_stops_on_sigterm(tmp_path):
    root = str(tmp_path / "db")
    model = {}
    fill(root, model)
    store = open_store(root)
    proc = _compactor_proc(root)
    try:
        deadline = time.monotonic() + 120
        while len(manifest(store).l0) >= 4:
            assert proc.poll() is None, "compactor exited early"
            assert time.monotonic() < deadline, "compactor did not compact L0"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert _wait(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len(manifest(store).sorted_runs) == 1
    check(root, model)


@pytest.mark.parametrize("point", ["compact-mid-merge", "compact-after-upload", "compact-after-manifest"])
def test_sigkill_at_each_failpoint(tmp_path, point):
    root = str(tmp_path / "db")
    model = {}
    fill(root, model)
    store = open_store(root)
    before = manifest(store)
    proc = _compactor_proc(root, f"{point}=kill")
    assert _wait(proc) == -signal.SIGKILL
    after = manifest(store)
    if point == "compact-after-manifest":
        assert len(after.sorted_runs) == 1 and len(after.l0) < len(before.l0)
    else:
        assert after.l0 == before.l0 and after.sorted_runs == ()
    check(root, model)
    # a new compactor finishes the work; whatever the dead one uploaded is unreferenced
    orphans = {meta.key for meta in store.list("compacted/")} - {f"compacted/{s}.sst" for s in after.sst_ids()}
    if point != "compact-after-manifest":
        assert orphans  # the killed job had uploaded output
    with Compactor(store, shaledb.Options(**SMALL_COMPACT)) as c:
        c.compact_once(full=True)
    m = manifest(store)
    assert not {f"compacted/{s}.sst" for s in m.sst_ids()} & orphans
    check(root, model)


def _race(root, target_updates, db_kw):
    """A writer flushing L0 flat out and a compactor compacting flat out."""
    store = open_store(root, **db_kw.get("store_options", {}))
    db = open_db(root, **db_kw)
    model = {}
    errors = []
    stop = threading.Event()
    opts = shaledb.Options(**SMALL_COMPACT)
    comp = Compactor(store, opts, scheduler=SizeTieredScheduler(l0_threshold=2, min_runs=2))

    def compactor():
        try:
            while not stop.is_set():
                comp.compact_once()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=compactor)
    t.start()
    flushes = 0
    try:
        n = 0
        while flushes + comp.stats["manifest_updates"] < target_updates and not errors:
            for _ in range(20):
                key = b"k%04d" % (n * 13 % 500)
                value = b"v%d" % n
                db.put(key, value, await_durable=False)
                model[key] = value
                n += 1
            db.flush(memtable=True)
            flushes += 1
    finally:
        stop.set()
        t.join(120)
        assert not t.is_alive()
        db.close()
        comp.close()
    assert errors == []
    print("writer publishes", flushes, "compactor updates", comp.stats)
    assert comp.stats["manifest_updates"] > 0 and flushes > 0
    assert flushes + comp.stats["manifest_updates"] >= target_updates
    check(root, model, **db_kw)


def test_writer_and_compactor_race_local(tmp_path):
    _race(str(tmp_path / "db"), 500, {})


@pytest.mark.s3
def test_writer_and_compactor_race_s3(s3_bucket, moto_server):
    _race(s3_url(s3_bucket), 150, s3_opts(moto_server))
