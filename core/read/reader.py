"""The read path of one process (``Reader``): arenas, then L0 newest first,
then sorted runs.  The highest seq wins, whatever the source.

Point reads (``Reader.get``): every L0 bloom filter is probed by one kernel
call (the key hashed once), the key range checked, and an SST skipped when a
version already found is newer than its ``max_seq``; small SSTs are pinned
(searched in memory by one kernel call), others are read through the block
cache (``SstReader.find``).  Scans (``Reader.scan``) merge whole record runs
with kernels (:func:`merge_visible`), lazily, about one read-ahead group per SST.

Manifests: the flusher's newest id arrives through shared memory; manifests
written by others (the compactor) are noticed by a probe of the next id at
most every ``min(0.1 s, manifest_poll_interval)``.  An SST a manifest lists
may be gone (compacted, then collected by GC): the read is retried on the
latest manifest, and a scan resumes after its last returned key; only a
missing object that the latest manifest still lists is Corruption.
docs/architecture.md ("Reads") has the long story.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Iterator, NamedTuple

import numpy as np

from shaledb.errors import Corruption, ObjectNotFound, Unavailable
from shaledb.format.record import HEADER, KIND_MASK, KIND_PUT, RECORD_HEADER
from shaledb.storage.wrappers import call_deadline

__all__ = ["Entry", "Reader", "merge_visible", "newest"]

#: (key, seq, kind, value or None)
Entry = tuple

#: Reads of others' manifests are noticed within this long (at most).
LATEST_CHECK_SECONDS = 0.1
#: A read that met a missing SST is retried this many times, each on a newer
#: manifest (a compaction and a GC pass may land between two attempts).
MISSING_SST_RETRIES = 3

_now = time.monotonic


class L0Entry(NamedTuple):
    """One L0 SST in a point-read plan.  ``bit``: its bit in the group's
    bloom mask; ``pinned``: ``SstReader.pin()`` arrays or None.

    A plan stores entries, groups and the lone SST as plain tuples in these
    field orders (``tuple(L0Entry(...))``): the hot loop unpacks them, and
    CPython unpacks an exact tuple faster than a tuple subclass."""

    bit: int
    first_key: bytes
    last_key: bytes
    max_seq: int
    reader: Any
    pinned: tuple | None


class L0Group(NamedTuple):
    """At most 64 L0 SSTs, newest first, probed by one bloom kernel call:
    ``filters`` are their bloom filters concatenated (an empty slice for an
    SST without one or a pinned one: always a candidate), None when every
    slice is empty; ``starts`` the slice bounds."""

    entries: tuple
    filters: np.ndarray | None
    starts: np.ndarray


class LonePinned(NamedTuple):
    """The plan's shortcut for one pinned L0 SST and nothing else."""

    first_key: bytes
    last_key: bytes
    data: np.ndarray
    boffs: np.ndarray
    ikeys: np.ndarray
    ioffs: np.ndarray
    bloom: np.ndarray
    name: str  # the SST's object key, for errors


class Plan(NamedTuple):
    """What point reads need of one manifest; rebuilt when it changes."""

    manifest_id: int
    groups: tuple  # of L0Group (as plain tuples)
    manifest: Any  # shaledb.manifest.model.Manifest or None
    max_seq: int  # the largest max_seq of every SST
    lone: tuple | None  # a LonePinned (as a plain tuple)


