"""Merging iterators for reads.

A *source* is an iterator of entries ``(key, seq, kind, value)`` in the
record order (key ascending, then seq descending).  Sources come from
record runs (``(buf, offs)`` in the record layout of shaledb.kernels.layout:
sorted arena snapshots, decoded SST blocks):

    runs_entries(runs, start, end)    entries of sorted runs, clipped to [start, end)
    merge_entries(sources)            one stream in record order (heap merge)
    visible(entries)                  newest version per key, tombstones dropped

``scan`` is ``visible(merge_entries([...]))``; it is lazy: a source is only
advanced when its head is consumed, so a scan holds one block per SST.

Point reads use :func:`newest` to pick the winner among versions found in
several sources: the highest seq wins, whatever the source.
"""

from __future__ import annotations

import heapq
import struct
from typing import Iterable, Iterator

import numpy as np

__all__ = [
    "Entry",
    "merge_entries",
    "newest",
    "record_at",
    "run_entries",
    "runs_entries",
    "visible",
]

#: (key, seq, kind, value or None)
Entry = tuple

_HDR = struct.Struct("<IIQ")
_KIND_PUT = 1


def record_at(mv: memoryview, off: int) -> Entry:
    """Decode the record at byte offset ``off`` of a record buffer."""
    klen, vlen, trailer = _HDR.unpack_from(mv, off)
    kstart = off + 16
    key = bytes(mv[kstart : kstart + klen])
    kind = trailer & 0xFF
    value = bytes(mv[kstart + klen : kstart + klen + vlen]) if kind == _KIND_PUT else None
    return (key, trailer >> 8, kind, value)


def _key_at(mv: memoryview, off: int) -> bytes:
    klen = _HDR.unpack_from(mv, off)[0]
    return bytes(mv[off + 16 : off + 16 + klen])


def _lower_bound(mv: memoryview, offs: np.ndarray, key: bytes) -> int:
    lo, hi = 0, len(offs)
    while lo < hi:
        mid = (lo + hi) // 2
        if _key_at(mv, int(offs[mid])) < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


