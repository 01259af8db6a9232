"""The read path of one process (``Reader``): arenas, then L0 newest first,
then sorted runs.  The highest seq wins, whatever the source.

Point reads (``Reader.get``, ``Reader.get_many``): a :class:`Plan` per
manifest describes every SST (index, bloom, key range, max seq, and its data
region when in memory: mapped by the local store, or small and pinned) to
one kernel, shaledb.kernels.point.plan_get, which walks L0 and every sorted
run for a key in one call (key hashed once, an SST skipped when a version
already found is newer than its ``max_seq``); an SST not in memory (S3,
compressed) hands its block back to Python, read through the block cache.  Scans (``Reader.scan``) merge whole record runs
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

from shaledb.errors import Corruption, InvalidArgument, ObjectNotFound, Unavailable
from shaledb.format.record import HEADER, KIND_MASK, KIND_PUT, MAX_KEY_BYTES, RECORD_HEADER
from shaledb.storage.wrappers import call_deadline

__all__ = ["Entry", "Reader", "get_many", "merge_visible", "newest"]

#: (key, seq, kind, value or None)
Entry = tuple

#: Reads of others' manifests are noticed within this long (at most).
LATEST_CHECK_SECONDS = 0.1
#: A read that met a missing SST is retried this many times, each on a newer
#: manifest (a compaction and a GC pass may land between two attempts).
MISSING_SST_RETRIES = 3

_now = time.monotonic
_frombuffer = np.frombuffer
_U8 = np.dtype(np.uint8)


class Plan(NamedTuple):
    """What point reads need of one manifest; rebuilt when it changes.

    ``meta``/``srcs`` describe every SST to shaledb.kernels.point (one row
    per table; sources = each L0 SST newest first, then each sorted run).
    ``datas[t]`` is table t's data region in memory (a mapping or a pinned
    copy) or None (blocks read through ``readers[t].read_block``); the plan
    holds every array whose address ``meta`` holds.  ``in_memory``: every
    table's data is in memory (a get is one kernel call, no store I/O)."""

    manifest_id: int
    manifest: Any  # shaledb.manifest.model.Manifest or None
    meta: np.ndarray
    srcs: np.ndarray
    datas: tuple
    views: tuple  # memoryviews of ``datas`` (slicing one is cheaper than slicing an array)
    readers: tuple
    keep: tuple  # arrays the rows point into that nothing else holds
    in_memory: bool


def _lookup_each(lookup, kdata, koffs):
    """``ArenaPool.lookup_many``'s answer from single lookups (arena stand-ins without it)."""
    raw = kdata.tobytes()
    bounds = koffs.tolist()
    rows, seqs, kinds, starts, lens, vals = [], [], [], [], [], []
    pos = 0
    for i in range(len(bounds) - 1):
        e = lookup(raw[bounds[i] : bounds[i + 1]])
        if e is not None:
            v = e[3] or b""
            rows.append(i), seqs.append(e[1]), kinds.append(e[2]), starts.append(pos), lens.append(len(v))
            vals.append(v)
            pos += len(v)
    arr = [np.array(x, dtype=np.int64) for x in (rows, seqs, kinds, starts, lens)]
    return (*arr, np.frombuffer(b"".join(vals), dtype=np.uint8))


