"""The writer side: validate writes and append them to the arena pool.

A :class:`Writer` is one process's write handle (the Db's own, or a pickled
``db.writer()`` in another process); each has a writer id and an arena of its
own.  :func:`check_key`, :func:`check_value` and :func:`check_bound` are the
one validation of keys, values and scan bounds for every entry point (bytes,
bytearray and memoryview alike; limits from ``shaledb.format.record``).

Invariants: nothing is written before a call is validated; ``write(batch)``
is atomic (one append into one arena); order within a writer is kept,
buffered puts included; every error is a ShaleDBError (a gone database:
Closed).  Buffering, backpressure and the engine hooks
(:class:`WriterHooks`): docs/format/arena.md, "Writers".

Thread safety: a Writer may be shared by the threads of one process.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from multiprocessing import util as _mp_util
from typing import TYPE_CHECKING

import numpy as np

from shaledb.errors import Closed, InvalidArgument, ShaleDBError, Unavailable
from shaledb.format.record import (
    KIND_DELETE,
    KIND_PUT,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    RECORD_ALIGN,
    RECORD_HEADER,
)

if TYPE_CHECKING:  # the pool (and numba) load at a writer's first use, not at import
    from shaledb.memtable.arena_pool import ArenaPool

__all__ = ["WriteBatch", "Writer", "WriterHooks", "check_bound", "check_key", "check_value"]

_BYTES_LIKE = (bytes, bytearray, memoryview)


_buffering_writers: "weakref.WeakSet[Writer]" = weakref.WeakSet()


def _drain_all_at_exit() -> None:
    """Best effort: append what writers still buffer when the process exits
    (a child that never closed its handle).  Waits at most 5 s per writer."""
    for w in list(_buffering_writers):
        try:
            if w._bk and not w._closed:
                w._timeout = min(w._timeout, 5.0)
                w.drain()
        except Exception:  # noqa: BLE001 - the database may be gone already
            pass


atexit.register(_drain_all_at_exit)

_writers: "weakref.WeakSet[Writer]" = weakref.WeakSet()


def _reset_writers_after_fork() -> None:
    for w in list(_writers):
        w._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_writers_after_fork)
# multiprocessing children leave through os._exit (no atexit): their finalizers run
_mp_util.Finalize(None, _drain_all_at_exit, exitpriority=100)


def _bad_type(what: str, x) -> InvalidArgument:
    return InvalidArgument(f"{what} must be bytes, got {type(x).__name__}")


# The one validation of user keys, values and scan bounds: every entry point
# (Db and Writer, reads and writes) calls these, so all accept the same types.
def check_key(key) -> bytes:
    """``key`` as bytes.  Accepts bytes, bytearray, memoryview of 1 to
    MAX_KEY_BYTES bytes; anything else raises InvalidArgument."""
    if type(key) is not bytes:
        if not isinstance(key, _BYTES_LIKE):
            raise _bad_type("keys", key)
        key = bytes(key)
    if not key:
        raise InvalidArgument("keys must not be empty")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidArgument(f"key of {len(key)} bytes is longer than {MAX_KEY_BYTES}")
    return key


def check_value(value) -> bytes:
    """``value`` as bytes.  Accepts bytes, bytearray, memoryview of at most
    MAX_VALUE_BYTES bytes (empty is fine); anything else raises InvalidArgument."""
    if type(value) is not bytes:
        if not isinstance(value, _BYTES_LIKE):
            raise _bad_type("values", value)
        n = value.nbytes if isinstance(value, memoryview) else len(value)
        if n > MAX_VALUE_BYTES:  # checked before the copy
            raise InvalidArgument(f"value of {n} bytes is longer than {MAX_VALUE_BYTES}")
        value = bytes(value)
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidArgument(f"value of {len(value)} bytes is longer than {MAX_VALUE_BYTES}")
    return value


def check_bound(name: str, bound) -> bytes | None:
    """A scan bound (``name`` is "start" or "end") as bytes, or None (open).
    Accepts the key types; any length, since a bound need not be a key."""
    if bound is None or type(bound) is bytes:
        return bound
    if not isinstance(bound, _BYTES_LIKE):
        raise InvalidArgument(f"scan {name} must be bytes or None, got {type(bound).__name__}")
    return bytes(bound)


class WriteBatch:
    """Puts and deletes applied atomically by ``write()``, in order (a later
    operation on the same key wins).  Arguments are checked as they are added."""

    __slots__ = ("_ops",)

    def __init__(self):
        self._ops: list[tuple[int, bytes, bytes]] = []

    def put(self, key, value) -> "WriteBatch":
        self._ops.append((KIND_PUT, check_key(key), check_value(value)))
        return self

    def delete(self, key) -> "WriteBatch":
        self._ops.append((KIND_DELETE, check_key(key), b""))
        return self

    def clear(self) -> None:
        self._ops.clear()

    def __len__(self) -> int:
        return len(self._ops)

    def __repr__(self) -> str:
        return f"WriteBatch({len(self._ops)} ops)"


class WriterHooks:
    """Default hooks (see module docstring); the engine subclasses them."""

    def await_durable(self, pool: ArenaPool, seq: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while pool.durable_seq() < seq:
            pool.check_status()
            self.check_alive(pool)
            if time.monotonic() > deadline:
                raise Unavailable(f"seq {seq} did not become durable within {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def request_seal(self, pool: ArenaPool) -> None:
        pool.seal()

    def sealed(self, pool: ArenaPool, gen: int) -> None:
        pass

    def check_alive(self, pool: ArenaPool) -> None:
        pass

    def flush(self, pool: ArenaPool, memtable: bool) -> int:
        raise Unavailable("this writer has no flusher to ask (no flush hook)")


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offs = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offs[1:])
    return offs


#: ``_pack_list`` copies the items into a numpy buffer, instead of joining
#: them, from this many bytes in all ...
_PACK_COPY_BYTES = 32 << 20
#: ... when they average at least this many bytes (the copy costs ~1.5 us
#: of Python per item)
_PACK_COPY_ITEM = 64 << 10


def _pack_list(items, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 data, int64 offsets) of a sequence of bytes-like items."""
    if isinstance(items, (bytes, bytearray, str, memoryview)) or not hasattr(items, "__iter__"):
        raise InvalidArgument(f"{what} must be a sequence of bytes or a (uint8 data, int64 offsets) pair")
    items = list(items)
    for j, x in enumerate(items):
        if type(x) is not bytes:
            if not isinstance(x, _BYTES_LIKE):
                raise InvalidArgument(f"{what} must hold bytes, got {type(x).__name__}")
            items[j] = bytes(x)  # a memoryview's len() counts items, not bytes
    lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    offs = _offsets(lengths)
    total = int(offs[-1])
    if total < _PACK_COPY_BYTES or total < len(items) * _PACK_COPY_ITEM:
        return np.frombuffer(b"".join(items), dtype=np.uint8), offs
    # A big batch of big items: b"".join's result is above glibc's mmap
    # threshold (32 MiB at most), so every call faults fresh 4 KiB pages
    # in; numpy's large arrays get transparent huge pages.  50 x 1 MiB:
    # 34 ms joined, 14 ms copied here (docs/values.md).
    data = np.empty(total, dtype=np.uint8)
    for j, x in enumerate(items):
        data[offs[j] : offs[j + 1]] = np.frombuffer(x, dtype=np.uint8)
    data.flags.writeable = False  # the same array type as the joined bytes' view
    return data, offs


