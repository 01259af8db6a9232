"""The engine end to end on one process: the public API against a dict."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import shaledb
from engine_util import SPAWN, memory_url, open_db, reap, scan_all


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    return str(tmp_path / "db") if request.param == "local" else memory_url()


def test_import_shaledb_is_light():
    code = "import sys, shaledb; shaledb.Options; print(sorted(m for m in ('numpy','numba','boto3') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    assert shaledb.__all__ == sorted(shaledb.__all__)
    assert set(shaledb.__all__) == {
        "Closed", "Conflict", "Corruption", "Db", "Fenced", "Internal", "InvalidArgument", "ObjectNotFound",
        "Options", "PreconditionFailed", "ShaleDBError", "StorageError", "Unavailable", "WriteBatch", "Writer",
        "__version__", "open",
        "DbReader", "Snapshot", "checkpoints", "clone", "open_reader",  # readers (docs/readers.md)
    }
    for name in shaledb.__all__:
        assert getattr(shaledb, name) is not None


def test_roundtrip_flush_and_reopen(root):
    model = {}
    with open_db(root) as db:
        assert db.get(b"missing") is None
        s1 = db.put(b"a", b"1")
        db.put(b"b", b"2", await_durable=False)  # may be buffered (returns None)
        assert db.put(b"b2", b"x") > s1
        db.delete(b"b2")
        model.update({b"a": b"1", b"b": b"2"})
        db.delete(b"a")
        del model[b"a"]
        batch = shaledb.WriteBatch().put(b"c", b"3").put(b"d", b"").delete(b"b")
        db.write(batch)
        model.update({b"c": b"3", b"d": b""})
        del model[b"b"]
        keys = [b"k%06d" % i for i in range(3000)]
        vals = [os.urandom(i % 50) for i in range(3000)]
        db.put_many(keys, vals, await_durable=False)
        model.update(zip(keys, vals))
        # numpy (data, offsets) pairs
        kd = np.frombuffer(b"".join(b"n%04d" % i for i in range(100)), np.uint8)
        ko = np.arange(0, 501, 5, dtype=np.int64)
        vd = np.frombuffer(b"v" * 100, np.uint8)
        vo = np.arange(0, 101, dtype=np.int64)
        db.put_many((kd, ko), (vd, vo))
        model.update({b"n%04d" % i: b"v" for i in range(100)})
        for k in (b"a", b"b", b"c", b"d", b"k000007", b"n0042"):
            assert db.get(k) == model.get(k)
        assert scan_all(db) == model
        db.flush()
        db.flush(memtable=True)
        db.put(b"k000001", b"newer")  # arena version shadows the L0 one
        model[b"k000001"] = b"newer"
        db.delete(b"k000002")  # tombstone in the arena hides the L0 version
        del model[b"k000002"]
        assert db.get(b"k000001") == b"newer" and db.get(b"k000002") is None
        assert scan_all(db) == model
        got = list(db.scan(b"k000010", b"k000013"))
        assert got == [(k, model[k]) for k in (b"k000010", b"k000011", b"k000012")]
        assert list(db.scan(b"z")) == [] and list(db.scan(end=b"a")) == []
    with pytest.raises(shaledb.Closed):
        db.get(b"a")
    with pytest.raises(shaledb.Closed):
        db.put(b"a", b"1")
    db.close()  # idempotent
    with open_db(root) as db:
        assert scan_all(db) == model
        assert db.get(b"k000001") == b"newer"


def test_many_generations_and_ssts(tmp_path):
    root = str(tmp_path / "db")
    model = {}
    with open_db(root, arena_bytes=256 << 10, l0_sst_bytes=64 << 10, max_unflushed_bytes=1 << 20) as db:
        for r in range(6):
            keys = [b"key-%03d-%05d" % (r % 3, i) for i in range(2000)]
            vals = [b"%d" % r] * len(keys)
            db.put_many(keys, vals, await_durable=False)
            model.update(zip(keys, vals))
            if r % 2:
                db.flush(memtable=True)
        st = db.status()
        assert st["l0_flushes"] >= 3 and st["l0"] >= 3
        assert db.get(b"key-001-01999") == model[b"key-001-01999"]
        assert scan_all(db) == model
    with open_db(root) as db:
        assert scan_all(db) == model


def test_wal_off_bulk_load(tmp_path):
    root = str(tmp_path / "db")
    with open_db(root, wal=False) as db:
        db.put_many([b"%05d" % i for i in range(5000)], [b"x"] * 5000, await_durable=False)
        db.flush()
        from shaledb.storage import open_store

        with open_store(root) as store:
            assert [m.size for m in store.list("wal/")] == [0]  # only our fence: no WAL data
    with open_db(root) as db:
        assert len(scan_all(db)) == 5000


def _child_writes(handle, prefix: bytes, n: int) -> None:
    with handle as w:
        for i in range(0, n, 100):
            w.put_many([prefix + b"%06d" % j for j in range(i, i + 100)], [prefix] * 100, await_durable=False)
        w.put(prefix + b"last", b"done")  # durable
        w.flush()


def test_writer_handles_in_other_processes(tmp_path):
    root = str(tmp_path / "db")
    with open_db(root) as db:
        h = db.writer()
        assert pickle.loads(pickle.dumps(h)) is not None
        procs = [SPAWN.Process(target=_child_writes, args=(db.writer(), b"w%d-" % i, 2000)) for i in range(2)]
        try:
            for p in procs:
                p.start()
        finally:
            reap(procs, 120)
        assert [p.exitcode for p in procs] == [0, 0]
        assert db.get(b"w1-last") == b"done"
        assert db.get(b"w0-001999") == b"w0-"
        assert len(scan_all(db)) == 4002


def test_bad_input(tmp_path):
    root = memory_url()
    with open_db(root) as db:
        for bad in (b"", "str", None, 5, b"x" * (64 * 1024 + 1)):
            with pytest.raises(shaledb.InvalidArgument):
                db.put(bad, b"v")
            with pytest.raises(shaledb.InvalidArgument):
                db.get(bad)
        with pytest.raises(shaledb.InvalidArgument):
            db.put(b"k", "not bytes")
        with pytest.raises(shaledb.InvalidArgument):
            db.put_many([b"a", b"b"], [b"1"])
        with pytest.raises(shaledb.InvalidArgument):
            db.put_many([b"a", b""], [b"1", b"2"])
        with pytest.raises(shaledb.InvalidArgument):
            db.put_many(b"ab", [b"1"])
        with pytest.raises(shaledb.InvalidArgument):
            db.write([(b"k", b"v")])
        with pytest.raises(shaledb.InvalidArgument):
            db.write(shaledb.WriteBatch())
        with pytest.raises(shaledb.InvalidArgument):
            db.scan(start="a")
        with pytest.raises(shaledb.InvalidArgument):
            db.flush(memtable="yes")
        with pytest.raises(shaledb.InvalidArgument):  # an atomic batch larger than an arena
            db.write(shaledb.WriteBatch().put(b"huge", b"x" * (2 << 20)).put(b"k", b"v"))
        assert scan_all(db) == {}  # nothing was written
    with pytest.raises(shaledb.InvalidArgument):
        shaledb.open(root, no_such_option=1)
    with pytest.raises(shaledb.InvalidArgument):
        shaledb.open(root, options="fast")
    with pytest.raises(shaledb.InvalidArgument):
        shaledb.open(b"/tmp/x")
    with pytest.raises(shaledb.InvalidArgument):
        shaledb.open("")


def test_bad_roots(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"hello")
    with pytest.raises(shaledb.InvalidArgument):
        shaledb.open(str(not_a_dir))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_bytes(b"a,b\n")
    with pytest.raises((shaledb.InvalidArgument, shaledb.Corruption), match="ShaleDB"):
        open_db(str(foreign))
    assert not {"manifest", "wal", "compacted"} & set(os.listdir(foreign))  # nothing written
    # an unreadable manifest: Corruption naming the object
    root = tmp_path / "db"
    with open_db(str(root)) as db:
        db.put(b"k", b"v")
    mdir = root / "manifest"
    newest = sorted(os.listdir(mdir))[-1]
    (mdir / newest).write_bytes(b"garbage")
    with pytest.raises(shaledb.Corruption, match="manifest"):
        open_db(str(root))


def test_open_from_a_script_without_main_guard(tmp_path):
    # The flusher never re-imports the user's __main__: code fed on stdin (or a
    # script without an ``if __name__ == "__main__"`` guard) can open databases.
    root = str(tmp_path / "db")
    code = (
        "import shaledb\n"
        f"db = shaledb.open({root!r})\n"
        "db.put(b'k', b'v')\n"
        "db.close()\n"
        f"db = shaledb.open({root!r})\n"
        "print(db.get(b'k'))\n"
        "db.close()\n"
    )
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "b'v'"
