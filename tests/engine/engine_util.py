"""Helpers shared by the engine tests (imported as ``engine_util``)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid

import shaledb

SPAWN = multiprocessing.get_context("spawn")

#: Small arenas and SSTs so that tests cross generation and SST boundaries.
SMALL = dict(arena_bytes=1 << 20, l0_sst_bytes=1 << 18, max_unflushed_bytes=8 << 20, flush_interval=0.02,
             request_timeout=120.0, open_timeout=120.0, close_timeout=120.0, manifest_poll_interval=0.2)


def memory_url() -> str:
    return "memory://engine-" + uuid.uuid4().hex[:12]


def s3_url(bucket: str) -> str:
    return f"s3://{bucket}/db"


def s3_opts(moto_server) -> dict:
    return {"store_options": {"endpoint_url": moto_server.endpoint_url}}


def reap(procs, timeout: float = 30.0) -> None:
    """Join processes; kill any that outlive ``timeout`` (never leave one behind)."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def scan_all(db) -> dict:
    out = {}
    for k, v in db.scan():
        assert k not in out, f"scan returned {k!r} twice"
        out[k] = v
    return out


def open_db(root, **kw):
    opts = dict(SMALL)
    opts.update(kw)
    return shaledb.open(root, **opts)


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie nobody reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` no longer runs, False if it still runs after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def pack_batch(keys, values, kinds=None):
    """Keys and values as the arena kernels take them: (kd, ko, vd, vo, kinds)."""
    import numpy as np

    kd = np.frombuffer(b"".join(keys), dtype=np.uint8)
    vd = np.frombuffer(b"".join(values), dtype=np.uint8)
    ko = np.zeros(len(keys) + 1, dtype=np.int64)
    vo = np.zeros(len(values) + 1, dtype=np.int64)
    ko[1:] = np.cumsum([len(k) for k in keys])
    vo[1:] = np.cumsum([len(v) for v in values])
    kinds = np.ones(len(keys), dtype=np.uint8) if kinds is None else np.array(kinds, dtype=np.uint8)
    return kd, ko, vd, vo, kinds


def wait_for(pred, what: str, timeout: float = 60.0) -> None:
    """Wait (bounded) until ``pred()`` is true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def block_linger_appends(monkeypatch):
    """Make the writer's linger thread stop at the start of its next append
    until released: returns ``(entered, release)`` events (set ``release``;
    the hook also gives up after 10 s)."""
    import threading

    from shaledb.memtable.writer import Writer

    entered, release = threading.Event(), threading.Event()
    orig = Writer._append_chunk

    def slow(self, *a, **k):
        if threading.current_thread().name == "shaledb-writer-linger":
            entered.set()
            release.wait(10)
        return orig(self, *a, **k)

    monkeypatch.setattr(Writer, "_append_chunk", slow)
    return entered, release
