"""Hardening of the shared-memory memtable (issue 9, items 2, 3 and part of 9).

* a writer SIGKILLed between creating an arena segment and counting it (the
  ``mid-arena-create`` failpoint) does not break arena creation: the stale
  segment is replaced, the Db goes on, nothing leaks;
* a writer handle whose Db is gone (owner SIGKILLed, segments removed)
  raises Closed or Unavailable from every call, never an OS error;
* the arena-fit error names the record size, the usable capacity and the
  option to change; a record of up to ``arena_bytes - 640`` bytes fits
  (an empty arena is given a small index for it);
* the arena kernels raise errors of the shaledb tree.
"""

from __future__ import annotations

import os
import pickle
import signal
import time

import numpy as np
import pytest

import shaledb
from engine_util import SPAWN, kill, open_db, pack_batch, reap, wait_gone
from shaledb.errors import Closed, Internal, InvalidArgument, ShaleDBError, Unavailable
from shaledb.kernels import arena as K
from shaledb.memtable import shm
from shaledb.memtable.arena_pool import C_CREATED, ArenaPool

WAIT = 60  # seconds any child may take


def _segments(dbtag: str) -> list[str]:
    prefix = f"shaledb-{dbtag}-"
    return sorted(n for n in os.listdir(shm.shm_dir()) if n.startswith(prefix))


# ---------------------------------------------------------------- item 2


def _write_until_killed(handle, n: int, vsize: int) -> None:
    """A writer process armed to SIGKILL itself inside its first arena creation."""
    os.environ["SHALEDB_FAILPOINTS"] = "mid-arena-create=kill"
    handle.put_many([b"c%07d" % i for i in range(n)], [b"c" * vsize] * n, await_durable=False)
    os._exit(7)  # not reached: the put_many needs a new arena, and the failpoint kills


def test_writer_killed_mid_arena_create_db_goes_on(tmp_path):
    root = str(tmp_path / "db")
    db = open_db(root, arena_bytes=256 << 10, initial_arenas=1, max_arenas=32)
    pool = db._pool
    dbtag = pool.dbtag
    try:
        db.put(b"first", b"1")  # the Db's own writer holds arena 0
        assert int(pool.ctl[C_CREATED]) == 1
        p = SPAWN.Process(target=_write_until_killed, args=(db.writer(), 2000, 200))
        p.start()
        try:
            p.join(WAIT)
        finally:
            reap([p], 10)
        assert p.exitcode == -signal.SIGKILL
        stale = shm.segment_name(dbtag, "arena", 1)
        assert stale in _segments(dbtag)  # created, never counted
        assert int(pool.ctl[C_CREATED]) == 1

        # the Db creates arenas and writes on: several arenas' worth
        keys = [b"k%07d" % i for i in range(6000)]
        values = [b"%07d" % i + b"v" * 150 for i in range(6000)]
        db.put_many(keys, values)
        assert int(pool.ctl[C_CREATED]) >= 3
        for k, v in zip(keys[::97], values[::97]):
            assert db.get(k) == v
        assert db.get(b"first") == b"1"
    finally:
        db.close()
    assert _segments(dbtag) == []
    db = shaledb.open(root)
    try:
        assert db.get(b"k0005999") == values[-1]
        assert db.get(b"first") == b"1"
    finally:
        db.close()


def test_failed_arena_create_leaves_nothing_and_is_retried(tmp_path, monkeypatch):
    # "error" action: creation fails after the segment exists; it is removed
    # and the next creation (same number) succeeds
    monkeypatch.setenv("SHALEDB_FAILPOINTS", "mid-arena-create=error@2")
    pool = ArenaPool.create(str(tmp_path / "db"), arena_bytes=64 << 10, initial_arenas=1, max_arenas=4)
    try:
        with pool.lock:
            with pytest.raises(Internal):
                pool._create_arena_locked()
        assert int(pool.ctl[C_CREATED]) == 1
        assert shm.segment_name(pool.dbtag, "arena", 1) not in _segments(pool.dbtag)
        monkeypatch.setenv("SHALEDB_FAILPOINTS", "")
        pool._fp = None
        with pool.lock:
            assert pool._create_arena_locked() == 1
        assert int(pool.ctl[C_CREATED]) == 2
    finally:
        pool.destroy()
    assert _segments(pool.dbtag) == []


