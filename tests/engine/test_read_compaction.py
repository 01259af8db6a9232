"""The read path meets the compactor and GC (issue 11): a Db's reader notices
manifests the compactor publishes, and a get or a scan that meets an SST that
GC (``min_age=0``) already deleted retries on the latest manifest; only an
SST the latest manifest still lists is Corruption.

The compactor and GC run in the test process, between reads and in the middle
of a scan, so every moment is chosen by the test.  The reader's clock is
frozen (``clock`` fixture): it probes for newer manifests only when the test
advances the clock, so a stale manifest meets deleted SSTs for certain.
"""

from __future__ import annotations

import random

import pytest
from engine_util import open_db

import shaledb
from shaledb.compact import Compactor
from shaledb.format.keys import sst_key
from shaledb.gc import collect
from shaledb.manifest.store import ManifestStore
from shaledb.storage import open_store
import shaledb.read.reader as reader_module

#: Small SSTs and blocks (many objects, scans that cross them), compactor off
#: in the Db: the test runs compactions itself.  The flusher does not poll
#: the manifest, so only its own publishes move the reader's manifest hint.
OPTS = dict(
    manifest_poll_interval=3600.0,
    arena_bytes=256 << 10,
    l0_sst_bytes=32 << 10,
    max_unflushed_bytes=2 << 20,
    sst_target_bytes=16 << 10,
    block_size=512,
    compactor=False,
    compaction_workers=1,
    l0_compaction_threshold=2,
)


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    """The read path's monotonic clock, frozen; ``clock.t += s`` advances it."""
    c = _Clock()
    monkeypatch.setattr(reader_module, "_now", c)
    return c


def _key(i: int) -> bytes:
    return b"key-%05d" % i


def _load(db, model: dict, rng: random.Random, rounds: int, keyspace: int = 2000, pad: int = 200) -> None:
    """Overlapping rounds of puts/overwrites/deletes, each flushed to L0."""
    for _ in range(rounds):
        for _ in range(300):
            k = _key(rng.randrange(keyspace))
            if rng.random() < 0.1:
                db.delete(k, await_durable=False)
                model.pop(k, None)
            else:
                v = b"%d:" % rng.randrange(1 << 30) + bytes(rng.randrange(0, pad))
                db.put(k, v, await_durable=False)
                model[k] = v
        db.flush(memtable=True)


def _compact_and_collect(store, options) -> None:
    with Compactor(store, options) as c:
        c.compact_once(full=True)
    collect(store, min_age=0)


def _exists(store, key: str) -> bool:
    try:
        store.head(key)
    except shaledb.ObjectNotFound:
        return False
    return True


def _listed_ssts(store) -> set[str]:
    m = ManifestStore.open_reader(store).current
    return {s.sst_id for s in m.all_ssts()}


@pytest.mark.parametrize("cache_bytes", [0, 64 << 20], ids=["no-cache", "cache"])
def test_gets_follow_compaction_and_gc(tmp_path, cache_bytes, clock):
    url = str(tmp_path / "db")
    rng = random.Random(7)
    model: dict = {}
    with open_db(url, block_cache_bytes=cache_bytes, **OPTS) as db:
        store = open_store(url)
        _load(db, model, rng, rounds=5)
        keys = [_key(i) for i in range(0, 2000, 7)]
        for k in keys:  # the reader holds SST readers and a plan of this manifest
            assert db.get(k) == model.get(k)
        before = _listed_ssts(store)
        _compact_and_collect(store, db.options)
        gone = before - _listed_ssts(store)
        assert gone, "the full compaction replaced no SST"
        assert not any(_exists(store, sst_key(s)) for s in gone), "GC left a retired SST"
        for k in keys:  # the reader's manifest lists deleted SSTs: it must move on
            assert db.get(k) == model.get(k), k
        # more writes, another compaction + GC between single gets
        _load(db, model, rng, rounds=2)
        for i, k in enumerate(sorted(model)[::11]):
            if i % 40 == 0:
                _compact_and_collect(store, db.options)
            assert db.get(k) == model.get(k), k
        assert dict(db.scan()) == model


def test_scan_survives_gc_in_the_middle(tmp_path, clock):
    url = str(tmp_path / "db")
    rng = random.Random(11)
    model: dict = {}
    with open_db(url, block_cache_bytes=0, **OPTS) as db:
        store = open_store(url)
        _load(db, model, rng, rounds=4, pad=2000)
        _compact_and_collect(store, db.options)  # a sorted run of many SSTs
        _load(db, model, rng, rounds=2)  # and L0 SSTs over it
        clock.t += reader_module.LATEST_CHECK_SECONDS
        assert db.get(_key(1)) == model.get(_key(1))  # the reader has the latest manifest
        assert len(db._reader.manifest().sorted_runs[0].ssts) > 3
        seen = []
        for k, v in db.scan():
            seen.append((k, v))
            if len(seen) == 50:
                # the scan has yet to open most SSTs of the run; they are replaced and deleted
                before = _listed_ssts(store)
                _compact_and_collect(store, db.options)
                assert before - _listed_ssts(store)
        keys = [k for k, _ in seen]
        assert keys == sorted(set(keys)), "the scan returned a key twice or out of order"
        assert dict(seen) == model


def test_a_missing_sst_the_latest_manifest_lists_is_corruption(tmp_path, clock):
    url = str(tmp_path / "db")
    with open_db(url, block_cache_bytes=0, **OPTS) as db:
        store = open_store(url)
        for i in range(200):
            db.put(_key(i), b"v%d" % i, await_durable=False)
        db.flush(memtable=True)
        (victim,) = _listed_ssts(store)
        store.delete(sst_key(victim))
        with pytest.raises(shaledb.Corruption, match=victim):
            db.get(_key(3))
        with pytest.raises(shaledb.Corruption, match=victim):
            list(db.scan())


def test_reader_notices_a_compactor_manifest_without_a_flush(tmp_path, clock):
    """A compactor's manifest reaches the reader by its own probe, once
    ``LATEST_CHECK_SECONDS`` passed, even when the flusher does not relay it."""
    url = str(tmp_path / "db")
    rng = random.Random(3)
    model: dict = {}
    with open_db(url, block_cache_bytes=0, **OPTS) as db:
        store = open_store(url)
        _load(db, model, rng, rounds=3)
        assert db.get(_key(5)) == model.get(_key(5))
        reader = db._reader
        old = reader.manifest()
        assert old.l0
        with Compactor(store, db.options) as c:
            c.compact_once(full=True)
        assert reader.manifest() is old  # no probe is due yet
        clock.t += reader_module.LATEST_CHECK_SECONDS
        new = reader.manifest()
        assert new.l0 == () and new.sorted_runs
        for k in sorted(model)[::13]:
            assert db.get(k) == model[k]
