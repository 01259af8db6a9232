"""Crash loop: kill ShaleDB processes at random moments and check what survives.

``python -m bench.crashloop --iterations 200 --store local --targets all --seed 1``

Each iteration, with every random choice drawn from ``(seed, iteration)`` so
that ``--start I --iterations 1`` replays iteration ``I``:

1. A *user process* (``python -m bench.crashloop --child user``) opens a fresh
   database (a local directory, or ``s3://<bucket>/it-<i>`` on a moto server
   on loopback) and starts 1-2 *writer processes* with ``db.writer()``
   handles.  All of them write unique keys (value = a function of the key)
   with ``put``/``put_many``, ``await_durable`` True and False, and append
   every acknowledged write to their own event log (``D key`` durable,
   ``N key`` returned but not yet durable), fsynced after each durable ack.
2. The driver tails the logs and SIGKILLs one kill target (``user``,
   ``flusher``, ``writer``, or ``all`` of them) once a seeded number of
   acknowledgements is reached, or while the user process opens or closes.
3. Survivors finish: the user process joins its writers and calls
   ``close()``; its outcome (``ok`` or the error class) is logged.  Every wait
   is bounded; processes still alive after it are killed and counted as hung
   (the user process) or orphaned (anything it started).  Processes are found
   by a marker in their environment, so even a flusher whose pid was never
   reported is seen.
4. A fresh process reopens the database and reads every key back.

Checks (any failure makes the exit status 1):

* ``lost``: an acknowledged-durable write that does not read back;
* ``wrong``: a key that reads back with another value, or a key nobody wrote;
* ``lost_after_close``: ``close()`` returned normally but a write made
  before it (by the user process, or by a writer whose handle closed
  cleanly) does not read back;
* ``raw_errors``: an exception outside the ``shaledb.errors`` tree in any
  process (user, writer, verifier);
* ``leaked_segments`` / ``leaked_ctl_dirs``: after the reopen has closed and
  every process is gone, a ``shaledb-*`` segment in the iteration's private
  shared-memory directory, or a ``shaledb-ctl-*`` directory in its private
  temp directory;
* ``hung`` / ``orphans``: processes that had to be killed; ``verify_failed``:
  the reopen itself failed.

Each iteration gets a private ``SHALEDB_SHM_DIR`` and ``TMPDIR``, so runs of
other people on the machine neither disturb nor get counted.  See
docs/operations.md ("Crash loop") and bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
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
from dataclasses import dataclass, field

__all__ = ["CHECKS", "ENGINE_OPTIONS", "TARGETS", "IterationResult", "LoopConfig", "main", "run", "value_for", "verify_reopen"]

TARGETS = ("user", "flusher", "writer", "all")

#: failure checks, in the order the summary prints them
CHECKS = (
    "lost",
    "wrong",
    "lost_after_close",
    "raw_errors",
    "leaked_segments",
    "leaked_ctl_dirs",
    "hung",
    "orphans",
    "verify_failed",
)

_MARK = "SHALEDB_CRASHLOOP_TAG"
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: engine options of every open: small arenas and SSTs so that writes cross
#: seals and L0 flushes; every wait of the engine bounded well below ours
ENGINE_OPTIONS = dict(
    arena_bytes=1 << 20,
    l0_sst_bytes=1 << 18,
    max_unflushed_bytes=8 << 20,
    flush_interval=0.02,
    request_timeout=20.0,
    open_timeout=30.0,
    close_timeout=30.0,
)


def value_for(key: bytes) -> bytes:
    """The only value ever written under ``key`` (1..2048 bytes)."""
    h = hashlib.blake2b(key, digest_size=16).digest()
    n = 1 + int.from_bytes(h[:2], "little") % 2048
    return (h * (n // 16 + 1))[:n]


# ---------------------------------------------------------------- event logs


class _Log:
    """An append-only event log of one process (one line per event).

    Lines survive a SIGKILL of the writer once ``os.write`` returned; durable
    acknowledgements are also fsynced.
    """

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def event(self, *parts) -> None:
        line = " ".join(str(p).replace("\n", " ") for p in parts) + "\n"
        os.write(self.fd, line.encode("utf-8", "replace"))

    def acks(self, kind: str, keys) -> None:
        os.write(self.fd, "".join(f"{kind} {k.decode()}\n" for k in keys).encode())
        if kind == "D":
            os.fsync(self.fd)

    def error(self, where: str, exc: BaseException) -> None:
        from shaledb.errors import ShaleDBError

        family = "shaledb" if isinstance(exc, ShaleDBError) else "raw"
        self.event("E", where, f"{family}:{type(exc).__name__}", str(exc)[:300])


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    # a line cut by a kill has no newline: drop it
    return [ln.decode("utf-8", "replace") for ln in data.split(b"\n")[:-1]]


class _Tail:
    """Incremental reader of one event log (the driver side)."""

    def __init__(self, path: str):
        self.path = path
        self.pos = 0
        self.rest = b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self.pos += len(data)
        data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        return [ln.decode("utf-8", "replace") for ln in lines]


# ------------------------------------------------------------ child processes


def _write_ops(target, log: _Log, rng: random.Random, prefix: str, ops: int, flush_every: int = 0) -> None:
    """``ops`` writes of unique keys ``<prefix>-<n>`` through a Db or a writer handle."""
    n = 0
    for op in range(ops):
        durable = rng.random() < 0.5
        if rng.random() < 0.6:
            keys = [f"{prefix}-{n:06d}".encode()]
            target.put(keys[0], value_for(keys[0]), await_durable=durable)
        else:
            keys = [f"{prefix}-{n + j:06d}".encode() for j in range(rng.randint(2, 16))]
            target.put_many(keys, [value_for(k) for k in keys], await_durable=durable)
        n += len(keys)
        log.acks("D" if durable else "N", keys)
        if flush_every and op % flush_every == flush_every - 1:
            target.flush(memtable=True)
            log.event("F")


def _writer_main(handle, cfg: dict) -> None:
    """A writer process: writes through its handle, then closes it."""
    log = _Log(cfg["log"])
    log.event("P", "writer", os.getpid())
    rng = random.Random(cfg["rng"])
    try:
        _write_ops(handle, log, rng, cfg["prefix"], cfg["ops"])
    except BaseException as exc:  # noqa: BLE001 - every outcome is logged
        log.error("write", exc)
    try:
        handle.close()
    except BaseException as exc:  # noqa: BLE001
        log.error("close", exc)
        log.event("X", "error")
    else:
        log.event("X", "ok")


def _user_main(cfg: dict) -> int:
    """The user process: open, start writers, write, join writers, close."""
    import multiprocessing

    log = _Log(cfg["log"])
    log.event("P", "user", os.getpid())
    rng = random.Random(cfg["rng"])
    import shaledb

    try:
        db = shaledb.open(cfg["root"], **cfg["opts"])
    except BaseException as exc:  # noqa: BLE001
        log.error("open", exc)
        return 0
    log.event("O")
    try:
        log.event("P", "flusher", db.status()["pid"])
    except BaseException as exc:  # noqa: BLE001
        log.error("status", exc)
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for i, wcfg in enumerate(cfg["writers"]):
        try:
            p = ctx.Process(target=_writer_main, args=(db.writer(), wcfg), daemon=False)
            p.start()
        except BaseException as exc:  # noqa: BLE001
            log.error(f"start-writer-{i}", exc)
            continue
        procs.append((i, p))
    try:
        _write_ops(db, log, rng, cfg["prefix"], cfg["ops"], flush_every=cfg["flush_every"])
    except BaseException as exc:  # noqa: BLE001
        log.error("write", exc)
    deadline = time.monotonic() + cfg["join_timeout"]
    for i, p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            log.event("H", "writer", i)  # hung: counted by the driver
            p.kill()
            p.join(10)
        log.event("J", i, p.exitcode)
    log.event("C")
    try:
        db.close()
    except BaseException as exc:  # noqa: BLE001
        log.error("close", exc)
        log.event("R", "error")
    else:
        log.event("R", "ok")
    return 0


def verify_reopen(cfg: dict, out_path: str) -> int:
    """Reopen the database; report every expected key that reads back wrong."""
    import shaledb

    res = {"open": None, "close": None, "lost": [], "lost_after_close": [], "wrong": [], "raw": [], "found": 0}

    def family(exc):
        return ("shaledb:" if isinstance(exc, shaledb.ShaleDBError) else "raw:") + type(exc).__name__

    try:
        db = shaledb.open(cfg["root"], **cfg["opts"])
    except BaseException as exc:  # noqa: BLE001
        res["open"] = f"{family(exc)}: {exc}"
    else:
        res["open"] = "ok"
        try:
            for kind, keys in (("lost", cfg["durable"]), ("lost_after_close", cfg["before_close"])):
                for k in keys:
                    got = db.get(k.encode())
                    if got is None:
                        res[kind].append(k)
                    elif got != value_for(k.encode()):
                        res["wrong"].append(k)
            prefixes = tuple(cfg["prefixes"])
            for k, v in db.scan():
                res["found"] += 1
                if not k.decode("latin-1").startswith(prefixes) or v != value_for(k):
                    res["wrong"].append(k.decode("latin-1"))
        except BaseException as exc:  # noqa: BLE001
            res["raw" if not isinstance(exc, shaledb.ShaleDBError) else "read_error"] = [f"{family(exc)}: {exc}"]
        try:
            db.close()
            res["close"] = "ok"
        except BaseException as exc:  # noqa: BLE001
            res["close"] = f"{family(exc)}: {exc}"
    with open(out_path, "w") as f:
        json.dump(res, f)
    return 0


# -------------------------------------------------------------- the driver


@dataclass
class LoopConfig:
    """What one run of the loop does.  REQUIRES: every target in TARGETS."""

    iterations: int = 20
    store: str = "local"  # local | moto
    targets: tuple = TARGETS
    seed: int = 0
    start: int = 0
    endpoint: str | None = None  # moto: use this server instead of starting one
    workdir: str | None = None
    ops: int = 120  # writes per process (a put_many is one write)
    user_timeout: float = 90.0  # the user process must finish within this
    grace: float = 20.0  # processes it started must be gone this long after it
    verify_timeout: float = 90.0
    keep: bool = False
    quiet: bool = False


@dataclass
class IterationResult:
    index: int
    target: str
    phase: str
    killed: list = field(default_factory=list)  # roles actually killed
    close: str = "-"  # ok | error:<class> | killed | never
    acked_durable: int = 0
    verified: int = 0
    failures: dict = field(default_factory=dict)  # check -> list of details
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())

    def fail(self, check: str, detail) -> None:
        self.failures.setdefault(check, []).append(detail)


def _marked_pids(tag: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``tag``."""
    needle = f"{_MARK}={tag}\0".encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{name}/stat") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                    continue
        except (OSError, IndexError):
            continue
        out.append(int(name))
    return out