def test_stale_arena_segment_of_any_size_is_replaced(tmp_path):
    # what a creator killed right after os.open leaves: a file of the next
    # arena's name, here empty (a truncated one would do the same)
    pool = ArenaPool.create(str(tmp_path / "db"), arena_bytes=64 << 10, initial_arenas=1, max_arenas=4)
    try:
        stale = os.path.join(shm.shm_dir(), shm.segment_name(pool.dbtag, "arena", 1))
        with open(stale, "wb"):
            pass
        with pool.lock:
            assert pool._create_arena_locked() == 1
        assert os.path.getsize(stale) == 64 << 10
        assert K.arena_header(pool.arena(1))["magic"] == K.ARENA_MAGIC
        wid = pool.register_writer()
        for j in range(3):  # fills arena 0, then lands in arena 1
            n, _, _ = pool.append(wid, *pack_batch([b"s%d" % j], [b"v" * (30 << 10)]))
            assert n == 1
        assert pool.lookup(b"s2")[3] == b"v" * (30 << 10)
    finally:
        pool.destroy()
    assert _segments(pool.dbtag) == []


# ---------------------------------------------------------------- item 3


def _owner(root: str, conn) -> None:
    """Open a Db, hand out a writer handle, then idle until killed."""
    db = open_db(root, arena_bytes=256 << 10, initial_arenas=2)
    conn.send((pickle.dumps(db.writer()), db._pool.dbtag, db._proc.pid))
    conn.poll(WAIT * 2)  # the test SIGKILLs this process
    db.close()


def _outcome(fn) -> tuple[str, str]:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test reports every kind
        return type(e).__module__ + "." + type(e).__name__, str(e)
    return "returned", ""


def _writer_after_db_death(handle_bytes: bytes, conn) -> None:
    handle = pickle.loads(handle_bytes)
    handle.put(b"before", b"1", await_durable=True)  # attached, holds arena 0
    conn.send("ready")
    if not conn.poll(WAIT):
        return
    conn.recv()
    big = [b"x" * 1000] * 700  # crosses into the other arena
    out = {
        "put_many": _outcome(lambda: handle.put_many([b"m%04d" % i for i in range(700)], big)),
        "put": _outcome(lambda: handle.put(b"k", b"v")),
        "put_nowait": _outcome(lambda: handle.put(b"k", b"v", await_durable=False)),
        "put_many_nowait": _outcome(lambda: handle.put_many([b"a"], [b"b"], await_durable=False)),
        "flush": _outcome(lambda: handle.flush()),
        "flush_memtable": _outcome(lambda: handle.flush(memtable=True)),
    }
    fresh = pickle.loads(handle_bytes)  # never attached before the Db died
    out["fresh_put"] = _outcome(lambda: fresh.put(b"k", b"v"))
    out["fresh_flush"] = _outcome(lambda: fresh.flush())
    handle.close()
    fresh.close()
    conn.send(out)


def test_writer_of_a_killed_db_raises_closed_not_os_error(tmp_path):
    root = str(tmp_path / "db")
    o_parent, o_child = SPAWN.Pipe()
    w_parent, w_child = SPAWN.Pipe()
    owner = SPAWN.Process(target=_owner, args=(root, o_child))
    procs = [owner]
    flusher = None
    dbtag = None
    try:
        owner.start()
        assert o_parent.poll(WAIT), "the owner did not open the database"
        handle_bytes, dbtag, flusher = o_parent.recv()
        writer = SPAWN.Process(target=_writer_after_db_death, args=(handle_bytes, w_child))
        procs.append(writer)
        writer.start()
        assert w_parent.poll(WAIT) and w_parent.recv() == "ready"

        kill(owner.pid)
        owner.join(WAIT)
        assert wait_gone(flusher, WAIT), "the orphaned flusher did not exit"
        shm.cleanup_segments(dbtag)  # whatever the flusher left: the segments are gone
        assert _segments(dbtag) == []

        w_parent.send("go")
        assert w_parent.poll(WAIT), "the writer did not report"
        out = w_parent.recv()
        writer.join(WAIT)
    finally:
        reap(procs, 10)
        if flusher is not None:
            kill(flusher)
    allowed = {"shaledb.errors.Closed", "shaledb.errors.Unavailable"}
    for call, (kind, msg) in out.items():
        assert kind in allowed, f"{call}: {kind}: {msg}"
    assert out["put_many"][0] == "shaledb.errors.Closed"
    assert "gone" in out["put_many"][1]
    assert _segments(dbtag) == []  # the dead Db's writer created nothing


# ---------------------------------------------------------------- item 9 (parts)


