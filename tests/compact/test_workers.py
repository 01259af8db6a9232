"""Subcompactions in worker processes inside the engine: the compactor
service of ``shaledb.open`` merges one job's key ranges in a spawn pool
(each worker opens the store from a StoreOpener), and the workers never
outlive the compactor, even when it is SIGKILLed mid-job."""

from __future__ import annotations

import os
import pickle
import time

import pytest
from engine_util import kill, scan_all
from engine_util import open_db as _open_engine_db

import shaledb
from shaledb.errors import Unavailable
from shaledb.manifest.store import ManifestStore
from shaledb.options import StoreOpener
from shaledb.storage import open_store
from shaledb.storage.wrappers import StoreWrapper

#: Small output SSTs, so a job of a few hundred KiB splits (the split
#: threshold is two output SSTs); no background compaction before the test
#: asks for one.
SPLIT = dict(
    compaction_workers=2,
    sst_target_bytes=8 << 10,
    l0_compaction_threshold=64,
    l0_max_ssts=64,
    compaction_interval=3600.0,
    gc_interval=3600.0,
)


class _PidStore(StoreWrapper):
    def __init__(self, inner, folder):
        super().__init__(inner)
        self._folder = folder

    def put(self, key, *a, **k):
        if key.startswith("compacted/"):
            name = os.path.join(self._folder, f"{os.getpid()}-{os.getppid()}")
            open(name, "a").close()
        return self.inner.put(key, *a, **k)


class PidRecorder:
    """Store wrapper (Options.store_wrapper): notes ``<pid>-<ppid>`` of every
    process that uploads an SST, so the test knows the worker processes."""

    def __init__(self, folder):
        self.folder = str(folder)

    def __call__(self, store):
        return _PidStore(store, self.folder)


def writers_of_ssts(folder, parent_pid):
    """Pids that uploaded SSTs as children of ``parent_pid``."""
    out = set()
    for name in os.listdir(folder):
        pid, ppid = map(int, name.split("-"))
        if ppid == parent_pid:
            out.add(pid)
    return out


def fill(db, model, *, flushes=6, per_flush=400):
    for b in range(flushes):
        for i in range(per_flush):
            n = b * per_flush + i
            key = b"key%06d" % (n * 7919 % 2000)
            if n % 11 == 3:
                db.delete(key, await_durable=False)
                model.pop(key, None)
            else:
                value = b"v%d-" % n * (8 + n % 5)
                db.put(key, value, await_durable=False)
                model[key] = value
        db.flush(memtable=True)


def alive(pid):
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_store_opener_pickles_and_opens(tmp_path):
    root = str(tmp_path / "db")
    opener = StoreOpener(root, {}, shaledb.Options())
    back = pickle.loads(pickle.dumps(opener))
    assert back == opener
    store = back()
    try:
        store.put("x/a", b"1")
        assert open_store(root).get("x/a") == b"1"
    finally:
        store.close()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_engine_compactor_merges_ranges_in_worker_processes(tmp_path, where, request):
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        moto = request.getfixturevalue("moto_server")
        root, extra = f"s3://{bucket}/db", {"store_options": {"endpoint_url": moto.endpoint_url}}
    else:
        root, extra = str(tmp_path / "db"), {}
    pids = tmp_path / "pids"
    pids.mkdir()
    model = {}
    db = _open_engine_db(root, compactor=True, store_wrapper=PidRecorder(pids), **SPLIT, **extra)
    try:
        fill(db, model)
        cpid = db.status()["compactor"]["pid"]
        rep = db.compact(full=True)
        assert rep["jobs"] == 1 and rep["trivial_moves"] == 0
        assert rep["ranges"] >= 2 and rep["workers"] == 2
        assert rep["bytes_in"] > 2 * SPLIT["sst_target_bytes"]
        workers = writers_of_ssts(pids, cpid)
        assert len(workers) == 2 and cpid not in workers
        assert scan_all(db) == model
        for key in list(model)[:300]:
            assert db.get(key) == model[key]
        st = db.status()["compactor"]
        assert st["l0"] == 0 and st["sorted_runs"] == 1
    finally:
        db.close()
    # close stopped the compactor and its pool: no worker is left
    assert not [p for p in writers_of_ssts(pids, cpid) if alive(p)]
    store = open_store(root, **extra.get("store_options", {}))
    m = ManifestStore.open_reader(store).current
    assert len(m.sorted_runs) == 1 and len(m.sorted_runs[0].ssts) > 2
    db = _open_engine_db(root, compactor=False, **extra)
    try:
        assert scan_all(db) == model
    finally:
        db.close()


def test_sigkill_of_the_compactor_mid_job_stops_its_workers(tmp_path):
    root = str(tmp_path / "db")
    pids = tmp_path / "pids"
    pids.mkdir()
    model = {}
    workers = set()
    db = _open_engine_db(
        root, compactor=True, store_wrapper=PidRecorder(pids), failpoints="compact-mid-merge=kill", **SPLIT
    )
    try:
        fill(db, model)
        cpid = db.status()["compactor"]["pid"]
        with pytest.raises(Unavailable):
            db.compact(full=True)  # the compactor kills itself once the first range is back
        workers = writers_of_ssts(pids, cpid)
        assert workers and cpid not in workers
        deadline = time.monotonic() + 30
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in workers if alive(p)], "a compaction worker outlived its compactor"
        assert scan_all(db) == model  # writes and reads go on without the compactor
    finally:
        for p in workers:
            kill(p)
        db.close()
    store = open_store(root)
    m = ManifestStore.open_reader(store).current
    assert m.sorted_runs == ()  # the killed job published nothing
    referenced = {f"compacted/{s}.sst" for s in m.sst_ids()}
    orphans = {meta.key for meta in store.list("compacted/")} - referenced
    assert orphans  # its workers' uploads, for GC
    db = _open_engine_db(root, compactor=False)
    try:
        assert scan_all(db) == model
    finally:
        db.close()
