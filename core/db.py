"""``shaledb.open`` and :class:`Db`: the user's handle on one database.

A Db owns, for as long as it is open:

* the arena pool (shared memory, ``shaledb.arena_pool``) into which this
  process and every ``db.writer()`` handle append;
* the flusher (``shaledb.flusher``): a ``spawn``-ed process, or a thread of
  this process for a ``memory://`` store (which only exists in this process);
* the authenticated control channel to the flusher (``shaledb.control``);
* a read path: arenas (newest data), then the L0 SSTs of the manifest newest
  first, then sorted runs.  Versions are compared by sequence number, so the
  newest write wins wherever it sits; tombstones hide older versions.

Writes are delegated to this process's writer (``shaledb.writer``).  The
durability each call guarantees is in docs/durability.md.

Thread safety: a Db may be shared by threads of one process.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
import time
import weakref
from typing import Any, Iterator

from shaledb.control import ControlClient, new_control_address, remove_control_address
from shaledb.errors import (
    Closed,
    Corruption,
    Fenced,
    InvalidArgument,
    ObjectNotFound,
    ShaleDBError,
    Unavailable,
)
from shaledb.options import MAX_KEY_BYTES, Options

__all__ = ["Db", "WriteBatch", "Writer", "open"]

_open_dbs: "weakref.WeakSet[Db]" = weakref.WeakSet()


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


def wrap_store(store, options: Options):
    """The store as the engine uses it: the test wrapper, then retries."""
    from shaledb.storage.wrappers import RetryingStore

    if options.store_wrapper is not None:
        store = options.store_wrapper(store)
    return RetryingStore(store, deadline=min(30.0, options.request_timeout))


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
        self._proc = None
        self._thread_flusher = None
        self._control_addr = None
        self._control = None
        self._mem = None
        self._store = None
        self._reader = None
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
            from shaledb.read import Reader

            self._reader = Reader(self._store, options, self._mem)
        except BaseException:
            self._teardown(kill=True)
            raise
        _open_dbs.add(self)
        return self

    def _start_process_flusher(self, url: str, store_options: dict) -> None:
        from shaledb.flusher import FlusherConfig, flusher_process_main

        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        config = FlusherConfig(
            url=url,
            store_options=store_options,
            options=self.options,
            control=self._control_addr,
            pool=self._mem.descriptor(),
            parent_pid=os.getpid(),
        )
        proc = ctx.Process(target=flusher_process_main, args=(config, child_conn), name="shaledb-flusher", daemon=True)
        proc.start()
        child_conn.close()
        self._proc = proc
        self._ready_conn = parent_conn
        deadline = time.monotonic() + self.options.open_timeout
        while True:
            if parent_conn.poll(0.05):
                try:
                    msg = parent_conn.recv()
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
        from shaledb.flusher import Flusher

        fl = Flusher(self._store, self.options, self._mem.flusher_view())
        self._info = fl.recover()
        fl.start(self._control_addr)
        self._thread_flusher = fl

    # --------------------------------------------------------------- helpers

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the database is closed")
        if self._closing_error is None and self._mem is not None and self._mem.fenced():
            self._closing_error = Fenced("a newer writer opened this database; this Db is fenced")
        if self._closing_error is not None:
            raise type(self._closing_error)(str(self._closing_error))
        if self._proc is not None and not self._proc.is_alive():
            raise Unavailable(
                f"the flusher process died (exit code {self._proc.exitcode}); close this Db and open it again"
            )

    def _flusher_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.is_alive()
        return True

    def _call(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        self._check_open()
        try:
            return self._control.call(op, *args, timeout=timeout)
        except Fenced as exc:
            self._closing_error = exc
            raise
        except Unavailable:
            if not self._flusher_alive():
                raise Unavailable(
                    f"the flusher process died (exit code {self._proc.exitcode}); close this Db and reopen"
                ) from None
            raise

    # ----------------------------------------------------------------- writes

    def put(self, key: bytes, value: bytes, *, await_durable: bool = True) -> int:
        """Write ``key = value``; return the sequence number of the write."""
        self._check_open()
        return self._mem.writer.put(key, value, await_durable=await_durable)

    def delete(self, key: bytes, *, await_durable: bool = True) -> int:
        """Delete ``key`` (write a tombstone); return its sequence number."""
        self._check_open()
        return self._mem.writer.delete(key, await_durable=await_durable)

    def write(self, batch, *, await_durable: bool = True) -> int:
        """Apply a :class:`~shaledb.WriteBatch` atomically; return the last seq."""
        self._check_open()
        return self._mem.writer.write(batch, await_durable=await_durable)

    def put_many(self, keys, values, *, await_durable: bool = True) -> int:
        """Write many pairs: sequences of bytes, or numpy ``(uint8 data, int64
        offsets)`` pairs for keys and values.  Return the last seq."""
        self._check_open()
        return self._mem.writer.put_many(keys, values, await_durable=await_durable)

    def writer(self):
        """A picklable handle that lets another process append and flush."""
        self._check_open()
        return self._mem.new_writer_handle()

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        """The newest value of ``key``, or None if absent or deleted."""
        key = _check_key(key)
        self._check_open()
        return self._reader.get(key)

    def scan(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs with ``start <= key < end`` in key order (lazy)."""
        start = _check_bound("start", start)
        end = _check_bound("end", end)
        self._check_open()
        return self._reader.scan(start, end)

    # ------------------------------------------------------------- durability

    def flush(self, memtable: bool = False) -> int:
        """Make every write made before this call durable (in the WAL, or with
        ``memtable=True`` or ``wal=False``, in L0).  Returns the durable seq."""
        if not isinstance(memtable, bool):
            raise InvalidArgument("flush(memtable=...) takes a bool")
        op = "flush_memtable" if memtable else "flush_wal"
        self._mem.before_flush()
        seq = self._call(op)
        self._reader.invalidate()
        return seq

    def status(self) -> dict:
        """Counters from the flusher (for tools and tests)."""
        return self._call("status")

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
                if self._control is not None and self._flusher_alive():
                    if self._closing_error is None and not self._mem.fenced():
                        self._mem.before_flush()
                        self._control.call("close", timeout=self.options.close_timeout)
                    else:
                        self._control.call("abort", timeout=10)
            except ShaleDBError as exc:
                error = exc
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
# Write batches