def _as_packed(x, what: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], np.ndarray):
        data, offs = x
        if data.dtype != np.uint8 or data.ndim != 1:
            raise InvalidArgument(f"{what} data must be a 1-d uint8 array")
        if not isinstance(offs, np.ndarray) or offs.dtype != np.int64 or offs.ndim != 1 or len(offs) < 1:
            raise InvalidArgument(f"{what} offsets must be a 1-d int64 array of n + 1 offsets")
        data = np.ascontiguousarray(data)
        offs = np.ascontiguousarray(offs)
        if len(offs) > 1 and (offs[0] < 0 or offs[-1] > len(data) or (np.diff(offs) < 0).any()):
            raise InvalidArgument(f"{what} offsets are out of range or decreasing")
        return data, offs
    return _pack_list(x, what)


def _record_bytes(ko: np.ndarray, vo: np.ndarray) -> np.ndarray:
    """Bytes each record takes in an arena (header, key, value, padding)."""
    return (RECORD_HEADER + np.diff(ko) + np.diff(vo) + (RECORD_ALIGN - 1)) & ~np.int64(RECORD_ALIGN - 1)


class Writer:
    """Appends validated writes to the arena pool (see module docstring).

    ``Writer(desc)`` attaches lazily (on first use) to the pool described by
    ``desc`` (``ArenaPool.descriptor()``); pass ``pool=`` to share a pool
    handle already open in this process.  Picklable: the copy attaches in the
    process that unpickles it, with a writer id of its own.
    """

    def __init__(
        self,
        desc: dict,
        *,
        hooks: WriterHooks | None = None,
        timeout: float = 120.0,
        buffer_puts: bool = True,
        buffer_records: int = 1024,
        buffer_bytes: int = 1 << 20,
        linger: float = 0.005,
        pool: ArenaPool | None = None,
    ):
        self._desc = desc
        self._hooks = hooks if hooks is not None else WriterHooks()
        self._timeout = float(timeout)
        self._buffering = bool(buffer_puts)
        self._bmax = int(buffer_records)
        self._bbmax = int(buffer_bytes)
        self._linger = float(linger)
        self._pool = pool
        self._own_pool = False
        self._wid = 0
        self._closed = False
        self._lock = threading.RLock()  # the writer's order: buffer + appends
        self._bk: list[bytes] = []
        self._bv: list[bytes] = []
        self._bdel: list[int] = []  # buffer positions of deletes
        self._fast = False  # put() may take the buffered hot path
        self._bbytes = 0
        self._bfirst = 0.0
        self._err: ShaleDBError | None = None
        self._thread: threading.Thread | None = None
        self._status = None  # the pool's status word (a 1-element view)
        self.max_record_bytes = 0
        _writers.add(self)

    def _after_fork_in_child(self) -> None:
        """A writer inherited by ``fork`` becomes a new writer of the child:
        fresh locks, no buffered writes (they are the parent's), a writer id
        (and so an arena) of its own at first use."""
        self._lock = threading.RLock()
        self._bk, self._bv, self._bdel, self._bbytes = [], [], [], 0
        self._thread = None
        self._err = None
        self._fast = False
        self._wid = 0

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        return {
            "desc": self._desc,
            "hooks": self._hooks,
            "timeout": self._timeout,
            "buffer_puts": self._buffering,
            "buffer_records": self._bmax,
            "buffer_bytes": self._bbmax,
            "linger": self._linger,
        }

    def __setstate__(self, st):
        desc = st.pop("desc")
        self.__init__(desc, **st)

    # ------------------------------------------------------------ lifetime
    def _attach(self) -> ArenaPool:
        if self._closed:
            raise Closed("this writer handle is closed")
        if self._wid == 0:
            with self._lock:
                if self._wid == 0:
                    from shaledb.memtable.arena_pool import C_STATUS, ArenaPool

                    if self._pool is None:
                        self._pool = ArenaPool.attach(self._desc)
                        self._own_pool = True
                    self._status = self._pool.ctl[C_STATUS : C_STATUS + 1]
                    self._wid = self._pool.register_writer()
                    self.max_record_bytes = self._pool.max_record_bytes
        return self._pool

    @property
    def pool(self) -> ArenaPool:
        return self._attach()

    @property
    def writer_id(self) -> int:
        self._attach()
        return self._wid

    def close(self) -> None:
        """Append what is buffered, release this writer's arena, detach.
        Idempotent.  Buffered writes that cannot be appended (the database
        closed or fenced) are dropped silently."""
        if self._closed:
            return
        try:
            if self._wid:
                try:
                    self.drain()
                except ShaleDBError:
                    pass
                self._pool.detach_writer(self._wid)
        finally:
            self._closed = True
            self._fast = False
            self._status = None
            if self._own_pool and self._pool is not None:
                self._pool.close()
            self._pool = None

    def __enter__(self) -> "Writer":
        self._attach()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------- public API
    def put(self, key, value, *, await_durable: bool = True) -> int | None:
        """Write ``key`` = ``value``.  Returns its seq, or None when buffered
        (``await_durable=False`` with buffering on)."""
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            key = check_key(key)
        if type(value) is not bytes or len(value) > MAX_VALUE_BYTES:
            value = check_value(value)
        if await_durable or not self._fast or self._status[0]:
            return self._buffer(key, value, KIND_PUT, await_durable)
        with self._lock:  # the hot path: ~10 bytecodes
            bk = self._bk
            bk.append(key)
            self._bv.append(value)
            self._bbytes += len(value)
            if len(bk) < self._bmax and self._bbytes < self._bbmax:
                if len(bk) == 1:
                    self._bfirst = time.monotonic()
                return None
            self._drain_locked()
        return None

    def delete(self, key, *, await_durable: bool = True) -> int | None:
        """Write a tombstone for ``key``.  Seq or None, as :meth:`put`."""
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            key = check_key(key)
        return self._buffer(key, b"", KIND_DELETE, await_durable)

    def write(self, batch: WriteBatch, *, await_durable: bool = True) -> int:
        """Apply ``batch`` atomically; return the seq of its last operation."""
        if not isinstance(batch, WriteBatch):
            raise InvalidArgument(f"write() takes a shaledb.WriteBatch, got {type(batch).__name__}")
        if not len(batch):
            raise InvalidArgument("the write batch is empty")
        pool = self._attach()
        ops = list(batch._ops)
        kinds = np.frombuffer(bytes(op[0] for op in ops), dtype=np.uint8)
        kd, ko = _pack_list([op[1] for op in ops], "keys")
        vd, vo = _pack_list([op[2] for op in ops], "values")
        sizes = _record_bytes(ko, vo)
        total = int(sizes.sum())
        # one record of any size fits (a record too big for an arena gets a segment of its own)
        if len(ops) > 1 and (len(ops) > pool.max_batch_records or total > pool.batch_capacity(len(ops))):
            raise InvalidArgument(
                f"a write batch of {len(ops)} records / {total} record bytes does not fit one arena: "
                f"arena_bytes={pool.arena_bytes} holds at most {pool.max_batch_records} records and "
                f"{pool.batch_capacity(len(ops))} record bytes for {len(ops)} records; use put_many "
                f"or raise Options.arena_bytes"
            )
        with self._lock:
            self._drain_locked()
            seq = self._append_chunk(kd, ko, vd, vo, kinds, total)
        if await_durable:
            self._await(seq)
        return seq

    def put_many(self, keys, values, *, await_durable: bool = True) -> int:
        """Write many pairs; ``keys``/``values`` are sequences of bytes or
        ``(uint8 data, int64 offsets)`` numpy pairs (n + 1 offsets).  Split
        into arena-sized atomic chunks; return the last seq."""
        pool = self._attach()
        kd, ko = _as_packed(keys, "keys")
        vd, vo = _as_packed(values, "values")
        n = len(ko) - 1
        if len(vo) - 1 != n:
            raise InvalidArgument(f"put_many got {n} keys and {len(vo) - 1} values")
        if n == 0:
            raise InvalidArgument("put_many needs at least one pair")
        klen = np.diff(ko)
        vlen = np.diff(vo)
        if klen.min() < 1 or klen.max() > MAX_KEY_BYTES:
            raise InvalidArgument(f"every key must be 1..{MAX_KEY_BYTES} bytes")
        if vlen.max() > MAX_VALUE_BYTES:
            raise InvalidArgument(f"every value must be at most {MAX_VALUE_BYTES} bytes")
        sizes = _record_bytes(ko, vo)
        kinds = np.full(n, KIND_PUT, dtype=np.uint8)
        # a record larger than the limit travels alone (its arena gets a small
        # index; one too big for an arena gets a segment of its own)
        limit = pool.max_batch_bytes // 8
        max_records = max(1, pool.max_batch_records // 8)
        csum = np.cumsum(sizes)
        seq = 0
        with self._lock:
            self._drain_locked()
            i = 0
            while i < n:
                base = int(csum[i - 1]) if i else 0
                j = int(np.searchsorted(csum, base + limit, side="right"))
                j = min(max(j, i + 1), i + max_records)
                seq = self._append_chunk(kd, ko[i : j + 1], vd, vo[i : j + 1], kinds[i:j], int(csum[j - 1]) - base)
                i = j
        if await_durable:
            self._await(seq)
        return seq

    def drain(self) -> int | None:
        """Append the buffered puts/deletes now; return the last seq (None if
        nothing was buffered)."""
        with self._lock:
            return self._drain_locked()

    def has_buffered(self) -> bool:
        """Whether puts/deletes wait in this writer's buffer (not appended)."""
        return bool(self._bk)

    def has_buffered_key(self, key: bytes) -> bool:
        """Whether a buffered (not yet appended) put/delete of ``key`` waits
        here: its newest version then is in the buffer, so a read of ``key``
        in this process must :meth:`drain` first.  No lock: a racing append
        only makes the answer stale in the safe direction (drain is cheap).
        REQUIRES: ``key`` is bytes (checked by :func:`check_key`)."""
        bk = self._bk
        return bool(bk) and key in bk

    def lookup(self, key):
        """Drain, then the newest version of ``key`` in the arenas:
        ``(key, seq, kind, value|None)`` or None (see ArenaPool.lookup)."""
        self.drain()
        return self._attach().lookup(check_key(key))

    def flush(self, memtable: bool = False) -> int:
        """Drain, then ask the engine (``hooks.flush``) for a flush."""
        pool = self._attach()
        pool.check_gone()  # a gone database: Closed (the status word is the engine's)
        self.drain()
        return self._hooks.flush(pool, memtable)

    def await_durable(self, seq: int) -> None:
        self._await(seq)

    # ------------------------------------------------------------ internals
    def _buffer(self, key: bytes, value: bytes, kind: int, await_durable: bool):
        if self._wid == 0:
            self._attach()
        if self._closed:
            raise Closed("this writer handle is closed")
        self._pool.check_status()  # Closed / Fenced / Unavailable, before buffering
        with self._lock:
            if self._err is not None:
                err, self._err = self._err, None
                self._fast = self._buffering
                raise err
            if not self._bk:
                self._bfirst = time.monotonic()
            if kind == KIND_DELETE:
                self._bdel.append(len(self._bk))
            self._bk.append(key)
            self._bv.append(value)
            self._bbytes += len(value)
            if (
                await_durable
                or not self._buffering
                or len(self._bk) >= self._bmax
                or self._bbytes >= self._bbmax
            ):
                seq = self._drain_locked()
            else:
                if self._thread is None:
                    self._start_linger()
                self._fast = True
                return None
        if await_durable:
            self._await(seq)
        return seq

    def _start_linger(self) -> None:
        _buffering_writers.add(self)
        t = threading.Thread(target=self._linger_loop, name="shaledb-writer-linger", daemon=True)
        self._thread = t
        t.start()

    def _linger_loop(self) -> None:
        while not self._closed:
            time.sleep(self._linger)
            if self._bk and time.monotonic() - self._bfirst >= self._linger:
                with self._lock:
                    if self._closed:
                        return
                    try:
                        self._drain_locked()
                    except ShaleDBError as e:
                        self._err = e
                        self._fast = False  # the next call raises it

    def _drain_locked(self) -> int | None:
        """Append the buffered puts/deletes.  The buffer is emptied only
        after the append (or its failure): until the records are in the
        arenas, ``has_buffered``/``has_buffered_key`` (read without the lock)
        must say so, or a read in another thread (the linger thread drains
        while the user thread reads) would skip :meth:`drain` and miss them.
        REQUIRES: self._lock held."""
        if not self._bk:
            return None
        try:
            return self._append_buffered(self._bk, self._bv, self._bdel)
        finally:
            self._bk, self._bv, self._bdel, self._bbytes = [], [], [], 0

    def _append_buffered(self, keys: list, values: list, dels: list) -> int:
        n = len(keys)
        kd = np.frombuffer(b"".join(keys), dtype=np.uint8)
        vd = np.frombuffer(b"".join(values), dtype=np.uint8)
        ko = _offsets(np.fromiter(map(len, keys), dtype=np.int64, count=n))
        vo = _offsets(np.fromiter(map(len, values), dtype=np.int64, count=n))
        kd_kinds = np.full(n, KIND_PUT, dtype=np.uint8)
        if dels:
            kd_kinds[dels] = KIND_DELETE
        sizes = _record_bytes(ko, vo)
        pool = self._pool
        if int(sizes.sum()) <= pool.max_batch_bytes and n <= pool.max_batch_records:
            return self._append_chunk(kd, ko, vd, vo, kd_kinds, int(sizes.sum()))
        # larger than one arena (tiny arenas): in arena-sized pieces
        seq = None
        csum = np.cumsum(sizes)
        i = 0
        while i < n:
            base = int(csum[i - 1]) if i else 0
            j = int(np.searchsorted(csum, base + pool.max_batch_bytes // 2, side="right"))
            j = min(max(j, i + 1), i + max(1, pool.max_batch_records // 2))
            seq = self._append_chunk(kd, ko[i : j + 1], vd, vo[i : j + 1], kd_kinds[i:j], int(csum[j - 1]) - base)
            i = j
        return seq

    def _append_chunk(self, kd, ko, vd, vo, kinds, nbytes: int) -> int:
        """One atomic append, waiting (bounded) under backpressure: first
        for its turn in the write pacing (``ArenaPool.pacing``), then for
        memory."""
        pool = self._pool
        if pool.pacing():
            self._paced(pool, nbytes)
        deadline = None
        delay = 0.0005
        while True:
            n, seq, sealed = pool.append(self._wid, kd, ko, vd, vo, kinds, nbytes)
            if n:
                if sealed:
                    self._hooks.sealed(pool, sealed)
                return seq
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._timeout
                self._hooks.request_seal(pool)
            elif now > deadline:
                from shaledb.memtable.arena_pool import NO_MEMORY

                why = "unflushed bytes above max_unflushed_bytes" if seq == NO_MEMORY else "no free arena"
                raise Unavailable(
                    f"writes waited {self._timeout:g} s for the flusher to free memory ({why})"
                )
            self._hooks.check_alive(pool)
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _paced(self, pool, nbytes: int) -> None:
        """Wait for this append's turn in the shared write rate (a slowdown
        that keeps L0 under l0_max_ssts without stop-and-go stalls)."""
        end = time.monotonic() + pool.pace(nbytes)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))
            pool.check_status()
            self._hooks.check_alive(pool)

    def _await(self, seq: int) -> None:
        self._hooks.await_durable(self._pool, seq, self._timeout)
