"""The flusher process: started by the Db, run as ``python -m shaledb.flush``.

Parent side, :class:`FlusherProcess`: a ``shaledb.ipc.ChildProcess`` that
sends the pickled :class:`FlusherConfig` and reads the ready message (or the
error that stopped open).

Child side, :func:`run_flusher_process`: opens the store, recovers, serves.
Invariant: once the process that started it is gone, at any stage (open and
replay included), the flusher writes nothing more; it removes the Db's
shared memory and control directory and exits (``shaledb.ipc.ParentWatch``).
See docs/architecture.md.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from shaledb.flush.flusher import Flusher
from shaledb.ipc.child import ChildProcess, ParentWatch, error_message, read_child_config
from shaledb.ipc.control import ControlAddress, remove_control_address
from shaledb.ipc.logs import LogForwarder
from shaledb.options import Options, wrap_store

__all__ = ["FlusherConfig", "FlusherProcess", "flusher_watch", "main", "run_flusher_process"]


@dataclass(frozen=True)
class FlusherConfig:
    """Everything the flusher needs; picklable (sent down a pipe to its process)."""

    url: str
    store_options: dict
    options: Options
    control: ControlAddress
    pool: Any  # the arena pool's picklable attach descriptor
    parent_pid: int
    watch_parent: bool = True


class FlusherProcess(ChildProcess):
    """The flusher in a fresh interpreter (``python -m shaledb.flush``), seen
    from the process that started it."""

    def __init__(self, config: FlusherConfig | None = None) -> None:
        """With ``config=None`` the interpreter starts now and the config
        goes later, by ``send_config`` (see ChildProcess)."""
        super().__init__("shaledb.flush", config, "flusher", send_later=config is None)


def flusher_watch(config: FlusherConfig) -> ParentWatch:
    """The flusher's parent watch: on the Db's death it unlinks the Db's
    shared memory and control directory, then exits."""
    dbtag = config.pool.get("dbtag") if isinstance(config.pool, dict) else None

    def shm() -> None:
        if dbtag:
            from shaledb.memtable.shm import cleanup_segments

            cleanup_segments(dbtag)

    return ParentWatch(config.parent_pid, (shm, lambda: remove_control_address(config.control)))


def run_flusher_process(config: FlusherConfig, ready_conn) -> None:
    """Body of the flusher process (started by :class:`FlusherProcess`).

    REQUIRES: the main thread of a process started by ``config.parent_pid``.
    """
    flusher = None
    watch = flusher_watch(config) if config.watch_parent else None
    if watch is not None:
        watch.install()
    logs = LogForwarder(ready_conn, "shaledb-flusher")  # sends once ready went (docs/operations.md)
    try:
        from shaledb.memtable.arena_pool import ArenaPool
        from shaledb.storage import InstrumentedStore, open_store

        # counted inside the retry layer: status() reports every request made
        raw = InstrumentedStore(open_store(config.url, **config.store_options))
        store = wrap_store(watch.guard(raw) if watch is not None else raw, config.options)
        flusher = Flusher(store, config.options, ArenaPool.attach(config.pool))
        flusher.request_counts = lambda: _request_counts(raw)
        info = flusher.recover()
        flusher.start(config.control)
        info["pid"] = os.getpid()
        ready_conn.send(("ready", info))
        logs.start()
    except BaseException as exc:  # noqa: BLE001 - reported to the opener
        if watch is not None:
            watch.check()  # an orphan reports nothing: it cleans up and exits
        try:
            ready_conn.send(error_message(exc))
        except Exception:  # noqa: BLE001
            pass
        return
    try:
        # load every kernel now rather than on the first WAL upload / L0
        # flush, on a daemon thread: a close() that comes first (a short-lived
        # Db) does not wait for kernels it will never use (about 1 s)
        threading.Thread(target=_warmup, args=(logs,), name="shaledb-flusher-warmup", daemon=True).start()
        flusher.wait_stopped()
    finally:
        flusher.stop()
        logs.stop()
        ready_conn.close()


#: sort scratch the flusher process keeps between L0 flushes
#: (``kernels.sort.keep_scratch``): about 164 bytes per record of a flush,
#: e.g. 75 MB for a 64 MiB generation of 100-byte values; fresh pages cost
#: 7 % of a sort.  A larger build (over ~1.6M records) allocates its own.
SORT_SCRATCH_KEEP = 256 << 20


def _warmup(logs: LogForwarder) -> None:
    """Load every kernel, then tell the Db (event ``warm``): it starts its
    compactor process only then, so that the two start-ups do not run at
    once beside the application's first reads (docs/architecture.md)."""
    t0 = time.perf_counter()
    try:
        from shaledb.kernels.sort import keep_scratch
        from shaledb.kernels.warmup import warmup

        keep_scratch(SORT_SCRATCH_KEEP)
        warmup()
    except Exception:  # noqa: BLE001 - they load on first use anyway
        pass
    finally:
        logs.send_event("warm", time.perf_counter() - t0)


def _request_counts(store) -> dict:
    """{op: counts} of an InstrumentedStore, as plain data."""
    return {
        op: {"count": s.count, "errors": s.errors, "bytes_written": s.bytes_written, "bytes_read": s.bytes_read}
        for op, s in store.snapshot().items()
        if s.count
    }


def main(argv: list[str]) -> None:
    """``python -m shaledb.flush <config fd> <ready fd>``: read the parent's
    sys.path and the pickled FlusherConfig, then run the flusher."""
    config, ready = read_child_config(argv)
    run_flusher_process(config, ready)
