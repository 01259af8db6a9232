"""Read-only readers in the test process (issue 13): they follow the writer
through the manifest and the WAL tail, survive a writer failover and a
compaction plus GC (``gc_min_age=0``) in the middle of a scan, read a
checkpoint unchanged forever, never write, and fail clearly on bad input.
The moments (flush, failover, compaction, GC) are chosen by the test; the
reader is caught up with ``refresh()`` instead of waiting for its poll.
"""

from __future__ import annotations

import pytest
from engine_util import open_db, s3_opts, s3_url, scan_all
from readonly_util import MISSES, OPTS, WRITES, kv, listing, record_misses, record_writes

import shaledb
from shaledb.manifest.store import ManifestStore
from shaledb.manifest.versioned import SystemClock
from shaledb.storage import open_store

N = 600


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def root(request, tmp_path):
    return _root(request, tmp_path)


#: the slowest S3 variants run only with the slow tests (their local twins always run)
@pytest.fixture(params=["local", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.slow])])
def root_slow_s3(request, tmp_path):
    return _root(request, tmp_path)


def _root(request, tmp_path):
    """(url, extra options) of an empty database root, local or on moto S3."""
    if request.param == "local":
        return str(tmp_path / "db"), {}
    moto = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("s3_bucket")
    return s3_url(bucket), s3_opts(moto)


def _reader(url, extra, **kw):
    return shaledb.open_reader(url, poll_interval=kw.pop("poll_interval", 3600.0), **extra, **kw)


def _load(db, lo, hi, gen=0, memtable=False):
    for i in range(lo, hi):
        db.put(*kv(i, gen), await_durable=False)
    db.flush(memtable=memtable)


def test_reader_follows_wal_tail_and_l0(root):
    url, extra = root
    with open_db(url, **OPTS, **extra) as db:
        _load(db, 0, N, memtable=True)  # L0
        _load(db, N, N + 50)  # only in the WAL
        db.delete(kv(3)[0])
        with _reader(url, extra) as tail, _reader(url, extra, wal_tail=False) as l0_only:
            expect = {k: v for k, v in (kv(i) for i in range(N + 50)) if k != kv(3)[0]}
            assert dict(tail.scan()) == expect
            assert tail.get(kv(N + 10)[0]) == kv(N + 10)[1] and tail.get(kv(3)[0]) is None
            assert l0_only.get(kv(N + 10)[0]) is None  # the WAL tail is not read
            assert l0_only.get(kv(3)[0]) == kv(3)[1]
            # newer writes: visible after a refresh (the poll's work)
            _load(db, 0, 20, gen=1)
            tail.refresh()
            assert tail.get(kv(5)[0]) == kv(5, 1)[1]
            db.flush(memtable=True)
            l0_only.refresh()
            assert l0_only.get(kv(5)[0]) == kv(5, 1)[1] and l0_only.get(kv(3)[0]) == kv(3, 1)[1]
            assert tail.get_many([kv(5)[0], b"nope"]) == [kv(5, 1)[1], None]
            assert scan_all(db) == dict(tail.scan())


def test_reader_across_writer_failover(root_slow_s3):
    url, extra = root_slow_s3
    db1 = open_db(url, **OPTS, **extra)
    try:
        _load(db1, 0, 100)
        with _reader(url, extra) as r:
            assert r.get(kv(50)[0]) == kv(50)[1]
            db2 = open_db(url, **OPTS, **extra)  # a new writer epoch: fences db1, replays its WAL
            try:
                with pytest.raises(shaledb.Fenced):
                    db1.put(b"zombie", b"z")
                _load(db2, 50, 150, gen=2)  # the new writer's WAL, after its fence
                r.refresh()
                assert r.get(b"zombie") is None
                assert r.get(kv(10)[0]) == kv(10)[1] and r.get(kv(120)[0]) == kv(120, 2)[1]
                assert dict(r.scan()) == scan_all(db2)
                db2.flush(memtable=True)
                r.refresh()
                assert dict(r.scan()) == scan_all(db2)
            finally:
                db2.close()
    finally:
        db1.close()


