"""Stress: a randomized workload, a killer, and an expected state kept outside the database.

``python -m bench.stress --duration 120 --seed 1``            (a local directory)
``python -m bench.stress --moto --duration 120``               (a moto S3 server on loopback)
``python -m bench.stress --url s3://bucket/prefix --duration 600``  (your own bucket)

Each iteration, every random choice drawn from ``(seed, iteration)``:

1. A *user process* opens the database (small arenas and SSTs, the
   compactor on, GC every second with ``gc_min_age=0``, optionally a
   failpoint that kills the flusher or compactor, optionally a store
   wrapped in the fault-injecting store) and starts writer processes
   (``db.writer()``) and a reader process (``shaledb.open_reader``).  Each
   writing process owns a slice of the key space and runs puts, deletes,
   write batches and put_many, with and without ``await_durable``, plus
   flushes; the user process also flushes the memtable, compacts, runs GC,
   creates checkpoints, takes snapshots (checked after more writes) and
   ingests bulk loads (``SstWriter`` + ``db.ingest``).
2. The killer SIGKILLs one of them (the user process, the flusher, the
   compactor, a writer, the reader) after a seeded delay, or lets a
   failpoint kill, or lets the iteration end with a clean close.
3. A fresh process reopens the database and verifies every key against the
   expected state, every live checkpoint's contents through a reader
   pinned to it, and a following reader against the reopened database.

Expected state (RocksDB's db_stress approach): two file-backed int64
arrays shared by every process, ``issued[k]`` (the newest version of key
``k`` handed to the engine: the in-flight marker, written before the call)
and ``durable[k]`` (the newest version acknowledged durable: written after
an ``await_durable`` call or a ``flush()`` returned).  A key must read back
as a version in ``[durable[k], issued[k]]``: below is *lost*, above is
*phantom*, a value that is no version of that key is *wrong*.  Version
``v`` of a key is a delete when ``v % 5 == 0``; the value of a put is a
function of (key, version).  Each key belongs to one process, so versions
of a key are ordered.

Reported: iterations, operations, crashes by kind, faults injected, keys
verified, lost, wrong, phantom, hangs, leaked shared memory (and orphans,
raw errors).  Exit status 1 on any loss or other failure; a failure prints
the seed and iteration (``--seed S --start I --iterations 1`` replays its
plan).  Reuses the process machinery of bench/crashloop.py.  docs/testing.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np

from bench.crashloop import (
    _alive,
    _child_env,
    _kill,
    _Log,
    _marked_pids,
    _read_lines,
    _Tail,
    _wait_marked_gone,
)

__all__ = ["KILLS", "StressConfig", "allowed", "main", "run", "value_of"]

#: what the killer may do in an iteration
KILLS = ("none", "user", "flusher", "compactor", "writer", "reader", "failpoint")
#: failpoints armed with ``kill`` (in the flusher or the compactor service)
FAILPOINTS = (
    "after-wal-upload",
    "after-sst-upload",
    "after-manifest",
    "open-before-replay",
    "compact-mid-merge",
    "compact-after-upload",
    "compact-after-manifest",
    "gc-mid-delete",
    "ingest-before-commit",
    "ingest-after-commit",
)
CHECKS = ("lost", "wrong", "phantom", "hung", "leaked_shm", "orphans", "raw_errors", "verify_failed", "checkpoint_wrong",
          "reader_wrong", "snapshot_wrong")

ENGINE_OPTIONS = dict(
    arena_bytes=1 << 18,
    l0_sst_bytes=1 << 16,
    max_unflushed_bytes=4 << 20,
    flush_interval=0.02,
    request_timeout=30.0,
    open_timeout=40.0,
    close_timeout=40.0,
    gc_interval=1.0,
    gc_min_age=0.0,
    l0_compaction_threshold=3,
    compaction_interval=0.2,
    compaction_workers=1,
    sst_target_bytes=1 << 16,
)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def key_of(k: int) -> bytes:
    return b"key%07d" % k


def is_delete(v: int) -> bool:
    return v > 0 and v % 5 == 0


def value_of(k: int, v: int) -> bytes:
    """The value of version ``v`` (a put) of key ``k``: self-describing, 20..~300 bytes."""
    head = b"%d.%d." % (k, v)
    return head + bytes([97 + (k * 31 + v) % 26]) * ((k * 7 + v * 13) % 280)


def parse_value(k: int, val: bytes) -> int | None:
    """The version a value says it is, or None if it is no value of key ``k``."""
    try:
        ks, vs, _rest = val.split(b".", 2)
        kk, v = int(ks), int(vs)
    except ValueError:
        return None
    if kk != k or val != value_of(k, v) or is_delete(v):
        return None
    return v


def allowed(k: int, got: bytes | None, lo: int, hi: int) -> str | None:
    """Check one key: None if ``got`` is a state the key may be in, else
    ``"lost"``, ``"phantom"`` or ``"wrong"``."""
    if got is None:
        if lo == 0 or is_delete(lo) or any(is_delete(v) for v in range(lo + 1, hi + 1)):
            return None
        return "lost"
    v = parse_value(k, got)
    if v is None:
        return "wrong"
    if v < lo:
        return "lost"
    if v > hi:
        return "phantom"
    return None


class State:
    """The expected state: ``issued`` and ``durable`` int64 arrays in files."""

    def __init__(self, path: str, nkeys: int, create: bool = False):
        mode = "w+" if create else "r+"
        self.issued = np.lib.format.open_memmap(path + ".issued.npy", mode=mode, dtype=np.int64, shape=(nkeys,) if create else None)
        self.durable = np.lib.format.open_memmap(path + ".durable.npy", mode=mode, dtype=np.int64, shape=(nkeys,) if create else None)

    def flush(self) -> None:
        self.issued.flush()
        self.durable.flush()


# ------------------------------------------------------------ child processes


class _Ops:
    """The writes of one process over its key slice ``[lo, hi)``."""

    def __init__(self, target, state: State, lo: int, hi: int, rng: random.Random, log: _Log):
        self.t = target
        self.s = state
        self.lo, self.hi = lo, hi
        self.rng = rng
        self.log = log
        self.maybe: dict[int, int] = {}  # acked, not yet durable: key -> version
        self.n = 0

    def _next(self, k: int, put_only: bool = False) -> int:
        v = int(self.s.issued[k]) + 1
        if put_only and is_delete(v):
            v += 1
        self.s.issued[k] = v  # the in-flight marker, before the engine sees it
        return v

    def _done(self, kv: dict[int, int], durable: bool) -> None:
        self.n += 1
        if durable:
            self.maybe.update(kv)
            self._promote()
        else:
            self.maybe.update(kv)

    def _promote(self) -> None:
        for k, v in self.maybe.items():
            if v > self.s.durable[k]:
                self.s.durable[k] = v
        self.maybe.clear()

    def keys(self, n: int) -> list[int]:
        return self.rng.sample(range(self.lo, self.hi), min(n, self.hi - self.lo))

    def step(self) -> str:
        import shaledb

        r = self.rng.random()
        durable = self.rng.random() < 0.5
        if r < 0.4:
            (k,) = self.keys(1)
            v = self._next(k)
            if is_delete(v):
                self.t.delete(key_of(k), await_durable=durable)
            else:
                self.t.put(key_of(k), value_of(k, v), await_durable=durable)
            self._done({k: v}, durable)
            return "delete" if is_delete(v) else "put"
        if r < 0.6:
            b = shaledb.WriteBatch()
            kv = {}
            for k in self.keys(self.rng.randint(2, 8)):
                v = self._next(k)
                kv[k] = v
                if is_delete(v):
                    b.delete(key_of(k))
                else:
                    b.put(key_of(k), value_of(k, v))
            self.t.write(b, await_durable=durable)
            self._done(kv, durable)
            return "write_batch"
        if r < 0.85:
            ks = self.keys(self.rng.randint(2, 48))
            kv = {k: self._next(k, put_only=True) for k in ks}
            self.t.put_many([key_of(k) for k in ks], [value_of(k, kv[k]) for k in ks], await_durable=durable)
            self._done(kv, durable)
            return "put_many"
        self.t.flush()
        self._promote()
        self.n += 1
        return "flush"


def _writer_main(handle, cfg: dict) -> None:
    log = _Log(cfg["log"])
    log.event("P", "writer", os.getpid())
    state = State(cfg["state"], cfg["nkeys"])
    ops = _Ops(handle, state, cfg["lo"], cfg["hi"], random.Random(cfg["rng"]), log)
    try:
        for _ in range(cfg["ops"]):
            ops.step()
            if ops.n % 20 == 0:
                log.event("K", ops.n)
    except BaseException as exc:  # noqa: BLE001 - every outcome is logged
        log.error("write", exc)
    log.event("K", ops.n)
    try:
        handle.close()
    except BaseException as exc:  # noqa: BLE001
        log.error("close", exc)


def _reader_main(cfg: dict) -> int:
    """Follows the database and checks every value it reads (no phantom, no wrong)."""
    import shaledb

    log = _Log(cfg["log"])
    log.event("P", "reader", os.getpid())
    state = State(cfg["state"], cfg["nkeys"])
    rng = random.Random(cfg["rng"])
    deadline = time.monotonic() + cfg["seconds"]
    try:
        r = shaledb.open_reader(cfg["root"], poll_interval=0.2, **cfg["reader_opts"])
    except BaseException as exc:  # noqa: BLE001
        log.error("open", exc)
        return 0
    n = 0
    try:
        while time.monotonic() < deadline and not os.path.exists(cfg["stop"]):
            for k in rng.sample(range(cfg["nkeys"]), 16):
                got = r.get(key_of(k))
                hi = int(state.issued[k])  # read after the get: the value cannot be newer
                bad = allowed(k, got, 0, hi)
                if bad in ("phantom", "wrong"):
                    log.event("B", k, bad, (got or b"")[:40].decode("latin-1"), hi)
                n += 1
            time.sleep(0.02)
    except BaseException as exc:  # noqa: BLE001
        log.error("read", exc)
    log.event("K", n)
    try:
        r.close()
    except BaseException as exc:  # noqa: BLE001
        log.error("close", exc)
    return 0


def _user_main(cfg: dict) -> int:
    import multiprocessing

    import shaledb

    log = _Log(cfg["log"])
    log.event("P", "user", os.getpid())
    rng = random.Random(cfg["rng"])
    state = State(cfg["state"], cfg["nkeys"])
    opts = dict(cfg["opts"])
    if cfg.get("faults"):
        from bench.stress import FaultWrapper as picklable  # not __main__'s copy: other processes unpickle it

        opts["store_wrapper"] = picklable(cfg["faults"], cfg["rng"], cfg["fault_log"])
    try:
        db = shaledb.open(cfg["root"], **opts)
    except BaseException as exc:  # noqa: BLE001
        log.error("open", exc)
        return 0
    log.event("O")
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for i, wcfg in enumerate(cfg["writers"]):
        try:
            p = ctx.Process(target=_writer_main, args=(db.writer(), wcfg), daemon=False)
            p.start()
        except BaseException as exc:  # noqa: BLE001
            log.error(f"start-writer-{i}", exc)
            continue
        procs.append(p)
    ops = _Ops(db, state, cfg["lo"], cfg["hi"], rng, log)
    cps = []
    try:
        for i in range(cfg["ops"]):
            r = rng.random()
            if r < 0.03:
                db.flush(memtable=True)
                ops._promote()
            elif r < 0.05:
                db.compact()
                log.event("A", "compact")
            elif r < 0.06:
                db.gc()
                log.event("A", "gc")
            elif r < 0.075:
                log.event("X", "checkpoint")
                _checkpoint(db, ops, state, cfg, cps)
                log.event("A", "checkpoint")
            elif r < 0.085:
                _ingest(db, ops, cfg, opts, rng)
                log.event("A", "ingest")
            elif r < 0.095:
                log.event("X", "snapshot")
                _snapshot(db, ops, state, rng, log)
                log.event("A", "snapshot")
            else:
                ops.step()
            if i % 20 == 0:
                log.event("K", ops.n)
    except BaseException as exc:  # noqa: BLE001
        log.error("write", exc)
    log.event("K", ops.n)
    deadline = time.monotonic() + cfg["join_timeout"]
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            log.event("H", "writer")
            p.kill()
            p.join(10)
    log.event("C")
    try:
        db.close()
    except BaseException as exc:  # noqa: BLE001
        log.error("close", exc)
        log.event("R", "error")
        return 0
    # a clean close makes every acknowledged write durable
    ops._promote()
    log.event("R", "ok")
    return 0


def _ingest(db, ops: "_Ops", cfg: dict, opts: dict, rng: random.Random) -> None:
    """A bulk load of a few keys of this process's slice (``SstWriter`` then
    ``db.ingest``): durable, and newer than every earlier write, once it returns."""
    from shaledb.bulk import SstWriter

    ks = sorted(ops.keys(rng.randint(5, 60)))
    kv = {k: ops._next(k, put_only=True) for k in ks}
    w = SstWriter(cfg["root"], store_options=dict(opts.get("store_options") or {}), memory_bytes=1 << 16,
                  sst_target_bytes=1 << 13)
    try:
        w.add([key_of(k) for k in ks], [value_of(k, kv[k]) for k in ks])
        descs = w.finish()
    except BaseException:
        w.abort()
        raise
    db.ingest(descs)
    ops._done(kv, True)


def _checkpoint(db, ops: "_Ops", state: State, cfg: dict, cps: list) -> None:
    """``db.create_checkpoint()``, then record what it must hold in the
    checkpoints file: every write of this process before the call, so a key
    it wrote is at exactly its issued version (promoted: durable == issued),
    and a key it did not write since the last verify is somewhere in
    ``[durable, issued]``.  Promoted only once the call returned: it is the
    checkpoint's memtable flush that makes the earlier writes durable, and a
    kill during it must not leave them marked durable."""
    cp = db.create_checkpoint(lifetime=3600, name="stress")
    ops._promote()
    snap = {k: [int(state.durable[k]), int(state.issued[k])] for k in range(cfg["lo"], cfg["hi"])}
    cps.append({"id": cp.id, "keys": snap})
    with open(cfg["checkpoints"] + ".tmp", "w") as f:
        json.dump(cps, f)
    os.replace(cfg["checkpoints"] + ".tmp", cfg["checkpoints"])


def _snapshot(db, ops: "_Ops", state: State, rng: random.Random, log: _Log) -> None:
    """``db.snapshot()``, then more writes, then the snapshot must still show
    what this process had written before it (S lines on a mismatch)."""
    snap = db.snapshot()  # its memtable flush makes this process's earlier writes durable
    ops._promote()  # not before: a kill during the flush must not leave them marked durable
    ks = ops.keys(16)
    exp = {k: (int(state.durable[k]), int(state.issued[k])) for k in ks}
    try:
        for _ in range(rng.randint(1, 6)):
            ops.step()
        for k, (lo, hi) in exp.items():
            got = snap.get(key_of(k))
            why = allowed(k, got, lo, hi)
            if why:
                log.event("S", k, why, (got or b"")[:40].decode("latin-1"), lo, hi)
    finally:
        snap.close()


def _verify_main(cfg: dict, out_path: str) -> int:
    """Reopen, check every key, every live checkpoint and a following reader."""
    import shaledb

    res = {"open": None, "counts": {c: 0 for c in ("lost", "wrong", "phantom", "checkpoint_wrong", "reader_wrong")},
           "examples": [], "verified": 0, "checkpoints": 0, "raw": [], "close": None}
    state = State(cfg["state"], cfg["nkeys"])

    def bad(kind, detail):
        res["counts"][kind] += 1
        if len(res["examples"]) < 10:
            res["examples"].append(f"{kind}: {detail}")

    try:
        db = shaledb.open(cfg["root"], **cfg["opts"])
    except BaseException as exc:  # noqa: BLE001
        res["open"] = f"{type(exc).__name__}: {exc}"
        with open(out_path, "w") as f:
            json.dump(res, f)
        return 0
    res["open"] = "ok"
    try:
        keys = [key_of(k) for k in range(cfg["nkeys"])]
        got = db.get_many(keys)
        for k, g in enumerate(got):
            lo, hi = int(state.durable[k]), int(state.issued[k])
            why = allowed(k, None if g is None else bytes(g), lo, hi)
            if why:
                bad(why, f"key {k}: read {None if g is None else bytes(g)[:30]!r}, expected a version in [{lo}, {hi}]")
            res["verified"] += 1
            # what the database now holds is the new baseline
            v = 0 if g is None else parse_value(k, bytes(g))
            if v is None:  # absent: the newest delete (or nothing) in range
                dels = [x for x in range(lo, hi + 1) if x == 0 or is_delete(x)]
                v = dels[-1] if dels else lo
            state.durable[k] = v
            state.issued[k] = max(int(state.issued[k]), v)
        state.flush()
        # checkpoints: exactly what the writer had made before creating them
        try:
            with open(cfg["checkpoints"]) as f:
                cps = json.load(f)
        except (OSError, ValueError):
            cps = []
        for cp in cps:
            try:
                rd = shaledb.open_reader(cfg["root"], checkpoint=cp["id"], **cfg["reader_opts"])
            except shaledb.InvalidArgument as exc:
                bad("checkpoint_wrong", f"checkpoint {cp['id']} cannot be opened: {exc}")
                continue
            try:
                for ks, (lo, hi) in cp["keys"].items():
                    k = int(ks)
                    g = rd.get(key_of(k))
                    if allowed(k, g, lo, hi):
                        bad("checkpoint_wrong", f"checkpoint {cp['id']} key {k}: {g[:30] if g else g!r}, expected a version in [{lo}, {hi}]")
                res["checkpoints"] += 1
            finally:
                rd.close()
        # a reader following the reopened database sees what it sees
        db.flush()
        rd = shaledb.open_reader(cfg["root"], **cfg["reader_opts"])
        try:
            for k in range(0, cfg["nkeys"], max(1, cfg["nkeys"] // 200)):
                a, b = db.get(key_of(k)), rd.get(key_of(k))
                if a != b:
                    bad("reader_wrong", f"key {k}: reader {b[:30] if b else b!r}, db {a[:30] if a else a!r}")
        finally:
            rd.close()
    except shaledb.ShaleDBError as exc:
        res["raw"].append(f"shaledb:{type(exc).__name__}: {exc}")
    except BaseException as exc:  # noqa: BLE001
        res["raw"].append(f"raw:{type(exc).__name__}: {exc}")
    try:
        db.close()
        res["close"] = "ok"
    except BaseException as exc:  # noqa: BLE001
        res["close"] = f"{type(exc).__name__}: {exc}"
    with open(out_path, "w") as f:
        json.dump(res, f)
    return 0


class FaultWrapper:
    """``Options.store_wrapper``: in every process of the database, each
    store operation fails (Unavailable) with probability ``p / 2`` before it
    reaches the store, and each write lands and then reports failure with
    probability ``p / 2``.  Each injected fault appends one byte to
    ``log_path`` (the driver counts them)."""

    def __init__(self, p: float, seed: int, log_path: str):
        self.p, self.seed, self.log_path = p, seed, log_path

    def __call__(self, store):
        from shaledb.storage.wrappers import FailRandomly, FaultyStore

        log_path = self.log_path

        class Counted(FailRandomly):
            def apply(self, op, key):
                try:
                    super().apply(op, key)
                except BaseException:
                    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    os.write(fd, b"f")
                    os.close(fd)
                    raise

        class LandThenFail(Counted):
            phase = "after"

        seed = self.seed ^ os.getpid()
        return FaultyStore(store, Counted(self.p / 2, "all", seed=seed), LandThenFail(self.p / 2, "write", seed=seed + 1))


# -------------------------------------------------------------- the driver


@dataclass
class StressConfig:
    url: str | None = None  # None: a local directory per run
    moto: bool = False
    endpoint: str | None = None
    duration: float = 60.0
    iterations: int = 0  # 0: as many as fit in duration
    start: int = 0
    seed: int = 0
    ops: int = 400  # operations per process per iteration
    processes: int = 2  # writer processes besides the user process
    keys: int = 2000
    faults: float = 0.0  # probability of a store fault per operation (0: off)
    kills: tuple = KILLS
    workdir: str | None = None
    iteration_timeout: float = 300.0  # the user process must finish within this (else: hung)
    quiet: bool = False
    compression: str | None = None  # Options.compression of every process (None: the default)


@dataclass
class IterationResult:
    index: int
    kill: str
    failpoint: str = ""
    killed: list = field(default_factory=list)
    ops: int = 0
    verified: int = 0
    checkpoints: int = 0
    faults: int = 0
    close: str = "-"
    actions: dict = field(default_factory=dict)  # compact / gc / checkpoint / ingest calls that returned
    errors: dict = field(default_factory=dict)  # errors the processes saw, by class
    failures: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())

    def fail(self, check: str, detail) -> None:
        self.failures.setdefault(check, []).append(str(detail)[:400])


def _spawn(mode: str, cfg_path: str, env: dict, extra=()) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.stress", "--child", mode, cfg_path, *extra],
        cwd=_REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _role_pids(tag: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for pid in _marked_pids(tag):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        role = "flusher" if b"shaledb.flush" in cmd else "compactor" if b"shaledb.compact" in cmd else None
        if role:
            out.setdefault(role, []).append(pid)
    return out


def _iteration(cfg: StressConfig, i: int, rundir: str, shm_base: str, root: str, opts: dict, reader_opts: dict) -> IterationResult:
    rng = random.Random(cfg.seed * 1_000_003 + i)
    kill = cfg.kills[rng.randrange(len(cfg.kills))]
    res = IterationResult(i, kill)
    itdir = os.path.join(rundir, f"it-{i:05d}")
    os.makedirs(itdir)
    shm = os.path.join(shm_base, f"it{i}")
    os.makedirs(shm, mode=0o700)
    tmp = tempfile.mkdtemp(prefix="shst-")
    tag = f"st{uuid.uuid4().hex[:10]}-{i}"
    o = dict(opts)
    if kill == "failpoint":
        res.failpoint = rng.choice(FAILPOINTS)
        o["failpoints"] = f"{res.failpoint}=kill@{rng.randint(1, 4)}"
    nproc = 1 + cfg.processes
    bounds = [cfg.keys * j // nproc for j in range(nproc + 1)]
    logs = {"user": os.path.join(itdir, "user.log"), "reader": os.path.join(itdir, "reader.log")}
    state_path = os.path.join(rundir, "state")
    fault_log = os.path.join(itdir, "faults")
    writers = []
    for w in range(cfg.processes):
        logs[f"w{w}"] = os.path.join(itdir, f"w{w}.log")
        writers.append({"log": logs[f"w{w}"], "rng": rng.getrandbits(32), "state": state_path, "nkeys": cfg.keys,
                        "lo": bounds[w + 1], "hi": bounds[w + 2], "ops": cfg.ops})
    ucfg = {"root": root, "opts": o, "log": logs["user"], "rng": rng.getrandbits(32), "state": state_path,
            "nkeys": cfg.keys, "lo": bounds[0], "hi": bounds[1], "ops": cfg.ops, "writers": writers,
            "join_timeout": cfg.iteration_timeout / 2, "checkpoints": os.path.join(rundir, "checkpoints.json"),
            "faults": cfg.faults, "fault_log": fault_log}
    rcfg = {"root": root, "log": logs["reader"], "rng": rng.getrandbits(32), "state": state_path, "nkeys": cfg.keys,
            "seconds": cfg.iteration_timeout / 2, "reader_opts": reader_opts, "stop": os.path.join(itdir, "stop")}
    for name, c in (("user", ucfg), ("reader", rcfg)):
        with open(os.path.join(itdir, f"{name}.json"), "w") as f:
            json.dump(c, f)
    env = _child_env(tag, shm, tmp)
    total_ops = cfg.ops * nproc
    threshold = rng.randint(1, max(2, int(0.8 * total_ops)))
    kill_writer = f"w{rng.randrange(cfg.processes)}" if cfg.processes else "user"
    tails = {n: _Tail(p) for n, p in logs.items()}
    pids: dict[str, int] = {}
    done_ops: dict[str, int] = {n: 0 for n in logs}
    user = _spawn("user", os.path.join(itdir, "user.json"), env)
    reader = None
    fired = kill in ("none", "failpoint")
    t0 = time.monotonic()
    try:
        while user.poll() is None and time.monotonic() - t0 < cfg.iteration_timeout:
            for name, t in tails.items():
                for ln in t.new_lines():
                    p = ln.split(" ")
                    if p[0] == "P":
                        pids[name] = int(p[2])
                    elif p[0] == "K":
                        done_ops[name] = int(p[1])
                    elif p[0] == "O" and reader is None:
                        reader = _spawn("reader", os.path.join(itdir, "reader.json"), env)
            if not fired and sum(v for n, v in done_ops.items() if n != "reader") >= threshold:
                fired = True
                if kill == "user":
                    victims = {"user": user.pid}
                elif kill == "writer":
                    victims = {kill_writer: pids.get(kill_writer)}
                elif kill == "reader":
                    victims = {"reader": pids.get("reader")}
                else:
                    victims = {kill: (_role_pids(tag).get(kill) or [None])[0]}
                for role, pid in victims.items():
                    if pid and _alive(pid):
                        _kill(pid)
                        res.killed.append(role)
            time.sleep(0.01)
        if user.poll() is None:
            res.fail("hung", f"user process still running after {cfg.iteration_timeout:g} s")
            _kill(user.pid)
        try:
            _, err = user.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            user.kill()
            _, err = user.communicate(timeout=10)
        if user.returncode not in (0, -signal.SIGKILL):
            res.fail("raw_errors", f"user exit {user.returncode}: {err.decode(errors='replace')[-300:]}")
        with open(rcfg["stop"], "w"):
            pass
        if reader is not None:
            try:
                reader.wait(timeout=60)
            except subprocess.TimeoutExpired:
                res.fail("hung", "reader process still running")
                reader.kill()
                reader.wait(10)
        orphans = _wait_marked_gone(tag, 20.0)
        if orphans:
            res.fail("orphans", f"{len(orphans)} processes outlived the user process")
        for name, path in logs.items():
            for ln in _read_lines(path):
                if ln.startswith("E ") and ln.split(" ")[2].startswith("raw:"):
                    res.fail("raw_errors", f"{name}: {ln}")
                elif ln.startswith("B "):
                    res.fail("reader_wrong", f"reader: {ln}")
                elif ln.startswith("S "):
                    res.fail("snapshot_wrong", f"{name}: {ln}")
                elif ln.startswith("H "):
                    res.fail("hung", f"{name}: {ln}")
                elif ln.startswith("R "):
                    res.close = ln[2:]
                elif ln.startswith("E "):
                    kind = ln.split(" ")[2]
                    res.errors[kind] = res.errors.get(kind, 0) + 1
                elif ln.startswith("A "):
                    res.actions[ln[2:]] = res.actions.get(ln[2:], 0) + 1
                elif ln.startswith("K ") and name != "reader":
                    done_ops[name] = int(ln.split(" ")[1])
        if "user" in res.killed:
            res.close = "killed"
        res.ops = sum(v for n, v in done_ops.items() if n != "reader")
        try:
            res.faults = os.path.getsize(fault_log)
        except OSError:
            pass
        # verify in a fresh process (no failpoints, no faults)
        vcfg = {"root": root, "opts": opts, "state": state_path, "nkeys": cfg.keys,
                "checkpoints": os.path.join(rundir, "checkpoints.json"), "reader_opts": reader_opts}
        vpath, vout = os.path.join(itdir, "verify.json"), os.path.join(itdir, "verify.out.json")
        with open(vpath, "w") as f:
            json.dump(vcfg, f)
        vtag = tag + "-v"
        ver = _spawn("verify", vpath, _child_env(vtag, shm, tmp), (vout,))
        try:
            _, verr = ver.communicate(timeout=cfg.iteration_timeout)
        except subprocess.TimeoutExpired:
            ver.kill()
            _, verr = ver.communicate(timeout=10)
            res.fail("hung", "verify process still running")
        _wait_marked_gone(vtag, 20.0)
        try:
            with open(vout) as f:
                v = json.load(f)
        except (OSError, ValueError):
            res.fail("verify_failed", f"no result (exit {ver.returncode}): {verr.decode(errors='replace')[-400:]}")
        else:
            if v["open"] != "ok":
                res.fail("verify_failed", f"reopen: {v['open']}")
            for kind, n in v["counts"].items():
                for ex in [e for e in v["examples"] if e.startswith(kind + ":")][:n] or ([f"{n} keys"] if n else []):
                    res.fail(kind, ex)
            for r in v["raw"]:
                res.fail("raw_errors" if r.startswith("raw:") else "verify_failed", r)
            if v["close"] not in ("ok", None):
                res.fail("verify_failed", f"close: {v['close']}")
            res.verified = v["verified"]
            res.checkpoints = v["checkpoints"]
        _wait_marked_gone(tag, 10.0)
        segs = sorted(n for n in os.listdir(shm) if n.startswith("shaledb-"))
        for n in segs:
            res.fail("leaked_shm", n)
    finally:
        for p in (user, reader):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
            if p is not None and p.stderr is not None:
                p.stderr.close()
        for pid in _marked_pids(tag) + _marked_pids(tag + "-v"):
            _kill(pid)
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if res.ok:
            shutil.rmtree(itdir, ignore_errors=True)
    return res


def run(cfg: StressConfig) -> dict:
    """Run iterations until ``duration`` (or ``iterations``); the summary dict."""
    for k in cfg.kills:
        if k not in KILLS:
            raise ValueError(f"unknown kill {k!r}; one of {KILLS}")
    if cfg.workdir:
        os.makedirs(cfg.workdir, exist_ok=True)
    rundir = tempfile.mkdtemp(prefix="shaledb-stress-", dir=cfg.workdir)
    shm_parent = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else rundir
    shm_base = tempfile.mkdtemp(prefix="shst-", dir=shm_parent)
    State(os.path.join(rundir, "state"), cfg.keys, create=True).flush()
    server = None
    results: list[IterationResult] = []
    t0 = time.monotonic()
    opts = dict(ENGINE_OPTIONS)
    reader_opts: dict = {}
    if cfg.compression:
        opts["compression"] = cfg.compression  # readers read each SST by its own codec
    try:
        if cfg.moto or cfg.endpoint:
            import boto3

            from shaledb.storage.testing import S3_TEST_CREDENTIALS, MotoServer

            for k, v in S3_TEST_CREDENTIALS.items():
                os.environ.setdefault(k, v)
            endpoint = cfg.endpoint
            if endpoint is None:
                server = MotoServer().start()
                endpoint = server.endpoint_url
            bucket = "stress-" + uuid.uuid4().hex[:12]
            boto3.client("s3", endpoint_url=endpoint, region_name=os.environ["AWS_DEFAULT_REGION"]).create_bucket(Bucket=bucket)
            root = f"s3://{bucket}/db"
            opts["store_options"] = reader_opts["store_options"] = {"endpoint_url": endpoint}
        elif cfg.url:
            root = cfg.url
        else:
            root = os.path.join(rundir, "db")
        i = cfg.start
        while True:
            if cfg.iterations and i >= cfg.start + cfg.iterations:
                break
            if not cfg.iterations and time.monotonic() - t0 >= cfg.duration:
                break
            r = _iteration(cfg, i, rundir, shm_base, root, opts, reader_opts)
            results.append(r)
            if not cfg.quiet:
                verdict = "ok" if r.ok else "FAIL " + "; ".join(f"{k}: {v[0]}" for k, v in r.failures.items() if v)
                end = "\n" if not r.ok or not sys.stdout.isatty() else "\r"
                print(f"[{i}] kill {r.kill:<9} {r.failpoint:<22} killed {','.join(r.killed) or '-':<10} "
                      f"close {r.close:<6} ops {r.ops:<5} verified {r.verified:<5} {verdict}"[:300], end=end, flush=True)
            i += 1
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(shm_base, ignore_errors=True)
        if all(r.ok for r in results):
            shutil.rmtree(rundir, ignore_errors=True)
    wall = time.monotonic() - t0
    crashes: dict[str, int] = {}
    for r in results:
        for role in r.killed:
            role = "writer" if role.startswith("w") and role != "writer" else role
            crashes[role] = crashes.get(role, 0) + 1
        if r.kill == "failpoint":  # armed with kill@n; it fires if the process gets that far
            crashes[f"armed:{r.failpoint}"] = crashes.get(f"armed:{r.failpoint}", 0) + 1
    s = {
        "seed": cfg.seed,
        "store": "moto" if (cfg.moto or cfg.endpoint) else (cfg.url or "local"),
        "compression": cfg.compression or "default",
        "iterations": len(results),
        "operations": sum(r.ops for r in results),
        "crashes": dict(sorted(crashes.items())),
        "faults_injected": sum(r.faults for r in results),
        "actions": {a: sum(r.actions.get(a, 0) for r in results) for a in ("compact", "gc", "checkpoint", "ingest", "snapshot")},
        "errors_seen": _sum_dicts(r.errors for r in results),
        "keys_verified": sum(r.verified for r in results),
        "checkpoints_verified": sum(r.checkpoints for r in results),
        **{c: sum(len(r.failures.get(c, [])) for r in results) for c in CHECKS},
        "failed_iterations": [{"iteration": r.index, "kill": r.kill, "failpoint": r.failpoint, "killed": r.killed,
                               "failures": {k: v[:5] for k, v in r.failures.items() if v}} for r in results if not r.ok],
        "wall_s": round(wall, 1),
        "ok": all(r.ok for r in results),
    }
    if not s["ok"]:
        s["rundir"] = rundir
    return s


def _sum_dicts(ds) -> dict:
    out: dict = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def _print(s: dict) -> None:
    rows = [("iterations", s["iterations"]), ("operations", s["operations"]),
            ("crashes", ", ".join(f"{k} {v}" for k, v in s["crashes"].items()) or "0"),
            ("faults injected", s["faults_injected"]),
            ("compact / gc / checkpoint / ingest / snapshot", " / ".join(str(v) for v in s["actions"].values())),
            ("errors seen (expected)", ", ".join(f"{k} {v}" for k, v in s["errors_seen"].items()) or "0"),
            ("keys verified", s["keys_verified"]),
            ("checkpoints verified", s["checkpoints_verified"])]
    rows += [(c.replace("_", " "), s[c]) for c in CHECKS]
    rows.append(("wall", f"{s['wall_s']} s"))
    w = max(len(r[0]) for r in rows)
    print(f"stress, store {s['store']}, seed {s['seed']}, compression {s['compression']}")
    for name, val in rows:
        print(f"  {name:<{w}}  {val}")
    for f in s["failed_iterations"]:
        print(f"  FAILED iteration {f['iteration']} (kill {f['kill']} {f['failpoint']}, killed {f['killed']}): "
              f"{json.dumps(f['failures'])[:800]}")
        print(f"  replay: python -m bench.stress --seed {s['seed']} --start {f['iteration']} --iterations 1")
    print("OK" if s["ok"] else "FAILED")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="database url (default: a fresh local directory); s3://bucket/prefix for a real bucket")
    ap.add_argument("--moto", action="store_true", help="start a moto S3 server on loopback and use it")
    ap.add_argument("--endpoint", help="an S3 endpoint already running (moto)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    ap.add_argument("--iterations", type=int, default=0, help="run exactly this many iterations instead")
    ap.add_argument("--start", type=int, default=0, help="first iteration (replay: --start I --iterations 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ops", type=int, default=400, help="operations per process per iteration")
    ap.add_argument("--processes", type=int, default=2, help="writer processes besides the user process")
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--faults", type=float, default=0.0, help="store fault probability per operation (e.g. 0.01)")
    ap.add_argument("--kills", default=",".join(KILLS), help=f"comma-separated, from {', '.join(KILLS)}")
    ap.add_argument("--iteration-timeout", type=float, default=300.0,
                    help="seconds an iteration's user process may take before it counts as hung")
    ap.add_argument("--workdir")
    ap.add_argument("--compression", choices=("none", "zstd"),
                    help="Options.compression of every process (default: the engine's default)")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        mode, path, *rest = a.child
        with open(path) as f:
            ccfg = json.load(f)
        return {"user": lambda: _user_main(ccfg), "reader": lambda: _reader_main(ccfg),
                "verify": lambda: _verify_main(ccfg, rest[0])}[mode]()
    if a.processes < 0 or a.keys < 4 * (a.processes + 1):
        ap.error("--processes >= 0 and --keys >= 4 per process")
    cfg = StressConfig(url=a.url, moto=a.moto, endpoint=a.endpoint, duration=a.duration, iterations=a.iterations,
                       start=a.start, seed=a.seed, ops=a.ops, processes=a.processes, keys=a.keys, faults=a.faults,
                       kills=tuple(k.strip() for k in a.kills.split(",") if k.strip()), workdir=a.workdir, quiet=a.quiet,
                       iteration_timeout=a.iteration_timeout, compression=a.compression)
    try:
        s = run(cfg)
    except ValueError as exc:
        ap.error(str(exc))
    _print(s)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)
    return 0 if s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
