"""``shaledb.open`` and :class:`Db`: the user's handle on one database.

A Db owns, while open: the arena pool (``shaledb.memtable``) its writers append
to, the flusher (``shaledb.flush``; a process, or a thread for ``memory://``),
the compactor service (``shaledb.compact``, with ``Options.compactor``; the
same), the control channels to them (``shaledb.ipc``), and a read path
(``shaledb.read``).  Writes go
through this process's writer; the durability each call guarantees is in
docs/durability.md, the architecture in docs/architecture.md.

Thread safety: a Db may be shared by threads of one process.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import weakref
from time import monotonic as _monotonic
from typing import Any, Iterator

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
from shaledb.compact.requests import CompactorRequest
from shaledb.flush.hooks import FlusherHooks
from shaledb.flush.requests import Request
from shaledb.format.enums import PoolStatus
from shaledb.ipc.control import ControlClient, new_control_address, remove_control_address, sibling_address
from shaledb.ipc.logs import receive_logs
from shaledb.memtable.writer import MAX_KEY_BYTES, WriteBatch, Writer, check_bound, check_key  # noqa: F401 - re-exported
from shaledb.options import Options, wrap_store
from shaledb.status import DbStatus, ManifestWatch, db_status

__all__ = ["Db", "WriteBatch", "Writer", "open"]

log = logging.getLogger("shaledb.db")
#: seconds the compactor process's start waits for the flusher's kernel
#: warm-up at most (see Db._start_compactor)
COMPACTOR_START_WAIT = 3.0
_open_dbs: "weakref.WeakSet[Db]" = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for db in list(_open_dbs):
        try:
            db.close()
        except BaseException:  # noqa: BLE001 - best effort at interpreter exit
            pass


atexit.register(_close_all_at_exit)


def _on_flusher_event(go: threading.Event, name: str, value) -> None:
    """The flusher's events (its log pipe): ``warm`` sets ``go``.  Holds the
    Event, not the Db, so the receiving thread keeps no Db alive."""
    if name == "warm":
        go.set()


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
        self._pool = None  # this process's handle on the arena pool
        self._hooks = None
        self._writers_stopped = False
        self._store = None
        self._manifest_watch: ManifestWatch | None = None  # status(): the latest manifest
        self._reader = None
        self._writer = None
        self._cproc = None  # the compactor process
        self._cservice = None  # the compactor service, run as a thread (memory://)
        self._cclient = None
        self._cstart = None  # (thread, box): the compactor's start (_start_compactor)
        self._cgo = threading.Event()  # the compactor process may start (_start_compactor)
        self._clock = threading.Lock()  # guards _cproc's creation against _stop_compactor
        self._cstopping = False
        store_options = dict(options.store_options)
        try:
            self._store = wrap_store(open_store(url, **store_options), options)
            in_process = url.startswith("memory://")
            self._control_addr = new_control_address()
            if not in_process:
                from shaledb.flush.process import FlusherProcess

                # its interpreter starts while this process creates the pool
                self._proc = FlusherProcess()
            self._pool = _create_pool(url, options)
            if in_process:
                self._start_thread_flusher()
            else:
                self._start_process_flusher(url, store_options)
            self._control = ControlClient(self._control_addr, options.request_timeout)
            last_seq = self._info["last_seq"]
            self._pool.set_next_seq(last_seq + 1)
            self._pool.publish_durable(last_seq)
            self._hooks = FlusherHooks(self._control_addr, options)
            self._writer = self._new_writer(shared_pool=True)
            from shaledb.read.reader import Reader

            self._reader = Reader(self._store, options, self._pool)
            if options.compactor:
                self._start_compactor(url, store_options, in_process)
            # bound methods of the hot paths
            self._put = self._writer.put
            self._rget = self._reader.get
        except BaseException:
            self._teardown(kill=True)
            raise
        _open_dbs.add(self)
        return self

    def _start_process_flusher(self, url: str, store_options: dict) -> None:
        from shaledb.flush.process import FlusherConfig

        config = FlusherConfig(
            url=url,
            store_options=store_options,
            options=self.options,
            control=self._control_addr,
            pool=self._pool.descriptor(),
            parent_pid=os.getpid(),
        )
        proc = self._proc  # started before the pool (_open)
        proc.send_config(config)
        # While the flusher starts (a second interpreter), load this process's
        # kernels, so the first put/get/scan does not pay for it.
        try:
            from shaledb.kernels.warmup import warmup

            warmup()  # every kernel module, the read kernels included
        except Exception:  # noqa: BLE001 - only a head start; the kernels load on first use anyway
            pass
        self._info = proc.wait_ready(self.options.open_timeout)
        # its shaledb.* log records (docs/operations.md), and its "warm" event
        # (its kernels are loaded: the compactor may start; _start_compactor)
        receive_logs(proc.conn, "flusher", on_event=functools.partial(_on_flusher_event, self._cgo))

    def _start_compactor(self, url: str, store_options: dict, in_process: bool) -> None:
        """Start the compactor service (after the flusher: the database exists)."""
        if in_process:
            from shaledb.compact.service import CompactorService

            svc = CompactorService(self._store, self.options)
            svc.start(None)
            self._cservice = svc
            return
        from shaledb.compact.service import CompactorConfig

        addr = sibling_address(self._control_addr, "compactor")
        config = CompactorConfig(
            url=url, store_options=store_options, options=self.options, control=addr, parent_pid=os.getpid()
        )
        # Not waited for here: open() returns while the compactor's
        # interpreter starts (most of open's time otherwise).  The first
        # call that needs it (compact, gc, status, close) waits for it and
        # raises its open error, if any.  Its start (interpreter and
        # imports, ~0.3 s of CPU) waits until the flusher's kernels are
        # loaded (~1 s of CPU), at most COMPACTOR_START_WAIT, or until a
        # call needs it: on two cores the two start-ups at once pre-empted
        # the application's first gets after open() for whole time slices.
        if self._proc is None:  # no flusher process warming up
            self._cgo.set()
        box: dict = {}
        self._cstart = (threading.Thread(target=self._await_compactor, args=(config, addr, box),
                                         name="shaledb-compactor-start", daemon=True), box)
        self._cstart[0].start()

    def _await_compactor(self, config, addr, box: dict) -> None:
        """Thread body: start the compactor process once allowed (see
        _start_compactor; none once the Db is closing), wait for its ready
        message, then forward its log records and connect (``box``: client
        or error)."""
        from shaledb.compact.service import CompactorProcess

        self._cgo.wait(COMPACTOR_START_WAIT)
        try:
            with self._clock:
                if self._cstopping:
                    box["error"] = Closed("the database closed before its compactor started")
                    return
                proc = self._cproc = CompactorProcess(config)
            proc.wait_ready(self.options.open_timeout)
            receive_logs(proc.conn, "compactor")
            box["client"] = ControlClient(addr, self.options.request_timeout, peer="compactor")
        except BaseException as exc:  # noqa: BLE001 - raised by the first call that needs the compactor
            box["error"] = exc
            log.warning("the compactor did not start: %s", exc)

    def _compactor_client(self) -> ControlClient:
        """The compactor's control client, once it is ready (see
        _start_compactor); raises its start error."""
        if self._cclient is None:
            thread, box = self._cstart
            self._cgo.set()  # needed now: start it without waiting for the flusher's warm-up
            thread.join(self.options.open_timeout + COMPACTOR_START_WAIT + 10)
            if "error" in box:
                raise box["error"]
            if "client" not in box:
                raise Unavailable(f"the compactor did not start within {self.options.open_timeout:g} s")
            self._cclient = box["client"]
        return self._cclient

    def _compactor_call(self, op: CompactorRequest, *args: Any, timeout: float | None = None) -> Any:
        if self._cservice is not None:
            return self._cservice.handle(int(op), args)
        client = self._compactor_client()
        try:
            return client.call(op, *args, timeout=timeout)
        except Unavailable:
            if self._cproc is not None and not self._cproc.is_alive():
                raise Unavailable(
                    f"the compactor process died (exit code {self._cproc.exitcode}); close this Db and reopen"
                ) from None
            raise

    def _stop_compactor(self, kill: bool) -> None:
        """Stop the compactor service; never leaves its process behind.  Idempotent."""
        if self._cservice is not None:
            svc, self._cservice = self._cservice, None
            svc.stop(timeout=min(60.0, self.options.close_timeout))
        with self._clock:
            self._cstopping = True  # a compactor not started yet never starts
        self._cgo.set()
        if self._cproc is not None and self._cclient is None:
            if kill:
                self._cproc.kill()  # its start thread sees it gone
            try:  # still starting: let it finish, so that STOP reaches it
                self._compactor_client()
            except ShaleDBError:  # it never started (logged): nothing of it to stop
                pass
        proc, self._cproc = self._cproc, None
        client, self._cclient = self._cclient, None
        if proc is not None:
            if not kill and client is not None and proc.is_alive():
                try:
                    client.call(CompactorRequest.STOP, timeout=10)
                except ShaleDBError:
                    pass
            proc.join(timeout=0 if kill else min(30.0, self.options.close_timeout))
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
            proc.close()
        if client is not None:
            client.close()

    def _start_thread_flusher(self) -> None:
        from shaledb.flush.flusher import Flusher

        fl = Flusher(self._store, self.options, self._pool)
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
        if self._pool is not None and self._pool.fenced():
            self._closing_error = Fenced("a newer writer opened this database; this Db is fenced")
            raise Fenced(str(self._closing_error))
        if self._pool is not None and self._pool.status() == PoolStatus.FAILED:
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
            text = self._control.call(Request.STATUS, timeout=10)["failed"] or ""
        except ShaleDBError:
            text = ""
        kind, _, msg = text.partition(": ")
        cls = getattr(errors, kind, None)
        if isinstance(cls, type) and issubclass(cls, ShaleDBError) and msg:
            return cls(msg)
        return Unavailable("the database's flusher failed; close this Db and reopen it")

    def _new_writer(self, shared_pool: bool = False) -> Writer:
        """A writer of this Db's pool: this process's own (``shared_pool``:
        it uses the Db's pool handle), or a picklable ``db.writer()`` handle
        (it attaches on first use, in whichever process it lands)."""
        return Writer(
            self._pool.descriptor(),
            hooks=self._hooks,
            timeout=self.options.request_timeout,
            pool=self._pool if shared_pool else None,
        )

    def _drain(self) -> None:
        """Append this process's buffered writes, so that reads see them."""
        w = self._writer
        if w is not None and not self._writers_stopped and w.has_buffered():
            w.drain()

    def _stop_writers(self) -> None:
        """Close this process's writer (appending what it buffered) and turn
        every writer handle's next call into Closed.  Idempotent."""
        if self._writers_stopped:
            return
        self._writers_stopped = True
        if self._writer is not None:
            try:
                self._writer.close()
            except ShaleDBError:
                pass
        try:
            self._pool.publish_closed()
        except Exception:  # noqa: BLE001 - already detached
            pass
        if self._hooks is not None:
            self._hooks.close()

    def _flusher_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.is_alive()
        return True

    def _raise_if_flusher_died(self) -> None:
        if not self._flusher_alive():
            raise Unavailable(
                f"the flusher process died (exit code {self._proc.exitcode}); close this Db and reopen"
            ) from None

    def _call(self, op: Request, *args: Any, timeout: float | None = None) -> Any:
        self._check_open()
        try:
            return self._control.call(op, *args, timeout=timeout)
        except (Fenced, StorageError) as exc:
            self._fail(exc)
            raise
        except Unavailable:
            self._raise_if_flusher_died()
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
            return self._writer.delete(key, await_durable=await_durable)
        except (Fenced, StorageError) as exc:
            self._fail(exc)
            raise

    def write(self, batch, *, await_durable: bool = True) -> int:
        """Apply a :class:`~shaledb.WriteBatch` atomically; return the last seq."""
        self._check_open()
        try:
            return self._writer.write(batch, await_durable=await_durable)
        except (Fenced, StorageError) as exc:
            self._fail(exc)
            raise

    def put_many(self, keys, values, *, await_durable: bool = True) -> int:
        """Write many pairs: sequences of bytes, or numpy ``(uint8 data, int64
        offsets)`` pairs for keys and values, or pyarrow binary/string
        arrays (``shaledb[arrow]``; the data buffers are used in place).
        Return the last seq."""
        self._check_open()
        from shaledb.read.arrow import is_arrow

        if is_arrow(keys) or is_arrow(values):
            from shaledb.read.arrow import packed_from_arrow

            keys = packed_from_arrow(keys, "keys") if is_arrow(keys) else keys
            values = packed_from_arrow(values, "values") if is_arrow(values) else values
        try:
            return self._writer.put_many(keys, values, await_durable=await_durable)
        except (Fenced, StorageError) as exc:
            self._fail(exc)
            raise

    def ingest(self, descriptors, *, verify: str = "tail") -> dict:
        """Make a bulk load visible at once (docs/bulk.md): ``descriptors``
        from ``shaledb.bulk.SstWriter.finish`` (any processes, one load or
        several, key ranges not overlapping) become one new sorted run,
        newer than every write made before this call, older than every
        write after.  ``verify``: ``"tail"`` (footer checksums, one ranged
        GET per SST), ``"full"`` (whole objects) or ``"none"``.  One fenced
        manifest update: after a failure or crash either all of it is
        visible or none.  Returns ``seq``, ``run_id``, ``ssts``,
        ``records``, ``bytes``, ``manifest_id``, ``already_ingested``."""
        from shaledb.bulk import prepare_ingest

        self._check_open()
        refs = prepare_ingest(self._store, descriptors, verify=verify)
        self._drain()
        out = self._call(Request.INGEST, refs)
        self._reader.invalidate()
        return out

    def writer(self):
        """A picklable handle that lets another process append and flush."""
        self._check_open()
        return self._new_writer()

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        """The newest value of ``key``, or None if absent or deleted."""
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            key = check_key(key)
        if self._closed or self._closing_error is not None or _monotonic() >= self._next_check:
            self._check_open()
        w = self._writer
        if w.has_buffered_key(key):  # a buffered write of this key is its newest version
            w.drain()
        return self._rget(key)

    def get_many(self, keys):
        """Point reads of many keys at once: a sequence of bytes -> a list of
        ``bytes | None`` in order; a numpy ``(uint8 data, int64 offsets)``
        pair -> ``(values data, values offsets, found)`` arrays."""
        self._check_open()
        self._drain()
        from shaledb.read import get_many

        return get_many(self._reader, keys)

    def scan(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs with ``start <= key < end`` in key order (lazy),
        of one snapshot (as :meth:`scan_arrays`)."""
        start = check_bound("start", start)
        end = check_bound("end", end)
        self._check_open()
        self._drain()
        from shaledb.read.scan import scan_pairs, snapshot_seq  # the batch scan, as tuples

        return scan_pairs(self._reader, start, end, snapshot_seq(self._pool))

    def scan_arrays(self, start: bytes | None = None, end: bytes | None = None, *,
                    batch_records: int = 65536, batch_bytes: int = 64 << 20) -> Iterator[tuple]:
        """Batches ``(keys_data, keys_offsets, values_data, values_offsets)``
        (uint8 data, int64 offsets of n + 1 entries from 0) of the pairs with
        ``start <= key < end``, in key order, at most ``batch_records`` pairs
        and ``batch_bytes`` key + value bytes each (a larger pair is a batch
        of its own; lazy).  Every batch shows one snapshot: the writes made
        before the call, none made after.  docs/reads.md."""
        from shaledb.read.scan import check_batch_bytes, check_batch_records, scan_arrays, snapshot_seq

        start = check_bound("start", start)
        end = check_bound("end", end)
        batch_records = check_batch_records(batch_records)
        batch_bytes = check_batch_bytes(batch_bytes)
        self._check_open()
        self._drain()
        return scan_arrays(self._reader, start, end, batch_records, snapshot_seq(self._pool), batch_bytes)

    def scan_arrow(self, start: bytes | None = None, end: bytes | None = None, *,
                   batch_records: int = 65536, batch_bytes: int = 64 << 20):
        """:meth:`scan_arrays` as one ``pyarrow.Table`` (``large_binary``
        columns ``key`` and ``value``, one record batch per scan batch, the
        arrays' buffers shared, not copied).  Needs ``shaledb[arrow]``."""
        from shaledb.read.arrow import table_from_batches

        return table_from_batches(self.scan_arrays(start, end, batch_records=batch_records, batch_bytes=batch_bytes))

    # ------------------------------------------------------------- durability

    def flush(self, memtable: bool = False) -> int:
        """Make every write made before this call durable (in the WAL, or with
        ``memtable=True`` or ``wal=False``, in L0).  Returns the durable seq."""
        if not isinstance(memtable, bool):
            raise InvalidArgument("flush(memtable=...) takes a bool")
        op = Request.FLUSH_MEMTABLE if memtable else Request.FLUSH_WAL
        self._check_open()
        self._drain()
        seq = self._call(op)
        self._reader.invalidate()
        return seq

    def compact(self, full: bool = False) -> dict:
        """Compact now and wait: one scheduler pass, or with ``full=True`` all
        of L0 and every sorted run into one sorted run (a major compaction,
        e.g. after a bulk load).  Returns what it did: ``jobs``,
        ``trivial_moves``, ``bytes_in``, ``bytes_out``, ``seconds``, and
        ``ranges``/``workers`` (key ranges merged, worker processes used).

        Asks the compactor service and waits ``request_timeout``
        (``full_compaction_timeout`` when ``full``); with
        ``Options.compactor=False`` runs a one-shot compactor in this
        process (which fences any other compactor of the database).
        Fenced if this Db's compactor was fenced by another one.
        """
        if not isinstance(full, bool):
            raise InvalidArgument("compact(full=...) takes a bool")
        self._check_open()
        timeout = self.options.full_compaction_timeout if full else self.options.request_timeout
        if self.options.compactor:
            out = self._compactor_call(CompactorRequest.COMPACT, full, timeout=timeout)
        else:
            from shaledb.compact.compactor import Compactor

            with Compactor(self._store, self.options) as c:
                out = c.compact_once(full).as_dict()
        self._reader.invalidate()
        return out

    def gc(self, dry_run: bool = False) -> dict:
        """One garbage-collection pass now (docs/gc.md), with ``min_age =
        Options.gc_min_age``; returns what was (with ``dry_run``: would be)
        deleted: ``deleted`` (counts by kind: ``wal``, ``sst``,
        ``manifest``), ``bytes`` and ``keys`` by kind, ``expired_checkpoints``,
        ``skipped``.  Runs in the compactor service (it knows the compactor's
        unpublished uploads), or here with ``Options.compactor=False``."""
        if not isinstance(dry_run, bool):
            raise InvalidArgument("gc(dry_run=...) takes a bool")
        self._check_open()
        if self.options.compactor:
            return self._compactor_call(CompactorRequest.GC, dry_run)
        from shaledb.compact.service import gc_result_dict
        from shaledb.gc.collector import collect

        return gc_result_dict(collect(self._store, min_age=self.options.gc_min_age, dry_run=dry_run))

    # ------------------------------------------------ snapshots, checkpoints

    def snapshot(self):
        """A read view that never changes (:class:`~shaledb.Snapshot`): flushes
        the memtable to L0, then pins the latest manifest with a leased
        checkpoint (renewed while the snapshot lives, deleted by its
        ``close()``).  Costs one memtable flush and two manifest writes;
        docs/readers.md."""
        from shaledb.readonly.snapshot import Snapshot

        self.flush(memtable=True)
        return Snapshot.pin(self._store, self.options)

    def create_checkpoint(self, *, lifetime=None, name: str | None = None):
        """Flush the memtable to L0, then pin the latest manifest: a
        :class:`shaledb.checkpoints.Checkpoint` holding every write made
        before the call.  ``lifetime``: seconds or a timedelta (None: until
        deleted)."""
        from shaledb.checkpoints.api import create_in, lifetime_ms

        lifetime_ms(lifetime)  # bad input fails before the flush
        self.flush(memtable=True)
        return create_in(self._store, lifetime=lifetime, name=name)

    def list_checkpoints(self) -> list:
        """The live checkpoints, in creation order."""
        from shaledb.checkpoints.api import list_in

        self._check_open()
        return list_in(self._store)

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Remove a checkpoint (InvalidArgument if there is none with that id)."""
        from shaledb.checkpoints.api import delete_in

        self._check_open()
        delete_in(self._store, checkpoint_id)

    def refresh_checkpoint(self, checkpoint_id: str, lifetime):
        """Make a live checkpoint expire ``lifetime`` from now (None: never)."""
        from shaledb.checkpoints.api import refresh_in

        self._check_open()
        return refresh_in(self._store, checkpoint_id, lifetime)

    def status(self) -> DbStatus:
        """A typed ``shaledb.status.DbStatus``: durable seq, the tree's shape
        in the flusher's manifest (L0, sorted runs, WAL range, compaction
        backlog), the flusher's upload and request counters, stall time and
        the compactor's counters (None when it is off; ``alive`` False when
        its process died).  Counters start at zero at each open.  Answers for
        a failed or fenced Db too (``flusher.failed`` says why); Closed after
        close.  docs/operations.md, "Watching it"."""
        if self._closed:
            raise Closed("the database is closed")
        try:
            out = self._control.call(Request.STATUS)
        except Unavailable:
            self._raise_if_flusher_died()
            raise
        comp = None
        if self.options.compactor:
            try:
                comp = dict(self._compactor_call(CompactorRequest.STATUS, timeout=10), alive=True)
            except ShaleDBError as exc:
                comp = {"alive": False, "last_error": f"{type(exc).__name__}: {exc}"}
        if self._manifest_watch is None:
            self._manifest_watch = ManifestWatch(self._store)
        return db_status(out, comp, latest=self._manifest_watch.latest(),
                         l0_compaction_threshold=self.options.l0_compaction_threshold)

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
                    if self._closing_error is None and not self._pool.fenced():
                        # Our writer drains; every writer handle gets Closed from
                        # now on, so nothing is appended after the final seal.
                        self._stop_writers()
                        self._control.call(Request.CLOSE, timeout=self.options.close_timeout)
                    else:
                        self._control.call(Request.ABORT, timeout=10)
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
                    self._control.call(Request.ABORT, timeout=10)
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
        if self._closing_error is not None or self._pool.fenced():
            return None
        unappended = False
        try:
            self._drain()  # this process's buffered writes join the arenas
        except ShaleDBError:
            unappended = True
        self._stop_writers()
        pool = self._pool
        last, durable = pool.next_seq() - 1, pool.durable_seq()
        if last <= durable and not unappended:
            return None
        return Unavailable(
            f"the flusher process died (exit code {self._proc.exitcode}) before writes up to seq {last} "
            f"became durable (durable up to seq {durable}); they are lost unless they reached the WAL"
        )

    def _teardown(self, kill: bool) -> None:
        if self._pool is not None:
            self._stop_writers()
        # after the flusher's final flush (close() sent CLOSE): it may have
        # waited for the compactor to make room in L0
        self._stop_compactor(kill)
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
            proc.close()
        if self._reader is not None:
            self._reader.close()
        if self._pool is not None:
            self._pool.destroy()
            self._pool = None
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


def _create_pool(url: str, options: Options):
    """A new arena pool for the database at ``url``, sized by ``options``."""
    from shaledb.memtable.arena_pool import ArenaPool

    return ArenaPool.create(
        url,
        arena_bytes=options.arena_bytes,
        max_arenas=options.max_arenas,
        initial_arenas=options.initial_arenas,
        max_unflushed_bytes=options.max_unflushed_bytes,
        seal_bytes=options.l0_sst_bytes,
        failpoints=options.failpoints,
    )
