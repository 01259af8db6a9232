"""Writer backpressure (issue 11): while a compactor tends the database, the
flusher publishes no L0 SST past ``l0_max_ssts``; writers wait (their arenas
stay full) until the compactor shrinks L0, and no write is lost.

The Db runs without its own compactor; a ``Compactor`` in the test process
(opened after the Db, so the flusher sees a compactor arrive) decides when
L0 shrinks.
"""

from __future__ import annotations

import threading
import time

import pytest
from engine_util import open_db, scan_all, wait_for

import shaledb
from shaledb.compact import Compactor
from shaledb.manifest.store import ManifestStore
from shaledb.storage import open_store

LIMIT = 3
OPTS = dict(
    arena_bytes=64 << 10,
    l0_sst_bytes=64 << 10,
    max_unflushed_bytes=256 << 10,
    flush_interval=0.02,
    manifest_poll_interval=0.05,
    compactor=False,
    compaction_workers=1,
    l0_compaction_threshold=2,
    l0_max_ssts=LIMIT,
    request_timeout=60.0,
)


def _l0(store) -> int:
    return len(ManifestStore.open_reader(store).current.l0)


def test_flush_waits_for_the_compactor_then_proceeds(tmp_path):
    url = str(tmp_path / "db")
    model = {}
    with open_db(url, **OPTS) as db:
        store = open_store(url)
        with Compactor(store, db.options) as comp:
            for i in range(LIMIT):  # L0 fills up to the limit: one SST per flush
                k = b"k%03d" % i
                db.put(k, b"v%d" % i, await_durable=False)
                model[k] = b"v%d" % i
                db.flush(memtable=True)
            assert _l0(store) == LIMIT
            db.put(b"late", b"x", await_durable=False)
            model[b"late"] = b"x"
            box = {}

            def flush():
                try:
                    box["result"] = db.flush(memtable=True)
                except BaseException as exc:  # noqa: BLE001 - checked below
                    box["error"] = exc

            t = threading.Thread(target=flush)
            t.start()
            try:
                wait_for(lambda: db.status()["l0_stalls"] >= 1, "the flusher to stall on a full L0")
                assert t.is_alive(), "flush() returned while L0 was full"
                assert _l0(store) == LIMIT  # nothing published past the limit
                comp.compact_once(full=True)
            finally:
                t.join(60)
            assert not t.is_alive()
            assert "error" not in box, box.get("error")
        st = db.status()
        assert st["l0_stalls"] >= 1 and st["l0_stall_seconds"] > 0
        assert _l0(store) == 1  # the late SST, on top of the compacted run
        assert scan_all(db) == model
        assert all(db.get(k) == v for k, v in model.items())


def test_stall_past_the_bound_is_unavailable_not_failure(tmp_path):
    url = str(tmp_path / "db")
    with open_db(url, **dict(OPTS, request_timeout=4.0)) as db:
        store = open_store(url)
        with Compactor(store, db.options) as comp:
            for i in range(LIMIT):
                db.put(b"k%03d" % i, b"v", await_durable=False)
                db.flush(memtable=True)
            db.put(b"late", b"x", await_durable=False)
            with pytest.raises(shaledb.Unavailable, match="L0 is full"):
                db.flush(memtable=True)
            assert db.status()["failed"] is None  # not a permanent failure
            comp.compact_once(full=True)
            db.flush(memtable=True)  # room again: the same records go to L0
        assert db.get(b"late") == b"x"
        assert len(scan_all(db)) == LIMIT + 1


def test_writers_are_held_back_until_the_compactor_catches_up(tmp_path):
    url = str(tmp_path / "db")
    # far more than L0 (at the limit) and the arenas can absorb without a compaction
    n, size = 3000, 1000
    value = lambda i: (b"%06d" % i) * (size // 6)  # noqa: E731
    with open_db(url, **OPTS) as db:
        store = open_store(url)
        with Compactor(store, db.options) as comp:
            box = {}

            def write():
                try:
                    for i in range(n):
                        db.put(b"key-%06d" % i, value(i), await_durable=False)
                    db.flush(memtable=True)  # everything into L0 (needs room too)
                except BaseException as exc:  # noqa: BLE001 - checked below
                    box["error"] = exc

            t = threading.Thread(target=write)
            t.start()
            try:
                wait_for(lambda: db.status()["l0_stalls"] >= 1, "the flusher to stall on a full L0")
                # n * size is several times what fits below the limit plus the
                # arenas: the writer cannot be done before a compaction
                assert t.is_alive(), "the writer finished although L0 was full"
                deadline = time.monotonic() + 120
                while t.is_alive() and time.monotonic() < deadline:
                    comp.compact_once()
                    t.join(0.1)
            finally:
                t.join(120)
            assert not t.is_alive() and "error" not in box, box.get("error")
            assert _l0(store) <= LIMIT
        assert db.status()["l0_stalls"] >= 1
        got = scan_all(db)
        assert len(got) == n
        assert all(got[b"key-%06d" % i] == value(i) for i in range(n))
