"""The WAL tail of a read-only reader: records durable in the WAL but not
yet in L0, held in memory and served to the read path as its ``mem``
(the protocol of :class:`shaledb.read.Reader`: ``lookup``,
``sorted_runs_snapshot``, ``manifest_id``).

A refresh reads the latest manifest ``M``, then the WAL objects
``M.replay_after_wal_id + 1, + 2, ...`` up to the first id that does not
exist, the way recovery does (shaledb.flush.recovery): zero-byte objects are
fences of a newer writer epoch and hold nothing.  Only a contiguous prefix of
the WAL is ever read, so a record is served only once every lower WAL id is
durable.  A missing id may also mean that GC deleted a WAL object that a
newer manifest already flushed to L0: the manifest is then re-read and the
walk restarts from the newer replay point.

Runs: each refresh sorts only the WAL objects it fetched into one new run
(record order, ``kernels.sort``); runs are merged (``kernels.merge``, linear)
when a run is not much smaller than the one before it (sizes halve from oldest to newest, so at
most about log2(records) runs), and a run is dropped once ``M``'s replay
point passes its last WAL id (its records are in ``M``'s SSTs).  A kept run
may hold records that are also in L0: harmless, since the tail is a
contiguous WAL range, so its newest version of a key is at least as new as
any version ``M``'s SSTs hold.  ``lookup`` searches the runs newest first.

Consistency with the read path: ``on_manifest(id)`` (the reader's manifest
ceiling) and then the hint are raised *before* the new runs are swapped in,
and the read path reads mem before the manifest, so a read never pairs a
tail that starts past the manifest it reads.

Thread safety: ``refresh`` serializes on a lock; the read methods take one
immutable state tuple and need no lock.
"""

from __future__ import annotations

import threading
from typing import Callable, NamedTuple

import numpy as np

from shaledb.errors import ObjectNotFound, Unavailable
from shaledb.format.keys import wal_key
from shaledb.format.record import HEADER, KIND_BITS, KIND_MASK, RECORD_HEADER

__all__ = ["TailRun", "TailState", "WalTail"]

#: A refresh whose WAL walk keeps meeting objects that GC removed gives up
#: after this many newer manifests (Unavailable; the next refresh retries).
MAX_RESTARTS = 8


class TailRun(NamedTuple):
    """Records of WAL ids ``first <= id < end``, in record order."""

    first: int
    end: int
    buf: np.ndarray
    offs: np.ndarray


class TailState(NamedTuple):
    """One refresh's view: the manifest it followed and the runs, oldest first."""

    manifest_id: int
    replay_after_wal_id: int
    next_wal_id: int  # one past the last WAL id read
    runs: tuple

    @property
    def records(self) -> int:
        return sum(int(r.offs.shape[0]) for r in self.runs)