def get_many(reader: "Reader", keys):
    """``Db.get_many``: ``keys`` a sequence of bytes -> a list of ``bytes |
    None`` in the same order; a numpy ``(uint8 data, int64 offsets)`` pair
    (n + 1 offsets) -> ``(values data, values offsets, found)`` arrays
    (value i is ``data[offsets[i]:offsets[i+1]]`` when ``found[i]``).
    Keys may repeat and come in any order.  InvalidArgument on a bad key."""
    if isinstance(keys, tuple) and len(keys) == 2 and isinstance(keys[0], np.ndarray):
        kdata, koffs = keys
        if kdata.dtype != np.uint8 or kdata.ndim != 1:
            raise InvalidArgument("get_many: keys data must be a 1-d uint8 array")
        if not isinstance(koffs, np.ndarray) or koffs.dtype != np.int64 or koffs.ndim != 1 or len(koffs) < 1:
            raise InvalidArgument("get_many: keys offsets must be a 1-d int64 array of n + 1 offsets")
        kdata = np.ascontiguousarray(kdata)
        koffs = np.ascontiguousarray(koffs)
        if len(koffs) > 1:
            lens = np.diff(koffs)
            if koffs[0] < 0 or koffs[-1] > len(kdata) or lens.min() < 1 or lens.max() > MAX_KEY_BYTES:
                raise InvalidArgument(f"get_many: every key must be 1..{MAX_KEY_BYTES} bytes inside the data")
        return reader.get_many(kdata, koffs)
    if isinstance(keys, (bytes, bytearray, memoryview, str)):
        raise InvalidArgument("get_many takes a sequence of keys (or a numpy pair), not one key")
    keys = list(keys)
    n = len(keys)
    if n and set(map(type, keys)) != {bytes}:  # (map(type) runs in C: a generator costs 3x)
        keys = [_as_key_bytes(k) for k in keys]
    koffs = np.zeros(n + 1, dtype=np.int64)
    if n:
        lens = np.fromiter(map(len, keys), dtype=np.int64, count=n)
        if lens.min() < 1 or lens.max() > MAX_KEY_BYTES:
            raise InvalidArgument(f"get_many: every key must be 1..{MAX_KEY_BYTES} bytes")
        np.cumsum(lens, out=koffs[1:])
    kdata = np.frombuffer(b"".join(keys), dtype=np.uint8)
    got = reader.get_many(kdata, koffs, as_list=True)
    if isinstance(got, list):  # large values: made into bytes straight from the read buffer
        return got
    vdata, voffs, found = got
    if n == 0:
        return []
    hits = int(np.count_nonzero(found))
    if hits == n:
        return list(packed_bytes(vdata, voffs))
    values = np.empty(n, dtype=object)  # None where missed
    if hits:
        values[found] = np.fromiter(packed_bytes(vdata, np.append(voffs[:-1][found], voffs[-1])), dtype=object, count=hits)
    return values.tolist()


#: Average value size from which ``get_many``'s list form makes each value's
#: ``bytes`` straight from the kernel's read buffer (one copy) instead of
#: gathering the values into one array first (two copies, and a second
#: buffer the size of all the values).  Below it the gathered form's single
#: ``tolist`` is faster than a Python step per value.
LIST_DIRECT_BYTES = 64 * 1024


def _listed(out: np.ndarray, hit: np.ndarray, scratch: np.ndarray, slow: dict) -> list:
    """``get_many``'s list: row i's value when ``hit[i]`` (from ``scratch``,
    or from its table's data for a value the kernel left in place:
    ``row_value``), ``slow[i]`` for a key settled in Python, else None."""
    from shaledb.kernels.point import G_VLEN, G_VPOS, row_value

    values = [None] * out.shape[0]
    rows = np.flatnonzero(hit)
    for i, a, m in zip(rows.tolist(), out[rows, G_VPOS].tolist(), out[rows, G_VLEN].tolist()):
        values[i] = row_value(scratch, a, m)
    for i, v in slow.items():
        values[i] = v
    return values


def packed_bytes(data: np.ndarray, offs: np.ndarray):
    """The items of a packed column (item i is ``data[offs[i]:offs[i+1]]``)
    as ``bytes``: one C-level ``tolist`` of a fixed-width view when every
    item has the same length (keys and values usually do: about 4x faster
    than slicing), else slices of one ``bytes`` copy.  An iterable."""
    n = len(offs) - 1
    w = (int(offs[-1]) - int(offs[0])) // n if n else 0
    if n and int(offs[-1]) - int(offs[0]) == w * n and (n == 1 or not np.any(np.diff(offs) - w)):
        if w == 0:
            return [b""] * n
        a = int(offs[0])
        return data[a : a + w * n].view(f"V{w}").tolist()
    cut = data.tobytes().__getitem__
    b = offs.tolist()
    return map(cut, map(slice, b[:-1], b[1:]))


