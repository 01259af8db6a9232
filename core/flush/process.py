"""The flusher process: started by the Db, run as ``python -m shaledb.flush``.

Parent side, :class:`FlusherProcess`: starts a fresh interpreter (like the
``spawn`` start method, but the user's ``__main__`` is never re-imported),
sends it ``sys.path`` and the pickled :class:`FlusherConfig` down one pipe and
reads the ready message (or the error that stopped open) from another.

Child side, :func:`run_flusher_process`: opens the store, recovers, serves.
Invariant: once the process that started it is gone, at any stage (open and
replay included), the flusher writes nothing more; it removes the Db's
shared memory and control directory and exits (:class:`ParentWatch`).
See docs/architecture.md.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from shaledb.errors import ShaleDBError
from shaledb.flush.control import ControlAddress, remove_control_address
from shaledb.flush.flusher import Flusher
from shaledb.options import Options, wrap_store
from shaledb.storage.wrappers import StoreWrapper

__all__ = ["FlusherConfig", "FlusherProcess", "OrphanGuardStore", "ParentWatch", "main", "run_flusher_process"]


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


class FlusherProcess:
    """The flusher in a fresh interpreter (``python -m shaledb.flush``), seen
    from the process that started it.

    Offers the ``multiprocessing.Process`` methods the Db uses; ``conn`` is
    the read end of the ready pipe (a ``multiprocessing.connection.Connection``).
    """

    def __init__(self, config: FlusherConfig) -> None:
        import pickle
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        cfg_r, cfg_w = os.pipe()
        ready_r, ready_w = os.pipe()
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "shaledb.flush", str(cfg_r), str(ready_w)],
                pass_fds=(cfg_r, ready_w),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (cfg_r, cfg_w, ready_r, ready_w):
                os.close(fd)
            raise
        os.close(cfg_r)
        os.close(ready_w)
        self.conn = Connection(ready_r, writable=False)
        self.pid = self._popen.pid
        try:
            with os.fdopen(cfg_w, "wb") as f:
                pickle.dump(list(sys.path), f)
                pickle.dump(config, f)
        except (BrokenPipeError, OSError):
            pass  # the child died at start; is_alive() says so

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float | None = None) -> None:
        import subprocess

        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        try:
            self._popen.kill()
        except ProcessLookupError:
            pass


class ParentWatch:
    """Stops the flusher process, without one more store write, once the
    process that started it is gone.

    Three guards, so no stage (open, fence, replay, steady state) escapes:

    * the Linux parent-death signal (``prctl(PR_SET_PDEATHSIG)``), set first
      thing; it fires when the parent *thread* exits, so the handler acts only
      if ``os.getppid()`` really changed (a Db opened from a short-lived thread
      keeps its flusher);
    * a watchdog thread that polls ``os.getppid()`` (covers platforms without
      prctl, and a parent thread that exited before the parent process);
    * :meth:`guard` wraps the flusher's store: every put, conditional put and
      delete checks the parent first and never writes for an orphan.

    On parent death: unlink the Db's shared memory and control directory,
    then ``os._exit`` (other threads, a WAL upload included, stop at once).
    """

    SIGNAL = signal.SIGUSR1

    def __init__(self, config: FlusherConfig):
        self.parent_pid = config.parent_pid
        self.dbtag = config.pool.get("dbtag") if isinstance(config.pool, dict) else None
        self.control = config.control
        self._exiting = threading.Lock()

    def orphaned(self) -> bool:
        return os.getppid() != self.parent_pid

    def install(self) -> None:
        if _set_parent_death_signal(self.SIGNAL):
            signal.signal(self.SIGNAL, self._on_signal)
        self.check()  # the parent may have died before prctl took effect
        threading.Thread(target=self._poll, name="shaledb-parent-watch", daemon=True).start()

    def _on_signal(self, signum, frame) -> None:
        self.check()

    def _poll(self) -> None:
        while True:
            time.sleep(0.1)
            self.check()

    def check(self) -> None:
        """Exit the process at once if the parent is gone."""
        if self.orphaned():
            self.exit()

    def exit(self) -> None:
        if not self._exiting.acquire(blocking=False):
            time.sleep(3600)  # another thread is cleaning up and exiting
        try:
            if self.dbtag:
                from shaledb.memtable.shm import cleanup_segments

                cleanup_segments(self.dbtag)
            remove_control_address(self.control)
        finally:
            os._exit(0)

    def guard(self, store):
        return OrphanGuardStore(store, self)


def _set_parent_death_signal(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)``; False where unsupported (not Linux)."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class OrphanGuardStore(StoreWrapper):
    """The flusher process's store: checks that the parent lives before every
    write (put, conditional put, delete); an orphan exits instead of writing."""

    def __init__(self, inner, watch: ParentWatch):
        super().__init__(inner)
        self._watch = watch

    def __reduce__(self):  # never leaves the flusher process
        raise TypeError("the flusher's guarded store is not picklable")

    def put(self, *a, **k):
        self._watch.check()
        return self.inner.put(*a, **k)

    def put_if_absent(self, *a, **k):
        self._watch.check()
        return self.inner.put_if_absent(*a, **k)

    def put_if_match(self, *a, **k):
        self._watch.check()
        return self.inner.put_if_match(*a, **k)

    def delete(self, *a, **k):
        self._watch.check()
        return self.inner.delete(*a, **k)


def run_flusher_process(config: FlusherConfig, ready_conn) -> None:
    """Body of the flusher process (started by :class:`FlusherProcess`).

    REQUIRES: the main thread of a process started by ``config.parent_pid``.
    """
    flusher = None
    watch = ParentWatch(config) if config.watch_parent else None
    if watch is not None:
        watch.install()
    try:
        from shaledb.memtable.arena_pool import ArenaPool
        from shaledb.storage import open_store

        raw = open_store(config.url, **config.store_options)
        store = wrap_store(watch.guard(raw) if watch is not None else raw, config.options)
        flusher = Flusher(store, config.options, ArenaPool.attach(config.pool))
        info = flusher.recover()
        flusher.start(config.control)
        info["pid"] = os.getpid()
        ready_conn.send(("ready", info))
    except BaseException as exc:  # noqa: BLE001 - reported to the opener
        if watch is not None:
            watch.check()  # an orphan reports nothing: it cleans up and exits
        try:
            kind = type(exc).__name__ if isinstance(exc, ShaleDBError) else "Internal"
            msg = str(exc) if isinstance(exc, ShaleDBError) else f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            ready_conn.send(("error", kind, msg))
        except Exception:  # noqa: BLE001
            pass
        return
    try:
        try:  # load every kernel now rather than on the first WAL upload / L0 flush
            from shaledb.kernels.warmup import warmup

            warmup()
        except Exception:  # noqa: BLE001 - they load on first use anyway
            pass
        flusher.wait_stopped()
    finally:
        flusher.stop()
        ready_conn.close()


def main(argv: list[str]) -> None:
    """``python -m shaledb.flush <config fd> <ready fd>``: read the parent's
    sys.path and the pickled FlusherConfig, then run the flusher."""
    import pickle
    import sys
    from multiprocessing.connection import Connection

    cfg_fd, ready_fd = int(argv[0]), int(argv[1])
    ready = Connection(ready_fd, readable=False)
    with os.fdopen(cfg_fd, "rb") as f:
        sys.path[:] = pickle.load(f)
        config = pickle.load(f)
    run_flusher_process(config, ready)

