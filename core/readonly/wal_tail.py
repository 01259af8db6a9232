"""The WAL tail of a read-only reader: records durable in the WAL but not
yet in L0, held in memory and served to the read path as its ``mem``
(the protocol of :class:`shaledb.read.Reader`: ``lookup``,
``sorted_runs_snapshot``, ``manifest_id``).

A refresh reads the latest manifest ``M``, then the WAL objects
``M.replay_after_wal_id + 1, + 2, ...`` up to the first id that does not
exist, the way recovery does (shaledb.flush.recovery): zero-byte objects are
fences of a newer writer epoch and are skipped; records at or below
``M.last_l0_seq`` are dropped (they are in L0).  Only a contiguous prefix of
the WAL is ever read, so a record is served only once every lower WAL id is
durable.  A missing id may also mean that GC deleted a WAL object which a
newer manifest already flushed to L0: the manifest is then re-read and the
walk restarts from the newer replay point.  Objects already decoded are kept
between refreshes (each WAL object is fetched once).

Consistency with the read path: the manifest id is published (the read
path's hint) *before* the records are swapped, and the read path reads mem
before the manifest, so a reader never combines a tail that starts past the
manifest it reads: every WAL id above the manifest's replay point is in the
tail it read or in the manifest it reads afterwards.

Thread safety: ``refresh`` serializes on a lock; the read methods take one
immutable state tuple and need no lock.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from shaledb.errors import ObjectNotFound, Unavailable
from shaledb.format.keys import wal_key
from shaledb.format.record import HEADER, KIND_BITS, KIND_MASK, RECORD_HEADER, TRAILER_OFF

__all__ = ["TailState", "WalTail"]

#: A refresh whose WAL walk keeps meeting objects that GC removed gives up
#: after this many newer manifests (Unavailable; the next refresh retries).
MAX_RESTARTS = 8


class TailState(NamedTuple):
    """One refresh's view: the manifest it started from and the sorted records."""

    manifest_id: int
    replay_after_wal_id: int
    next_wal_id: int  # one past the last WAL id read
    buf: np.ndarray
    offs: np.ndarray  # record order (key asc, seq desc)
    max_seq: int  # the newest seq in the tail, 0 when empty


_EMPTY_BUF = np.zeros(0, dtype=np.uint8)
_EMPTY_OFFS = np.zeros(0, dtype=np.int64)


class WalTail:
    """The records of the WAL past the latest manifest's replay point.

    ``manifests``: a reader-role :class:`shaledb.manifest.ManifestStore` on
    ``store`` (never writes).  REQUIRES: ``store`` never writes
    (:class:`shaledb.readonly.views.ReadOnlyStore`).
    """

    def __init__(self, store, manifests):
        self.store = store
        self.manifests = manifests
        self._lock = threading.Lock()
        self._hint = 0
        self._state = TailState(0, 0, 1, _EMPTY_BUF, _EMPTY_OFFS, 0)
        self._decoded: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}  # wal id -> (buf, offs, max seq)

    # -- the read path's mem protocol

    def manifest_id(self) -> int:
        return self._hint

    def lookup(self, key: bytes):
        """The newest version of ``key`` in the tail: ``(key, seq, kind, value or None)`` or None."""
        st = self._state
        n = st.offs.shape[0]
        if n == 0:
            return None
        from shaledb.kernels.read import lower_bound

        karr = np.frombuffer(key, dtype=np.uint8)
        i = int(lower_bound(st.buf, st.offs, 0, n, karr))
        if i >= n:
            return None
        o = int(st.offs[i])
        klen, vlen, trailer = HEADER.unpack_from(st.buf, o)
        if klen != len(key) or st.buf[o + RECORD_HEADER : o + RECORD_HEADER + klen].tobytes() != key:
            return None
        kind = trailer & KIND_MASK
        value = st.buf[o + RECORD_HEADER + klen : o + RECORD_HEADER + klen + vlen].tobytes() if kind else None
        return (key, trailer >> KIND_BITS, kind, value)

    def sorted_runs_snapshot(self) -> list:
        st = self._state
        return [(st.buf, st.offs)] if st.offs.shape[0] else []

    # -- state

    @property
    def state(self) -> TailState:
        return self._state

    def refresh(self) -> TailState:
        """Re-read the latest manifest and the WAL past its replay point."""
        with self._lock:
            m = self.manifests.refresh()
            mid = self.manifests.manifest_id
            for _ in range(MAX_RESTARTS):
                end = self._walk(m.replay_after_wal_id + 1)
                if end is not None:
                    break
                m = self.manifests.refresh()  # a WAL object vanished: a newer manifest flushed it
                mid = self.manifests.manifest_id
            else:
                raise Unavailable("the WAL tail kept changing under the reader (GC removed WAL objects); retry")
            first = m.replay_after_wal_id + 1
            for wid in [w for w in self._decoded if w < first]:
                del self._decoded[wid]
            runs = []
            max_seq = 0
            for wid in range(first, end):
                buf, offs, top = self._decoded[wid]
                if offs.shape[0]:
                    keep = _seqs(buf, offs) > np.uint64(m.last_l0_seq)
                    if keep.any():
                        runs.append((buf, np.ascontiguousarray(offs[keep])))
                        max_seq = max(max_seq, top)
            if runs:
                from shaledb.kernels.sort import concat_runs, sort_records

                buf, offs = concat_runs(runs)
                offs = sort_records(buf, offs)
            else:
                buf, offs = _EMPTY_BUF, _EMPTY_OFFS
            st = TailState(mid, m.replay_after_wal_id, end, buf, offs, max_seq)
            self._hint = max(self._hint, mid)  # before the swap (see the module docstring)
            self._state = st
            return st

    def _walk(self, first: int) -> int | None:
        """Decode WAL ids ``first, first+1, ...`` not decoded yet; the first
        missing id (the end of the WAL), or None when an id below one
        already decoded is missing (GC took it: the manifest moved on)."""
        from shaledb.format.wal import decode_wal

        wid = first
        while True:
            if wid in self._decoded:
                wid += 1
                continue
            key = wal_key(wid)
            try:
                data = self.store.get(key)
            except ObjectNotFound:
                if any(w > wid for w in self._decoded):
                    return None
                # the end, unless GC removed it after a newer manifest flushed it
                latest = self.manifests.refresh()
                if latest.replay_after_wal_id >= wid:
                    return None
                return wid
            buf, offs = decode_wal(data, key)
            top = int(_seqs(buf, offs).max()) if offs.shape[0] else 0
            self._decoded[wid] = (buf, offs, top)
            wid += 1


def _seqs(buf: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """The seq of every record (the u64 trailer shifted by the kind bits)."""
    idx = offs.astype(np.int64)[:, None] + np.arange(TRAILER_OFF, TRAILER_OFF + 8, dtype=np.int64)[None, :]
    raw = np.ascontiguousarray(buf[idx])
    return raw.view("<u8").reshape(-1) >> np.uint64(KIND_BITS)