def test_reader_mid_scan_while_compaction_and_gc_delete_its_objects(root):
    """gc_min_age=0: the SSTs and WAL objects a reader was reading are
    deleted under it; the scan resumes on the latest manifest (no missing
    object error, no wrong value)."""
    url, extra = root
    with open_db(url, **OPTS, **extra) as db:
        for gen in range(2):
            _load(db, 0, N, gen=gen, memtable=True)
        db.compact(full=True)  # a sorted run of many SSTs, opened lazily by a scan
        for gen in range(2, 4):  # L0s holding newer versions of some keys
            _load(db, 0, N, gen=gen, memtable=True)
        _load(db, N, N + 40)  # and a WAL tail
        expect = scan_all(db)
        del MISSES[:]
        with _reader(url, extra, store_wrapper=record_misses) as r:
            it = r.scan()
            first = [next(it) for _ in range(N // 3)]
            before = {k for k in listing(open_store(url, **extra.get("store_options", {})))}
            db.compact(full=True)
            _load(db, N + 40, N + 50, memtable=True)  # the WAL tail the reader holds moves into L0
            res = db.gc()
            assert res["deleted"]["sst"] > 0  # the reader's SSTs really are gone
            after = {k for k in listing(open_store(url, **extra.get("store_options", {})))}
            assert any(k.startswith("compacted/") for k in before - after)
            got = dict(first)
            got.update(it)
            # a scan is no snapshot: resumed on the latest manifest, it may
            # also see the keys written meanwhile (never a wrong value)
            later = dict(kv(i) for i in range(N + 40, N + 50))
            assert {k: v for k, v in got.items() if k not in later} == expect
            assert all(later[k] == v for k, v in got.items() if k in later)
            assert MISSES  # the scan did meet deleted SSTs (and resumed)
            for i in range(0, N + 40, 37):  # point reads meet the deleted SSTs too
                assert r.get(kv(i)[0]) == expect[kv(i)[0]]
            r.refresh()
            assert dict(r.scan()) == scan_all(db)


def test_checkpoint_reader_never_changes(root):
    url, extra = root
    with open_db(url, **OPTS, **extra) as db:
        _load(db, 0, N)
        db.delete(kv(7)[0])
        cp = db.create_checkpoint(name="nightly")  # flushes the memtable first: every write above is in it
        want = scan_all(db)
        with _reader(url, extra, checkpoint=cp.id) as r:
            assert dict(r.scan()) == want and r.get(kv(7)[0]) is None
            for gen in (1, 2):
                _load(db, 0, N, gen=gen, memtable=True)
            db.delete(kv(8)[0])
            db.compact(full=True)
            db.gc()
            r.refresh()  # nothing to catch up on
            assert dict(r.scan()) == want
            assert r.get(kv(8)[0]) == want[kv(8)[0]] and r.get(kv(7)[0]) is None
        with _reader(url, extra, checkpoint=cp.id) as r2:  # a new reader of the same checkpoint
            assert dict(r2.scan()) == want
        assert scan_all(db)[kv(9)[0]] == kv(9, 2)[1]


def test_snapshot_isolation(root):
    url, extra = root
    with open_db(url, **OPTS, **extra) as db:
        _load(db, 0, N)
        db.delete(kv(1)[0])
        db.put(b"buffered", b"b", await_durable=False)  # appended before the snapshot's flush
        with db.snapshot() as snap:
            want = scan_all(db)
            assert want[b"buffered"] == b"b"
            for gen in (1, 2):  # later writes: newer versions of every key
                _load(db, 0, N, gen=gen, memtable=True)
            db.delete(kv(2)[0])
            db.put(kv(1)[0], b"reborn")
            db.compact(full=True)  # would drop the versions the snapshot sees, without its pin
            db.gc()
            assert dict(snap.scan()) == want
            assert snap.get(kv(2)[0]) == want[kv(2)[0]] and snap.get(kv(1)[0]) is None
            assert dict(snap.scan(kv(10)[0], kv(20)[0])) == {k: v for k, v in want.items() if kv(10)[0] <= k < kv(20)[0]}
            assert snap.seq >= max(0, 1) and any(c.id == snap.checkpoint_id for c in db.list_checkpoints())
        assert all(c.id != snap.checkpoint_id for c in db.list_checkpoints())  # close() released it
        with pytest.raises(shaledb.Closed):
            snap.get(b"x")
        assert db.get(kv(1)[0]) == b"reborn"


def test_readers_never_write(root_slow_s3):
    """Readers of every kind, with a writer and a compactor running: the
    readers' stores receive no write, and the writer is never fenced; with
    the writer closed, the bucket listing is unchanged by readers."""
    url, extra = root_slow_s3
    del WRITES[:]
    opts = dict(OPTS, compactor=True, l0_compaction_threshold=2)
    with open_db(url, **opts, **extra) as db:
        _load(db, 0, N, memtable=True)
        cp = db.create_checkpoint()
        readers = [
            _reader(url, extra, store_wrapper=record_writes, poll_interval=0.05),
            _reader(url, extra, store_wrapper=record_writes, wal_tail=False, poll_interval=0.05),
            _reader(url, extra, store_wrapper=record_writes, checkpoint=cp.id),
        ]
        try:
            for gen in (1, 2, 3):
                _load(db, 0, N, gen=gen, memtable=gen != 2)
                db.compact()
                for r in readers:
                    r.refresh()
                    assert len(dict(r.scan())) == N
            db.put(b"still", b"writing")  # the writer was never fenced
        finally:
            for r in readers:
                r.close()
    assert WRITES == []
    store = open_store(url, **extra.get("store_options", {}))
    before = listing(store)
    for kw in ({}, {"wal_tail": False}, {"checkpoint": cp.id}):
        with _reader(url, extra, poll_interval=0.01, **kw) as r:
            assert len(dict(r.scan())) == N + 1 - (1 if "checkpoint" in kw else 0)
            r.refresh()
    assert listing(store) == before


def test_bad_input(root, tmp_path):
    url, extra = root
    with pytest.raises(shaledb.InvalidArgument, match="no ShaleDB database"):
        _reader(url, extra)  # nothing there yet
    if "://" not in url:
        missing = str(tmp_path / "no" / "such")
        with pytest.raises(shaledb.InvalidArgument, match="no ShaleDB database"):
            shaledb.open_reader(missing)
        import os

        assert not os.path.exists(missing)  # a reader creates nothing
    with open_db(url, **OPTS, **extra) as db:
        _load(db, 0, 10)
        with pytest.raises(shaledb.InvalidArgument, match="no checkpoint"):
            _reader(url, extra, checkpoint="01ARZ3NDEKTSV4RRFFQ69G5FAV")
        with pytest.raises(shaledb.InvalidArgument, match="not a checkpoint id"):
            _reader(url, extra, checkpoint="nightly")
        with pytest.raises(shaledb.InvalidArgument, match="poll_interval"):
            shaledb.open_reader(url, poll_interval=0, **extra)
        # a checkpoint that expired (made on a clock an hour behind, with a one-minute lifetime)
        store = open_store(url, **extra.get("store_options", {}))
        old = ManifestStore.open_reader(store, clock=_Behind(3600.0)).add_checkpoint(lifetime_ms=60_000)
        with pytest.raises(shaledb.InvalidArgument, match="expired"):
            _reader(url, extra, checkpoint=old.id)
        with pytest.raises(shaledb.InvalidArgument, match="expired"):
            db.refresh_checkpoint(old.id, 60)
        with pytest.raises(shaledb.InvalidArgument, match="no checkpoint"):
            db.delete_checkpoint("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        with pytest.raises(shaledb.InvalidArgument, match="lifetime"):
            db.create_checkpoint(lifetime=-1)
        assert db.gc()["expired_checkpoints"] == [old.id]
        with pytest.raises(shaledb.InvalidArgument, match="no checkpoint"):
            _reader(url, extra, checkpoint=old.id)
        r = _reader(url, extra)
        r.close()
        with pytest.raises(shaledb.Closed):
            r.get(b"k")


class _Behind(SystemClock):
    def __init__(self, seconds: float):
        self.ms = int(seconds * 1000)

    def now_ms(self) -> int:
        return super().now_ms() - self.ms