def newest(a: Entry | None, b: Entry | None) -> Entry | None:
    """The newer of two versions of one key (either may be None)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a[1] >= b[1] else b


class Reader:
    """The read path of one process: arenas, then L0 newest first, then sorted runs.

    ``mem`` is the arena pool (shaledb.memtable.arena_pool.ArenaPool):
    ``lookup(key)`` returns the newest arena version as an Entry or None,
    ``sorted_runs_snapshot()`` a list of private sorted ``(buf, offs)``
    copies, and ``manifest_id()`` the id of the newest manifest the flusher
    published.  Arenas are read *before* the manifest, and a recycled arena
    is ignored: its records are in an L0 that the manifest read afterwards
    lists (the flusher publishes before it frees arenas).

    Thread-safe (one lock around the manifest and the SST reader cache).
    """

    def __init__(self, store, options, mem):
        self.store = store
        self.options = options
        self.mem = mem
        self._mem_lookup = mem.lookup
        self._manifest_id_of_mem = mem.manifest_id
        self._lock = threading.Lock()
        self._manifest = None
        self._manifest_id = -1
        self._check_every = min(LATEST_CHECK_SECONDS, options.manifest_poll_interval)
        self._check_at = 0.0  # monotonic time of the next probe for a newer manifest
        self._ssts: dict = {}
        self._plan: Plan | None = None
        self._cache = None
        if options.block_cache_bytes > 0:
            from shaledb.sst.block_cache import BlockCache

            self._cache = BlockCache(options.block_cache_bytes)

    # -- manifest

    def invalidate(self) -> None:
        with self._lock:
            self._manifest_id = -1
            self._plan = None

    def manifest(self):
        """The newest manifest known: re-read when the flusher published a
        newer one, and probed for others' (the compactor's) when due."""
        hint = self._manifest_id_of_mem()
        with self._lock:
            if self._manifest is None or hint > self._manifest_id or _now() >= self._check_at:
                self._load(max(hint, self._manifest_id))
            return self._manifest

    def _load(self, known_id: int) -> None:
        """Read the latest manifest, walking forward from ``known_id``.
        REQUIRES: self._lock held."""
        m, mid = _read_latest_manifest(self.store, known_id, self._manifest, self._manifest_id)
        self._check_at = _now() + self._check_every
        if mid == self._manifest_id and self._manifest is not None:
            return
        self._manifest, self._manifest_id = m, mid
        live = {s.sst_id for s in m.all_ssts()} if m is not None else set()
        for sid in list(self._ssts):
            if sid not in live:
                del self._ssts[sid]

    def _advance_to_latest(self) -> bool:
        """Re-read the latest manifest now; whether it is newer than the one
        read before (then a missing SST may just have been compacted away)."""
        hint = self._manifest_id_of_mem()
        with self._lock:
            before = self._manifest_id
            self._load(max(hint, before))
            return self._manifest_id != before

    def _sst(self, ref):
        r = self._ssts.get(ref.sst_id)
        if r is None:
            from shaledb.format.keys import sst_key
            from shaledb.sst.reader import SstReader

            r = SstReader(self.store, sst_key(ref.sst_id), block_cache=self._cache, size=ref.size,
                          global_seq=getattr(ref, "global_seq", 0))
            with self._lock:
                self._ssts[ref.sst_id] = r
        return r

    # -- point reads

    def _fresh(self, plan: Plan) -> bool:
        """Whether ``plan`` is of the newest manifest known and no probe is due."""
        mid = plan.manifest_id
        return mid == self._manifest_id and self._manifest_id_of_mem() <= mid and _now() < self._check_at

    def _l0_plan(self) -> Plan:
        """The :class:`Plan` of the newest manifest.  SSTs up to half the
        block cache in all are pinned (``SstReader.pin``: the whole SST in
        memory, one kernel call per point read)."""
        plan = self._plan
        if plan is not None and self._fresh(plan):
            return plan
        m = self.manifest()
        plan = self._plan
        if plan is not None and plan.manifest_id == self._manifest_id and plan.manifest is m:
            return plan
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
                if ref.size <= budget and not r.global_seq:  # small enough: the whole SST in memory
                    pinned = r.pin()
                    if pinned is not None:
                        budget -= ref.size
                        if len(l0) == 1:  # the only SST: its search costs about what a bloom probe saves
                            pinned = tuple(pinned[:4]) + (_NO_BLOOM,)
                entries.append(tuple(L0Entry(1 << j, ref.first_key, ref.last_key, ref.max_seq, r, pinned)))
                f = r.bloom
                if f is None or pinned is not None:  # a pinned SST probes its own bloom
                    filters.append(_NO_BLOOM)
                else:
                    filters.append(np.ascontiguousarray(f, dtype=np.uint8))
            starts = np.zeros(len(filters) + 1, dtype=np.int64)
            np.cumsum([f.shape[0] for f in filters], out=starts[1:])
            cat = np.concatenate(filters)
            groups.append(tuple(L0Group(tuple(entries), cat if cat.shape[0] else None, starts)))
        max_seq = max([0] + ([s.max_seq for s in m.all_ssts()] if m is not None else []))
        # the common case of one pinned L0 SST and nothing else: get() takes
        # a shorter path (first key, last key, pinned arrays)
        lone = None
        if len(l0) == 1 and not m.sorted_runs:
            e = L0Entry(*L0Group(*groups[0]).entries[0])
            if e.pinned is not None:
                lone = tuple(LonePinned(e.first_key, e.last_key, *e.pinned, e.reader.key))
        plan = Plan(self._manifest_id, tuple(groups), m, max_seq, lone)
        self._plan = plan
        return plan

    def get(self, key: bytes):
        """The newest value of ``key`` (bytes, non-empty), or None.

        Every store operation of the call (manifest, SST opens, blocks) and
        all their retries share one deadline, ``options.request_timeout``;
        past it the call raises Unavailable.  An SST the latest manifest
        lists but the store lacks is Corruption naming the object.
        """
        best = self._mem_lookup(key)
        plan = self._plan
        if best is None and plan is not None and plan.lone is not None:  # _fresh(plan), inlined
            mid = plan.manifest_id
            if mid == self._manifest_id and self._manifest_id_of_mem() <= mid and _now() < self._check_at:
                return _lone_get(plan.lone, key)  # one pinned L0 SST, nothing in the arenas: no store I/O
        with self._deadline():
            attempt = 0
            while True:
                try:
                    return self._get(key, best)
                except Corruption:
                    # a listed SST may be gone because a newer manifest replaced it
                    if attempt >= MISSING_SST_RETRIES or not self._advance_to_latest():
                        raise
                    attempt += 1

    def _deadline(self):
        return call_deadline(self.options.request_timeout)

    def _get(self, key: bytes, best):
        plan = self._plan
        if (plan is None or plan.manifest_id != self._manifest_id or self._manifest_id_of_mem() > plan.manifest_id
                or _now() >= self._check_at):  # not _fresh(plan): the hot path avoids the call
            plan = self._l0_plan()
        if plan.lone is not None and best is None:
            return _lone_get(plan.lone, key)
        groups = plan.groups
        top = plan.max_seq
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
                                _raise_corruption(int(err), f"{reader.key}: the block holding {key!r}")
                            if not found:
                                continue
                            t = int(t)
                            seq = t >> 8
                            if best is None or seq > best[1]:
                                kind = t & KIND_MASK
                                best = (key, seq, kind, data[vp : vp + vlen].tobytes() if kind else None)
                        else:
                            r = reader.find(key, karr)
                            if r is None or (best is not None and r[1] <= best[1]):
                                continue
                            best = (key, r[1], r[0], r[2])
                        if best[1] >= top:  # newer than every L0 and sorted run
                            break
        m = plan.manifest
        if m is not None and m.sorted_runs and (best is None or best[1] < top):
            for run in m.sorted_runs:
                ref = _find_in_run(run, key)
                if ref is None or (best is not None and best[1] >= ref.max_seq):
                    continue
                best = newest(best, self._sst_get(ref, key))
        if best is None or best[2] != KIND_PUT:
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
        so does each batch its iteration fetches (Unavailable past it).  A
        scan that loses an SST (compacted and collected) resumes after its
        last returned key on the latest manifest."""
        with self._deadline():
            sources = self._sources(start, end)
        return itertools.chain.from_iterable(self._scan_batches(sources, start, end))

    def _sources(self, start, end) -> list:
        sources = []
        for buf, offs in self.mem.sorted_runs_snapshot():  # arenas before the manifest
            sources.append(_clip_run(buf, offs, start, end))
        m = self.manifest()
        if m is not None:
            for ref in m.l0:
                if _overlaps(ref, start, end):
                    sources.append(self._sst(ref).iter_range(start, end))
            for run in m.sorted_runs:
                sources.append(self._lazy_run(run, start, end))
        return sources

    def _scan_batches(self, sources, start, end):
        """Batches of visible pairs, each fetched under its own deadline;
        on a Corruption while a newer manifest exists, the merge restarts
        from just after the last key already covered."""
        timeout = self.options.request_timeout
        attempt = 0
        while True:
            batches = _visible_batches(sources)
            try:
                while True:
                    with call_deadline(timeout):
                        step = next(batches, None)
                    if step is None:
                        return
                    out, covered = step
                    yield out
                    start = covered + b"\x00"  # the smallest key after ``covered``
                    attempt = 0
            except Corruption:
                with call_deadline(timeout):
                    if attempt >= MISSING_SST_RETRIES or not self._advance_to_latest():
                        raise
                    attempt += 1
                    sources = self._sources(start, end)

    def _lazy_run(self, run, start, end):
        for ref in run.ssts:
            if _overlaps(ref, start, end):
                yield from self._sst(ref).iter_range(start, end)

    def close(self) -> None:
        with self._lock:
            self._ssts.clear()


