"""``shaledb.open`` and :class:`Db`: the user's handle on one database.

A Db owns, for as long as it is open:

* the arena pool (shared memory, ``shaledb.memtable.arena_pool``) into which this
  process and every ``db.writer()`` handle append;
* the flusher (``shaledb.flush.flusher``): a process of its own (a fresh
  interpreter, ``python -m shaledb.flush``), or a thread of
  this process for a ``memory://`` store (which only exists in this process);
* the authenticated control channel to the flusher (``shaledb.flush.control``);
* a read path: arenas (newest data), then the L0 SSTs of the manifest newest
  first, then sorted runs.  Versions are compared by sequence number, so the
  newest write wins wherever it sits; tombstones hide older versions.

Writes are delegated to this process's writer (``shaledb.memtable.writer``).  The
durability each call guarantees is in docs/durability.md.

Thread safety: a Db may be shared by threads of one process.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from time import monotonic as _monotonic
from typing import Any, Iterator

from shaledb.flush.control import ControlClient, new_control_address, remove_control_address
from shaledb.flush.flusher import wrap_store
from shaledb.errors import (
    Closed,
    Fenced,
    InvalidArgument,
    ObjectNotFound,
    PreconditionFailed,
    ShaleDBError,
    StorageError,
    Unavailable,
)
from shaledb.options import MAX_KEY_BYTES, Options
from shaledb.memtable.writer import WriteBatch, Writer  # noqa: F401 - re-exported

__all__ = ["Db", "EngineWriter", "WriteBatch", "Writer", "open"]

_open_dbs: "weakref.WeakSet[Db]" = weakref.WeakSet()

#: a get searches at most this many buffered writes; a longer buffer is appended first


def _close_all_at_exit() -> None:
    for db in list(_open_dbs):
        try:
            db.close()
        except BaseException:  # noqa: BLE001 - best effort at interpreter exit
            pass


atexit.register(_close_all_at_exit)


def _root_url(url_or_path: Any) -> str:
    if isinstance(url_or_path, os.PathLike):
        url_or_path = os.fspath(url_or_path)
    if isinstance(url_or_path, bytes):
        raise InvalidArgument("the database root must be a str path or url, not bytes")
    if not isinstance(url_or_path, str) or not url_or_path:
        raise InvalidArgument(f"the database root must be a non-empty path or url, got {url_or_path!r}")
    if "\x00" in url_or_path:
        raise InvalidArgument(f"the database root {url_or_path!r} contains a NUL byte; remove it")
    if "://" in url_or_path:
        return url_or_path
    path = os.path.abspath(url_or_path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise InvalidArgument(f"the database root {path!r} exists and is not a directory")
    return path


def _check_key(key: Any) -> bytes:
    if isinstance(key, (bytearray, memoryview)):
        key = bytes(key)
    if not isinstance(key, bytes):
        raise InvalidArgument(f"keys must be bytes, got {type(key).__name__}")
    if not key:
        raise InvalidArgument("keys must not be empty")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidArgument(f"key of {len(key)} bytes is longer than {MAX_KEY_BYTES}")
    return key


def _check_bound(name: str, key: Any) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, (bytearray, memoryview)):
        key = bytes(key)
    if not isinstance(key, bytes):
        raise InvalidArgument(f"scan {name} must be bytes or None, got {type(key).__name__}")
    return key


class _FlusherProcess:
    """The flusher in a fresh interpreter (``python -m shaledb.flush``).

    Like multiprocessing's ``spawn`` start method (a new interpreter, nothing
    inherited but the environment and ``sys.path``), but the user's
    ``__main__`` is never re-imported: scripts without an
    ``if __name__ == "__main__"`` guard, ``python -`` and notebooks can open
    databases.  The config goes down one pipe (pickled); the ready message
    comes back on another (a ``multiprocessing.connection.Connection``).
    Offers the ``multiprocessing.Process`` methods the Db uses.
    """

    def __init__(self, config) -> None:
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


def open(url_or_path: Any, options: Options | None = None, **overrides: Any) -> "Db":  # noqa: A001
    """Open (creating if empty) the database at ``url_or_path`` for writing.

    ``url_or_path``: a directory (created if missing), ``file:///dir``,
    ``s3://bucket/prefix`` or ``memory://name``.  Opening fences any other
    writer of the same root: its next call raises :class:`~shaledb.Fenced`.
    """
    opts = Options.resolve(options, overrides)
    return Db._open(_root_url(url_or_path), opts)


class Db:
    """An open database.  Use :func:`shaledb.open`; close with :meth:`close`
    or a ``with`` block."""

    # ------------------------------------------------------------------ open

    def __init__(self, *_a, **_k):
        raise TypeError("use shaledb.open(url_or_path) to open a database")

    @classmethod
    def _open(cls, url: str, options: Options) -> "Db":
        from shaledb.storage import open_store

        self = object.__new__(cls)
        self.url = url
        self.options = options
        self._lock = threading.RLock()
        self._closed = False
        self._closing_error: BaseException | None = None
        self._next_check = 0.0
        self._proc = None
        self._thread_flusher = None
        self._control_addr = None
        self._control = None
        self._mem = None
        self._store = None
        self._reader = None
        self._writer = None
        store_options = dict(options.store_options)
        try:
            self._store = wrap_store(open_store(url, **store_options), options)
            in_process = url.startswith("memory://")
            self._control_addr = new_control_address()
            self._mem = Memtable.create(url, options)
            if in_process:
                self._start_thread_flusher()
            else:
                self._start_process_flusher(url, store_options)
            self._control = ControlClient(self._control_addr, options.request_timeout)
            self._mem.start(self._info["last_seq"], self._control)
            from shaledb.read.reader import Reader

            self._reader = Reader(self._store, options, self._mem)
            # bound methods of the hot paths
            self._writer = self._mem.writer
            self._put = self._writer.put
            self._rget = self._reader.get
        except BaseException:
            self._teardown(kill=True)
            raise
        _open_dbs.add(self)
        return self

    def _start_process_flusher(self, url: str, store_options: dict) -> None:
        from shaledb.flush.flusher import FlusherConfig

        config = FlusherConfig(
            url=url,
            store_options=store_options,
            options=self.options,
            control=self._control_addr,
            pool=self._mem.descriptor(),
            parent_pid=os.getpid(),
        )
        proc = _FlusherProcess(config)
        self._proc = proc
        self._ready_conn = proc.conn
        # While the flusher starts (a second interpreter), load this process's
        # kernels, so the first put/get/scan does not pay for it.
        try:
            from shaledb.kernels.warmup import warmup

            warmup()  # every kernel module, the read kernels included
        except Exception:  # noqa: BLE001 - only a head start; the kernels load on first use anyway
            pass
        deadline = time.monotonic() + self.options.open_timeout
        while True:
            if proc.conn.poll(0.05):
                try:
                    msg = proc.conn.recv()
                except EOFError:
                    msg = None
                break
            if not proc.is_alive():
                msg = None
                break
            if time.monotonic() > deadline:
                raise Unavailable(f"the flusher did not start within {self.options.open_timeout:g} s")
        if msg is None:
            proc.join(5)
            raise Unavailable(f"the flusher process exited during open (exit code {proc.exitcode})")
        if msg[0] == "error":
            _, kind, text = msg
            import shaledb.errors as errors

            exc_cls = getattr(errors, kind, errors.Internal)
            raise exc_cls(text)
        self._info = msg[1]

    def _start_thread_flusher(self) -> None:
        from shaledb.flush.flusher import Flusher

        fl = Flusher(self._store, self.options, self._mem.flusher_view())
        self._info = fl.recover()
        fl.start(self._control_addr)
        self._thread_flusher = fl

    # --------------------------------------------------------------- helpers

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the database is closed")
        if self._closing_error is not None:
            raise type(self._closing_error)(str(self._closing_error))
        now = time.monotonic()
        if now < self._next_check:
            return
        # At most every few ms (the checks cost more than a buffered put):
        self._next_check = now + 0.01
        if self._mem is not None and self._mem.fenced():
            self._closing_error = Fenced("a newer writer opened this database; this Db is fenced")
            raise Fenced(str(self._closing_error))
        if self._mem is not None and self._mem.failed():
            self._closing_error = self._flusher_failure()
            raise type(self._closing_error)(str(self._closing_error))
        if self._proc is not None and not self._proc.is_alive():
            self._next_check = 0.0
            raise Unavailable(
                f"the flusher process died (exit code {self._proc.exitcode}); close this Db and open it again"
            )

    def _fail(self, exc: ShaleDBError) -> None:
        """Fenced, or a store error no retry fixes (the flusher failed): every
        later call raises it.  REQUIRES: ``exc`` came from a write or flush."""
        if isinstance(exc, Fenced) or not isinstance(exc, (ObjectNotFound, PreconditionFailed)):
            if self._closing_error is None:
                self._closing_error = exc

    def _flusher_failure(self) -> ShaleDBError:
        """The error that failed the flusher (e.g. a StorageError naming a
        full disk), as the flusher reports it; Unavailable if it cannot say."""
        import shaledb.errors as errors

        try:
            text = self._control.call("status", timeout=10)["failed"] or ""
        except ShaleDBError:
            text = ""
        kind, _, msg = text.partition(": ")
        cls = getattr(errors, kind, None)
        if isinstance(cls, type) and issubclass(cls, ShaleDBError) and msg:
            return cls(msg)
        return Unavailable("the database's flusher failed; close this Db and reopen it")

    def _flusher_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.is_alive()
        return True

    def _call(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        self._check_open()
        try:
            return self._control.call(op, *args, timeout=timeout)
        except (Fenced, StorageError) as exc:
            self._fail(exc)
            raise
        except Unavailable:
            if not self._flusher_alive():
                raise Unavailable(
                    f"the flusher process died (exit code {self._proc.exitcode}); close this Db and reopen"
                ) from None
            raise

    # ----------------------------------------------------------------- writes

    def put(self, key: bytes, value: bytes, *, await_durable: bool = True) -> int | None:
        """Write ``key = value``; return the sequence number of the write.

        With ``await_durable=False`` a small put is buffered in this process
        (appended with the next batch, within 5 ms, or before any other call)
        and returns ``None``: its sequence number is assigned when the buffer
        is appended, so that sequence order stays append order.
        """
        # the writer validates key and value and reads the pool status word;
        # _check_open's own checks are rate-limited
        if self._closed or self._closing_error is not None or _monotonic() >= self._next_check:
            self._check_open()
        try:
            return self._put(key, value, await_durable=await_durable)
        except (Fenced, StorageError) as exc:
            self._fail(exc)
            raise

    def delete(self, key: bytes, *, await_durable: bool = True) -> int | None:
        """Delete ``key`` (write a tombstone); return its sequence number
        (``None`` when buffered, as for :meth:`put`)."""
        self._check_open()
        try:
            return self._mem.writer.delete(key, await_durable=await_durable)
        except (Fenced, StorageError) as exc:
            self._fail(exc)
            raise

    def write(self, batch, *, await_durable: bool = True) -> int:
        """Apply a :class:`~shaledb.WriteBatch` atomically; return the last seq."""
        self._check_open()
        try:
            return self._mem.writer.write(batch, await_durable=await_durable)
        except (Fenced, StorageError) as exc:
            self._fail(exc)
            raise

    def put_many(self, keys, values, *, await_durable: bool = True) -> int:
        """Write many pairs: sequences of bytes, or numpy ``(uint8 data, int64
        offsets)`` pairs for keys and values.  Return the last seq."""
        self._check_open()
        try:
            return self._mem.writer.put_many(keys, values, await_durable=await_durable)
        except (Fenced, StorageError) as exc:
            self._fail(exc)
            raise

    def writer(self):
        """A picklable handle that lets another process append and flush."""
        self._check_open()
        return self._mem.new_writer_handle()

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        """The newest value of ``key``, or None if absent or deleted."""
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            key = _check_key(key)
        if self._closed or self._closing_error is not None or _monotonic() >= self._next_check:
            self._check_open()
        w = self._writer
        bk = w._bk
        if bk and key in bk:  # a buffered write of this key is its newest version
            w.drain()
        return self._rget(key)

    def scan(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs with ``start <= key < end`` in key order (lazy)."""
        start = _check_bound("start", start)
        end = _check_bound("end", end)
        self._check_open()
        self._mem.drain()
        return self._reader.scan(start, end)

    # ------------------------------------------------------------- durability

    def flush(self, memtable: bool = False) -> int:
        """Make every write made before this call durable (in the WAL, or with
        ``memtable=True`` or ``wal=False``, in L0).  Returns the durable seq."""
        if not isinstance(memtable, bool):
            raise InvalidArgument("flush(memtable=...) takes a bool")
        op = "flush_memtable" if memtable else "flush_wal"
        self._check_open()
        self._mem.before_flush()
        seq = self._call(op)
        self._reader.invalidate()
        return seq

    def status(self) -> dict:
        """Counters from the flusher (for tools and tests).  Answers for a
        failed or fenced Db too (``failed`` says why); Closed after close."""
        if self._closed:
            raise Closed("the database is closed")
        try:
            return self._control.call("status")
        except Unavailable:
            if not self._flusher_alive():
                raise Unavailable(
                    f"the flusher process died (exit code {self._proc.exitcode}); close this Db and reopen"
                ) from None
            raise

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Flush memtables to L0, stop the flusher, free shared memory.  Idempotent.

        Raises (after freeing everything) if the final flush failed.
        """
        with self._lock:
            if self._closed:
                return
            error = None
            try:
                if self._control is not None and not self._flusher_alive():
                    error = self._dead_flusher_loss()
                elif self._control is not None:
                    if self._closing_error is None and not self._mem.fenced():
                        # Our writer drains; every writer handle gets Closed from
                        # now on, so nothing is appended after the final seal.
                        self._mem.stop_writers()
                        self._control.call("close", timeout=self.options.close_timeout)
                    else:
                        self._control.call("abort", timeout=10)
                        if not isinstance(self._closing_error, (Fenced, type(None))):
                            # the flusher failed: writes may not be durable
                            error = type(self._closing_error)(str(self._closing_error))
            except ShaleDBError as exc:
                error = exc
                if isinstance(exc, Unavailable) and self._proc is not None:
                    self._proc.join(2)
                    if not self._proc.is_alive():
                        # the flusher died under the close: fine only if
                        # every write had already become durable
                        error = self._dead_flusher_loss()
                try:
                    self._control.call("abort", timeout=10)
                except ShaleDBError:
                    pass
            finally:
                self._closed = True
                _open_dbs.discard(self)
                self._teardown(kill=error is not None)
            if error is not None and not isinstance(error, Fenced):
                raise error

    def _dead_flusher_loss(self) -> ShaleDBError | None:
        """close() found the flusher process dead: Unavailable if any write
        made through this Db might not be durable, else None.

        The records are still in the arenas but nobody will upload them;
        ShaleDB does not restart the flusher (docs/durability.md).
        """
        if self._closing_error is not None or self._mem.fenced():
            return None
        unappended = False
        try:
            self._mem.drain()  # this process's buffered writes join the arenas
        except ShaleDBError:
            unappended = True
        self._mem.stop_writers()
        pool = self._mem.pool
        last, durable = pool.next_seq() - 1, pool.durable_seq()
        if last <= durable and not unappended:
            return None
        return Unavailable(
            f"the flusher process died (exit code {self._proc.exitcode}) before writes up to seq {last} "
            f"became durable (durable up to seq {durable}); they are lost unless they reached the WAL"
        )

    def _teardown(self, kill: bool) -> None:
        if self._mem is not None:
            self._mem.stop_writers()
        if self._control is not None:
            self._control.close()
        if self._thread_flusher is not None:
            self._thread_flusher.stop()
            self._thread_flusher = None
        if self._proc is not None:
            proc = self._proc
            proc.join(timeout=0 if kill else min(10.0, self.options.close_timeout))
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
            self._proc = None
            try:
                self._ready_conn.close()
            except Exception:  # noqa: BLE001
                pass
        if self._reader is not None:
            self._reader.close()
        if self._mem is not None:
            self._mem.destroy()
            self._mem = None
        if self._control_addr is not None:
            remove_control_address(self._control_addr)
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> "Db":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<shaledb.Db {self.url!r} {state}>"


# ===========================================================================
# Integration with the arena pool and the writer (shaledb.memtable.arena_pool,
# shaledb.memtable.writer): the hooks through which writers reach the flusher.


class EngineHooks:
    """Writer hooks that talk to the flusher over the control channel.

    Picklable (address, key and options only); each process connects on
    first use.  Liveness checks while a writer waits are rate-limited.
    """

    def __init__(self, addr, options: Options):
        self.addr = addr
        self.options = options
        self._client: ControlClient | None = None
        self._last_alive = 0.0

    def __getstate__(self):
        return {"addr": self.addr, "options": self.options}

    def __setstate__(self, st):
        self.__init__(st["addr"], st["options"])

    def _c(self) -> ControlClient:
        if self._client is None:
            self._client = ControlClient(self.addr, self.options.request_timeout)
        return self._client

    def await_durable(self, pool, seq: int, timeout: float) -> None:
        if not self.options.wal:
            # no WAL: a write is durable once its generation is in L0
            if pool.durable_seq() < seq:
                self._c().call("flush_memtable", timeout=timeout + 5)
            return
        if pool.durable_seq() >= seq:
            return
        try:
            pool.check_status()
        except Unavailable:
            pass  # the flusher failed: its answer below names the cause
        self._c().call("await_durable", seq, timeout, timeout=timeout + 5)

    def request_seal(self, pool) -> None:
        self._c().call("seal")

    def sealed(self, pool, gen: int) -> None:
        pass  # the flusher finds sealed generations every flush_interval

    def check_alive(self, pool) -> None:
        pool.check_status()
        now = time.monotonic()
        if now - self._last_alive > 0.5:
            self._last_alive = now
            self._c().call("ping", timeout=min(10.0, self.options.request_timeout))

    def flush(self, pool, memtable: bool) -> int:
        return self._c().call("flush_memtable" if memtable else "flush_wal")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class EngineWriter(Writer):
    """The pool's writer plus the ``mid-append`` failpoint.

    When it fires, the writer is caught inside an append: it holds the pool
    lock, has reserved the seqs of its batch from the shared counter and has
    written part of the records beyond its arena's committed offset, without
    committing.  A SIGKILL there is the worst moment for a writer to die.
    """

    _fp = None

    def _append_chunk(self, kd, ko, vd, vo, kinds, nbytes):
        fp = self._fp
        if fp is None:
            from shaledb.failpoints import Failpoints

            opts = getattr(self._hooks, "options", None)
            fp = self._fp = Failpoints(opts.failpoints if opts is not None else "")
        if fp:
            held = []
            try:
                fp.hit("mid-append", when_firing=lambda: self._half_append(kd, kinds, held))
            finally:
                if held:  # an "error" or "sleep" action: leave the append undone
                    held[0].__exit__(None, None, None)
        return super()._append_chunk(kd, ko, vd, vo, kinds, nbytes)

    def _half_append(self, kd, kinds, held) -> None:
        from shaledb.kernels import arena as K

        pool = self._pool
        pool.lock.__enter__()
        held.append(pool.lock)
        pool.counter[0] = pool.counter[0] + _np_uint64(kinds.shape[0])  # seqs reserved
        i = pool._owned.get(self._wid, -1)
        if i >= 0:  # some bytes of the batch beyond the committed offset
            a = pool.arena(i)
            start = int(a[: K.HEADER_BYTES].view("<u8")[K.H_COMMITTED])
            end = min(a.shape[0], start + min(len(kd), 64))
            a[start:end] = 0xAB


def _np_uint64(n: int):
    import numpy

    return numpy.uint64(n)


class Memtable:
    """The Db process's side of the arena pool: creation, reads, cleanup."""

    @classmethod
    def create(cls, url: str, options: Options) -> "Memtable":
        from shaledb.memtable.arena_pool import ArenaPool

        self = cls()
        self.options = options
        self.pool = ArenaPool.create(
            url,
            arena_bytes=options.arena_bytes,
            max_arenas=options.max_arenas,
            initial_arenas=options.initial_arenas,
            max_unflushed_bytes=options.max_unflushed_bytes,
            seal_bytes=options.l0_sst_bytes,
        )
        self.writer = None
        self._hooks = None
        # the read path calls these per get: bind the pool's methods directly
        self.lookup = self.pool.lookup
        self.manifest_id = self.pool.manifest_id
        return self

    def descriptor(self) -> dict:
        return self.pool.descriptor()

    def flusher_view(self):
        return self.pool

    def start(self, last_seq: int, control: ControlClient) -> None:
        self.pool.set_next_seq(last_seq + 1)
        self.pool.publish_durable(last_seq)
        self._hooks = EngineHooks(control.addr, self.options)
        self.writer = self.new_writer_handle(pool=self.pool)

    def new_writer_handle(self, pool=None):
        return EngineWriter(self.descriptor(), hooks=self._hooks, timeout=self.options.request_timeout, pool=pool)

    # -- reads (shaledb.read.reader.Reader)

    def drain(self) -> None:
        if self.writer is not None and self.writer.has_buffered():
            self.writer.drain()

    def lookup(self, key: bytes):
        return self.pool.lookup(key)

    def sorted_runs_snapshot(self):
        return self.pool.sorted_runs_snapshot()

    def manifest_id(self) -> int:
        return self.pool.manifest_id()

    def fenced(self) -> bool:
        return self.pool.fenced()

    def failed(self) -> bool:
        from shaledb.format.enums import PoolStatus

        return self.pool.status() == PoolStatus.FAILED

    def before_flush(self) -> None:
        self.drain()

    # -- shutdown

    def stop_writers(self) -> None:
        w, self.writer = self.writer, None
        if w is not None:
            try:
                w.close()
            except ShaleDBError:
                pass
        try:
            self.pool.publish_closed()
        except Exception:  # noqa: BLE001 - already detached
            pass
        if self._hooks is not None:
            self._hooks.close()

    def destroy(self) -> None:
        self.pool.destroy()
