"""Crash tests: SIGKILL of the flusher, a writer, or the user's process.

A "user process" (spawned child) opens the database and writes; every write
it reports to the parent was acknowledged durable.  Something is killed at a
named failpoint (or from outside); then the parent reopens the database and
checks that every acknowledged write reads back, that no acknowledged delete
is undone, and (through the conftest fixture) that no shared memory is left.
"""

from __future__ import annotations

import os
import time

import pytest

import shaledb
from engine_util import SMALL, SPAWN, kill, open_db, reap, s3_opts, s3_url, scan_all, wait_gone


def _user(root, failpoints, opts, conn, memtable_every, stop_after):
    """Write until something fails; report each acknowledged op to the parent."""
    os.environ["SHALEDB_FAILPOINTS"] = failpoints  # the spawned flusher inherits it
    o = dict(SMALL)
    o.update(opts)
    try:
        db = shaledb.open(root, **o)
    except shaledb.ShaleDBError as exc:
        conn.send(("open-failed", repr(exc)))
        return
    conn.send(("pid", db.status()["pid"]))
    i = 0
    try:
        while stop_after is None or i < stop_after:
            key = b"k%05d" % (i % 300)  # keys are rewritten: resurrection would show
            if i % 5 == 4:
                conn.send(("try", key, None))
                db.delete(key)
                conn.send(("ack", key, None))
            else:
                value = b"v%d" % i
                conn.send(("try", key, value))
                db.put(key, value)
                conn.send(("ack", key, value))
            if memtable_every and i % memtable_every == memtable_every - 1:
                db.flush(memtable=True)
            i += 1
        conn.send(("done", i))
        time.sleep(3600)  # wait to be killed
    except shaledb.ShaleDBError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
    finally:
        try:
            db.close()
        except shaledb.ShaleDBError:
            pass


def _run_user(root, failpoints, *, opts=None, memtable_every=0, stop_after=None, kill_user_after=None, timeout=60):
    """Run a user process; return (acked model, keys in flight, messages)."""
    parent, child = SPAWN.Pipe(duplex=False)
    p = SPAWN.Process(target=_user, args=(root, failpoints, opts or {}, child, memtable_every, stop_after))
    p.start()
    child.close()
    model, inflight, msgs = {}, {}, []
    flusher_pid = None
    acks = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not parent.poll(0.2):
                if not p.is_alive() and not parent.poll(0):
                    break
                continue
            try:
                msg = parent.recv()
            except EOFError:
                break
            msgs.append(msg)
            if msg[0] == "pid":
                flusher_pid = msg[1]
            elif msg[0] == "try":
                inflight[msg[1]] = msg[2]
            elif msg[0] == "ack":
                model[msg[1]] = msg[2]
                inflight.pop(msg[1], None)
                acks += 1
                if kill_user_after is not None and acks >= kill_user_after:
                    kill(p.pid)
                    break
            elif msg[0] in ("error", "done", "open-failed"):
                if msg[0] == "done" and kill_user_after is not None:
                    kill(p.pid)
                break
        else:
            pytest.fail(f"user process did not finish in {timeout}s; last messages {msgs[-3:]}")
    finally:
        reap([p], 30)
        try:  # ops the process started before it died may or may not have landed
            while parent.poll(0):
                msg = parent.recv()
                if msg[0] == "try":
                    inflight[msg[1]] = msg[2]
        except (EOFError, OSError):
            pass
        parent.close()
    if flusher_pid is not None:
        _wait_gone(flusher_pid, 30)
    return model, inflight, msgs


def _wait_gone(pid: int, timeout: float) -> None:
    if not wait_gone(pid, timeout):
        kill(pid)
        raise AssertionError(f"process {pid} still alive after {timeout}s")


def _check(root, model, inflight, **extra):
    with open_db(root, **extra) as db:
        state = scan_all(db)
        for key, value in model.items():
            got = db.get(key)
            if key in inflight:
                assert got in (value, inflight[key]), key
            else:
                assert got == value, (key, got, value)
            assert state.get(key) == got
        assert set(state) <= set(model) | set(inflight)
        return db.status()


@pytest.mark.parametrize(
    "failpoint, memtable_every",
    [("after-wal-upload=kill@6", 0), ("after-sst-upload=kill@2", 7), ("after-manifest=kill@2", 7)],
)
def test_flusher_killed_at_failpoint(tmp_path, failpoint, memtable_every):
    root = str(tmp_path / "db")
    model, inflight, msgs = _run_user(root, failpoint, memtable_every=memtable_every)
    assert msgs[-1][0] == "error", msgs[-3:]
    assert msgs[-1][1] == "Unavailable", msgs[-1]
    assert len(model) >= 2
    _check(root, model, inflight)
    # and the database keeps working after recovery
    with open_db(root) as db:
        db.put(b"after", b"recovery")
    with open_db(root) as db:
        assert db.get(b"after") == b"recovery"


@pytest.mark.s3
def test_flusher_killed_after_wal_upload_s3(moto_server, s3_bucket):
    root, extra = s3_url(s3_bucket), s3_opts(moto_server)
    model, inflight, msgs = _run_user(root, "after-wal-upload=kill@4", opts=extra, memtable_every=5)
    assert msgs[-1][:2] == ("error", "Unavailable"), msgs[-3:]
    _check(root, model, inflight, **extra)


def test_user_process_killed(tmp_path):
    root = str(tmp_path / "db")
    model, inflight, _ = _run_user(root, "", memtable_every=11, kill_user_after=40)
    assert len(model) >= 20
    _check(root, model, inflight)


def _writer_dies(handle):
    os.environ["SHALEDB_FAILPOINTS"] = "mid-append=kill@3"
    with handle as w:
        for i in range(10):
            w.put(b"w%02d" % i, b"x")


def test_writer_killed_mid_append(tmp_path):
    root = str(tmp_path / "db")
    with open_db(root) as db:
        db.put(b"a", b"1")
        p = SPAWN.Process(target=_writer_dies, args=(db.writer(),))
        p.start()
        reap([p], 60)
        assert p.exitcode == -9
        assert db.get(b"w00") == b"x" and db.get(b"w01") == b"x" and db.get(b"w02") is None
        db.put(b"b", b"2")  # the database carries on
        db.flush(memtable=True)
    with open_db(root) as db:
        assert scan_all(db) == {b"a": b"1", b"b": b"2", b"w00": b"x", b"w01": b"x"}


def test_flusher_killed_from_outside_fails_calls_fast(tmp_path):
    root = str(tmp_path / "db")
    db = open_db(root, request_timeout=10.0)
    try:
        db.put(b"a", b"1")
        kill(db.status()["pid"])
        t0 = time.monotonic()
        with pytest.raises(shaledb.Unavailable, match="flusher"):
            for _ in range(100):
                db.put(b"b", b"2")
                time.sleep(0.05)
        with pytest.raises(shaledb.Unavailable):
            db.flush()
        assert time.monotonic() - t0 < 10
    finally:
        _quiet_close(db)
    with open_db(root) as db:
        assert db.get(b"a") == b"1"


def _quiet_close(db):
    try:
        db.close()
    except shaledb.ShaleDBError:
        pass
