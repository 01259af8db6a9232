"""Read-only readers: ``shaledb.open_reader(url)`` -> :class:`DbReader`
(docs/readers.md).

A DbReader reads a database from any process or machine while one writer
(and a compactor) keep working on it, and it never writes to the store: its
store is a :class:`~shaledb.readonly.views.ReadOnlyStore`, which refuses
every write, and its manifest handle has the reader role (no epoch, so it
fences nobody).  Two modes:

* follow (no ``checkpoint``): a background thread re-reads the latest
  manifest every ``poll_interval`` and, with ``wal_tail``, the WAL past its
  replay point (:class:`~shaledb.readonly.wal_tail.WalTail`, the read path's
  ``mem``).  The read path (:class:`shaledb.read.Reader`) sees manifests up
  to the one the last poll followed and no newer (a
  :class:`~shaledb.readonly.views.PinnedStore` ceiling the poll raises), so
  it never runs ahead of the tail.  What it reads stays alive only by GC's
  ``gc_min_age`` plus retry (a get that meets a missing object catches up
  and reads again, a scan resumes after its last key): a reader cannot pin
  with a checkpoint of its own without writing.
* checkpoint: the read path sees the checkpoint's manifest and nothing newer
  (:class:`~shaledb.readonly.views.PinnedStore`): the same data forever,
  while the checkpoint lives.

Thread safety: a DbReader may be shared by threads.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

from shaledb.errors import Closed, Corruption, InvalidArgument, ShaleDBError

__all__ = ["DbReader", "FixedMem", "open_reader"]

#: A read that meets a missing object catches up and retries this many times.
MISSING_RETRIES = 3


class FixedMem:
    """The read path's ``mem`` when there is no memtable: no records, and a
    manifest hint (a pinned manifest id; or, following without a WAL tail,
    the newest id a poll found, raised by ``advance``)."""

    def __init__(self, manifest_id: int = 0):
        self._id = manifest_id

    def manifest_id(self) -> int:
        return self._id

    def advance(self, manifest_id: int) -> None:
        self._id = max(self._id, manifest_id)

    def unflushed_bytes(self) -> int:
        return 0

    def lookup(self, key: bytes):
        return None

    def sorted_runs_snapshot(self) -> list:
        return []


def open_reader(
    url,
    *,
    checkpoint: str | None = None,
    poll_interval: float = 1.0,
    wal_tail: bool = True,
    options=None,
    **overrides: Any,
) -> "DbReader":
    """A read-only reader of the database at ``url`` (a path or url).

    ``checkpoint``: read exactly that checkpoint (its id); otherwise follow
    the latest manifest, polled every ``poll_interval`` seconds, and with
    ``wal_tail`` also the WAL past it.  ``options``/``overrides``: engine
    options (``store_options``, ``block_cache_bytes``, ``request_timeout``).
    InvalidArgument when there is no database at ``url`` or the checkpoint
    is unknown or expired.
    """
    if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or not poll_interval > 0:
        raise InvalidArgument(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
    if not isinstance(wal_tail, bool):
        raise InvalidArgument("wal_tail must be a bool")
    from shaledb.checkpoints.api import open_root

    store, opts = open_root(url, options, **overrides)
    try:
        return DbReader(str(url), store, opts.replace(manifest_poll_interval=float(poll_interval)),
                        checkpoint=checkpoint, poll_interval=float(poll_interval), wal_tail=wal_tail)
    except BaseException:
        store.close()
        raise


class DbReader:
    """A read-only view of one database; see :func:`open_reader`."""

    def __init__(self, url: str, store, options, *, checkpoint=None, poll_interval=1.0, wal_tail=True):
        from shaledb.checkpoints.api import find_live
        from shaledb.manifest.store import ManifestStore
        from shaledb.read import Reader
        from shaledb.readonly.views import PinnedStore, ReadOnlyStore
        from shaledb.storage.wrappers import call_deadline

        self.url = url
        self.options = options
        self.poll_interval = poll_interval
        self._raw = store
        self._closed = False
        self._stop = threading.Event()
        self._thread = None
        self.last_error: ShaleDBError | None = None  # the background refresh's last failure
        self.polls = 0  # background refreshes completed (tests count them instead of timing)
        ro = ReadOnlyStore(store)
        self._store = ro
        with call_deadline(options.request_timeout):
            manifests = ManifestStore(ro)
            if not manifests.exists():
                raise InvalidArgument(f"no ShaleDB database at {url} (no manifest)")
        self._manifests = manifests
        self.checkpoint = None
        self._tail = None
        if checkpoint is not None:
            cp = find_live(manifests.current, checkpoint, manifests.clock.now_ms(), url)
            self.checkpoint = cp
            self._reader = Reader(PinnedStore(store, cp.manifest_id), options, FixedMem(cp.manifest_id))
            return
        # the read path sees manifests up to the one the last poll followed (its ceiling)
        self._view = PinnedStore(store, manifests.manifest_id)
        if wal_tail:
            from shaledb.readonly.wal_tail import WalTail

            self._tail = WalTail(ro, manifests, on_manifest=self._view.raise_to)
            with call_deadline(options.request_timeout):
                self._tail.refresh()
            mem = self._tail
        else:
            mem = FixedMem(manifests.manifest_id)
        self._mem = mem
        self._reader = Reader(self._view, options, mem)
        # follow mode: poll in the background
        self._thread = threading.Thread(target=self._poll, name="shaledb-reader-poll", daemon=True)
        self._thread.start()

    # -- reads

    def get(self, key: bytes) -> bytes | None:
        """The newest value of ``key`` this reader can see, or None."""
        from shaledb.memtable.writer import check_key

        key = check_key(key)
        self._check_open()
        return self._retrying(lambda: self._reader.get(key))

    def get_many(self, keys):
        """Point reads of many keys, as ``Db.get_many``: a sequence of bytes
        -> a list of ``bytes | None``; a numpy ``(uint8 data, int64
        offsets)`` pair -> ``(values data, values offsets, found)``."""
        from shaledb.read import get_many

        self._check_open()
        return self._retrying(lambda: get_many(self._reader, keys))

    def _retrying(self, call):
        for attempt in range(MISSING_RETRIES + 1):
            try:
                return call()
            except Corruption:
                # an SST of the followed manifest is gone (compacted, then
                # collected): catch up past it and read again
                if self.checkpoint is not None or attempt == MISSING_RETRIES or not self._caught_up():
                    raise

    def scan_arrays(self, start: bytes | None = None, end: bytes | None = None, *, batch_records: int = 65536,
                    batch_bytes: int = 64 << 20):
        """Batches ``(keys_data, keys_offsets, values_data, values_offsets)``
        of the pairs with ``start <= key < end``, as ``Db.scan_arrays`` (lazy;
        like :meth:`scan`, not a snapshot unless the reader reads a checkpoint)."""
        from shaledb.memtable.writer import check_bound
        from shaledb.read.scan import check_batch_bytes, check_batch_records

        start = check_bound("start", start)
        end = check_bound("end", end)
        batch_records = check_batch_records(batch_records)
        batch_bytes = check_batch_bytes(batch_bytes)
        self._check_open()
        return self._resuming_arrays(start, end, batch_records, batch_bytes)

    def _resuming_arrays(self, start, end, batch_records, batch_bytes):
        from shaledb.format.record import MAX_SEQ
        from shaledb.read.scan import scan_arrays

        attempt = 0
        while True:
            try:
                for batch in scan_arrays(self._reader, start, end, batch_records, MAX_SEQ, batch_bytes):
                    yield batch
                    kdata, koffs = batch[0], batch[1]
                    if len(koffs) > 1:
                        start = kdata[int(koffs[-2]) : int(koffs[-1])].tobytes() + b"\x00"
                    attempt = 0
                return
            except Corruption:
                if self.checkpoint is not None or attempt >= MISSING_RETRIES or not self._caught_up():
                    raise
                attempt += 1

    def scan(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs with ``start <= key < end`` in key order (lazy)."""
        from shaledb.memtable.writer import check_bound

        start = check_bound("start", start)
        end = check_bound("end", end)
        self._check_open()
        if self.checkpoint is not None:
            return self._reader.scan(start, end)
        return self._resuming_scan(start, end)

    def _resuming_scan(self, start, end):
        """The read path's scan; when it meets an object that is gone while
        the followed manifest still lists it, catch up and resume just after
        the last key returned."""
        attempt = 0
        it = self._reader.scan(start, end)
        while True:
            try:
                for k, v in it:
                    yield k, v
                    start = k + b"\x00"  # the smallest key after k
                    attempt = 0
                return
            except Corruption:
                if attempt >= MISSING_RETRIES or not self._caught_up():
                    raise
                attempt += 1
                it = self._reader.scan(start, end)

    def _caught_up(self) -> bool:
        """Catch up now; whether that moved to a newer manifest."""
        before = self._view.manifest_id
        self._catch_up()
        self._reader.invalidate()
        return self._view.manifest_id != before

    # -- freshness

    def refresh(self) -> None:
        """Catch up now: the latest manifest and (``wal_tail``) the WAL past
        it.  A checkpoint reader has nothing to catch up on."""
        self._check_open()
        if self.checkpoint is not None:
            return
        self._catch_up()

    @property
    def tail(self):
        """The WAL tail's current :class:`~shaledb.readonly.wal_tail.TailState`
        (manifest followed, WAL range, runs), or None without a tail."""
        return None if self._tail is None else self._tail.state

    def _catch_up(self) -> None:
        from shaledb.storage.wrappers import call_deadline

        with call_deadline(self.options.request_timeout):
            if self._tail is not None:
                self._tail.refresh()
            else:
                self._manifests.refresh()
                self._view.raise_to(self._manifests.manifest_id)
                self._mem.advance(self._manifests.manifest_id)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self._catch_up()
                self.last_error = None
            except ShaleDBError as exc:  # keep serving the last view; the next poll retries
                self.last_error = exc
            self.polls += 1

    # -- lifetime

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the reader is closed")

    def close(self) -> None:
        """Stop polling and drop cached SSTs.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(30.0, self.options.request_timeout))
        self._reader.close()
        try:
            self._raw.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "DbReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        what = f"checkpoint {self.checkpoint.id}" if self.checkpoint is not None else "latest"
        return f"<shaledb.DbReader {self.url!r} {what}{' closed' if self._closed else ''}>"