def run_entries(buf: np.ndarray, offs: np.ndarray, start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
    """Entries of one sorted run, restricted to ``start <= key < end``."""
    mv = memoryview(np.ascontiguousarray(buf)).cast("B")
    i = _lower_bound(mv, offs, start) if start is not None else 0
    n = len(offs)
    while i < n:
        e = record_at(mv, int(offs[i]))
        if end is not None and e[0] >= end:
            return
        yield e
        i += 1


def runs_entries(runs: Iterable[tuple[np.ndarray, np.ndarray]], start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
    """Entries of consecutive sorted runs (an SST's blocks), clipped to [start, end)."""
    for buf, offs in runs:
        for e in run_entries(buf, offs, start, end):
            yield e
            # entries past ``end`` stop run_entries; later runs are larger still
        if end is not None and len(offs):
            mv = memoryview(np.ascontiguousarray(buf)).cast("B")
            if _key_at(mv, int(offs[-1])) >= end:
                return


def merge_entries(sources: Iterable[Iterator[Entry]]) -> Iterator[Entry]:
    """Merge sources already in record order into one stream in record order.

    Ties on (key, seq) keep the earlier source first.
    """
    heap = []
    its = []
    for idx, src in enumerate(sources):
        it = iter(src)
        its.append(it)
        for e in it:
            heap.append(((e[0], -e[1], idx), e))
            break
    heapq.heapify(heap)
    while heap:
        (_, _, idx), e = heap[0]
        yield e
        for nxt in its[idx]:
            heapq.heapreplace(heap, ((nxt[0], -nxt[1], idx), nxt))
            break
        else:
            heapq.heappop(heap)


def visible(entries: Iterable[Entry]) -> Iterator[tuple[bytes, bytes]]:
    """Keep the newest entry of each key; drop keys whose newest is a tombstone."""
    last = None
    for key, _seq, kind, value in entries:
        if key == last:
            continue
        last = key
        if kind == _KIND_PUT:
            yield key, value


def newest(a: Entry | None, b: Entry | None) -> Entry | None:
    """The newer of two versions of one key (either may be None)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a[1] >= b[1] else b


class Reader:
    """The read path of one process: arenas, then L0 newest first, then sorted runs.

    ``mem`` is the memtable view (shaledb.db): ``lookup(key)`` returns the
    newest arena version as an Entry or None, ``sorted_runs_snapshot()`` a
    list of private sorted ``(buf, offs)`` copies, and ``manifest_id()`` the
    id of the newest manifest the flusher published.  Arenas are read
    *before* the manifest, and a recycled arena is ignored: its records are
    in an L0 that the manifest read afterwards lists.

    Thread-safe (one lock around the manifest and the SST reader cache).
    """

    def __init__(self, store, options, mem):
        import threading

        self.store = store
        self.options = options
        self.mem = mem
        self._lock = threading.Lock()
        self._manifest = None
        self._manifest_id = -1
        self._ssts: dict = {}
        self._cache = None
        if options.block_cache_bytes > 0:
            try:
                from shaledb.block_cache import BlockCache

                self._cache = BlockCache(options.block_cache_bytes)
            except ImportError:  # pragma: no cover - until BLOCKS lands it
                self._cache = None

    # -- manifest

    def invalidate(self) -> None:
        with self._lock:
            self._manifest_id = -1

    def manifest(self):
        """The newest manifest (re-read when the flusher published a newer one)."""
        want = self.mem.manifest_id()
        with self._lock:
            if self._manifest is None or want != self._manifest_id:
                m, mid = _read_latest_manifest(self.store, want)
                self._manifest, self._manifest_id = m, (want if want > 0 else mid)
                live = {s.sst_id for s in m.all_ssts()} if m is not None else set()
                for sid in list(self._ssts):
                    if sid not in live:
                        del self._ssts[sid]
            return self._manifest

    def _sst(self, ref):
        r = self._ssts.get(ref.sst_id)
        if r is None:
            from shaledb.layout import sst_key
            from shaledb.sst_reader import SstReader

            r = SstReader(self.store, sst_key(ref.sst_id), block_cache=self._cache, size=ref.size)
            with self._lock:
                self._ssts[ref.sst_id] = r
        return r

    # -- point reads

    def get(self, key: bytes):
        best = self.mem.lookup(key)
        m = self.manifest()
        if m is not None:
            best = self._get_from_ssts(m, key, best)
        if best is None or best[2] != _KIND_PUT:
            return None
        return best[3]

    def _get_from_ssts(self, m, key, best):
        for ref in m.l0:
            if best is not None and best[1] >= ref.max_seq:
                continue
            if key < ref.first_key or key > ref.last_key:
                continue
            best = newest(best, self._sst_get(ref, key))
        for run in m.sorted_runs:
            ref = _find_in_run(run, key)
            if ref is None or (best is not None and best[1] >= ref.max_seq):
                continue
            best = newest(best, self._sst_get(ref, key))
        return best

    def _sst_get(self, ref, key):
        r = self._sst(ref).get(key)
        if r is None:
            return None
        kind, seq, value = r
        return (key, int(seq), int(kind), None if value is None else bytes(value))

    # -- scans

    def scan(self, start, end):
        sources = [run_entries(buf, offs, start, end) for buf, offs in self.mem.sorted_runs_snapshot()]
        m = self.manifest()
        if m is not None:
            for ref in m.l0:
                if _overlaps(ref, start, end):
                    sources.append(self._lazy_sst(ref, start, end))
            for run in m.sorted_runs:
                sources.append(self._lazy_run(run, start, end))
        return visible(merge_entries(sources))

    def _lazy_sst(self, ref, start, end):
        yield from runs_entries(self._sst(ref).iter_range(start, end), start, end)

    def _lazy_run(self, run, start, end):
        for ref in run.ssts:
            if _overlaps(ref, start, end):
                yield from runs_entries(self._sst(ref).iter_range(start, end), start, end)

    def close(self) -> None:
        with self._lock:
            self._ssts.clear()


def _overlaps(ref, start, end) -> bool:
    if start is not None and ref.last_key < start:
        return False
    if end is not None and ref.first_key >= end:
        return False
    return True


def _find_in_run(run, key):
    import bisect

    ssts = run.ssts
    i = bisect.bisect_right([s.first_key for s in ssts], key) - 1
    if i >= 0 and key <= ssts[i].last_key:
        return ssts[i]
    return None


def _read_latest_manifest(store, hint_id: int):
    """(manifest, id) of the newest manifest; (None, 0) for an empty root."""
    from shaledb.layout import MANIFEST_PREFIX, manifest_key, parse_manifest_key
    from shaledb.manifest import decode_manifest
    from shaledb.errors import ObjectNotFound

    mid = hint_id
    if mid <= 0:
        ids = [parse_manifest_key(meta.key) for meta in store.list(MANIFEST_PREFIX)]
        ids = [i for i in ids if i is not None]
        if not ids:
            return None, 0
        mid = max(ids)
    key = manifest_key(mid)
    try:
        data = store.get(key)
    except ObjectNotFound:
        return _read_latest_manifest(store, 0) if hint_id > 0 else (None, 0)
    return decode_manifest(data, key), mid