def _role_from_cmdline(pid: int) -> str:
    """A name for a process the logs did not report (yet)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        cmd = b""
    for needle, role in ((b"shaledb.flush", "flusher"), (b"resource_tracker", "tracker"), (b"spawn_main", "writer")):
        if needle in cmd:
            return f"{role}:{pid}"
    return f"pid{pid}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _wait_marked_gone(tag: str, timeout: float) -> list[int]:
    """Wait until no process carries ``tag``; kill and return the rest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _marked_pids(tag):
            return []
        time.sleep(0.1)
    rest = _marked_pids(tag)
    for pid in rest:
        _kill(pid)
    return rest


def _child_env(tag: str, shm: str, tmp: str) -> dict:
    from shaledb.storage.testing import S3_TEST_CREDENTIALS

    env = dict(os.environ)
    env.update(S3_TEST_CREDENTIALS if "AWS_ACCESS_KEY_ID" not in env else {})
    env[_MARK] = tag
    env["SHALEDB_SHM_DIR"] = shm
    env["TMPDIR"] = tmp
    env.pop("SHALEDB_FAILPOINTS", None)
    env["PYTHONPATH"] = _REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _spawn_child(mode: str, cfg_path: str, env: dict, extra=()) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.crashloop", "--child", mode, cfg_path, *extra],
        cwd=_REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _plan(cfg: LoopConfig, i: int) -> tuple[random.Random, str, str]:
    rng = random.Random(cfg.seed * 1_000_003 + i)
    target = cfg.targets[i % len(cfg.targets)]
    r = rng.random()
    if target in ("user", "all") and r < 0.15:
        phase = "open"
    elif target in ("user", "flusher", "all") and r > 0.85:
        phase = "close"
    else:
        phase = "write"
    return rng, target, phase