def _as_key_bytes(k) -> bytes:
    if isinstance(k, (bytes, bytearray, memoryview)):
        return bytes(k)
    raise InvalidArgument(f"keys must be bytes-like, got {type(k).__name__}")


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

    def _point_plan(self) -> Plan:
        """The :class:`Plan` of the newest manifest.  Uncompressed SSTs the
        store maps are read through their mapping; others, up to half the
        block cache in all, are pinned (``SstReader.pin``: fetched whole,
        once; a compressed one decompressed, charged at its decompressed
        size); the rest are read block by block through the block cache."""
        plan = self._plan
        if plan is not None and self._fresh(plan):
            return plan
        m = self.manifest()
        plan = self._plan
        if plan is not None and plan.manifest_id == self._manifest_id and plan.manifest is m:
            return plan
        from shaledb.kernels.point import META_COLS

        cache = self._cache
        budget = cache.capacity_bytes // 2 if cache is not None else 0
        refs = []
        srcs = [0]
        if m is not None:
            for ref in m.l0:
                refs.append(ref)
                srcs.append(len(refs))
            for run in m.sorted_runs:
                refs.extend(run.ssts)
                srcs.append(len(refs))
        rows, datas, readers, keep = [], [], [], []
        for ref in refs:
            r = self._sst(ref)
            mp = r.mapped()
            boffs = None  # the stored block offsets
            if mp is not None:
                data, verified = mp
            else:
                data = verified = None
                if ref.size <= budget:
                    pinned = r.pin()
                    if pinned is not None:
                        budget -= max(ref.size, pinned[0].nbytes)
                        data, boffs = pinned[0], pinned[1]
                        verified = np.ones(r.num_blocks, dtype=np.uint8)  # pin() checked every block
                        keep += (verified, boffs)
            gs = r.global_seq
            rows.append(r.meta_row(data, verified, max_seq=gs if gs else ref.max_seq, boffs=boffs))
            datas.append(data)
            readers.append(r)
        meta = np.stack(rows) if rows else np.zeros((0, META_COLS), dtype=np.int64)
        plan = Plan(self._manifest_id, m, meta, np.array(srcs, dtype=np.int64), tuple(datas),
                    tuple(None if d is None else memoryview(d) for d in datas), tuple(readers),
                    tuple(keep), all(d is not None for d in datas))
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
        if plan is not None and plan.in_memory:  # _fresh(plan), inlined: no store I/O at all
            mid = plan.manifest_id
            if mid == self._manifest_id and self._manifest_id_of_mem() <= mid and _now() < self._check_at:
                err, t, tr, vp, vlen, _nt, nb, _s = _plan_get(
                    _frombuffer(key, _U8), 0, -1 if best is None else best[1], plan.meta, plan.srcs)
                if err:
                    _raise_corruption(int(err), f"{plan.readers[_nt].key}: block {int(nb)}")
                if t < 0:
                    return None if best is None or best[2] != KIND_PUT else best[3]
                if int(tr) & KIND_MASK != KIND_PUT:
                    return None
                return plan.views[t][vp : vp + vlen].tobytes()
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
        best = _plan_lookup(self._point_plan(), key, best)
        if best is None or best[2] != KIND_PUT:
            return None
        return best[3]

    def get_many(self, kdata: np.ndarray, koffs: np.ndarray, *, as_list: bool = False):
        """Point reads of keys ``kdata[koffs[i]:koffs[i+1]]`` (valid keys):
        ``(vdata, voffs, found)``, key i's value ``vdata[voffs[i]:voffs[i+1]]``
        when ``found[i]``.  Arenas first (skipped when they hold nothing),
        then one kernel call walks the plan for every key; keys that meet an
        SST not in memory finish one by one.  One deadline for the call.
        With ``as_list``, when the values found average ``LIST_DIRECT_BYTES``
        or more, the result is instead the list of ``bytes | None`` (each
        value copied once from the kernel's buffer, not gathered first)."""
        n = koffs.shape[0] - 1
        best_seq = np.full(n, -1, dtype=np.int64)
        mem = None  # (rows, seqs, kinds, value starts, value lengths, values) of arena versions
        if self.mem.unflushed_bytes():  # arenas are read before the manifest
            many = getattr(self.mem, "lookup_many", None)
            mem = many(kdata, koffs) if many is not None else _lookup_each(self._mem_lookup, kdata, koffs)
            if mem is not None:
                best_seq[mem[0]] = mem[1]
        with self._deadline():
            attempt = 0
            while True:
                try:
                    return self._get_many(kdata, koffs, best_seq, mem, as_list)
                except Corruption:
                    if attempt >= MISSING_SST_RETRIES or not self._advance_to_latest():
                        raise
                    attempt += 1

    def _get_many(self, kdata, koffs, best_seq, mem, as_list=False):
        from shaledb.kernels import point as P

        plan = self._point_plan()
        n = koffs.shape[0] - 1
        out = np.empty((n, P.G_COLS), dtype=np.int64)
        order = P.sort_keys(kdata, koffs)
        scratch = np.empty(max(4096, n * 128), dtype=np.uint8)
        # a large batch is walked over a sorted copy of its keys (rows in
        # sorted order), then its rows are put back in key order
        walk_kd, walk_ko, walk_order, walk_best, walk_out = kdata, koffs, order, best_seq, out
        if n >= P.SORTED_COPY_MIN:
            walk_kd, walk_ko = P.keys_in_order(kdata, koffs, order)
            walk_order = np.arange(n, dtype=np.int64)
            walk_best = best_seq[order]
            walk_out = np.empty_like(out)
        x, used = 0, 0
        while True:
            err, x, nt, nb, used = P.plan_get_many(walk_kd.ctypes.data, walk_ko.ctypes.data, walk_order, x, walk_best,
                                                   plan.meta, plan.srcs, walk_out, scratch, used,
                                                   P.DIRECT_VALUE_BYTES)
            if err != P.E_SCRATCH:
                break
            # room for what the keys walked so far suggest the rest needs (large
            # values: one or two growths, not a doubling per key)
            guess = int(used) * (n + 1) // max(int(x), 1) + (int(used) >> 3)
            grown = np.empty(max(2 * scratch.shape[0], int(used) + (1 << 20), guess), dtype=np.uint8)
            grown[:used] = scratch[:used]
            scratch = grown
        if err:
            _raise_corruption(int(err), f"{plan.readers[nt].key}: block {int(nb)}")
        if walk_out is not out:
            if (mem is None or not mem[0].shape[0]) and not (walk_out[:, P.G_NEED] >= 0).any():
                return P.gather_walked(walk_out, order, scratch)  # every key settled in the kernel
            out[order] = walk_out
        used = int(used)
        slow = {}  # key index -> value or None, for keys settled here in Python
        needs = np.flatnonzero(out[:, P.G_NEED] >= 0).tolist()
        mem_at = {r: j for j, r in enumerate(mem[0].tolist())} if needs and mem is not None else {}
        for i in needs:
            key = kdata[koffs[i] : koffs[i + 1]].tobytes()
            t, seq, kind, vp, vlen, need, nxt = out[i].tolist()
            best = None
            j = mem_at.get(i)
            if j is not None:
                a = int(mem[3][j])
                best = (key, int(mem[1][j]), int(mem[2][j]), mem[5][a : a + int(mem[4][j])].tobytes())
            if t >= 0:
                best = (key, seq, kind, P.row_value(scratch, vp, vlen) if kind else None)
            best = _plan_lookup(plan, key, best, need >> 32, need & 0xFFFFFFFF, nxt)
            slow[i] = best[3] if best is not None and best[2] == KIND_PUT else None
            out[i, P.G_TABLE] = -1
        if mem is not None and mem[0].shape[0]:  # arena versions no table beat: their values join scratch
            rows = mem[0]
            win = out[rows, P.G_TABLE] < 0
            if slow:
                win &= ~np.isin(rows, np.fromiter(slow, dtype=np.int64, count=len(slow)))
            w = rows[win]
            if w.shape[0]:
                scratch = np.concatenate([scratch[:used], mem[5]])
                out[w, P.G_TABLE] = 0  # (any table: gather_values only asks "found")
                out[w, P.G_KIND] = mem[2][win]
                out[w, P.G_VPOS] = used + mem[3][win]
                out[w, P.G_VLEN] = mem[4][win]
        hit = (out[:, P.G_TABLE] >= 0) & (out[:, P.G_KIND] != 0)
        total = int(out[hit, P.G_VLEN].sum()) if n else 0
        hits = int(np.count_nonzero(hit))
        if as_list and hits and total >= LIST_DIRECT_BYTES * hits:
            return _listed(out, hit, scratch, slow)
        vdata = np.empty(total, dtype=np.uint8)
        voffs = np.empty(n + 1, dtype=np.int64)
        found = np.empty(n, dtype=np.bool_)
        P.gather_values(out, order, scratch, vdata, voffs, found)
        if not slow:
            return vdata, voffs, found
        # splice the values settled in Python in, in key order
        vl = np.diff(voffs)
        for i, v in slow.items():
            found[i] = v is not None
            vl[i] = 0 if v is None else len(v)
        parts = []
        prev = 0
        for i in sorted(slow):
            parts.append(vdata[int(voffs[prev]) : int(voffs[i])])
            if slow[i]:
                parts.append(np.frombuffer(slow[i], dtype=np.uint8))
            prev = i + 1
        parts.append(vdata[int(voffs[prev]) :])
        vdata = np.concatenate(parts) if parts else vdata
        np.cumsum(vl, out=voffs[1:])
        return vdata, voffs, found

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
        """Drop the SST readers and the plan (their mappings go with the last
        array that uses them)."""
        with self._lock:
            self._ssts.clear()
            self._plan = None


