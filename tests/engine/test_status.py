"""``Db.status()``: a typed ``shaledb.status.DbStatus`` whose figures agree
with the store, ``tree_shape`` as a pure function of a manifest, and the
flat names of the earlier dict still answering."""

from __future__ import annotations

import dataclasses
import typing

import pytest

import shaledb
from shaledb.format.keys import parse_wal_key
from shaledb.manifest.model import Manifest, SortedRun, SstRef
from shaledb.manifest.store import ManifestStore
from shaledb.status import (
    LEGACY_KEYS,
    Backlog,
    CompactorStatus,
    DbStatus,
    FlusherStatus,
    RequestCount,
    RunShape,
    StallStatus,
    TreeShape,
    WalRange,
    tree_shape,
)
from shaledb.storage import open_store

from engine_util import open_db

N = 3000


def _ref(i: int, first: bytes, last: bytes, size: int = 100, entries: int = 10) -> SstRef:
    return SstRef(sst_id=f"01J{i:023d}", first_key=first, last_key=last, size=size, min_seq=1, max_seq=entries,
                  num_entries=entries)


def test_tree_shape_of_a_manifest():
    l0 = tuple(_ref(i, b"a%d" % i, b"z%d" % i, size=100 + i, entries=10 + i) for i in range(5))
    run = SortedRun(run_id=3, ssts=(_ref(10, b"b", b"c", 1000, 50), _ref(11, b"d", b"f", 2000, 60)))
    m = Manifest(writer_epoch=2, compactor_epoch=1, next_wal_id=9, replay_after_wal_id=6, last_l0_seq=77,
                 l0=l0, sorted_runs=(run,))
    t = tree_shape(m, 42)
    assert t.manifest_id == 42 and t.writer_epoch == 2 and t.compactor_epoch == 1 and t.last_l0_seq == 77
    assert t.wal == WalRange(replay_after_id=6, next_id=9)
    assert t.l0 == RunShape(None, 5, sum(100 + i for i in range(5)), sum(10 + i for i in range(5)), b"a0", b"z4")
    assert t.sorted_runs == (RunShape(3, 2, 3000, 110, b"b", b"f"),)
    assert t.ssts == 7 and t.bytes == t.l0.bytes + 3000 and t.checkpoints == 0
    # size-tiered with the default threshold (4): one job, the 5 L0 SSTs
    assert t.backlog == Backlog(jobs=1, sources=5, bytes=t.l0.bytes)
    assert tree_shape(m, 42, l0_compaction_threshold=6).backlog == Backlog(0, 0, 0)
    empty = tree_shape(Manifest(), 1)
    assert empty.l0 == RunShape(None, 0, 0, 0, None, None) and empty.sorted_runs == () and empty.bytes == 0


def test_status_types_resolve():
    """Every annotation names a real type (no stale forward reference)."""
    for cls in (DbStatus, TreeShape, RunShape, WalRange, Backlog, FlusherStatus, RequestCount, StallStatus,
                CompactorStatus):
        hints = typing.get_type_hints(cls)
        assert set(hints) == {f.name for f in dataclasses.fields(cls)}
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def _store_figures(root: str) -> dict:
    store = open_store(root)
    wal = [m for m in store.list("wal/") if parse_wal_key(m.key) is not None]
    sst = list(store.list("compacted/"))
    ms = ManifestStore(store)
    ms.refresh()
    return {"wal": wal, "sst": sst, "manifest": ms.current, "manifest_id": ms.manifest_id}


