"""Hardening of the flusher lifecycle (issue 9, items 1, 4, 5, 7, 8, 9).

* an orphaned flusher (its user process SIGKILLed during open) writes
  nothing more, so it never fences the next opener, and leaves no shared
  memory or control directory behind;
* close() after the flusher was killed never returns normally while a write
  might not be durable;
* every public call after close() raises Closed;
* a non-retryable store error (a full disk) fails durable calls at once,
  naming the cause, and shows in status();
* bad open arguments raise InvalidArgument;
* stale control directories of dead processes are removed by a later open.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import shaledb
from engine_util import SPAWN, kill, open_db, reap, s3_opts, s3_url, scan_all, wait_gone
from shaledb.storage.wrappers import StoreWrapper


def _ctl_dirs_of(pid: int) -> list[str]:
    base = tempfile.gettempdir()
    return [n for n in os.listdir(base) if n.startswith(f"shaledb-ctl-{pid}-")]


# ---------------------------------------------------------------- item 1


class _KillParentStore(StoreWrapper):
    """In the flusher (the only process that writes): at its first store
    write, record its pid, SIGKILL its parent (the user process, still inside
    shaledb.open) and hold the write until the test opens the gate."""

    def __init__(self, inner, gate_dir: str):
        super().__init__(inner)
        self.gate_dir = gate_dir
        self._fired = False

    def __reduce__(self):
        return (_KillParentStore, (self.inner, self.gate_dir))

    def _first_write(self) -> None:
        if self._fired:
            return
        self._fired = True
        with open(os.path.join(self.gate_dir, "flusher.pid"), "w") as f:
            f.write(str(os.getpid()))
        parent = os.getppid()
        os.kill(parent, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(self.gate_dir, "go")) and time.monotonic() < deadline:
            time.sleep(0.02)  # waits for the test's gate, not for time to pass

    def put(self, *a, **k):
        self._first_write()
        return self.inner.put(*a, **k)

    def put_if_absent(self, *a, **k):
        self._first_write()
        return self.inner.put_if_absent(*a, **k)

    def put_if_match(self, *a, **k):
        self._first_write()
        return self.inner.put_if_match(*a, **k)


class _KillParentAtFirstWrite:
    """A picklable ``store_wrapper`` (module-level class)."""

    def __init__(self, gate_dir: str):
        self.gate_dir = gate_dir

    def __call__(self, store):
        return _KillParentStore(store, self.gate_dir)


def _open_and_hang(root: str, gate_dir: str, extra: dict) -> None:
    db = open_db(root, store_wrapper=_KillParentAtFirstWrite(gate_dir), **extra)
    db.close()  # not reached: the flusher kills this process during open


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_user_killed_during_open_orphan_never_fences_successor(tmp_path, request, backend):
    if backend == "s3":
        root, extra = s3_url(request.getfixturevalue("s3_bucket")), s3_opts(request.getfixturevalue("moto_server"))
    else:
        root, extra = str(tmp_path / "db"), {}
    with open_db(root, **extra) as db:  # an existing database: the orphan's open would bump the epoch
        db.put(b"before", b"1")
    gate = tmp_path / "gate"
    gate.mkdir()
    p = SPAWN.Process(target=_open_and_hang, args=(root, str(gate), extra))
    p.start()
    try:
        p.join(60)
        assert not p.is_alive(), "the flusher never made its first store write"
        assert p.exitcode == -signal.SIGKILL
    finally:
        reap([p], 10)
    orphan = int((gate / "flusher.pid").read_text())
    try:
        with open_db(root, **extra) as db:  # the healthy successor
            (gate / "go").write_text("")  # the orphan may now try its write
            for i in range(20):
                db.put(b"s%03d" % i, b"x")
            assert wait_gone(orphan, 10), "the orphaned flusher outlived its parent"
            for i in range(20, 40):
                db.put(b"s%03d" % i, b"x")
            db.flush(memtable=True)  # a manifest update: sees any newer epoch
            assert db.get(b"before") == b"1"
            assert len([k for k in scan_all(db) if k.startswith(b"s")]) == 40
        assert _ctl_dirs_of(p.pid) == []
    finally:
        kill(orphan)
    # (the conftest fixture fails the test if the orphan left shared memory)


def _idle_then_exit(root: str, conn) -> None:
    db = open_db(root)
    conn.send(db.status()["pid"])
    conn.recv()  # the test says when
    os._exit(0)  # no close: the flusher is orphaned in its steady state


def test_orphaned_flusher_exits_without_writing(tmp_path):
    root = str(tmp_path / "db")
    parent, child = SPAWN.Pipe()
    p = SPAWN.Process(target=_idle_then_exit, args=(root, child))
    p.start()
    try:
        assert parent.poll(60)
        flusher = parent.recv()
        before = sorted(os.listdir(os.path.join(root, "wal"))), sorted(os.listdir(os.path.join(root, "manifest")))
        parent.send("exit")
        p.join(30)
    finally:
        reap([p], 10)
    try:
        assert wait_gone(flusher, 10)
        after = sorted(os.listdir(os.path.join(root, "wal"))), sorted(os.listdir(os.path.join(root, "manifest")))
        assert after == before
        assert _ctl_dirs_of(p.pid) == []
    finally:
        kill(flusher)


# ---------------------------------------------------------------- item 4


def test_close_after_flusher_killed_never_loses_silently(tmp_path):
    root = str(tmp_path / "db")
    # no background upload: the 100 writes sit only in shared memory
    db = open_db(root, flush_interval=30.0)
    keys = [b"k%03d" % i for i in range(100)]
    db.put_many(keys, [b"v"] * 100, await_durable=False)
    pid = db.status()["pid"]
    kill(pid)
    assert wait_gone(pid, 10)
    with pytest.raises(shaledb.Unavailable, match="flusher"):
        db.close()
    db.close()  # idempotent once closed
    with open_db(root) as db2:
        found = scan_all(db2)
    assert set(found) <= set(keys)  # what was lost was reported by close()


def test_close_after_flusher_killed_returns_when_all_durable(tmp_path):
    root = str(tmp_path / "db")
    db = open_db(root, flush_interval=30.0)
    keys = [b"k%03d" % i for i in range(100)]
    db.put_many(keys, [b"v"] * 100, await_durable=False)
    db.flush()
    pid = db.status()["pid"]
    kill(pid)
    assert wait_gone(pid, 10)
    with pytest.raises(shaledb.Unavailable, match="flusher"):
        db.flush()
    assert db.close() is None
    with open_db(root) as db2:
        assert sorted(scan_all(db2)) == keys


# ---------------------------------------------------------------- item 5


def test_every_call_after_close_raises_closed(tmp_path):
    db = open_db(str(tmp_path / "db"))
    db.put(b"a", b"1")
    db.close()
    batch = shaledb.WriteBatch()
    batch.put(b"b", b"2")
    calls = {
        "flush": lambda: db.flush(),
        "flush(memtable=True)": lambda: db.flush(memtable=True),
        "put": lambda: db.put(b"a", b"2"),
        "put(await_durable=False)": lambda: db.put(b"a", b"2", await_durable=False),
        "delete": lambda: db.delete(b"a"),
        "write": lambda: db.write(batch),
        "put_many": lambda: db.put_many([b"c"], [b"3"]),
        "get": lambda: db.get(b"a"),
        "scan": lambda: list(db.scan()),
        "writer": lambda: db.writer(),
        "status": lambda: db.status(),
        "compact": lambda: db.compact(),
        "compact(full=True)": lambda: db.compact(full=True),
        "gc": lambda: db.gc(),
        "gc(dry_run=True)": lambda: db.gc(dry_run=True),
    }
    for name, call in calls.items():
        with pytest.raises(shaledb.Closed):
            call()
            pytest.fail(f"{name} after close did not raise")


# ---------------------------------------------------------------- item 7


class _FullDiskStore(StoreWrapper):
    """WAL objects with records fail as on a full disk (fences still land)."""

    def __reduce__(self):
        return (_FullDiskStore, (self.inner,))

    def _check(self, key, data) -> None:
        if key.startswith("wal/") and len(data) > 0:
            raise shaledb.StorageError(f"cannot write {key}: [Errno 28] No space left on device")

    def put(self, key, data, *a, **k):
        self._check(key, data)
        return self.inner.put(key, data, *a, **k)

    def put_if_absent(self, key, data, *a, **k):
        self._check(key, data)
        return self.inner.put_if_absent(key, data, *a, **k)


def test_full_disk_fails_durable_calls_at_once(tmp_path):
    db = open_db(str(tmp_path / "db"), store_wrapper=_FullDiskStore, request_timeout=60.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(shaledb.StorageError, match="No space left on device"):
            db.put(b"k", b"v")
        assert time.monotonic() - t0 < 20  # not the 60 s request_timeout
        assert "No space left on device" in db.status()["failed"]
        with pytest.raises(shaledb.StorageError, match="No space left on device"):
            db.flush()
        with pytest.raises(shaledb.StorageError, match="No space left on device"):
            db.put(b"k2", b"v", await_durable=False)  # nothing more can become durable
    finally:
        with pytest.raises(shaledb.StorageError, match="No space left on device"):
            db.close()


# ---------------------------------------------------------------- item 8


def test_unpicklable_store_wrapper_is_invalid_argument(tmp_path):
    with pytest.raises(shaledb.InvalidArgument, match="picklable"):
        shaledb.open(str(tmp_path / "db"), store_wrapper=lambda s: s)
    with pytest.raises(shaledb.InvalidArgument, match="module-level"):
        shaledb.Options(store_wrapper=lambda s: s)


def test_root_with_nul_byte_is_invalid_argument(tmp_path):
    with pytest.raises(shaledb.InvalidArgument, match="NUL"):
        shaledb.open(str(tmp_path) + "/d\x00b")


# ---------------------------------------------------------------- item 9 (part)


def test_open_removes_control_dirs_of_dead_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(30)
    base = tempfile.gettempdir()
    stale = os.path.join(base, f"shaledb-ctl-{dead.pid}-testxyz")
    live = os.path.join(base, f"shaledb-ctl-{os.getpid()}-testxyz")
    os.makedirs(stale)
    os.makedirs(live)
    try:
        with open_db(str(tmp_path / "db")) as db:
            db.put(b"k", b"v")
            assert not os.path.exists(stale)
            assert os.path.isdir(live)  # its owner (this process) lives
            assert len(_ctl_dirs_of(os.getpid())) == 2  # this Db's own, and `live`
        assert _ctl_dirs_of(os.getpid()) == ["shaledb-ctl-%d-testxyz" % os.getpid()]
    finally:
        for d in (stale, live):
            if os.path.isdir(d):
                os.rmdir(d)


def test_db_opened_from_a_thread_that_ends_keeps_its_flusher(tmp_path):
    """The parent-death signal fires when the opening *thread* exits; the
    flusher must tell that apart from the death of the process."""
    import threading

    box = {}
    t = threading.Thread(target=lambda: box.setdefault("db", open_db(str(tmp_path / "db"))))
    t.start()
    t.join(120)
    db = box["db"]
    try:
        pid = db.status()["pid"]
        db.put(b"k", b"v")  # durable: the flusher uploads the WAL
        assert db.status()["pid"] == pid
        db.flush(memtable=True)
    finally:
        db.close()
    with open_db(str(tmp_path / "db")) as db2:
        assert db2.get(b"k") == b"v"


@pytest.mark.parametrize("point", ["open-before-fence", "open-before-replay"])
def test_flusher_killed_during_open_fails_open_cleanly(tmp_path, point):
    root = str(tmp_path / "db")
    with open_db(root) as db:
        db.put(b"a", b"1", await_durable=False)
        db.flush()  # in the WAL only: the next open replays it
    with pytest.raises(shaledb.Unavailable, match="exited during open"):
        open_db(root, failpoints=f"{point}=kill")
    assert _ctl_dirs_of(os.getpid()) == []
    with open_db(root) as db:
        assert db.get(b"a") == b"1"


# ------------------------------------------- a temporary directory too deep


def test_open_with_a_temporary_directory_too_deep_for_a_socket(tmp_path, monkeypatch):
    """The control sockets live in the temporary directory; when a socket
    path there would not fit a Unix socket address (108 bytes), they go to
    /tmp instead of failing the open with "AF_UNIX path too long"."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(deep))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    assert tempfile.gettempdir() == str(deep)
    from shaledb.ipc.control import control_base

    assert control_base() == "/tmp"
    with open_db(str(tmp_path / "db")) as db:
        db.put(b"k", b"v")
        db.flush()
        assert db.get(b"k") == b"v"
        assert [n for n in os.listdir("/tmp") if n.startswith(f"shaledb-ctl-{os.getpid()}-")]
    assert not [n for n in os.listdir("/tmp") if n.startswith(f"shaledb-ctl-{os.getpid()}-")]