def test_big_record_fits_and_error_names_sizes(tmp_path):
    arena = 1 << 20
    db = open_db(str(tmp_path / "db"), arena_bytes=arena, initial_arenas=1)
    try:
        w = db._writer
        cap = w.pool.max_record_bytes
        assert cap == arena - K.HEADER_BYTES - 8 * 64
        # 15/16 of the arena: above the default geometry's 7/8 (the index share)
        big = b"b" * (arena * 15 // 16)
        assert K.HEADER_BYTES + 8 * w.pool.index_slots + len(big) > arena
        db.put(b"big", big)
        db.put_many([b"big2", b"small"], [big, b"s"])
        value = b"x" * (cap - 16 - 1)  # 16-byte header + 1-byte key: exactly the capacity
        db.put(b"k", value)
        assert db.get(b"big") == big and db.get(b"big2") == big and db.get(b"k") == value
        # one record past the capacity gets a segment of its own (test_large_values.py) ...
        db.put(b"k1", value + b"xx")
        db.put_many([b"k2"], [value + b"xx"])
        assert db.get(b"k1") == value + b"xx" and db.get(b"k2") == value + b"xx"
        # ... an atomic batch of several records must still fit one arena
        with pytest.raises(InvalidArgument) as ei:
            db.write(shaledb.WriteBatch().put(b"k", value).put(b"k3", b"v"))
        msg = str(ei.value)
        assert str(cap + 24) in msg  # the batch's record bytes (padded)
        assert "arena_bytes" in msg
        db.flush(memtable=True)
        assert db.get(b"big") == big and db.get(b"small") == b"s"
        # many small records after the big ones still index normally
        db.put_many([b"n%05d" % i for i in range(5000)], [b"n"] * 5000)
        assert db.get(b"n04999") == b"n"
    finally:
        db.close()


def test_big_record_arena_returns_to_default_geometry(tmp_path):
    pool = ArenaPool.create(str(tmp_path / "db"), arena_bytes=256 << 10, initial_arenas=1, max_arenas=4)
    try:
        wid = pool.register_writer()
        big = b"v" * (pool.max_batch_bytes + 1000)
        n, seq, _ = pool.append(wid, *pack_batch([b"big"], [big]))
        assert n == 1
        i = pool._owned[wid]
        assert K.arena_header(pool.arena(i))["index_slots"] == 64
        got = pool.lookup(b"big")
        assert got is not None and got[1] == seq and got[3] == big
        gen = pool.seal()
        (sg,) = pool.sealed_generations()
        assert sg.number == gen
        pool.begin_flush(sg)
        pool.release(sg)
        # the next writer gets the arena back with the default index
        n, _, _ = pool.append(wid, *pack_batch([b"a%04d" % j for j in range(1000)], [b"x"] * 1000))
        assert n == 1000
        i = pool._owned[wid]
        assert K.arena_header(pool.arena(i))["index_slots"] == pool.index_slots
        assert pool.lookup(b"a0999")[3] == b"x"
    finally:
        pool.destroy()


def test_arena_kernel_errors_are_shaledb_errors():
    a = np.zeros(1 << 14, dtype=np.uint8)
    with pytest.raises(InvalidArgument) as ei:
        K.arena_init(np.zeros(100, dtype=np.int64))
    assert isinstance(ei.value, TypeError)  # compatible with the TypeError raised before
    with pytest.raises(InvalidArgument):
        K.arena_init(a, 3)
    K.arena_init(a, 64)
    kd, ko, vd, vo, kinds = pack_batch([b"k"], [b"v"])
    with pytest.raises(InvalidArgument):
        K.arena_append(a, kd, ko, vd, vo, kinds, -1)
    with pytest.raises(InvalidArgument):
        K.arena_append(a, kd, ko.astype(np.int32), vd, vo, kinds, 1)
    with pytest.raises(InvalidArgument):
        K.arena_record_offsets(a, K.arena_log_start(a) + 3)
    counter = np.array([K.MAX_SEQ], dtype=np.uint64)
    kd, ko, vd, vo, kinds = pack_batch([b"k1", b"k2"], [b"v", b"v"])
    with pytest.raises(Unavailable, match="exhausted"):
        K.arena_append_counted(a, kd, ko, vd, vo, kinds, counter)


def test_sequence_exhaustion_reaches_the_user_as_shaledb_error(tmp_path):
    db = open_db(str(tmp_path / "db"), initial_arenas=1)
    try:
        pool = db._pool
        with pool.lock:
            pool.ctl[5] = K.MAX_SEQ  # C_NEXT_SEQ: one seq left
        with pytest.raises(ShaleDBError, match="exhausted"):
            db.put_many([b"a", b"b"], [b"1", b"2"], await_durable=False)
    finally:
        try:
            db.close()
        except ShaleDBError:
            pass