def _run_iteration(cfg: LoopConfig, i: int, rundir: str, shm_base: str, root_of) -> IterationResult:
    rng, target, phase = _plan(cfg, i)
    res = IterationResult(i, target, phase)
    itdir = os.path.join(rundir, f"it-{i:05d}")
    os.makedirs(itdir)
    shm = os.path.join(shm_base, f"it{i}")
    os.makedirs(shm, mode=0o700)
    tmp = tempfile.mkdtemp(prefix="shcl-", dir="/tmp" if os.path.isdir("/tmp") else None)
    tag = f"{uuid.uuid4().hex[:12]}-{i}"
    root, opts = root_of(i, itdir)
    n_writers = rng.randint(1, 2)
    logs = {"user": os.path.join(itdir, "user.log")}
    writers = []
    for w in range(n_writers):
        logs[f"w{w}"] = os.path.join(itdir, f"w{w}.log")
        writers.append({"log": logs[f"w{w}"], "rng": rng.getrandbits(32), "prefix": f"w{w}", "ops": cfg.ops})
    ucfg = {
        "root": root,
        "opts": opts,
        "log": logs["user"],
        "rng": rng.getrandbits(32),
        "prefix": "u",
        "ops": cfg.ops,
        "flush_every": rng.randint(20, 60),
        "writers": writers,
        "join_timeout": cfg.user_timeout / 2,
    }
    cfg_path = os.path.join(itdir, "user.json")
    with open(cfg_path, "w") as f:
        json.dump(ucfg, f)
    env = _child_env(tag, shm, tmp)
    kill_writer = f"w{rng.randrange(n_writers)}"
    expected_acks = cfg.ops * 4 * (1 + n_writers)
    threshold = rng.randint(1, max(2, int(0.7 * (cfg.ops * 4 if target == "writer" else expected_acks))))
    open_delay = rng.uniform(0.2, 2.5)
    close_delay = rng.uniform(0.0, 0.05)

    tails = {name: _Tail(p) for name, p in logs.items()}
    pids: dict[str, int] = {}
    acks = {name: 0 for name in logs}
    seen_close = None
    user = _spawn_child("user", cfg_path, env)
    started = time.monotonic()
    try:
        deadline = started + cfg.user_timeout
        fired = False
        while user.poll() is None and time.monotonic() < deadline:
            for name, t in tails.items():
                for ln in t.new_lines():
                    parts = ln.split(" ")
                    if parts[0] == "P":
                        pids[parts[1] if parts[1] != "writer" else name] = int(parts[2])
                    elif parts[0] in ("D", "N"):
                        acks[name] += 1
                    elif parts[0] == "C" and seen_close is None:
                        seen_close = time.monotonic()
            if not fired:
                total = sum(acks.values())
                if phase == "open":
                    due = time.monotonic() - started >= open_delay
                elif phase == "close":
                    due = seen_close is not None and time.monotonic() - seen_close >= close_delay
                elif target == "writer":
                    due = acks[kill_writer] >= threshold or seen_close is not None
                else:
                    due = total >= threshold or seen_close is not None
                if due:
                    fired = True
                    if target == "all":
                        role_of = {pid: role for role, pid in pids.items()}
                        victims = {role_of.get(p) or _role_from_cmdline(p): p for p in _marked_pids(tag)}
                        victims["user"] = user.pid
                    elif target == "user":
                        victims = {"user": user.pid}
                    elif target == "writer":
                        victims = {kill_writer: pids[kill_writer]} if kill_writer in pids else {}
                    else:
                        victims = {target: pids[target]} if target in pids else {}
                    for role, pid in victims.items():
                        if _alive(pid):
                            _kill(pid)
                            res.killed.append(role)
                    if not res.killed:
                        res.notes.append("kill missed (target not running at the moment)")
                    if phase == "write" and seen_close is not None:
                        res.notes.append("kill fell back to the close phase")
            time.sleep(0.005)
        if user.poll() is None:
            res.fail("hung", f"user process still running after {cfg.user_timeout:g} s")
            _kill(user.pid)
        try:
            _, err = user.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            user.kill()
            _, err = user.communicate(timeout=10)
        if user.returncode not in (0, -signal.SIGKILL):
            res.fail("raw_errors", f"user process exit {user.returncode}: {err.decode(errors='replace')[-500:]}")
        orphans = _wait_marked_gone(tag, cfg.grace)
        if orphans:
            res.fail("orphans", f"{len(orphans)} processes alive {cfg.grace:g} s after the user process: {orphans}")

        # --- what the logs say was acknowledged
        durable, before_close = [], []
        user_lines = _read_lines(logs["user"])
        close_line = [ln for ln in user_lines if ln.startswith("R ")]
        if close_line:
            res.close = "ok" if close_line[0] == "R ok" else "error"
            if res.close == "error":
                errs = [ln.split(" ")[2] for ln in user_lines if ln.startswith("E close ")]
                res.close = errs[0].split(":", 1)[1] if errs else "error"
        else:
            res.close = "killed" if "user" in res.killed else "never"
        clean_writers = set()
        for name, path in logs.items():
            lines = _read_lines(path)
            for ln in lines:
                if ln.startswith("D "):
                    durable.append(ln[2:])
                elif ln.startswith("E ") and ln.split(" ")[2].startswith("raw:"):
                    res.fail("raw_errors", f"{name}: {ln}")
                elif ln.startswith("H "):
                    res.fail("hung", f"user joined a hung writer: {ln}")
            if name != "user" and "X ok" in lines:
                clean_writers.add(name)
            if res.close == "ok" and (name == "user" or name in clean_writers):
                before_close += [ln[2:] for ln in lines if ln[:2] in ("D ", "N ")]
        res.acked_durable = len(durable)

        # --- reopen in a fresh process
        vtag = tag + "-v"
        vcfg = {"root": root, "opts": opts, "durable": durable, "before_close": before_close,
                "prefixes": ["u-"] + [f"w{w}-" for w in range(n_writers)]}
        vpath = os.path.join(itdir, "verify.json")
        vout = os.path.join(itdir, "verify.out.json")
        with open(vpath, "w") as f:
            json.dump(vcfg, f)
        ver = _spawn_child("verify", vpath, _child_env(vtag, shm, tmp), extra=(vout,))
        try:
            _, verr = ver.communicate(timeout=cfg.verify_timeout)
        except subprocess.TimeoutExpired:
            ver.kill()
            _, verr = ver.communicate(timeout=10)
            res.fail("hung", f"verify process still running after {cfg.verify_timeout:g} s")
        orphans = _wait_marked_gone(vtag, cfg.grace)
        if orphans:
            res.fail("orphans", f"verify left processes behind: {orphans}")
        try:
            with open(vout) as f:
                v = json.load(f)
        except (OSError, ValueError):
            res.fail("verify_failed", f"no result (exit {ver.returncode}): {verr.decode(errors='replace')[-500:]}")
        else:
            if v["open"] != "ok":
                res.fail("verify_failed", f"reopen: {v['open']}")
            if v["close"] not in ("ok", None):
                res.fail("verify_failed", f"close after reopen: {v['close']}")
            for k in ("lost", "lost_after_close", "wrong"):
                for key in v[k]:
                    res.fail(k, key)
            for r in v.get("raw", []):
                res.fail("raw_errors", f"verify: {r}")
            for r in v.get("read_error", []):
                res.fail("verify_failed", f"read: {r}")
            res.verified = len(durable) - len(v["lost"])

        # --- leftovers, once every process is gone
        segs = sorted(n for n in os.listdir(shm) if n.startswith("shaledb-"))
        for n in segs:
            res.fail("leaked_segments", n)
        ctl = sorted(n for n in os.listdir(tmp) if n.startswith("shaledb-ctl-"))
        for n in ctl:
            res.fail("leaked_ctl_dirs", n)
    finally:
        if user.poll() is None:
            user.kill()
            user.wait(10)
        for pid in _marked_pids(tag) + _marked_pids(tag + "-v"):
            _kill(pid)
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if not cfg.keep and res.ok:
            shutil.rmtree(itdir, ignore_errors=True)
    return res


