"""Child processes of a Db (the flusher, the compactor) and the watch that
stops them when the Db's process dies.

Parent side, :class:`ChildProcess`: starts ``python -m <module> [args]
<config fd> <ready fd>`` in a fresh interpreter (like the ``spawn`` start method, but the
user's ``__main__`` is never re-imported), sends it ``sys.path`` and one
pickled config object down one pipe, and keeps the read end of a second pipe
(``conn``) on which the child reports ``("ready", info)`` or ``("error",
kind, message)``; :meth:`ChildProcess.wait_ready` reads that message.

Child side, :func:`read_child_config` (the config and the ready pipe) and
:class:`ParentWatch`.  Invariant: once the process that started a child is
gone, at any stage, the child writes nothing more to the store; it runs its
cleanups and exits.  See docs/architecture.md.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Callable

import shaledb.errors as errors
from shaledb.errors import ShaleDBError, Unavailable
from shaledb.storage.wrappers import StoreWrapper

__all__ = [
    "ChildProcess",
    "OrphanGuardStore",
    "ParentWatch",
    "error_message",
    "exit_child",
    "read_child_config",
]


class ChildProcess:
    """A child interpreter running ``python -m module``, seen from its parent.

    Offers the ``multiprocessing.Process`` methods a Db uses (``pid``,
    ``is_alive``, ``exitcode``, ``join``, ``kill``); ``conn`` is the read end
    of the ready pipe.  ``label`` names the child in messages; ``args`` go
    before the two file descriptors on the command line.
    """

    def __init__(self, module: str, config: Any, label: str, args: tuple[str, ...] = (), *,
                 send_later: bool = False) -> None:
        import subprocess
        from multiprocessing.connection import Connection

        self.label = label
        cfg_r, cfg_w = os.pipe()
        ready_r, ready_w = os.pipe()
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", module, *args, str(cfg_r), str(ready_w)],
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
        self._cfg_w: int | None = cfg_w
        if not send_later:
            self.send_config(config)

    def send_config(self, config: Any) -> None:
        """Send ``sys.path`` and ``config`` to the child (once).  With
        ``send_later=True`` the child's interpreter starts and imports its
        module while the parent prepares what the config names (the arena
        pool: most of ``shaledb.open``'s time otherwise)."""
        import pickle

        fd, self._cfg_w = self._cfg_w, None
        if fd is None:
            raise errors.Internal(f"the {self.label}'s config was already sent")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(list(sys.path), f)
                pickle.dump(config, f)
        except (BrokenPipeError, OSError):
            pass  # the child died at start; is_alive() says so

    def _close_config_pipe(self) -> None:
        fd, self._cfg_w = self._cfg_w, None
        if fd is not None:
            os.close(fd)  # a child still waiting for its config reads EOF and exits

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
        self._close_config_pipe()
        try:
            self._popen.kill()
        except ProcessLookupError:
            pass

    def wait_ready(self, timeout: float) -> Any:
        """The child's ready info; raises its open error (as the shaledb
        error it names), or Unavailable if it exits or stays silent for
        ``timeout`` seconds.  REQUIRES: called once."""
        deadline = time.monotonic() + timeout
        msg = None
        while True:
            if self.conn.poll(0.05):
                try:
                    msg = self.conn.recv()
                except EOFError:
                    msg = None
                break
            if not self.is_alive():
                break
            if time.monotonic() > deadline:
                raise Unavailable(f"the {self.label} did not start within {timeout:g} s")
        if msg is None:
            self.join(5)
            raise Unavailable(f"the {self.label} process exited during open (exit code {self.exitcode})")
        if msg[0] == "error":
            _, kind, text = msg
            cls = getattr(errors, kind, None)
            if not (isinstance(cls, type) and issubclass(cls, ShaleDBError)):
                cls = errors.Internal
            raise cls(text)
        return msg[1]

    def close(self) -> None:
        """Close the ready pipe (after the child has been reaped)."""
        self._close_config_pipe()
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - already closed
            pass


def error_message(exc: BaseException) -> tuple:
    """The ``("error", kind, message)`` a child sends when it cannot open."""
    import traceback

    if isinstance(exc, ShaleDBError):
        return ("error", type(exc).__name__, str(exc))
    return ("error", "Internal", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")


def read_child_config(argv: list[str]):
    """Child side of :class:`ChildProcess`: ``argv`` is ``[config fd, ready
    fd]``; restores the parent's ``sys.path`` and returns ``(config, ready
    connection)``."""
    import pickle
    from multiprocessing.connection import Connection

    cfg_fd, ready_fd = int(argv[0]), int(argv[1])
    ready = Connection(ready_fd, readable=False)
    with os.fdopen(cfg_fd, "rb") as f:
        try:
            sys.path[:] = pickle.load(f)
            config = pickle.load(f)
        except EOFError:  # the parent gave up before it sent the config: nothing was started
            os._exit(0)
    return config, ready


def exit_child(code: int = 0) -> None:
    """End a child process at once after its orderly shutdown: flush stdio and
    logging, then ``os._exit``.  Interpreter finalization (module teardown,
    numba's and boto3's exit hooks) adds about 0.2 s to every ``close()`` and
    does nothing a stopped flusher or compactor needs.
    REQUIRES: the child's work is done and its threads are stopped or idle."""
    import logging

    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


class ParentWatch:
    """Stops a child process, without one more store write, once the process
    that started it (``parent_pid``) is gone.

    Three guards, so no stage (open, fence, replay, steady state) escapes:

    * the Linux parent-death signal (``prctl(PR_SET_PDEATHSIG)``), set by
      :meth:`install`; it fires when the parent *thread* exits, so the
      handler acts only if ``os.getppid()`` really changed (a Db opened from
      a short-lived thread keeps its children);
    * a watchdog thread that polls ``os.getppid()`` (covers platforms without
      prctl, and a parent thread that exited before the parent process);
    * :meth:`guard` wraps the child's store: every put, conditional put and
      delete checks the parent first and never writes for an orphan.

    On parent death: run ``cleanups`` (each at most once, errors ignored),
    then ``os._exit`` (other threads, an upload included, stop at once).
    """

    SIGNAL = signal.SIGUSR1

    def __init__(self, parent_pid: int, cleanups: tuple[Callable[[], None], ...] = ()):
        self.parent_pid = parent_pid
        self.cleanups = tuple(cleanups)
        self._exiting = threading.Lock()

    def orphaned(self) -> bool:
        return os.getppid() != self.parent_pid

    def install(self) -> None:
        """REQUIRES: the main thread (signal handlers)."""
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
            for fn in self.cleanups:
                try:
                    fn()
                except BaseException:  # noqa: BLE001 - exit whatever happens
                    pass
        finally:
            os._exit(0)

    def guard(self, store, *, picklable: bool = False) -> "OrphanGuardStore":
        """``store`` wrapped so that an orphan never writes.  ``picklable``:
        a copy sent to a worker process guards that worker the same way, with
        this process as the parent to watch (so when this process exits on
        its parent's death, its workers stop writing too)."""
        return OrphanGuardStore(store, self, picklable=picklable)


def _set_parent_death_signal(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)``; False where unsupported (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _guard_in_worker(inner, parent_pid: int) -> "OrphanGuardStore":
    """Unpickle an :class:`OrphanGuardStore` in a worker process: watch the
    process that sent it (no signal or thread: the store checks)."""
    return OrphanGuardStore(inner, ParentWatch(parent_pid), picklable=True)


class OrphanGuardStore(StoreWrapper):
    """A child's store: checks that the parent lives before every write (put,
    conditional put, delete); an orphan exits instead of writing."""

    def __init__(self, inner, watch: ParentWatch, *, picklable: bool = False):
        super().__init__(inner)
        self._watch = watch
        self._picklable = picklable

    def __reduce__(self):
        if not self._picklable:
            raise TypeError("this guarded store never leaves its process")
        return (_guard_in_worker, (self.inner, os.getpid()))

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