_CHUNK = 16384  # records emitted per batch of a scan


def _plan_lookup(plan: Plan, key: bytes, best, need_t: int = -1, need_b: int = -1, s: int = 0):
    """The newest Entry of ``key`` in ``plan``, or ``best`` when nothing in
    the plan is newer: kernel walks of the tables in memory, and for a
    table that is not, one block read here (``need_t``/``need_b``), then
    the walk resumes at source ``s``."""
    karr = np.frombuffer(key, dtype=np.uint8)
    meta, srcs = plan.meta, plan.srcs
    last = srcs.shape[0] - 1
    while True:
        if need_t >= 0:
            r = plan.readers[need_t]
            block = r.read_block(need_b)
            err, found, tr, vp, vlen = _block_find(block, karr)
            if err:
                _raise_corruption(int(err), f"{r.key}: block {need_b}")
            if found:
                tr = int(tr)
                seq = r.global_seq or tr >> 8
                if best is None or seq > best[1]:
                    kind = tr & KIND_MASK
                    best = (key, seq, kind, block[vp : vp + vlen].tobytes() if kind else None)
        if s >= last:
            return best
        err, t, tr, vp, vlen, need_t, need_b, s = _plan_get(karr, s, -1 if best is None else best[1], meta, srcs)
        if err:
            _raise_corruption(int(err), f"{plan.readers[need_t].key}: block {int(need_b)}")
        if t >= 0:
            tr = int(tr)
            kind = tr & KIND_MASK
            best = (key, tr >> 8, kind, plan.datas[t][vp : vp + vlen].tobytes() if kind else None)
        if need_t < 0:
            return best


# The kernels are bound on first use (importing them loads numba).
def _plan_get(*args):
    global _plan_get
    from shaledb.kernels.point import plan_get as kern

    _plan_get = kern
    return kern(*args)


def _block_find(block, karr):
    global _block_find
    from shaledb.kernels.read import block_find as kern

    _block_find = kern
    return kern(block, karr)


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
            from shaledb.read.scan import _gather  # the batch scan's: runs back to back

            cat, coffs, bounds = _gather(parts)
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