_CHUNK = 16384  # records emitted per batch of a scan


def _lone_get(lone: tuple, key: bytes):
    """Point read in a plan's lone pinned L0 SST (no store I/O)."""
    first, last, data, boffs, ikeys, ioffs, bloom, name = lone
    if key < first or key > last:
        return None
    err, found, t, vp, vlen = _pinned_get(bloom, data, boffs, ikeys, ioffs, np.frombuffer(key, dtype=np.uint8))
    if err:
        _raise_corruption(int(err), f"{name}: the block holding {key!r}")
    if not found or (int(t) & KIND_MASK) != KIND_PUT:
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


# The kernels are bound on first use (importing them loads numba).
def _pinned_get(*args):
    global _pinned_get
    from shaledb.kernels.read import pinned_get as kern

    _pinned_get = kern
    return kern(*args)


def _probe_mask(filters, starts, karr):
    global _probe_mask
    from shaledb.kernels.read import probe_mask as kern

    _probe_mask = kern
    return kern(filters, starts, karr)


def _raise_corruption(err: int, what: str):
    from shaledb.kernels.block import raise_corruption

    raise_corruption(err, what)


def _clip_run(buf, offs, start, end):
    """One sorted run as a source of runs, clipped to [start, end)."""
    from shaledb.kernels import read as K

    lo, hi = 0, len(offs)
    if start is not None and hi:
        lo = int(K.lower_bound(buf, offs, 0, hi, np.frombuffer(start, dtype=np.uint8)))
    if end is not None and hi:
        hi = int(K.lower_bound(buf, offs, lo, hi, np.frombuffer(end, dtype=np.uint8)))
    if lo < hi:
        yield buf, offs[lo:hi]


