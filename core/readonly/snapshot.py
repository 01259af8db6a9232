"""Snapshots of an open Db: ``db.snapshot()`` -> :class:`Snapshot`
(docs/readers.md, "Snapshots").

A snapshot is a read view that never changes.  It is built from the two
things the rest of the engine already honours, so no process needs to learn
a new rule:

1. the memtable is flushed to L0 (``db.flush(memtable=True)``): every write
   made before ``snapshot()`` is then in the latest manifest's SSTs, so the
   view needs neither arenas (which keep only a key's newest version) nor a
   read at a sequence number;
2. a checkpoint pins that manifest (a reader-role update: it fences
   nobody).  GC keeps the manifest and every SST it lists, and the compactor,
   which learns retention only from the manifest, keeps every version that
   manifest can see (``compact.compactor.checkpoint_retain_seq``).

The view reads the pinned manifest and nothing newer
(:class:`~shaledb.readonly.views.PinnedStore`).  The checkpoint is a lease
of ``LEASE_SECONDS``, renewed by a background thread every quarter of it
and deleted by ``close()``; if the process dies the lease runs out and the
next GC pass removes it.

Thread safety: a Snapshot may be shared by threads.
"""

from __future__ import annotations

import threading
from typing import Iterator

from shaledb.errors import Closed, ShaleDBError

__all__ = ["LEASE_SECONDS", "Snapshot"]

#: A snapshot's checkpoint expires this long after its last renewal.
LEASE_SECONDS = 600.0


class Snapshot:
    """A read view of a database at one point.  Build with ``db.snapshot()``.

    ``seq``: the highest sequence number it can see; ``checkpoint_id``: the
    checkpoint that pins it; ``manifest_id``: the manifest it reads.
    """

    def __init__(self, *_a, **_k):
        raise TypeError("use db.snapshot() to take a snapshot")

    @classmethod
    def pin(cls, store, options, *, lease: float = LEASE_SECONDS) -> "Snapshot":
        """A snapshot of the latest manifest of ``store``.  REQUIRES: the
        caller flushed the memtable first (what it must contain is in L0)."""
        from shaledb.checkpoints.api import create_in
        from shaledb.read import Reader
        from shaledb.readonly.reader import FixedMem
        from shaledb.readonly.views import PinnedStore
        from shaledb.storage.wrappers import call_deadline

        self = object.__new__(cls)
        self._store = store
        self._lease = lease
        self._closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.last_error: ShaleDBError | None = None
        with call_deadline(options.request_timeout):
            cp = create_in(store, lifetime=lease, name="snapshot")
            from shaledb.format.keys import manifest_key
            from shaledb.manifest.model import decode_manifest

            key = manifest_key(cp.manifest_id)
            m = decode_manifest(store.get(key), key)
        self.checkpoint_id = cp.id
        self.manifest_id = cp.manifest_id
        self.seq = m.last_l0_seq
        self._reader = Reader(PinnedStore(store, cp.manifest_id), options, FixedMem(cp.manifest_id))
        self._thread = threading.Thread(target=self._renew, name="shaledb-snapshot-lease", daemon=True)
        self._thread.start()
        return self

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` in the snapshot, or None."""
        from shaledb.memtable.writer import check_key

        key = check_key(key)
        self._check_open()
        return self._reader.get(key)

    def scan(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs of the snapshot with ``start <= key < end``, in key order (lazy)."""
        from shaledb.memtable.writer import check_bound

        start = check_bound("start", start)
        end = check_bound("end", end)
        self._check_open()
        return self._reader.scan(start, end)

    def get_many(self, keys):
        """Point reads of many keys in the snapshot, as ``Db.get_many``."""
        from shaledb.read import get_many

        self._check_open()
        return get_many(self._reader, keys)

    def scan_arrays(self, start: bytes | None = None, end: bytes | None = None, *, batch_records: int = 65536,
                    batch_bytes: int = 64 << 20):
        """The snapshot's pairs with ``start <= key < end`` in batches, as ``Db.scan_arrays``."""
        from shaledb.memtable.writer import check_bound
        from shaledb.read.scan import check_batch_bytes, check_batch_records, scan_arrays

        start = check_bound("start", start)
        end = check_bound("end", end)
        batch_records = check_batch_records(batch_records)
        batch_bytes = check_batch_bytes(batch_bytes)
        self._check_open()
        return scan_arrays(self._reader, start, end, batch_records, self.seq, batch_bytes)

    def _renew(self) -> None:
        from shaledb.checkpoints.api import refresh_in

        while not self._stop.wait(self._lease / 4):
            try:
                refresh_in(self._store, self.checkpoint_id, self._lease)
                self.last_error = None
            except ShaleDBError as exc:  # retried at the next renewal; the lease has 3/4 left
                self.last_error = exc

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the snapshot is closed")

    def close(self) -> None:
        """Release the snapshot: stop renewing and delete its checkpoint.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._thread.join(timeout=60)
        self._reader.close()
        from shaledb.checkpoints.api import delete_in

        try:
            delete_in(self._store, self.checkpoint_id)
        except ShaleDBError:
            pass  # gone already (expired and collected), or the store is down: the lease runs out

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<shaledb.Snapshot seq={self.seq} checkpoint={self.checkpoint_id}{' closed' if self._closed else ''}>"