class WalTail:
    """The records of the WAL past the latest manifest's replay point.

    ``manifests``: a reader-role :class:`shaledb.manifest.ManifestStore` on
    ``store`` (never writes).  ``on_manifest``: called with each refresh's
    manifest id before the new records are served (the reader raises its
    manifest ceiling there).  REQUIRES: ``store`` never writes
    (:class:`shaledb.readonly.views.ReadOnlyStore`).
    """

    def __init__(self, store, manifests, on_manifest: Callable[[int], None] | None = None):
        self.store = store
        self.manifests = manifests
        self._on_manifest = on_manifest
        self._lock = threading.Lock()
        self._hint = 0
        self._state = TailState(0, 0, 1, ())

    # -- the read path's mem protocol

    def manifest_id(self) -> int:
        return self._hint

    def lookup(self, key: bytes):
        """The newest version of ``key`` in the tail: ``(key, seq, kind, value or None)`` or None."""
        runs = self._state.runs
        if not runs:
            return None
        from shaledb.kernels.read import lower_bound

        karr = np.frombuffer(key, dtype=np.uint8)
        for run in reversed(runs):  # newest first: the first hit is the newest version
            buf, offs = run.buf, run.offs
            n = offs.shape[0]
            i = int(lower_bound(buf, offs, 0, n, karr))
            if i >= n:
                continue
            o = int(offs[i])
            klen, vlen, trailer = HEADER.unpack_from(buf, o)
            if klen != len(key) or buf[o + RECORD_HEADER : o + RECORD_HEADER + klen].tobytes() != key:
                continue
            kind = trailer & KIND_MASK
            value = buf[o + RECORD_HEADER + klen : o + RECORD_HEADER + klen + vlen].tobytes() if kind else None
            return (key, trailer >> KIND_BITS, kind, value)
        return None

    def unflushed_bytes(self) -> int:
        """Bytes of records in the tail (0: a read may skip ``lookup``)."""
        return sum(int(r.buf.shape[0]) for r in self._state.runs)

    def sorted_runs_snapshot(self) -> list:
        return [(r.buf, r.offs) for r in reversed(self._state.runs)]

    # -- state

    @property
    def state(self) -> TailState:
        return self._state

    def refresh(self) -> TailState:
        """Re-read the latest manifest and the WAL past its replay point."""
        with self._lock:
            old = self._state
            for _ in range(MAX_RESTARTS):
                m = self.manifests.refresh()
                mid = self.manifests.manifest_id
                first = m.replay_after_wal_id + 1
                runs = [r for r in old.runs if r.end > first]  # a run M covers entirely is in its SSTs
                start = max(first, runs[-1].end) if runs else first
                if runs and runs[0].first > first:
                    runs, start = [], first  # a gap before our runs (cannot happen with a monotonic WAL): re-read
                fetched = self._walk(start)
                if fetched is not None:
                    break
            else:
                raise Unavailable("the WAL tail kept changing under the reader (GC removed WAL objects); retry")
            objs, end = fetched
            if objs:
                runs.append(_sorted_run(start, end, objs))
            st = TailState(mid, m.replay_after_wal_id, max(end, first), tuple(runs))
            if self._on_manifest is not None:
                self._on_manifest(mid)
            self._hint = max(self._hint, mid)  # before the swap (see the module docstring)
            self._state = st
            # merge after publishing: a large merge delays no write's visibility
            while len(runs) >= 2 and runs[-2].offs.shape[0] <= 2 * runs[-1].offs.shape[0]:
                b = runs.pop()
                a = runs.pop()
                runs.append(_merged_run(a, b))
            if len(runs) != len(st.runs):
                st = st._replace(runs=tuple(runs))
                self._state = st
            return st

    def _walk(self, first: int):
        """``(runs, end)``: the records of WAL ids ``first, first+1, ...`` up
        to ``end``, the first missing id; None when that id is gone because
        the latest manifest already covers it (GC took it: restart there)."""
        from shaledb.format.wal import decode_wal

        objs = []
        wid = first
        while True:
            key = wal_key(wid)
            try:
                data = self.store.get(key)
            except ObjectNotFound:
                # the end of the WAL, unless GC removed it after a newer manifest flushed it
                if self.manifests.refresh().replay_after_wal_id >= wid:
                    return None
                return objs, wid
            buf, offs = decode_wal(data, key)
            if offs.shape[0]:
                objs.append((buf, offs))
            wid += 1


def _sorted_run(first: int, end: int, parts: list) -> TailRun:
    from shaledb.kernels.sort import concat_runs, sort_records

    if not parts:
        return TailRun(first, end, np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64))
    buf, offs = concat_runs(parts)
    return TailRun(first, end, buf, sort_records(buf, offs))


def _merged_run(a: TailRun, b: TailRun) -> TailRun:
    """Two adjacent runs as one (a linear merge, no sort)."""
    from shaledb.kernels.merge import merge_runs
    from shaledb.kernels.sort import concat_runs

    buf, offs = concat_runs([(a.buf, a.offs), (b.buf, b.offs)])
    na = a.offs.shape[0]
    bounds = np.array([0, na, na + b.offs.shape[0]], dtype=np.int64)
    return TailRun(a.first, b.end, buf, merge_runs(buf, bounds, offs))
