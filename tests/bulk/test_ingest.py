"""db.ingest: SSTs built by SstWriter become one sorted run, newer than
everything before it, older than everything after (docs/bulk.md)."""

from __future__ import annotations

import dataclasses

import pytest

import shaledb
from shaledb.bulk import SstWriter, new_load_id
from shaledb.errors import Corruption, InvalidArgument
from shaledb.manifest.store import ManifestStore
from shaledb.storage import open_store

from bulk_util import open_db, pairs, scan_all


def _load(root, keys, values, **kw):
    with SstWriter(root, **kw) as w:
        w.add(keys, values)
        return w.finish()


def test_ingest_is_newer_than_before_and_older_than_after(tmp_path):
    root = str(tmp_path / "db")
    with open_db(root, compactor=False) as db:
        old_k, old_v = pairs(3000, tag=b"old")
        db.put_many(old_k, old_v)
        db.flush(memtable=True)  # some of it in L0
        db.put_many(old_k[:500], [b"mem" + k for k in old_k[:500]])  # some only in the memtable/WAL
        keys, values = pairs(2000, start=1000, tag=b"new")
        descs = _load(root, keys, values, sst_target_bytes=16 << 10)
        assert len(descs) > 1
        out = db.ingest(descs)
        assert out["ssts"] == len(descs) and out["records"] == 2000 and not out["already_ingested"]
        db.put(b"k%08d" % 1500, b"after")
        model = {k: v for k, v in zip(old_k, old_v)}
        model.update({k: b"mem" + k for k in old_k[:500]})
        model.update(zip(keys, values))
        model[b"k%08d" % 1500] = b"after"
        assert scan_all(db) == model
        assert db.get(b"k%08d" % 1200) == b"new" + b"k%08d" % 1200
        assert db.get(b"k%08d" % 100) == b"mem" + b"k%08d" % 100
    # durable: reopen (WAL replay after the ingest's seq) and compact it all
    with open_db(root, compactor=False) as db:
        assert scan_all(db) == model
        db.compact(full=True)
        assert scan_all(db) == model
        m = ManifestStore.open_reader(open_store(root)).current
        assert len(m.sorted_runs) == 1 and not any(s.global_seq for s in m.all_ssts())


def test_ingest_into_an_empty_database_and_trivial_move(tmp_path):
    root = str(tmp_path / "db")
    keys, values = pairs(5000, tag=b"x")
    with open_db(root, compactor=False) as db:
        descs = _load(root, keys, values, sst_target_bytes=32 << 10)
        db.ingest(descs)
        m = ManifestStore.open_reader(open_store(root)).current
        assert m.format_version == 2 and len(m.sorted_runs) == 1
        run = m.sorted_runs[0]
        assert [s.sst_id for s in run.ssts] == [d.sst_id for d in descs]
        assert all(s.global_seq == s.max_seq == m.last_l0_seq for s in run.ssts)
        assert scan_all(db) == dict(zip(keys, values))
        # a repeated ingest of the same descriptors changes nothing
        assert db.ingest(descs)["already_ingested"]
        assert scan_all(db) == dict(zip(keys, values))


def test_two_loads_partitioned_by_key_range_in_one_ingest(tmp_path):
    root = str(tmp_path / "db")
    load = new_load_id()
    ka, va = pairs(1000, start=0)
    kb, vb = pairs(1000, start=1000)
    with open_db(root, compactor=False) as db:
        da = _load(root, ka, va, load_id=load, partition=0)
        db_ = _load(root, kb, vb, load_id=load, partition=1)
        db.ingest(db_ + da)  # any order: the ingest sorts by key
        assert scan_all(db) == dict(zip(ka + kb, va + vb))


def test_overlapping_descriptors_are_refused_naming_both(tmp_path):
    root = str(tmp_path / "db")
    load = new_load_id()
    with open_db(root, compactor=False) as db:
        da = _load(root, *pairs(100, start=0), load_id=load, partition=0)
        db_ = _load(root, *pairs(100, start=50), load_id=load, partition=1)
        with pytest.raises(InvalidArgument, match="overlap") as e:
            db.ingest(da + db_)
        assert "partition 0" in str(e.value) and "partition 1" in str(e.value)
        with pytest.raises(InvalidArgument, match="twice"):
            db.ingest(da + da)
        with pytest.raises(InvalidArgument):
            db.ingest([])
        with pytest.raises(InvalidArgument):
            db.ingest(["not a descriptor"])
        assert scan_all(db) == {}


def test_missing_short_or_corrupt_objects_are_refused(tmp_path):
    root = str(tmp_path / "db")
    store = open_store(root)
    with open_db(root, compactor=False) as db:
        descs = _load(root, *pairs(3000), sst_target_bytes=16 << 10)
        store.delete(descs[0].key)
        with pytest.raises(InvalidArgument, match="does not exist"):
            db.ingest(descs)
        bad_size = dataclasses.replace(descs[1], size=descs[1].size + 1)
        with pytest.raises(InvalidArgument, match="bytes"):
            db.ingest([bad_size])
        # flip one byte in the data region: only the full check sees it
        data = bytearray(store.get(descs[1].key))
        data[10] ^= 0xFF
        store.put(descs[1].key, bytes(data))
        with pytest.raises(Corruption, match="checksum"):
            db.ingest(descs[1:], verify="full")
        # ... and in the footer: the default (tail) check sees it
        data[-60] ^= 0xFF
        store.put(descs[1].key, bytes(data))
        with pytest.raises(Corruption, match="checksum"):
            db.ingest(descs[1:])
        assert scan_all(db) == {}
        with pytest.raises(InvalidArgument, match="verify"):
            db.ingest(descs[2:], verify="maybe")


def test_with_the_compactor_service_and_memory_store(tmp_path):
    """The compactor service (own process) merges an ingested run with L0;
    a memory:// database (flusher thread) ingests too."""
    import uuid

    for root, kw in ((str(tmp_path / "db"), {}), ("memory://bulk-" + uuid.uuid4().hex[:8], {"compactor": False})):
        with open_db(root, **kw) as db:
            db.put_many(*pairs(3000, tag=b"old"))
            db.flush(memtable=True)
            keys, values = pairs(3000, start=1500, tag=b"new")
            db.ingest(_load(root, keys, values, sst_target_bytes=16 << 10))
            model = dict(zip(*pairs(3000, tag=b"old")))
            model.update(zip(keys, values))
            db.compact(full=True)
            assert scan_all(db) == model


def test_a_later_ingest_wins_over_an_earlier_one_through_compaction(tmp_path):
    root = str(tmp_path / "db")
    keys, _ = pairs(4000)
    with open_db(root, compactor=False) as db:
        db.ingest(_load(root, keys, [b"one"] * len(keys), sst_target_bytes=16 << 10))
        db.put(keys[5], b"put")  # between the two loads
        db.ingest(_load(root, keys[::2], [b"two"] * len(keys[::2]), sst_target_bytes=16 << 10))
        model = {k: (b"two" if i % 2 == 0 else b"one") for i, k in enumerate(keys)}
        model[keys[5]] = b"put"
        assert scan_all(db) == model
        db.compact(full=True)
        assert scan_all(db) == model
    with open_db(root, compactor=False) as db:
        assert scan_all(db) == model
