"""The compactor service: what ``shaledb.open`` runs beside the flusher
(docs/compaction.md, "In the engine").

:class:`CompactorService` owns one :class:`Compactor` and a loop thread that
runs ``compact_once()`` every ``Options.compaction_interval`` and a GC pass
(``shaledb.gc.collect`` with ``min_age=Options.gc_min_age`` and the
compactor's in-flight uploads) every ``Options.gc_interval``; requests
(``CompactorRequest``) run compactions and GC passes on demand.  One lock
serialises the work, so a request waits for a background pass in progress.

A fenced service (another compactor opened this database) stops working
quietly: it shuts its worker pool down, writes nothing more, answers STATUS with ``fenced=True`` and
COMPACT/GC with :class:`~shaledb.Fenced`.

The process around it (``python -m shaledb.compact --serve <config fd>
<ready fd>``, started by :class:`CompactorProcess`): a ``shaledb.ipc``
child with a parent watch, so it stops, writing nothing more, once the Db's
process dies.  A ``memory://`` database runs the service as a thread of the
user's process instead.

Thread safety: ``handle`` may be called from any thread.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from shaledb.compact.compactor import Compactor, pause_after
from shaledb.compact.requests import CompactorRequest
from shaledb.errors import Fenced, InvalidArgument, ShaleDBError
from shaledb.ipc.child import ChildProcess, ParentWatch, error_message, read_child_config
from shaledb.ipc.control import ControlAddress, ControlServer
from shaledb.ipc.logs import LogForwarder
from shaledb.options import Options, StoreOpener, wrap_store

__all__ = ["CompactorConfig", "CompactorProcess", "CompactorService", "gc_result_dict", "main", "run_compactor_process"]

log = logging.getLogger("shaledb.compact")

_GC_KINDS = ("wal", "sst", "manifest")


def gc_result_dict(res) -> dict:
    """A ``shaledb.gc.GcResult`` as plain data: counts and bytes by kind,
    the keys, expired checkpoints, skipped kinds."""
    return {
        "dry_run": res.dry_run,
        "deleted": dict(res.counts),
        "bytes": dict(res.bytes),
        "keys": {k: list(v) for k, v in res.keys.items()},
        "expired_checkpoints": list(res.expired_checkpoints),
        "skipped": list(res.skipped),
    }


class CompactorService:
    """Compaction and GC of one database root, on intervals and on request.

    Opening it opens a :class:`Compactor` (fencing any older compactor);
    ``opener`` lets its jobs merge in worker processes (None: here).
    REQUIRES: the database exists (its writer opened it).
    """

    def __init__(self, store, options: Options, opener: StoreOpener | None = None):
        self.store = store
        self.options = options
        self.compactor = Compactor(store, options, opener=opener)
        self._work = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: ControlServer | None = None
        self.fenced = False
        self._shape = (0, 0)
        self.counters = {
            "compactions": 0,
            "jobs": 0,
            "trivial_moves": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "compaction_seconds": 0.0,
            "gc_runs": 0,
            "gc_deleted": {k: 0 for k in _GC_KINDS},
            "gc_bytes": {k: 0 for k in _GC_KINDS},
            "last_error": None,
        }

    # -------------------------------------------------------------- work

    def _check(self) -> None:
        if self.fenced:
            raise Fenced("this Db's compactor was fenced: another compactor opened the database (writes go on)")

    def compact(self, full: bool = False, *, background: bool = False) -> dict:
        """Run one ``compact_once(full)``; its report as a dict.  The loop
        passes ``background=True``: a merge of sorted runs goes on while
        later passes drain L0 (``Compactor.compact_once``)."""
        if not isinstance(full, bool):
            raise InvalidArgument("compact(full=...) takes a bool")
        with self._work:
            self._check()
            try:
                rep = self.compactor.compact_once(full, background=background)
            except Fenced:
                self._fenced()
                raise
            c = self.counters
            c["compactions"] += 1
            for k in ("jobs", "trivial_moves", "bytes_in", "bytes_out"):
                c[k] += getattr(rep, k)
            c["compaction_seconds"] += rep.seconds
            return rep.as_dict()

    def gc(self, dry_run: bool = False) -> dict:
        """Run one GC pass (``min_age=Options.gc_min_age``); its result as a dict."""
        from shaledb.gc.collector import collect

        if not isinstance(dry_run, bool):
            raise InvalidArgument("gc(dry_run=...) takes a bool")
        with self._work:
            self._check()
            try:
                self.compactor.refresh()  # Fenced here: a fenced compactor deletes nothing
            except Fenced:
                self._fenced()
                self.compactor.close()  # its worker pool too
                raise
            res = collect(
                self.store,
                min_age=self.options.gc_min_age,
                dry_run=dry_run,
                inflight=self.compactor.inflight_ssts(),
                failpoints=self.compactor.fp,
            )
            if not dry_run:
                c = self.counters
                c["gc_runs"] += 1
                for k in _GC_KINDS:
                    c["gc_deleted"][k] += res.counts[k]
                    c["gc_bytes"][k] += res.bytes[k]
            return gc_result_dict(res)

    def _fenced(self) -> None:
        if not self.fenced:
            log.info("compactor epoch %s fenced: stopping", self.compactor.epoch)
        self.fenced = True

    def status(self) -> dict:
        """Counters, and the shape of the tree in the last manifest the
        compactor saw (``l0``, ``sorted_runs``)."""
        c = self.counters
        try:
            m = self.compactor.mstore.current
            self._shape = (len(m.l0), len(m.sorted_runs))
        except Fenced:
            self._fenced()  # the shape stays the last one seen
        out = dict(c, gc_deleted=dict(c["gc_deleted"]), gc_bytes=dict(c["gc_bytes"]))
        out.update(
            pid=os.getpid(),
            epoch=self.compactor.epoch,
            fenced=self.fenced,
            l0=self._shape[0],
            sorted_runs=self._shape[1],
            inflight_ssts=len(self.compactor.inflight_ssts()),
        )
        return out

    # -------------------------------------------------------------- loop

    def _background(self, fn):
        """``fn()``'s result; None when it failed (the failure goes to the
        counters and the log; the loop keeps going)."""
        try:
            return fn()
        except Fenced:
            self._fenced()
        except ShaleDBError as exc:
            self.counters["last_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("compactor: %s", self.counters["last_error"])
        except Exception as exc:  # noqa: BLE001 - the loop keeps going; status says why
            self.counters["last_error"] = f"Internal: {type(exc).__name__}: {exc}"
            log.exception("compactor failed")
        return None

    def _loop(self) -> None:
        """A pass every ``compaction_interval``, sooner after a pass that ran
        a job (``compactor.pause_after``)."""
        o = self.options
        next_gc = time.monotonic() + o.gc_interval
        delay = o.compaction_interval
        while not self._stop.wait(delay) and not self.fenced:
            rep = self._background(lambda: self.compact(background=True))
            delay = pause_after((rep or {}).get("jobs", 0), o.compaction_interval)
            if time.monotonic() >= next_gc and not self._stop.is_set() and not self.fenced:
                self._background(self.gc)
                next_gc = time.monotonic() + o.gc_interval

    def handle(self, op: int, args: tuple):
        """Serve one request (``op`` a CompactorRequest value)."""
        req = CompactorRequest(op)
        if req == CompactorRequest.COMPACT:
            return self.compact(*args)
        if req == CompactorRequest.GC:
            return self.gc(*args)
        if req == CompactorRequest.STATUS:
            return self.status()
        if req == CompactorRequest.STOP:
            self._stop.set()
            return True
        return True  # PING

    def start(self, control: ControlAddress | None) -> None:
        """Start the loop thread and (with ``control``) the control server."""
        if control is not None:
            self._server = ControlServer(control, self.handle)
        self._thread = threading.Thread(target=self._loop, name="shaledb-compactor", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def wait_stopped(self, poll: float = 0.2) -> None:
        """Block until STOP (wakes often so signal handlers run)."""
        while not self._stop.wait(poll):
            pass

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the loop (after the pass in progress, at most ``timeout`` s),
        the control server and the compactor.  Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._work:
            self.compactor.close()


# ------------------------------------------------------------------ process


@dataclass(frozen=True)
class CompactorConfig:
    """Everything the compactor process needs; picklable."""

    url: str
    store_options: dict
    options: Options
    control: ControlAddress
    parent_pid: int
    watch_parent: bool = True


class CompactorProcess(ChildProcess):
    """The compactor service in a fresh interpreter (``python -m
    shaledb.compact --serve``), seen from the Db that started it."""

    def __init__(self, config: CompactorConfig) -> None:
        super().__init__("shaledb.compact", config, "compactor", args=("--serve",))


def run_compactor_process(config: CompactorConfig, ready_conn) -> None:
    """Body of the compactor process.  Stops on STOP, SIGTERM/SIGINT, or (at
    once, writing nothing more) when ``config.parent_pid`` dies.

    REQUIRES: the main thread of a process started by ``config.parent_pid``.
    """
    watch = ParentWatch(config.parent_pid) if config.watch_parent else None
    if watch is not None:
        watch.install()
    logs = LogForwarder(ready_conn, "shaledb-compactor")  # sends once ready went (docs/operations.md)
    svc = None
    try:
        from shaledb.storage import open_store

        raw = open_store(config.url, **config.store_options)
        store = wrap_store(watch.guard(raw, picklable=True) if watch is not None else raw, config.options)
        opener = StoreOpener(config.url, dict(config.store_options), config.options)
        svc = CompactorService(store, config.options, opener=opener)
        svc.start(config.control)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: svc.request_stop())
        ready_conn.send(("ready", {"pid": os.getpid(), "epoch": svc.compactor.epoch}))
        logs.start()
    except BaseException as exc:  # noqa: BLE001 - reported to the opener
        if watch is not None:
            watch.check()  # an orphan reports nothing
        try:
            ready_conn.send(error_message(exc))
        except Exception:  # noqa: BLE001
            pass
        if svc is not None:
            svc.stop(timeout=5)
        return
    try:
        svc.wait_stopped()
    finally:
        svc.stop(timeout=config.options.close_timeout)
        logs.stop()
        ready_conn.close()


def main(argv: list[str]) -> None:
    """``python -m shaledb.compact --serve <config fd> <ready fd>``."""
    config, ready = read_child_config(argv)
    if not isinstance(config, CompactorConfig):
        raise SystemExit("shaledb.compact --serve: unexpected config")
    run_compactor_process(config, ready)
