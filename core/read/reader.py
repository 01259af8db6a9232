"""Merging iterators for reads.

A *source* is an iterator of entries ``(key, seq, kind, value)`` in the
record order (key ascending, then seq descending).  Sources come from
record runs (``(buf, offs)`` in the record layout of shaledb.kernels.layout:
sorted arena snapshots, decoded SST blocks):

    runs_entries(runs, start, end)    entries of sorted runs, clipped to [start, end)
    merge_entries(sources)            one stream in record order (heap merge)
    visible(entries)                  newest version per key, tombstones dropped

These entry-at-a-time helpers are kept for tools and tests.  ``Reader.scan``
uses :func:`merge_visible` instead: its sources yield whole record runs (a
sorted arena snapshot, the decoded blocks of one ranged GET), the merge works
on batches with kernels (shaledb.kernels.read, shaledb.kernels.merge) and the
pairs come out of C-level iterators, so there is almost no Python per record.
It is lazy per batch: a scan holds about one read-ahead group per SST.

Point reads (``Reader.get``): arenas, then L0 newest first with every L0
bloom filter probed by one kernel call (the key hashed once), the key range
checked, and an SST skipped when a version already found is newer than its
``max_seq``; the block is found in the block cache and searched in place
(``SstReader.find``).  The highest seq wins, whatever the source.
"""

from __future__ import annotations

import heapq
import struct
from typing import Iterable, Iterator

import numpy as np

