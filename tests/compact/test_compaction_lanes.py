"""Two compaction lanes: a merge of sorted runs runs on a thread of its own
(``compact_once(background=True)``) while L0 jobs go on publishing, and a
publish by the L0 lane never lets GC collect what the merge uploaded and
has not yet published (the SST watermark stays at or below the merge's
start mark: docs/gc.md)."""

from __future__ import annotations

import threading

from test_compactor import SMALL_COMPACT, check, fill, manifest

import shaledb
from shaledb.compact import Compactor
from shaledb.gc.collector import collect
from shaledb.format.keys import COMPACTED_PREFIX
from shaledb.storage import open_store
from shaledb.storage.wrappers import StoreWrapper

MERGE_THREAD = "shaledb-compactor-merge"


class _HoldMerge(StoreWrapper):
    """Holds the background merge right after its first output SST landed,
    until ``release`` is set (its uploads run on a helper thread named after
    the merge thread)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.held = threading.Event()
        self.release = threading.Event()
        self.held_key: str | None = None

    def put(self, key, data, metadata=None, *, put_id=None):
        res = super().put(key, data, metadata, put_id=put_id)
        if threading.current_thread().name.startswith(MERGE_THREAD) and key.endswith(".sst") and self.held_key is None:
            self.held_key = key
            self.held.set()
            assert self.release.wait(120), "the test never released the merge"
        return res


def _four_runs(root, model):
    """A tree of four sorted runs of about one size (a run window) under
    four more L0 SSTs."""
    store = open_store(root)
    for i in range(4):
        fill(root, model, batches=4, per_batch=200, start=i * 10_000)
        with Compactor(store, shaledb.Options(**SMALL_COMPACT)) as c:
            assert c.compact_once().jobs == 1
    fill(root, model, batches=4, per_batch=200, start=90_000)
    m = manifest(store)
    assert len(m.sorted_runs) == 4 and len(m.l0) >= 4
    return store


def _held_compactor(tmp_path):
    """``(root, model, store, compactor)``: four runs under four L0 SSTs, a
    compactor whose background merge the store holds after its first upload."""
    root = str(tmp_path / "db")
    model: dict = {}
    _four_runs(root, model)
    store = _HoldMerge(open_store(root))
    return root, model, store, Compactor(store, shaledb.Options(**SMALL_COMPACT))


def test_l0_drains_while_a_run_merge_runs_and_gc_spares_its_uploads(tmp_path):
    root, model, store, c = _held_compactor(tmp_path)
    try:
        rep = c.compact_once(background=True)  # starts the merge, then runs the L0 job here
        assert rep.jobs == 1  # the L0 job; the merge is not counted until it is done
        assert store.held.wait(120), "the merge never uploaded an SST"
        assert c.merging()
        m = manifest(open_store(root))
        assert len(m.l0) < 4 and len(m.sorted_runs) == 5  # 4 runs being merged + the new one from L0

        # more L0 lands and the L0 lane publishes again while the merge holds
        # an unpublished output SST
        fill(root, model, batches=4, per_batch=200, start=50_000)
        rep = c.compact_once(background=True)
        assert rep.jobs == 1 and c.merging()
        m = manifest(open_store(root))
        held_id = store.held_key.rsplit("/", 1)[-1].removesuffix(".sst")
        assert m.compactor_sst_watermark.sst_id <= held_id
        # GC with no in-flight list and no minimum age: the watermark alone keeps it
        res = collect(open_store(root), min_age=0, inflight=frozenset())
        keys = {o.key for o in open_store(root).list("")}
        assert store.held_key in keys, f"GC deleted the merge's unpublished {store.held_key} ({res.counts})"

        store.release.set()
        rep = c.compact_once()  # waits for the merge and reports it
        assert rep.jobs >= 1 and not c.merging()
        m = manifest(open_store(root))
        assert len(m.sorted_runs) <= 3  # the four merged into one, beside the L0 lane's runs
        assert c.inflight_ssts() == frozenset()
    finally:
        store.release.set()
        c.close()
    check(root, model)
    res = collect(open_store(root), min_age=0)
    assert res.counts["sst"] > 0  # the merged runs' SSTs
    m = manifest(open_store(root))
    live = {s.sst_id for s in m.l0} | {s.sst_id for r in m.sorted_runs for s in r.ssts}
    stored = {o.key.rsplit("/", 1)[-1].removesuffix(".sst") for o in open_store(root).list(COMPACTED_PREFIX)}
    assert stored == live
    check(root, model)


def test_a_full_compaction_waits_for_the_running_merge(tmp_path):
    root, model, store, c = _held_compactor(tmp_path)
    try:
        c.compact_once(background=True)
        assert store.held.wait(120)
        done = threading.Event()
        out = {}

        def full():
            out["rep"] = c.compact_once(full=True)
            done.set()

        t = threading.Thread(target=full, daemon=True)
        t.start()
        assert not done.wait(1.0)  # held behind the merge
        store.release.set()
        assert done.wait(120)
        t.join(10)
        m = manifest(open_store(root))
        assert m.l0 == () and len(m.sorted_runs) == 1
        assert out["rep"].jobs >= 2  # the merge it waited for, then the full job
    finally:
        store.release.set()
        c.close()
    check(root, model)