class WriteBatch:
    """Puts and deletes applied atomically by ``db.write(batch)`` (one seq range).

    Not thread-safe; build it in one thread.
    """

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: list[tuple[int, bytes, bytes]] = []

    def put(self, key: bytes, value: bytes) -> "WriteBatch":
        key = _check_key(key)
        self._ops.append((1, key, _check_value(value)))
        return self

    def delete(self, key: bytes) -> "WriteBatch":
        self._ops.append((0, _check_key(key), b""))
        return self

    def __len__(self) -> int:
        return len(self._ops)

    def __repr__(self) -> str:
        return f"<WriteBatch of {len(self._ops)} ops>"


def _check_value(value: Any) -> bytes:
    from shaledb.options import MAX_VALUE_BYTES

    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise InvalidArgument(f"values must be bytes, got {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidArgument(f"value of {len(value)} bytes is longer than {MAX_VALUE_BYTES}")
    return value


# ===========================================================================
# The shared memtable: arenas in shared memory, their table, the seq counter.
#
# PROVISIONAL engine-side implementation over the arena kernels
# (shaledb.kernels.arena), used until the arena pool and writer of the ARENA
# work item (shaledb.arena_pool / shaledb.writer) are wired in.  Layout:
#
#   /dev/shm/shaledb-<roottag>-<pid>-<rand>-ctl   control words (u64):
#       0 next seq   1 durable seq   2 manifest id   3 current generation
#       4 closed     5 unflushed bytes (committed, not yet released)
#       6 fenced (set by the flusher; every later call raises Fenced)
#       16 + 4*i ..  arena slot i: state, generation, owner, reserved
#   /dev/shm/shaledb-<...>-a<slot>                  one arena segment each
#
# A cross-process lock (flock on a file in the control channel's private
# directory) serialises appends, arena hand-out, sealing and release, so a
# seq range and the arena that holds it are chosen atomically: every seq of
# generation G is below every seq of generation G+1, and a snapshot taken
# under the lock holds every seq below the counter.

_SHM_DIR = os.environ.get("SHALEDB_SHM_DIR", "/dev/shm")  # tmpfs; override for tests only
_C_NEXT, _C_DURABLE, _C_MANIFEST, _C_GEN, _C_CLOSED, _C_UNFLUSHED, _C_FENCED = 0, 1, 2, 3, 4, 5, 6
_SLOT0 = 16
_FREE, _ACTIVE, _SEALED = 0, 1, 2


def _root_tag(url: str) -> str:
    import hashlib

    return hashlib.blake2b(url.encode(), digest_size=6).hexdigest()


def _segment_path(name: str) -> str:
    return os.path.join(_SHM_DIR, name)


def _create_segment(name: str, size: int):
    import mmap

    fd = os.open(_segment_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _attach_segment(name: str):
    import mmap

    fd = os.open(_segment_path(name), os.O_RDWR)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _unlink_segment(name: str) -> None:
    try:
        os.unlink(_segment_path(name))
    except FileNotFoundError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftover_segments(url: str) -> list[str]:
    """Unlink shared memory left by a crashed Db of this root (its pid is gone)."""
    prefix = f"shaledb-{_root_tag(url)}-"
    removed = []
    try:
        names = os.listdir(_SHM_DIR)
    except FileNotFoundError:
        return removed
    for n in names:
        if not n.startswith(prefix):
            continue
        try:
            pid = int(n[len(prefix):].split("-", 1)[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            _unlink_segment(n)
            removed.append(n)
    return removed


class _FileLock:
    """A cross-process mutex (flock) that is also a mutex among threads."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        self._tlock = threading.Lock()

    def __enter__(self):
        import fcntl

        self._tlock.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._tlock.release()
            raise
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._tlock.release()

    def close(self):
        try:
            os.close(self._fd)
        except OSError:
            pass


class _Shared:
    """One process's attachment to a database's shared memtable."""

    def __init__(self, desc: dict, create: bool):
        import numpy as np

        from shaledb.kernels import arena as K

        self.K = K
        self.np = np
        self.desc = desc
        self.base = desc["base"]
        self.max_arenas = desc["max_arenas"]
        self.arena_bytes = desc["arena_bytes"]
        ctl_bytes = 8 * (_SLOT0 + 4 * self.max_arenas)
        if create:
            self._ctl_mm = _create_segment(self.base + "-ctl", ctl_bytes)
        else:
            self._ctl_mm = _attach_segment(self.base + "-ctl")
        self.ctl = np.frombuffer(self._ctl_mm, dtype=np.uint64)
        self.counter = self.ctl[_C_NEXT:_C_NEXT + 1]
        self.lock = _FileLock(desc["lock_path"])
        self._arenas: dict[int, Any] = {}
        self._mms: dict[int, Any] = {}

    def slot(self, i: int) -> tuple[int, int, int]:
        b = _SLOT0 + 4 * i
        return int(self.ctl[b]), int(self.ctl[b + 1]), int(self.ctl[b + 2])

    def set_slot(self, i: int, state: int, gen: int, owner: int) -> None:
        b = _SLOT0 + 4 * i
        self.ctl[b + 1] = gen
        self.ctl[b + 2] = owner
        self.ctl[b] = state

    def seg_name(self, i: int) -> str:
        return f"{self.base}-a{i:03d}"

    def arena(self, i: int):
        a = self._arenas.get(i)
        if a is None:
            try:
                mm = _attach_segment(self.seg_name(i))
            except FileNotFoundError:
                return None
            a = self.np.frombuffer(mm, dtype=self.np.uint8)
            self._mms[i] = mm
            self._arenas[i] = a
        return a

    def new_arena(self, i: int):
        """REQUIRES: the lock.  Create (or reformat) the segment of slot i."""
        a = self.arena(i)
        if a is None:
            mm = _create_segment(self.seg_name(i), self.arena_bytes)
            a = self.np.frombuffer(mm, dtype=self.np.uint8)
            self._mms[i] = mm
            self._arenas[i] = a
            self.K.arena_init(a)
        return a

    def live_slots(self) -> list[tuple[int, int, int]]:
        """(slot, state, generation) of every arena holding memtable data."""
        out = []
        for i in range(self.max_arenas):
            st, gen, _ = self.slot(i)
            if st in (_ACTIVE, _SEALED):
                out.append((i, st, gen))
        return out

    def unlink_all(self) -> None:
        for i in range(self.max_arenas):
            _unlink_segment(self.seg_name(i))
        _unlink_segment(self.base + "-ctl")

    def close(self) -> None:
        self._arenas.clear()
        self._mms.clear()
        self.ctl = None
        self.counter = None
        self.lock.close()


# ---------------------------------------------------------------- the writer


class Writer:
    """Appends batches to an arena of its own.  Picklable: a ``db.writer()``
    handle sent to another process attaches there on first use.

    ``with w: ...`` in the other process detaches at the end.  Thread-safe.
    """

    def __init__(self, desc: dict, control_addr, options: Options):
        self._desc = desc
        self._addr = control_addr
        self.options = options
        self._sh: _Shared | None = None
        self._control: ControlClient | None = None
        self._slot: int | None = None
        self._closed = False
        self._fp = None

    def __getstate__(self):
        return {"desc": self._desc, "addr": self._addr, "options": self.options}

    def __setstate__(self, st):
        self.__init__(st["desc"], st["addr"], st["options"])

    def _attach(self) -> _Shared:
        if self._closed:
            raise Closed("this writer handle is closed")
        if self._sh is None:
            if _ONE_PUT is None:
                _init_consts()
            try:
                self._sh = _Shared(self._desc, create=False)
            except FileNotFoundError:
                raise Closed("the database this writer belongs to is closed") from None
            self._control = ControlClient(self._addr, self.options.request_timeout)
            from shaledb.failpoints import Failpoints

            self._fp = Failpoints(self.options.failpoints)
        return self._sh

    # -- public API (same as Db's write methods)

    def put(self, key: bytes, value: bytes, *, await_durable: bool = True) -> int:
        key = _check_key(key)
        value = _check_value(value)
        np = _np()
        k = np.frombuffer(key, dtype=np.uint8)
        v = np.frombuffer(value, dtype=np.uint8)
        return self._append(k, np.array([0, len(key)], np.int64), v, np.array([0, len(value)], np.int64),
                            _ONE_PUT, await_durable)

    def delete(self, key: bytes, *, await_durable: bool = True) -> int:
        key = _check_key(key)
        np = _np()
        k = np.frombuffer(key, dtype=np.uint8)
        return self._append(k, np.array([0, len(key)], np.int64), _EMPTY_U8, np.zeros(2, np.int64),
                            _ONE_DEL, await_durable)

    def write(self, batch: WriteBatch, *, await_durable: bool = True) -> int:
        if not isinstance(batch, WriteBatch):
            raise InvalidArgument(f"write() takes a shaledb.WriteBatch, got {type(batch).__name__}")
        if not len(batch):
            raise InvalidArgument("the write batch is empty")
        np = _np()
        kinds = np.array([op[0] for op in batch._ops], dtype=np.uint8)
        keys, ko = _pack([op[1] for op in batch._ops])
        vals, vo = _pack([op[2] for op in batch._ops])
        return self._append(keys, ko, vals, vo, kinds, await_durable)

    def put_many(self, keys, values, *, await_durable: bool = True) -> int:
        np = _np()
        kd, ko = _as_packed(keys, "keys", is_key=True)
        vd, vo = _as_packed(values, "values", is_key=False)
        n = len(ko) - 1
        if len(vo) - 1 != n:
            raise InvalidArgument(f"put_many got {n} keys and {len(vo) - 1} values")
        if n == 0:
            raise InvalidArgument("put_many needs at least one pair")
        kinds = np.ones(n, dtype=np.uint8)
        # Split into chunks that fit one arena (each chunk is atomic).
        limit = max(1, self._chunk_bytes())
        sizes = ((16 + np.diff(ko) + np.diff(vo) + 7) // 8) * 8
        csum = np.cumsum(sizes)
        seq = 0
        i = 0
        while i < n:
            base = csum[i - 1] if i else 0
            j = int(np.searchsorted(csum, base + limit, side="right"))
            j = max(j, i + 1)
            j = min(j, i + max(1, self._max_records_per_batch()))
            seq = self._append(kd, ko[i:j + 1], vd, vo[i:j + 1], kinds[i:j], False)
            i = j
        if await_durable:
            self._await(seq)
        return seq

    def flush(self, memtable: bool = False) -> int:
        self._attach()
        return self._control.call("flush_memtable" if memtable else "flush_wal")

    def close(self) -> None:
        if self._sh is not None:
            with self._sh.lock:
                if self._slot is not None and self._sh.ctl is not None:
                    st, gen, owner = self._sh.slot(self._slot)
                    if owner == self._owner_id():
                        self._sh.set_slot(self._slot, st, gen, 0)
                self._slot = None
            self._sh.close()
            self._sh = None
        if self._control is not None:
            self._control.close()
            self._control = None
        self._closed = True

    def __enter__(self) -> "Writer":
        self._attach()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals

    def _owner_id(self) -> int:
        return (os.getpid() << 20) | (id(self) & 0xFFFFF)

    def _geometry(self) -> tuple[int, int]:
        """(record bytes, records) one empty arena takes in one batch."""
        K = self._attach().K
        cap = (self.options.arena_bytes // 8) * 8
        slots = K.default_index_slots(cap)
        return cap - K.HEADER_BYTES - 8 * slots, slots * 3 // 4

    def _chunk_bytes(self) -> int:
        return min(self._geometry()[0] // 2, self.options.l0_sst_bytes)

    def _max_records_per_batch(self) -> int:
        return max(1, self._geometry()[1] // 2)

    def _acquire(self, sh: _Shared) -> int:
        """REQUIRES: the lock.  A free slot, made ACTIVE in the current generation."""
        gen = int(sh.ctl[_C_GEN])
        me = self._owner_id()
        for i in range(sh.max_arenas):
            st, _, _ = sh.slot(i)
            if st == _FREE:
                sh.new_arena(i)
                sh.set_slot(i, _ACTIVE, gen, me)
                return i
        return -1

    def _append(self, keys, ko, vals, vo, kinds, await_durable: bool) -> int:
        sh = self._attach()
        need = int((((16 + (ko[1:] - ko[:-1]) + (vo[1:] - vo[:-1])) + 7) // 8 * 8).sum())
        deadline = time.monotonic() + self.options.request_timeout
        asked = False
        while True:
            if sh.ctl[_C_CLOSED]:
                raise Closed("the database is closed")
            if sh.ctl[_C_FENCED]:
                raise Fenced("a newer writer opened this database; this handle is fenced")
            if int(sh.ctl[_C_UNFLUSHED]) + need > self.options.max_unflushed_bytes and int(sh.ctl[_C_UNFLUSHED]) > 0:
                self._backpressure(sh, deadline, asked)
                asked = True
                continue
            with sh.lock:
                slot = self._slot
                me = self._owner_id()
                if slot is not None:
                    st, gen, owner = sh.slot(slot)
                    if st != _ACTIVE or owner != me or gen != int(sh.ctl[_C_GEN]):
                        slot = None
                if slot is None:
                    slot = self._acquire(sh)
                    self._slot = slot if slot >= 0 else None
                if slot is not None and slot >= 0:
                    arena = sh.arena(slot)
                    if need > sh.K.max_batch_bytes(arena):
                        raise InvalidArgument(
                            f"a batch of {need} bytes does not fit into an arena (arena_bytes={self.options.arena_bytes})"
                        )
                    if self._fp:
                        self._fp.hit("mid-append")
                    n, base = sh.K.arena_append_counted(arena, keys, ko, vals, vo, kinds, sh.counter)
                    if n:
                        sh.ctl[_C_UNFLUSHED] = sh.ctl[_C_UNFLUSHED] + _np().uint64(need)
                        seq = base + n - 1
                        break
                    # full: leave it in the generation, take another one next round
                    st, gen, _ = sh.slot(slot)
                    sh.set_slot(slot, st, gen, 0)
                    self._slot = None
                    nslot = self._acquire(sh)
                    if nslot >= 0:
                        self._slot = nslot
                        continue
            # no free arena: have the flusher seal and release, then retry
            self._backpressure(sh, deadline, asked)
            asked = True
        if await_durable:
            self._await(seq)
        return seq

    def _backpressure(self, sh: _Shared, deadline: float, asked: bool) -> None:
        if not asked:
            self._control.call("seal")
        if time.monotonic() > deadline:
            raise Unavailable(
                f"writes waited {self.options.request_timeout:g} s for the flusher to free memory (backpressure)"
            )
        self._control.call("ping")
        time.sleep(0.005)

    def _await(self, seq: int) -> None:
        sh = self._sh
        if not self.options.wal:
            self._control.call("flush_memtable")
            return
        if int(sh.ctl[_C_DURABLE]) >= seq:
            return
        self._control.call("await_durable", seq, self.options.request_timeout,
                           timeout=self.options.request_timeout + 5)


def _np():
    import numpy

    return numpy


_ONE_PUT = None
_ONE_DEL = None
_EMPTY_U8 = None


def _init_consts() -> None:
    global _ONE_PUT, _ONE_DEL, _EMPTY_U8
    np = _np()
    _ONE_PUT = np.ones(1, dtype=np.uint8)
    _ONE_DEL = np.zeros(1, dtype=np.uint8)
    _EMPTY_U8 = np.zeros(1, dtype=np.uint8)


def _pack(items: list[bytes]):
    np = _np()
    data = b"".join(items)
    offs = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in items], out=offs[1:])
    arr = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(1, dtype=np.uint8)
    return arr, offs


def _as_packed(x, what: str, is_key: bool):
    """(uint8 data, int64 offsets) from a sequence of bytes or a numpy pair."""
    np = _np()
    from shaledb.options import MAX_VALUE_BYTES

    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], np.ndarray):
        data, offs = x
        if data.dtype != np.uint8 or data.ndim != 1:
            raise InvalidArgument(f"{what} data must be a 1-d uint8 array")
        offs = np.asarray(offs)
        if offs.dtype != np.int64 or offs.ndim != 1 or len(offs) < 1:
            raise InvalidArgument(f"{what} offsets must be a 1-d int64 array of n+1 offsets")
        data = np.ascontiguousarray(data)
        offs = np.ascontiguousarray(offs)
        lens = np.diff(offs)
        if len(offs) > 1 and (offs[0] < 0 or offs[-1] > len(data) or (lens < 0).any()):
            raise InvalidArgument(f"{what} offsets are out of range or decreasing")
        if len(data) == 0:
            data = np.zeros(1, dtype=np.uint8)
    else:
        if isinstance(x, (bytes, str)) or not hasattr(x, "__iter__"):
            raise InvalidArgument(f"{what} must be a sequence of bytes or a (uint8 data, int64 offsets) pair")
        items = []
        for item in x:
            if isinstance(item, (bytearray, memoryview)):
                item = bytes(item)
            if not isinstance(item, bytes):
                raise InvalidArgument(f"{what} must hold bytes, got {type(item).__name__}")
            items.append(item)
        data, offs = _pack(items)
        lens = np.diff(offs)
    if len(lens):
        if is_key and (lens.min() < 1 or lens.max() > MAX_KEY_BYTES):
            raise InvalidArgument(f"every key must be 1..{MAX_KEY_BYTES} bytes")
        if not is_key and lens.max() > MAX_VALUE_BYTES:
            raise InvalidArgument(f"every value must be at most {MAX_VALUE_BYTES} bytes")
    return data, offs


# ---------------------------------------------------------- the Db's memtable


class Memtable:
    """The Db process's side: creates the shared memtable, reads it, owns cleanup."""

    @classmethod
    def create(cls, url: str, options: Options) -> "Memtable":
        import tempfile

        _init_consts()
        remove_leftover_segments(url)
        self = cls()
        self.options = options
        self._lockdir = tempfile.mkdtemp(prefix="shaledb-lock-")
        self.desc = {
            "base": f"shaledb-{_root_tag(url)}-{os.getpid()}-{os.urandom(3).hex()}",
            "max_arenas": options.max_arenas,
            "arena_bytes": options.arena_bytes,
            "lock_path": os.path.join(self._lockdir, "lock"),
        }
        self.sh = _Shared(self.desc, create=True)
        try:
            with self.sh.lock:
                for i in range(options.initial_arenas):
                    self.sh.new_arena(i)
        except BaseException:
            self.sh.unlink_all()
            raise
        self.writer: Writer | None = None
        self._addr = None
        return self

    def descriptor(self) -> dict:
        return self.desc

    def flusher_view(self) -> "FlusherView":
        return FlusherView(self.desc, attach=self.sh)

    def start(self, last_seq: int, control: ControlClient) -> None:
        self.sh.ctl[_C_NEXT] = last_seq + 1
        if int(self.sh.ctl[_C_DURABLE]) < last_seq:
            self.sh.ctl[_C_DURABLE] = last_seq
        self._addr = control.addr
        self.writer = Writer(self.desc, control.addr, self.options)

    def new_writer_handle(self) -> Writer:
        return Writer(self.desc, self._addr, self.options)

    def manifest_id(self) -> int:
        return int(self.sh.ctl[_C_MANIFEST])

    def fenced(self) -> bool:
        return bool(self.sh.ctl[_C_FENCED])

    def before_flush(self) -> None:
        pass

    def lookup(self, key: bytes):
        """Newest version of ``key`` in the arenas, as an Entry, or None."""
        sh = self.sh
        K = sh.K
        best = None
        for i, _st, _gen in sh.live_slots():
            a = sh.arena(i)
            if a is None:
                continue
            inc = int(a[80:88].view("<u8")[0])
            found, kind, seq, vs, vl = K.arena_lookup(a, key)
            if not found:
                continue
            value = bytes(a[vs:vs + vl]) if kind == 1 else None
            if int(a[80:88].view("<u8")[0]) != inc or sh.slot(i)[0] == _FREE:
                continue  # recycled meanwhile: its records are in L0 now
            if best is None or seq > best[1]:
                best = (key, seq, kind, value)
        return best

    def sorted_runs_snapshot(self):
        """Private sorted copies of every arena's committed records."""
        from shaledb.kernels.sort import sort_records

        sh = self.sh
        K = sh.K
        out = []
        for i, _st, _gen in sh.live_slots():
            a = sh.arena(i)
            if a is None:
                continue
            inc = int(a[80:88].view("<u8")[0])
            end = K.arena_committed(a)
            buf = a[:end].copy()
            if int(a[80:88].view("<u8")[0]) != inc or sh.slot(i)[0] == _FREE:
                continue
            offs = K.arena_record_offsets(buf, 0, end)
            if len(offs):
                out.append((buf, sort_records(buf, offs)))
        return out

    def stop_writers(self) -> None:
        if self.sh.ctl is not None:
            self.sh.ctl[_C_CLOSED] = 1
        if self.writer is not None:
            w, self.writer = self.writer, None
            w.close()

    def destroy(self) -> None:
        import shutil

        self.sh.unlink_all()
        self.sh.close()
        shutil.rmtree(self._lockdir, ignore_errors=True)


# ------------------------------------------------------ the flusher's view


class _Gen:
    def __init__(self, number: int, slots: list[int], view: "FlusherView"):
        self.number = number
        self.slots = slots
        self._view = view

    def runs(self):
        K = self._view.sh.K
        out = []
        for i in self.slots:
            a = self._view.sh.arena(i)
            out.append((a, K.arena_record_offsets(a)))
        return out


class FlusherView:
    """The flusher's side of the shared memtable (see shaledb.flusher)."""

    def __init__(self, desc: dict, attach: _Shared | None = None):
        self.sh = attach if attach is not None else _Shared(desc, create=False)
        self._logged: dict[int, tuple[int, int]] = {}  # slot -> (incarnation, logged end)

    def publish_durable(self, seq: int) -> None:
        if self.sh.ctl is not None and int(self.sh.ctl[_C_DURABLE]) < seq:
            self.sh.ctl[_C_DURABLE] = seq

    def publish_fenced(self) -> None:
        if self.sh.ctl is not None:
            self.sh.ctl[_C_FENCED] = 1

    def publish_manifest_id(self, mid: int) -> None:
        if self.sh.ctl is not None:
            self.sh.ctl[_C_MANIFEST] = mid

    def wal_snapshot(self):
        """(buf, offs, token, max_gen, max_seq) of what is not in the WAL yet, or None."""
        sh = self.sh
        K = sh.K
        np = sh.np
        with sh.lock:
            next_seq = int(sh.ctl[_C_NEXT])
            parts = []
            for i, _st, gen in sh.live_slots():
                a = sh.arena(i)
                inc = int(a[80:88].view("<u8")[0])
                end = K.arena_committed(a)
                li, start = self._logged.get(i, (inc, 0))
                if li != inc:
                    start = 0
                parts.append((i, a, inc, start, end, gen))
        runs, token, max_gen = [], [], 0
        for i, a, inc, start, end, gen in parts:
            offs = K.arena_record_offsets(a, start, end)
            token.append((i, inc, end))
            if len(offs):
                runs.append((a, offs))
                max_gen = max(max_gen, gen)
        if not runs:
            self.commit(token)
            return None
        from shaledb.kernels.sort import concat_runs

        buf, offs = concat_runs(runs) if len(runs) > 1 else runs[0]
        return buf, np.ascontiguousarray(offs), token, max_gen, next_seq - 1

    def commit(self, token) -> None:
        for i, inc, end in token:
            self._logged[i] = (inc, end)

    def wal_committed(self, token) -> None:
        self.commit(token)

    def durable_candidate(self, token, max_seq: int) -> int:
        return max_seq

    def active_bytes(self) -> int:
        sh = self.sh
        total = 0
        cur = int(sh.ctl[_C_GEN])
        for i, st, gen in sh.live_slots():
            if st == _ACTIVE and gen == cur:
                a = sh.arena(i)
                total += sh.K.arena_committed(a) - int(a[64:72].view("<u8")[0])
        return total

    def seal(self) -> None:
        sh = self.sh
        with sh.lock:
            cur = int(sh.ctl[_C_GEN])
            any_data = False
            for i, st, gen in sh.live_slots():
                if st == _ACTIVE:
                    a = sh.arena(i)
                    if sh.K.arena_committed(a) > int(a[64:72].view("<u8")[0]):
                        any_data = True
            if not any_data:
                return
            sh.ctl[_C_GEN] = cur + 1
            for i, st, gen in sh.live_slots():
                if st == _ACTIVE:
                    a = sh.arena(i)
                    if sh.K.arena_committed(a) > int(a[64:72].view("<u8")[0]):
                        sh.set_slot(i, _SEALED, gen, 0)
                    else:
                        sh.set_slot(i, _FREE, 0, 0)

    def has_sealed(self) -> bool:
        return any(st == _SEALED for _, st, _ in self.sh.live_slots())

    def sealed_generations(self) -> list[_Gen]:
        gens: dict[int, list[int]] = {}
        for i, st, gen in self.sh.live_slots():
            if st == _SEALED:
                gens.setdefault(gen, []).append(i)
        return [_Gen(g, gens[g], self) for g in sorted(gens)]

    def release(self, gen: _Gen) -> None:
        sh = self.sh
        K = sh.K
        with sh.lock:
            freed = 0
            for i in gen.slots:
                a = sh.arena(i)
                freed += K.arena_committed(a) - int(a[64:72].view("<u8")[0])
                K.arena_init(a)
                sh.set_slot(i, _FREE, 0, 0)
                self._logged.pop(i, None)
            sh.ctl[_C_UNFLUSHED] = max(0, int(sh.ctl[_C_UNFLUSHED]) - freed)

    def cleanup_orphaned(self) -> None:
        self.sh.unlink_all()
        import shutil

        shutil.rmtree(os.path.dirname(self.sh.desc["lock_path"]), ignore_errors=True)


def attach_pool_view(desc: dict) -> FlusherView:
    _init_consts()
    return FlusherView(desc)