def test_status_figures_match_the_store(tmp_path):
    root = str(tmp_path / "db")
    with open_db(root, compactor=False, l0_sst_bytes=1 << 14, l0_compaction_threshold=2) as db:
        for i in range(N):
            db.put(b"k%05d" % i, b"v" * 30, await_durable=False)
        last = db.put(b"last", b"x")  # durable: every earlier write is too
        db.flush(memtable=True)
        st = db.status()
        fig = _store_figures(root)

        assert isinstance(st, DbStatus) and isinstance(st.tree, TreeShape) and isinstance(st.flusher, FlusherStatus)
        assert isinstance(st.stall, StallStatus) and st.compactor is None
        assert st.durable_seq >= last == N + 1
        m = fig["manifest"]
        assert st.tree.manifest_id == fig["manifest_id"] and st.tree.last_l0_seq == m.last_l0_seq == last
        assert st.tree.l0.ssts == len(m.l0) >= 2 and st.tree.l0.entries == N + 1
        assert st.tree.l0.first_key == b"k00000" and st.tree.l0.last_key == b"last"
        assert st.tree.l0.bytes == sum(o.size for o in fig["sst"])  # nothing compacted: every SST is in L0
        # threshold 2: one job of the oldest (at most 8) L0 SSTs
        assert st.tree.backlog.jobs == 1 and st.tree.backlog.sources == min(st.tree.l0.ssts, 8)
        assert st.tree.wal == WalRange(m.replay_after_wal_id, m.next_wal_id)

        f = st.flusher
        written = [o for o in fig["wal"] if o.size > 0]  # zero-byte objects are fences
        assert f.wal_uploads == len(written) and f.wal_bytes == sum(o.size for o in written)
        assert f.l0_ssts == len(fig["sst"]) and f.l0_bytes == sum(o.size for o in fig["sst"])
        assert f.failed is None and f.errors == 0 and not f.stopped and f.pid > 0
        puts = f.requests["put_if_absent"]
        assert isinstance(puts, RequestCount)
        # every WAL object, the fence and every manifest are create-only writes
        assert puts.count >= f.wal_uploads + f.manifest_updates and puts.bytes_written >= f.wal_bytes
        assert f.requests["put"].count == f.l0_ssts  # SSTs are plain puts
        assert st.stall == StallStatus(0, 0, 0.0)  # no compactor: no backpressure

        # the flat names of the earlier dict
        assert st["l0"] == st.tree.l0.ssts and st["pid"] == f.pid and st["failed"] is None
        assert st["wal_uploads"] == f.wal_uploads and st["l0_stall_seconds"] == 0.0 and st["compactor"] is None
        assert st.get("l0_stalls") == 0 and st.get("no such thing", 7) == 7
        for key in LEGACY_KEYS:
            st[key]  # every documented name resolves
        with pytest.raises(KeyError):
            st["nope"]

        db.compact(full=True)
        after = db.status().tree  # the compaction shows at once (the latest manifest, not the flusher's)
        assert after.l0.ssts == 0 and len(after.sorted_runs) == 1
        assert after.sorted_runs[0].entries == N + 1 and after.backlog == Backlog(0, 0, 0)


def test_status_counters_are_per_open(tmp_path):
    root = str(tmp_path / "db")
    with open_db(root, compactor=False) as db:
        db.put(b"a", b"1")
        assert db.status().flusher.wal_uploads >= 1
    with open_db(root, compactor=False) as db:
        st = db.status()
        assert st.flusher.wal_uploads == 0 and st.stall.stalls == 0  # counted from this open
        assert st.tree.last_l0_seq == 1 and st.durable_seq == 1  # the tree is the store's


def test_status_with_compactor(tmp_path):
    root = str(tmp_path / "db")
    with open_db(root, compactor=True, compaction_workers=1) as db:
        db.put(b"a", b"1")
        db.flush(memtable=True)
        rep = db.compact(full=True)
        st = db.status()
        c = st.compactor
        assert isinstance(c, CompactorStatus) and c.alive and not c.fenced and c.pid not in (None, st.flusher.pid)
        assert c.compactions >= 1 and c.jobs >= rep["jobs"] and c.epoch == st.tree.compactor_epoch == 1
        assert st["compactor"]["sorted_runs"] == c.sorted_runs == 1  # field names by key, as before


def test_status_of_a_memory_database():
    with shaledb.open("memory://status-test", compactor=False) as db:
        db.put(b"a", b"1")
        db.flush(memtable=True)
        st = db.status()
        assert st.flusher.requests == {} and st.tree.l0.ssts == 1 and st.durable_seq == 1
