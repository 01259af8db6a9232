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