from shaledb.storage.wrappers import call_deadline

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
        self._mem_lookup = mem.lookup
        self._manifest_id_of_mem = mem.manifest_id
        self._lock = threading.Lock()
        self._manifest = None
        self._manifest_id = -1
        self._ssts: dict = {}
        self._plan = None
        self._cache = None
        if options.block_cache_bytes > 0:
            try:
                from shaledb.sst.block_cache import BlockCache

                self._cache = BlockCache(options.block_cache_bytes)
            except ImportError:  # pragma: no cover - until BLOCKS lands it
                self._cache = None

    # -- manifest

    def invalidate(self) -> None:
        with self._lock:
            self._manifest_id = -1
            self._plan = None

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
            from shaledb.format.keys import sst_key
            from shaledb.sst.reader import SstReader

            r = SstReader(self.store, sst_key(ref.sst_id), block_cache=self._cache, size=ref.size)
            with self._lock:
                self._ssts[ref.sst_id] = r
        return r

    # -- point reads

    def _l0_plan(self):
        """(manifest id, groups, manifest, max seq of every SST): the manifest's L0 SSTs newest first
        in groups of at most 64, each group ``(entries, filters, starts)``
        with entries ``(bit, first key, last key, max_seq, reader, pinned)``
        and the group's bloom filters concatenated (an SST without one, or a
        pinned one, has an empty slice: always a candidate; ``filters`` is
        None when every slice is empty).  SSTs up to half the block cache in
        all are pinned (``SstReader.pin``: the whole SST in memory, one
        kernel call per point read).  Rebuilt when the manifest changes."""
        want = self._manifest_id_of_mem()
        plan = self._plan
        if plan is not None and plan[0] == want and self._manifest_id == want:
            return plan
        m = self.manifest()
        groups = []
        l0 = list(m.l0) if m is not None else []
        cache = self._cache
        budget = cache.capacity_bytes // 2 if cache is not None else 0
        for g in range(0, len(l0), 64):
            entries = []
            filters = []
            for j, ref in enumerate(l0[g : g + 64]):
                r = self._sst(ref)
                pinned = None
                if ref.size <= budget:  # small enough: the whole SST in memory
                    pinned = r.pin()
                    if pinned is not None:
                        budget -= ref.size
                        if len(l0) == 1:  # the only SST: its search costs about what a bloom probe saves
                            pinned = pinned[:4] + (_NO_BLOOM,)
                entries.append((1 << j, ref.first_key, ref.last_key, ref.max_seq, r, pinned))
                f = r._bloom
                if f is None or pinned is not None:  # a pinned SST probes its own bloom
                    filters.append(np.empty(0, dtype=np.uint8))
                else:
                    filters.append(np.ascontiguousarray(f, dtype=np.uint8))
            starts = np.zeros(len(filters) + 1, dtype=np.int64)
            np.cumsum([f.shape[0] for f in filters], out=starts[1:])
            cat = np.concatenate(filters)
            groups.append((tuple(entries), cat if cat.shape[0] else None, starts))
        max_seq = max([0] + ([s.max_seq for s in m.all_ssts()] if m is not None else []))
        # the common case of one pinned L0 SST and nothing else: get() takes
        # a shorter path (first key, last key, pinned arrays)
        lone = None
        if len(l0) == 1 and not m.sorted_runs and groups[0][0][0][5] is not None:
            _bit, first, last, _ms, _r, pinned = groups[0][0][0]
            lone = (first, last) + tuple(pinned)
        plan = (self._manifest_id, tuple(groups), m, max_seq, lone)
        self._plan = plan
        return plan

    def get(self, key: bytes):
        """The newest value of ``key`` (bytes, non-empty), or None.

        Every store operation of the call (manifest, SST opens, blocks) and
        all their retries share one deadline, ``options.request_timeout``;
        past it the call raises Unavailable.  An SST the manifest lists but
        the store lacks is Corruption naming the object.
        """
        best = self._mem_lookup(key)
        plan = self._plan
        if best is None and plan is not None and plan[4] is not None and plan[0] == self._manifest_id_of_mem() \
                and self._manifest_id == plan[0]:
            return _lone_get(plan, key)  # one pinned L0 SST, nothing in the arenas: no store I/O
        with self._deadline():
            return self._get(key, best)

    def _deadline(self):
        return call_deadline(self.options.request_timeout)

    def _get(self, key: bytes, best):
        plan = self._plan
        if plan is None or plan[0] != self._manifest_id_of_mem() or self._manifest_id != plan[0]:
            plan = self._l0_plan()
        if plan[4] is not None and best is None:
            return _lone_get(plan, key)
        groups = plan[1]
        if groups:
            karr = np.frombuffer(key, dtype=np.uint8)
            for entries, filters, starts in groups:
                # (no filters: every SST of the group is pinned or has no bloom)
                mask = -1 if filters is None else int(_probe_mask(filters, starts, karr))
                if not mask:
                    continue
                for bit, first, last, max_seq, reader, pinned in entries:
                    if mask & bit and first <= key <= last and (best is None or best[1] < max_seq):
                        if pinned is not None:
                            data, boffs, ikeys, ioffs, bloom = pinned
                            err, found, t, vp, vlen = _pinned_get(bloom, data, boffs, ikeys, ioffs, karr)
                            if err:
                                from shaledb.kernels.block import _raise

                                _raise(int(err), f"{reader.key}: the block holding {key!r}")
                            if not found:
                                continue
                            t = int(t)
                            seq = t >> 8
                            if best is None or seq > best[1]:
                                kind = t & 0xFF
                                best = (key, seq, kind, data[vp : vp + vlen].tobytes() if kind else None)
                        else:
                            r = reader.find(key, karr)
                            if r is None or (best is not None and r[1] <= best[1]):
                                continue
                            best = (key, r[1], r[0], r[2])
                        if best[1] >= plan[3]:  # newer than every L0 and sorted run
                            break
        m = plan[2]
        if m is not None and m.sorted_runs and (best is None or best[1] < plan[3]):
            for run in m.sorted_runs:
                ref = _find_in_run(run, key)
                if ref is None or (best is not None and best[1] >= ref.max_seq):
                    continue
                best = newest(best, self._sst_get(ref, key))
        if best is None or best[2] != _KIND_PUT:
            return None
        return best[3]

    def _sst_get(self, ref, key):
        r = self._sst(ref).get(key)
        if r is None:
            return None
        kind, seq, value = r
        return (key, int(seq), int(kind), None if value is None else bytes(value))

    # -- scans

    def scan(self, start, end):
        """``(key, value)`` pairs in [start, end), lazy.  The call itself (the
        manifest, the L0 SST opens) has one ``request_timeout`` deadline, and
        so does each batch its iteration fetches (Unavailable past it)."""
        with self._deadline():
            return self._scan(start, end)

    def _scan(self, start, end):
        sources = []
        for buf, offs in self.mem.sorted_runs_snapshot():
            sources.append(_clip_run(buf, offs, start, end))
        m = self.manifest()
        if m is not None:
            for ref in m.l0:
                if _overlaps(ref, start, end):
                    sources.append(self._sst(ref).iter_range(start, end))
            for run in m.sorted_runs:
                sources.append(self._lazy_run(run, start, end))
        return merge_visible(sources, step_timeout=self.options.request_timeout)

    def _lazy_run(self, run, start, end):
        for ref in run.ssts:
            if _overlaps(ref, start, end):
                yield from self._sst(ref).iter_range(start, end)

    def close(self) -> None:
        with self._lock:
            self._ssts.clear()


_CHUNK = 16384  # records emitted per batch of a scan


def _lone_get(plan, key: bytes):
    """Point read in the plan's lone pinned L0 SST (no store I/O)."""
    first, last, data, boffs, ikeys, ioffs, bloom = plan[4]
    if key < first or key > last:
        return None
    err, found, t, vp, vlen = _pinned_get(bloom, data, boffs, ikeys, ioffs, np.frombuffer(key, dtype=np.uint8))
    if err:
        from shaledb.kernels.block import _raise

        _raise(int(err), f"{plan[1][0][0][0][4].key}: the block holding {key!r}")
    if not found or not (int(t) & 0xFF):
        return None
    return data[vp : vp + vlen].tobytes()


def _deadlined(it, seconds: float):
    """``it`` with each step (each ``next``) under its own ``seconds`` deadline."""
    it = iter(it)
    while True:
        with call_deadline(seconds):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def _pinned_get(*args):
    global _pinned_get
    from shaledb.kernels.read import _pinned_get as kern

    _pinned_get = kern
    return kern(*args)


def _probe_mask(filters, starts, karr):
    global _probe_mask
    from shaledb.kernels.read import _probe_mask as kern

    _probe_mask = kern
    return kern(filters, starts, karr)