def _last_key(buf, offs) -> bytes:
    o = int(offs[-1])
    klen = HEADER.unpack_from(buf, o)[0]
    return buf[o + RECORD_HEADER : o + RECORD_HEADER + klen].tobytes()


def _emit(buf, offs, prev):
    """An iterator of the ``(key, value)`` pairs visible in one run (record
    order), skipping versions of ``prev``."""
    from shaledb.kernels import read as K

    n = len(offs)
    nb = int(K.run_bytes(buf, offs))
    dst = np.empty(nb, dtype=np.uint8)
    bounds = np.empty(2 * n + 1, dtype=np.int64)
    if prev is None:
        r = K.visible(buf, offs, _NO_KEY, False, dst, bounds)
    else:
        r = K.visible(buf, offs, np.frombuffer(prev, dtype=np.uint8), True, dst, bounds)
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

    batches = (out for out, _covered in _visible_batches(sources))
    if step_timeout is not None:
        batches = _deadlined(batches, step_timeout)
    return itertools.chain.from_iterable(batches)


def _visible_batches(sources):
    """``(pairs, covered)``: iterators of ``(key, value)`` pairs, newest
    version per key, tombstones dropped, from sources of record runs, in key
    order; ``covered`` is the last key a batch settled (every key up to it
    is done: emitted in this or an earlier batch, or not visible).

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
            yield out, prev
            continue
        bound = min(_last_key(cur[i][0], cur[i][1]) for i in live)
        bkey = np.frombuffer(bound, dtype=np.uint8)
        parts = []
        for i in live:
            buf, offs, pos = cur[i]
            cut = int(K.upper_bound(buf, offs, pos, len(offs), bkey))
            if cut > pos:
                parts.append((buf, offs[pos:cut]))
                cur[i] = (buf, offs, cut)
        if len(parts) == 1:
            buf, part = parts[0]
            out = _emit(buf, part, prev)
        else:
            from shaledb.kernels.merge import merge_runs

            total = sum(int(K.run_bytes(b, o)) for b, o in parts)
            cat = np.empty(total, dtype=np.uint8)
            coffs = np.empty(sum(len(o) for _, o in parts), dtype=np.int64)
            bounds = np.zeros(len(parts) + 1, dtype=np.int64)
            pos = 0
            k = 0
            for j, (b, o) in enumerate(parts):
                err, pos = K.gather(b, o, cat, pos, coffs, k)[:2]
                if err:
                    _raise_corruption(int(err), "a record run of a scan")
                pos = int(pos)
                k += len(o)
                bounds[j + 1] = k
            merged = merge_runs(cat, bounds, coffs)
            out = _emit(cat, merged, prev)
        prev = bound
        yield out, prev


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


def _read_latest_manifest(store, known_id: int, known=None, known_manifest_id: int = -1):
    """(manifest, id) of the latest manifest; (None, 0) for an empty root.

    Walks forward from ``known_id`` (manifest ids are consecutive: each is
    written create-only after its predecessor) with one ``head`` per newer
    id, so the common answer "nothing newer" costs one request; lists the
    manifests when no id is known.  ``known`` is the decoded manifest of
    ``known_manifest_id``, reused when that is still the latest.
    """
    from shaledb.format.keys import MANIFEST_PREFIX, manifest_key, parse_manifest_key
    from shaledb.manifest.model import decode_manifest

    for _ in range(3):
        mid = known_id
        if mid <= 0:
            ids = [parse_manifest_key(meta.key) for meta in store.list(MANIFEST_PREFIX)]
            ids = [i for i in ids if i is not None]
            if not ids:
                return None, 0
            mid = max(ids)
        while True:
            try:
                store.head(manifest_key(mid + 1))
            except ObjectNotFound:
                break
            mid += 1
        if mid == known_manifest_id and known is not None:
            return known, mid
        key = manifest_key(mid)
        try:
            data = store.get(key)
        except ObjectNotFound:  # collected meanwhile (a newer one exists): look again
            known_id = 0
            continue
        return decode_manifest(data, key), mid
    raise Unavailable("the latest manifest could not be read: manifests kept disappearing while being read")
