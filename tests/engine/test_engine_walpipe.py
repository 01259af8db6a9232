"""The flusher's WAL pipeline: snapshots cut into several WAL objects encoded on
a helper thread, and WAL uploads / flush() served while an L0 build runs.

A ``memory://`` database runs its flusher as a thread of this process, so the
flusher module's knobs and the SST builder can be patched here.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import shaledb
import shaledb.flush.flusher as flusher_mod
import shaledb.sst.writer as sst_writer_mod
from engine_util import memory_url, open_db, scan_all
from shaledb.format.keys import parse_wal_key, wal_key
from shaledb.format.wal import decode_wal, encode_wal, encode_wal_view


def _wal_objects(store) -> dict[int, bytes]:
    out = {}
    for meta in store.list("wal/"):
        wid = parse_wal_key(meta.key)
        if wid is not None:
            out[wid] = store.get(meta.key)
    return out


def _records(n: int, tag: bytes = b"k"):
    keys = [tag + b"%07d" % i for i in range(n)]
    vals = [b"v%d-" % i + b"x" * (i % 37) for i in range(n)]
    return keys, vals


def test_cut_covers_every_record_in_order():
    offs = np.arange(0, 1000 * 24, 24, dtype=np.int64)
    for chunk in (1, 24, 100, 5000, 1 << 20):
        pieces = flusher_mod._cut(offs, chunk)
        assert pieces[0][0] == 0 and pieces[-1][1] == len(offs)
        assert all(a < b for a, b in pieces)
        assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))
    assert flusher_mod._cut(offs[:1], 8) == [(0, 1)]


def test_encode_wal_view_same_bytes_as_encode_wal():
    with open_db(memory_url()) as db:
        keys, vals = _records(500)
        db.put_many(keys, vals)
        db.flush()
        objs = _wal_objects(db._store)
    for wid, data in objs.items():
        if not data:
            continue  # the fence
        buf, offs = decode_wal(data, wal_key(wid))
        for sel in (offs, offs[:0], offs[1:2], offs[::3]):
            assert bytes(encode_wal_view(buf, sel)) == encode_wal(buf, sel)
        assert encode_wal(buf, offs) == data


def test_chunked_async_wal_objects(monkeypatch):
    # tiny objects, always encoded on the helper thread
    monkeypatch.setattr(flusher_mod, "_WAL_OBJECT_BYTES", 2048)
    monkeypatch.setattr(flusher_mod, "_ASYNC_ENCODE_BYTES", 0)
    keys, vals = _records(4000)
    with open_db(memory_url(), l0_sst_bytes=64 << 20, arena_bytes=4 << 20, max_unflushed_bytes=64 << 20) as db:
        last = db.put_many(keys, vals, await_durable=False)
        assert db.flush() >= last
        objs = _wal_objects(db._store)
        ids = sorted(objs)
        assert ids == list(range(ids[0], ids[-1] + 1)), "WAL ids must be contiguous"
        seqs = []
        for wid in ids:
            if not objs[wid]:
                continue
            buf, offs = decode_wal(objs[wid], wal_key(wid))
            for o in offs:
                seqs.append(int(np.frombuffer(buf[o + 8 : o + 16], "<u8")[0]) >> 8)
        assert len(objs) > 5, "the snapshot should have been cut into several objects"
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == 4000
        assert db.status()["wal_uploads"] >= len(ids) - 1
        assert scan_all(db) == dict(zip(keys, vals))


def _snapshot(n):
    return [flusher_mod._PendingWal(i, None, 0, src=(i, None)) for i in range(n)]


def _ready_count(objs, want, timeout=10.0):
    """How many objects are encoded, once ``want`` are (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while sum(o.ready.is_set() for o in objs) < want and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # an encoder that would run further gets the time to
    return sum(o.ready.is_set() for o in objs)


def test_wal_encoder_stays_a_bounded_number_of_objects_ahead():
    """The helper thread encodes at most _WAL_ENCODE_AHEAD objects past the
    last one written: a large snapshot is never copied whole."""
    ahead = flusher_mod._WAL_ENCODE_AHEAD
    objs = _snapshot(ahead + 4)
    flusher_mod.Flusher._encode(objs, 1 << 30, lambda i, _offs: b"obj%d" % i)
    assert _ready_count(objs, ahead) == ahead
    for k in range(len(objs)):  # the worker's side: write object k, then let the encoder take one more
        assert objs[k].encoded() == b"obj%d" % k
        objs[k].ahead.release()
        assert _ready_count(objs, min(len(objs), k + 1 + ahead)) == min(len(objs), k + 1 + ahead)


def test_wal_encoder_finishes_the_snapshot_after_a_failed_write(monkeypatch):
    """A WAL write fails mid-snapshot: the flusher opens the bound (the
    encoder reads shared memory and must finish before anyone may unmap the
    arenas), nothing hangs, the retry writes the snapshot's remaining
    objects, and every record is durable and reads back."""
    from shaledb.errors import Unavailable

    monkeypatch.setattr(flusher_mod, "_WAL_OBJECT_BYTES", 2048)
    monkeypatch.setattr(flusher_mod, "_ASYNC_ENCODE_BYTES", 0)
    real = flusher_mod.Flusher._write_wal_object
    failed = []

    def flaky(self, wal_id, data):
        if not failed and wal_id >= 3:  # once, a few objects into the snapshot
            failed.append(wal_id)
            raise Unavailable("injected: the WAL write timed out")
        return real(self, wal_id, data)

    monkeypatch.setattr(flusher_mod.Flusher, "_write_wal_object", flaky)
    keys, vals = _records(4000)
    with open_db(memory_url(), l0_sst_bytes=64 << 20, arena_bytes=4 << 20, max_unflushed_bytes=64 << 20,
                 request_timeout=60.0) as db:
        last = db.put_many(keys, vals, await_durable=False)
        try:
            db.flush()  # the flush that met the failure may report it ...
        except Unavailable:
            pass
        assert db.flush() >= last  # ... the next one finds the snapshot written
        assert failed, "the injected failure never ran"
        objs = _wal_objects(db._store)
        ids = sorted(objs)
        assert ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > flusher_mod._WAL_ENCODE_AHEAD + 3
        assert scan_all(db) == dict(zip(keys, vals))


@pytest.mark.parametrize("durable_put", [False, True])
def test_flush_served_while_l0_build_runs(monkeypatch, durable_put):
    started = threading.Event()
    release = threading.Event()
    real_build = sst_writer_mod.build_ssts

    def slow_build(*a, **kw):
        started.set()
        assert release.wait(60), "test never released the L0 build"
        return real_build(*a, **kw)

    monkeypatch.setattr(sst_writer_mod, "build_ssts", slow_build)
    k1, v1 = _records(2000, b"a")
    k2, v2 = _records(2000, b"b")
    with open_db(memory_url()) as db:
        db.put_many(k1, v1, await_durable=False)
        errors = []

        def flush_l0():
            try:
                db.flush(memtable=True)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        t = threading.Thread(target=flush_l0)
        t.start()
        try:
            assert started.wait(60), "the L0 build did not start"
            l0_before = db.status()["l0"]
            # while the build is blocked, WAL work still gets done
            if durable_put:
                seq = db.put(b"durable", b"yes")  # group commit nudges the flusher
                assert seq is not None
            last = db.put_many(k2, v2, await_durable=False)
            assert db.flush() >= last
            assert not release.is_set() and t.is_alive()
            assert db.status()["l0"] == l0_before  # the L0 was not published meanwhile
        finally:
            release.set()
            t.join(60)
        assert not t.is_alive() and not errors, errors
        expect = dict(zip(k1, v1))
        expect.update(zip(k2, v2))
        if durable_put:
            expect[b"durable"] = b"yes"
        assert scan_all(db) == expect
    assert isinstance(shaledb.Options, type)