def _summary(cfg: LoopConfig, results: list[IterationResult], wall: float) -> dict:
    kills = {t: sum(1 for r in results if r.target == t and r.killed) for t in TARGETS}
    closes: dict[str, int] = {}
    for r in results:
        closes[r.close] = closes.get(r.close, 0) + 1
    fails = {c: sum(len(r.failures.get(c, [])) for r in results) for c in CHECKS}
    return {
        "store": cfg.store,
        "seed": cfg.seed,
        "iterations": len(results),
        "kills_by_target": kills,
        "missed_kills": sum(1 for r in results if not r.killed),
        "acked_durable": sum(r.acked_durable for r in results),
        "verified": sum(r.verified for r in results),
        "close_outcomes": closes,
        "failures": fails,
        "failed_iterations": [
            {"iteration": r.index, "target": r.target, "phase": r.phase, "killed": r.killed, "close": r.close,
             "failures": {k: v[:5] for k, v in r.failures.items() if v}}
            for r in results if not r.ok
        ],
        "wall_s": round(wall, 1),
        "ok": all(r.ok for r in results),
    }


def _print_summary(s: dict) -> None:
    rows = [
        ("iterations", s["iterations"]),
        ("kills by target", ", ".join(f"{k} {v}" for k, v in s["kills_by_target"].items())),
        ("missed kills", s["missed_kills"]),
        ("acked durable writes", s["acked_durable"]),
        ("  verified", s["verified"]),
        ("  lost", s["failures"]["lost"]),
        ("  wrong", s["failures"]["wrong"]),
        ("lost after close() ok", s["failures"]["lost_after_close"]),
        ("close() outcomes", ", ".join(f"{k} {v}" for k, v in sorted(s["close_outcomes"].items()))),
        ("raw (non-ShaleDB) errors", s["failures"]["raw_errors"]),
        ("leaked segments", s["failures"]["leaked_segments"]),
        ("leaked control dirs", s["failures"]["leaked_ctl_dirs"]),
        ("hung / orphans", f"{s['failures']['hung']} / {s['failures']['orphans']}"),
        ("verify failed", s["failures"]["verify_failed"]),
        ("wall", f"{s['wall_s']} s"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"crash loop, store {s['store']}, seed {s['seed']}")
    for name, val in rows:
        print(f"  {name:<{w}}  {val}")
    for f in s["failed_iterations"]:
        print(f"  FAILED iteration {f['iteration']} ({f['target']}, {f['phase']}, killed {f['killed']}, "
              f"close {f['close']}): {json.dumps(f['failures'])[:600]}")
    print("OK" if s["ok"] else "FAILED")


def run(cfg: LoopConfig) -> dict:
    """Run the loop; return the summary (``summary["ok"]`` is the verdict)."""
    for t in cfg.targets:
        if t not in TARGETS:
            raise ValueError(f"unknown kill target {t!r}; choose from {', '.join(TARGETS)}")
    if cfg.workdir:
        os.makedirs(cfg.workdir, exist_ok=True)
    rundir = tempfile.mkdtemp(prefix="shaledb-crashloop-", dir=cfg.workdir)
    shm_parent = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else rundir
    shm_base = tempfile.mkdtemp(prefix="shcl-", dir=shm_parent)
    server = None
    results: list[IterationResult] = []
    t0 = time.monotonic()
    try:
        if cfg.store == "local":
            def root_of(i, itdir):
                return os.path.join(itdir, "db"), dict(ENGINE_OPTIONS)
        elif cfg.store == "moto":
            import boto3

            from shaledb.storage.testing import S3_TEST_CREDENTIALS, MotoServer

            endpoint = cfg.endpoint
            if endpoint is None:
                server = MotoServer().start()
                endpoint = server.endpoint_url
            bucket = "crashloop-" + uuid.uuid4().hex[:12]
            boto3.client(
                "s3", endpoint_url=endpoint, region_name=S3_TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
                aws_access_key_id=S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            ).create_bucket(Bucket=bucket)

            def root_of(i, itdir):
                return f"s3://{bucket}/it-{i:05d}", dict(ENGINE_OPTIONS, store_options={"endpoint_url": endpoint})
        else:
            raise ValueError(f"unknown store {cfg.store!r} (local or moto)")
        for i in range(cfg.start, cfg.start + cfg.iterations):
            r = _run_iteration(cfg, i, rundir, shm_base, root_of)
            results.append(r)
            if not cfg.quiet:
                verdict = "ok" if r.ok else "FAIL " + ", ".join(k for k, v in r.failures.items() if v)
                print(f"[{i}] target {r.target:<7} phase {r.phase:<5} killed {','.join(r.killed) or '-':<14} "
                      f"close {r.close:<12} acked {r.acked_durable:<5} {verdict}", flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(shm_base, ignore_errors=True)
        if not cfg.keep and all(r.ok for r in results):
            shutil.rmtree(rundir, ignore_errors=True)
    s = _summary(cfg, results, time.monotonic() - t0)
    if not s["ok"] or cfg.keep:
        s["rundir"] = rundir
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.crashloop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--store", choices=("local", "moto"), default="local")
    ap.add_argument("--targets", default="user,flusher,writer,all",
                    help="comma-separated kill targets (user, flusher, writer, all); iterations take them in turn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first iteration index (replay: --start I --iterations 1)")
    ap.add_argument("--endpoint", help="moto: an S3 endpoint already running (default: start a moto server)")
    ap.add_argument("--ops", type=int, default=120, help="writes per process per iteration")
    ap.add_argument("--grace", type=float, default=20.0)
    ap.add_argument("--workdir", help="where iteration directories go (default: the temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep logs and databases of passing iterations too")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        mode, cfg_path, *rest = a.child
        with open(cfg_path) as f:
            ccfg = json.load(f)
        if mode == "user":
            return _user_main(ccfg)
        if mode == "verify":
            return verify_reopen(ccfg, rest[0])
        ap.error(f"unknown child mode {mode!r}")
    targets = tuple(t.strip() for t in a.targets.split(",") if t.strip())
    cfg = LoopConfig(iterations=a.iterations, store=a.store, targets=targets, seed=a.seed, start=a.start,
                     endpoint=a.endpoint, workdir=a.workdir, ops=a.ops, grace=a.grace, keep=a.keep, quiet=a.quiet)
    try:
        s = run(cfg)
    except ValueError as exc:
        ap.error(str(exc))
    _print_summary(s)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)
    return 0 if s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