def _clip_run(buf, offs, start, end):
    """One sorted run as a source of runs, clipped to [start, end)."""
    from shaledb.kernels import read as K

    lo, hi = 0, len(offs)
    if start is not None and hi:
        lo = int(K._lower_bound(buf, offs, 0, hi, np.frombuffer(start, dtype=np.uint8)))
    if end is not None and hi:
        hi = int(K._lower_bound(buf, offs, lo, hi, np.frombuffer(end, dtype=np.uint8)))
    if lo < hi:
        yield buf, offs[lo:hi]


def _last_key(buf, offs) -> bytes:
    o = int(offs[-1])
    klen = int(buf[o : o + 4].view("<u4")[0])
    return buf[o + 16 : o + 16 + klen].tobytes()


def _emit(buf, offs, prev):
    """An iterator of the ``(key, value)`` pairs visible in one run (record
    order), skipping versions of ``prev``."""
    from shaledb.kernels import read as K

    n = len(offs)
    nb = int(K._run_bytes(buf, offs))
    dst = np.empty(nb, dtype=np.uint8)
    bounds = np.empty(2 * n + 1, dtype=np.int64)
    if prev is None:
        r = K._visible(buf, offs, _NO_KEY, False, dst, bounds)
    else:
        r = K._visible(buf, offs, np.frombuffer(prev, dtype=np.uint8), True, dst, bounds)
    if not r:
        return iter(())
    bl = bounds[: 2 * r + 1].tolist()
    cut = dst[: bl[-1]].tobytes().__getitem__
    return zip(map(cut, map(slice, bl[0:-1:2], bl[1::2])), map(cut, map(slice, bl[1::2], bl[2::2])))


_NO_BLOOM = np.empty(0, dtype=np.uint8)
_NO_KEY = np.zeros(1, dtype=np.uint8)
_NO_KEY.flags.writeable = False  # the same array type as keys from bytes


def merge_visible(sources, step_timeout: float | None = None) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` pairs, newest version per key, tombstones dropped,
    from sources of record runs (see :func:`_visible_batches`).  With
    ``step_timeout``, each batch (the store reads it needs) has that deadline."""
    import itertools

    batches = _visible_batches(sources)
    if step_timeout is not None:
        batches = _deadlined(batches, step_timeout)
    return itertools.chain.from_iterable(batches)


def _visible_batches(sources):
    """Iterators of ``(key, value)`` pairs, newest version per key,
    tombstones dropped, from sources of record runs, in key order.

    A source is an iterator of runs ``(buf, offs)`` in record order, each run
    after the previous one (every version of a key inside one run).  Earlier
    sources win ties (equal key and seq).  Lazy: each step takes, from every
    source, the records up to the smallest last key among the sources'
    current runs (so every version of those keys is at hand); when only one
    source has any, its run is emitted as is, otherwise the parts are merged
    with shaledb.kernels.merge.merge_runs.
    """
    from shaledb.kernels import read as K

    its = [iter(s) for s in sources]
    cur = [None] * len(its)  # (buf, offs, pos)
    prev = None
    while True:
        live = []
        for i, it in enumerate(its):
            c = cur[i]
            while c is None or c[2] >= len(c[1]):
                nxt = next(it, None)
                if nxt is None:
                    c = None
                    break
                if len(nxt[1]):
                    c = (nxt[0], np.asarray(nxt[1], dtype=np.int64), 0)
            cur[i] = c
            if c is not None:
                live.append(i)
        if not live:
            return
        if len(live) == 1:
            i = live[0]
            buf, offs, pos = cur[i]
            end = min(len(offs), pos + _CHUNK)
            part = offs[pos:end]
            cur[i] = (buf, offs, end)
            out = _emit(buf, part, prev)
            prev = _last_key(buf, part)
            yield out
            continue
        bound = min(_last_key(cur[i][0], cur[i][1]) for i in live)
        bkey = np.frombuffer(bound, dtype=np.uint8)
        parts = []
        for i in live:
            buf, offs, pos = cur[i]
            cut = int(K._upper_bound(buf, offs, pos, len(offs), bkey))
            if cut > pos:
                parts.append((buf, offs[pos:cut]))
                cur[i] = (buf, offs, cut)
        if len(parts) == 1:
            buf, part = parts[0]
            out = _emit(buf, part, prev)
        else:
            from shaledb.kernels.merge import merge_runs

            total = sum(int(K._run_bytes(b, o)) for b, o in parts)
            cat = np.empty(total, dtype=np.uint8)
            coffs = np.empty(sum(len(o) for _, o in parts), dtype=np.int64)
            bounds = np.zeros(len(parts) + 1, dtype=np.int64)
            pos = 0
            k = 0
            for j, (b, o) in enumerate(parts):
                pos = int(K._gather(b, o, cat, pos, coffs, k))
                k += len(o)
                bounds[j + 1] = k
            merged = merge_runs(cat, bounds, coffs)
            out = _emit(cat, merged, prev)
        prev = bound
        yield out


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
    from shaledb.format.keys import MANIFEST_PREFIX, manifest_key, parse_manifest_key
    from shaledb.manifest.model import decode_manifest
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
