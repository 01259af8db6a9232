"""Run one compaction job: a streaming k-way merge over SST blocks
(docs/compaction.md).

Each source (an L0 SST, or a sorted run read SST after SST) is a stream of
record chunks from ``SstReader.iter_range`` (one ranged GET of up to
``read_ahead_bytes`` each, the next one in flight while a chunk is merged).  A merge round takes, from every source, the
buffered records whose key is below the *bound* (the smallest last buffered
key among the sources that are not exhausted): every version of such a key
is buffered, because each source is key-ordered.  The round merges them
(``kernels.merge.merge_runs``, sources in recency order so that ties favour
the newer), keeps the survivors (``kernels.dedupe.dedupe_sorted`` with
``retain_seq``; tombstones at or below ``retain_seq`` also go when the job is
``bottom``), and appends them to the pending output; a source holding the
bound loads its next chunk.  Pending output becomes one SST (bloom filter
included) as soon as it reaches ``sst_target_bytes``, uploaded to
``compacted/<ulid>.sst`` on a helper thread while the merge goes on (one
upload at a time: the next SST waits for it).  Memory: about 2 x
read-ahead per source (the chunk being merged and the GET in flight) plus
two output SSTs (one being built, one uploading); a run is never held
whole.

Retention (``retain_seq``): None keeps only the newest version of each key;
an int (the oldest live snapshot or checkpoint seq) also keeps every
version above it and the newest at or below it.

Subcompactions: a job is cut at source SST boundaries into key ranges of
similar input size, merged in parallel worker processes (a "spawn" pool:
never a fork of a process with numba threads) and the outputs concatenated.
A worker gets a :class:`~shaledb.options.StoreOpener` (never a live store:
the engine's wrapped stores refuse to pickle) and opens the store once per
process; :func:`new_pool` makes each worker exit as soon as the process that
started it is gone, and guards its writes the same way.  Workers only upload
SSTs; the compactor alone publishes.  A store that lives in one process
(``memory://``, no opener) runs the ranges here.

Thread safety: ``execute`` keeps no state between calls.
"""

from __future__ import annotations

import bisect
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from shaledb.compact.scheduler import CompactionJob, job_ssts
from shaledb.errors import InvalidArgument
from shaledb.format.keys import sst_key
from shaledb.format.record import (
    KEY_LEN_OFF,
    KIND_BITS,
    KIND_DELETE,
    KIND_MASK,
    MAX_SEQ,
    RECORD_HEADER,
    TRAILER_OFF,
)
from shaledb.manifest.model import Manifest, SortedRun, SstRef

__all__ = ["JobResult", "execute", "merge_range", "new_pool", "split_ranges"]

_NO_CUT = 1 << 62


@dataclass(frozen=True, slots=True)
class JobResult:
    """What one job produced: ``run`` is None when nothing survived."""

    job: CompactionJob
    run: SortedRun | None
    bytes_in: int
    bytes_out: int
    new_ssts: tuple[str, ...]
    seconds: float
    subcompactions: int = 1
    #: distinct worker processes that merged its ranges (0: merged in the
    #: calling process)
    workers: int = 0


@dataclass(frozen=True, slots=True)
class MergeParams:
    """Settings of one merge (picklable: travels to worker processes)."""

    retain_seq: int | None = None
    bottom: bool = False
    sst_target_bytes: int = 64 << 20
    block_size: int = 4096
    bloom_bits_per_key: int = 10
    read_ahead_bytes: int = 1 << 20
    compression: str | None = None


def _key_at(buf: np.ndarray, off: int) -> bytes:
    off = int(off)
    klen = int.from_bytes(buf[off + KEY_LEN_OFF : off + KEY_LEN_OFF + 4].tobytes(), "little")
    return buf[off + RECORD_HEADER : off + RECORD_HEADER + klen].tobytes()


def _span(buf: np.ndarray, offs: np.ndarray, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Records ``a:b`` of ``(buf, offs)`` as a run of their own bytes only
    (``concat_runs`` copies whole buffers).  REQUIRES: ``offs`` increasing
    and each record ends where the next begins or at the end of ``buf``
    (true of decoded blocks and of runs built from them here)."""
    lo = int(offs[a])
    hi = int(offs[b]) if b < len(offs) else len(buf)
    return buf[lo:hi], offs[a:b] - lo


class _Source:
    """One key-ordered stream of record chunks with its unread records
    (only those are kept: memory is about one read-ahead per source)."""

    def __init__(self, chunks):
        self._chunks = chunks
        self.buf = np.empty(0, dtype=np.uint8)
        self.offs = np.empty(0, dtype=np.int64)
        self.pos = 0
        self.done = False
        self.load()

    def load(self) -> None:
        """Append the next chunk to the unread records (or mark the stream done)."""
        from shaledb.kernels.sort import concat_runs

        nxt = next(self._chunks, None)
        if nxt is None:
            self.done = True
            return
        if self.pos < len(self.offs):
            self.buf, self.offs = concat_runs([_span(self.buf, self.offs, self.pos, len(self.offs)), nxt])
        else:
            self.buf, self.offs = nxt
        self.pos = 0

    @property
    def empty(self) -> bool:
        return self.pos >= len(self.offs)

    def last_key(self) -> bytes:
        return _key_at(self.buf, self.offs[-1])

    def cut(self, bound: bytes | None) -> int:
        """Index past the unread records with key < ``bound`` (None: all)."""
        if bound is None:
            return len(self.offs)
        return bisect.bisect_left(range(len(self.offs)), bound, lo=self.pos, key=lambda i: _key_at(self.buf, self.offs[i]))


def _chunks(store, ssts: Sequence[SstRef], start, end, read_ahead: int):
    from shaledb.sst.reader import SstReader

    for ref in ssts:
        if end is not None and ref.first_key >= end:
            return
        if start is not None and ref.last_key < start:
            continue
        reader = SstReader(store, sst_key(ref.sst_id), size=ref.size, read_ahead_bytes=read_ahead,
                           bounded_read_ahead=True, global_seq=ref.global_seq)  # an ingested SST's records carry the load's seq
        yield from reader.iter_range(start, end)


def _survivors(buf, offs, params: MergeParams):
    """Offsets of ``offs`` (sorted) that the output keeps."""
    from shaledb.kernels.dedupe import dedupe_sorted

    keep = dedupe_sorted(buf, offs, params.retain_seq)
    if params.bottom and len(keep):
        trailers = buf[keep[:, None] + np.arange(TRAILER_OFF, TRAILER_OFF + 8)].view("<u8").ravel()
        limit = MAX_SEQ if params.retain_seq is None else params.retain_seq
        drop = ((trailers & KIND_MASK) == KIND_DELETE) & ((trailers >> KIND_BITS) <= limit)
        keep = keep[~drop]
    return keep


def merge_range(
    store,
    sources: Sequence[Sequence[SstRef]],
    start: bytes | None,
    end: bytes | None,
    params: MergeParams,
    *,
    on_sst: Callable[[str], None] | None = None,
) -> list[SstRef]:
    """Merge the records with ``start <= key < end`` of ``sources`` (recency
    order, each key-ordered SSTs) into SSTs uploaded to ``store``; returns
    their refs in key order.  ``on_sst(sst_id)`` runs after each upload."""
    from shaledb.kernels.block import as_offs, as_u8, gather_bound, gather_parts
    from shaledb.kernels.merge import merge_runs
    from shaledb.kernels.sort import concat_runs
    from shaledb.sst.writer import build_ssts

    srcs = [_Source(_chunks(store, s, start, end, params.read_ahead_bytes)) for s in sources]
    out: list[SstRef] = []
    # (buffer of a merge step, offsets of its surviving records): gathered
    # into one output buffer per SST batch, so a record is copied once
    # between the step's merge and the encoder
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    pending_bytes = 0
    # One output SST uploads (write + fsync, or a PUT) on a helper thread
    # while the merge goes on; the next one waits for it.  The helper is
    # named after the merging thread (e.g. the compactor's merge lane).
    uploader = ThreadPoolExecutor(1, thread_name_prefix=f"{threading.current_thread().name}-upload")
    inflight = None  # (future, refs) of the upload under way

    def settle() -> None:
        """Wait for the upload under way; its SSTs join the output."""
        nonlocal inflight
        if inflight is None:
            return
        fut, refs = inflight
        inflight = None
        fut.result()
        for ref in refs:
            out.append(ref)
            if on_sst is not None:
                on_sst(ref.sst_id)

    def emit() -> None:
        nonlocal pending, pending_bytes, inflight
        if not pending:
            return
        buf, offs = gather_parts(pending)
        pending, pending_bytes = [], 0
        built = list(build_ssts(
            buf,
            offs,
            target_bytes=_NO_CUT,
            block_size=params.block_size,
            bloom_bits_per_key=params.bloom_bits_per_key,
            compression=params.compression,
        ))
        settle()
        objs = [(sst_key(sst_id), data) for sst_id, data, _ in built]
        inflight = (uploader.submit(_upload, store, objs), [SstRef.from_info(info) for _, _, info in built])

    try:
        while True:
            for s in srcs:
                while s.empty and not s.done:
                    s.load()
            live = [s for s in srcs if not s.empty]
            if not live:
                break
            waiting = [s for s in live if not s.done]
            bound = min(s.last_key() for s in waiting) if waiting else None
            runs = []
            for s in live:
                c = s.cut(bound)
                if c > s.pos:
                    runs.append(_span(s.buf, s.offs, s.pos, c))
                    s.pos = c
            if runs:
                buf, offs = concat_runs(runs)
                bounds = np.zeros(len(runs) + 1, dtype=np.int64)
                np.cumsum([len(o) for _, o in runs], out=bounds[1:])
                merged = merge_runs(buf, bounds, offs)
                keep = _survivors(buf, merged, params)
                if len(keep):
                    pending.append((buf, keep))
                    pending_bytes += int(gather_bound(as_u8(buf, "buf"), as_offs(keep)))
                    if pending_bytes >= params.sst_target_bytes:
                        emit()
            for s in waiting:  # the holders of the bound read on
                if not s.empty and s.last_key() == bound:
                    s.load()
        emit()
        settle()
    finally:
        if inflight is not None:  # failed: no upload of this merge outlives the call
            inflight[0].exception()
        uploader.shutdown(wait=True)
    return out


def _upload(store, objs) -> None:
    for key, data in objs:
        store.put(key, data)


def _cut(points: list[tuple[bytes, int]], parts: int) -> list[tuple[bytes | None, bytes | None]]:
    """Ranges ``[start, end)`` cut at keys of ``points`` ((key, bytes at or
    below it)) so that each holds about 1/``parts`` of the bytes."""
    points = sorted(points)
    if parts <= 1 or len(points) < 2:
        return [(None, None)]
    total = sum(b for _, b in points)
    cuts: list[bytes] = []
    acc = 0
    for key, b in points:
        if acc >= total * (len(cuts) + 1) / parts and key != points[0][0]:
            if not cuts or key > cuts[-1]:
                cuts.append(key)
                if len(cuts) == parts - 1:
                    break
        acc += b
    bounds: list[bytes | None] = [None, *cuts, None]
    return list(zip(bounds[:-1], bounds[1:]))


def split_ranges(
    sources: Sequence[Sequence[SstRef]], parts: int, store=None
) -> list[tuple[bytes | None, bytes | None]]:
    """Cut the key space of ``sources`` into at most ``parts`` ranges
    ``[start, end)`` of similar input size: at SST first keys, or, given
    ``store``, at the block boundaries of every source SST's index (one
    index read each), which also balances SSTs that overlap (L0)."""
    refs = [r for s in sources for r in s]
    if parts <= 1 or (len(refs) < 2 and store is None):
        return [(None, None)]
    if store is None:
        return _cut([(r.first_key, r.size) for r in refs], parts)
    from shaledb.sst.reader import SstReader

    points: list[tuple[bytes, int]] = []
    for r in refs:
        keys, offs = SstReader(store, sst_key(r.sst_id), size=r.size).block_bounds()
        # block 0 starts at the first key; block i+1 starts just after index key i
        sizes = np.diff(offs).tolist()
        points.append((r.first_key, sizes[0]))
        points.extend(zip(keys[:-1], sizes[1:]))
    return _cut(points, parts)


_WATCH = None  # this worker's ParentWatch (set by _worker_init)
_OPENED: tuple | None = None  # (opener, store): the store this worker opened


def _worker_init(parent_pid: int) -> None:
    """Pool initializer: exit at once when ``parent_pid`` (the compactor) is
    gone, idle or mid-merge (a pool worker blocked on its call queue would
    otherwise wait forever: it holds the queue's write end itself)."""
    global _WATCH
    from shaledb.ipc.child import ParentWatch

    _WATCH = ParentWatch(parent_pid)
    _WATCH.install()


def _worker_store(opener):
    """The store of ``opener``, opened once per worker process."""
    global _OPENED
    if _OPENED is not None and _OPENED[0] == opener:
        return _OPENED[1]
    if _OPENED is not None:
        _OPENED[1].close()
        _OPENED = None
    store = opener(None if _WATCH is None else _WATCH.guard)
    _OPENED = (opener, store)
    return store


def _merge_task(store, sources, start, end, params):
    """Worker-process entry of one subcompaction: ``(pid, refs)``.  ``store``
    is a picklable store or a StoreOpener."""
    import os

    from shaledb.options import StoreOpener

    if isinstance(store, StoreOpener):
        store = _worker_store(store)
    return os.getpid(), merge_range(store, sources, start, end, params)


def new_pool(workers: int):
    """A "spawn" process pool of ``workers`` for subcompactions whose workers
    exit once this process is gone (see the module docstring)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )


def _picklable(store) -> bool:
    import pickle

    try:
        pickle.dumps(store)
        return True
    except Exception:  # noqa: BLE001 - a store that lives in one process
        return False


def execute(
    store,
    manifest: Manifest,
    job: CompactionJob,
    params: MergeParams | None = None,
    *,
    workers: int = 1,
    pool: Executor | None = None,
    min_subcompaction_bytes: int | None = None,
    on_sst: Callable[[str], None] | None = None,
    failpoints=None,
    opener=None,
) -> JobResult:
    """Run ``job`` against the sources it names in ``manifest``.

    ``params.bottom`` is taken from the job.  With ``workers > 1`` and a
    job of at least ``min_subcompaction_bytes`` (default: two output SSTs),
    key ranges run in ``pool`` (a process pool; a temporary one from
    :func:`new_pool` when None), each worker opening the store with
    ``opener`` (a :class:`~shaledb.options.StoreOpener`); without an opener
    only a picklable ``store`` is sent, else the ranges merge here.  ``on_sst(sst_id)`` is told of every SST uploaded (from
    workers: when their range finishes).  ``failpoints`` passes
    ``compact-mid-merge`` after the first range or SST is done.
    REQUIRES: the job's sources are in ``manifest``.
    """
    import dataclasses

    t0 = time.perf_counter()
    params = dataclasses.replace(params or MergeParams(), bottom=job.bottom)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgument(f"workers must be an int >= 1, got {workers!r}")
    sources = job_ssts(manifest, job)
    bytes_in = sum(r.size for s in sources for r in s)
    if job.trivial_move:
        refs = sorted((r for s in sources for r in s), key=lambda r: r.first_key)
        run = SortedRun(job.dest_run_id, tuple(refs))
        return JobResult(job, run, 0, 0, (), time.perf_counter() - t0, 0)

    fired = False

    def done_one(sst_id: str) -> None:
        nonlocal fired
        if on_sst is not None:
            on_sst(sst_id)
        if failpoints is not None and not fired:
            fired = True
            failpoints.hit("compact-mid-merge")

    threshold = 2 * params.sst_target_bytes if min_subcompaction_bytes is None else min_subcompaction_bytes
    ranges = [(None, None)]
    remote = opener if opener is not None else (store if _picklable(store) else None)
    if workers > 1 and bytes_in >= threshold and remote is not None:
        ranges = split_ranges(sources, workers, store)
    pids: set[int] = set()
    if len(ranges) == 1:
        refs = merge_range(store, sources, None, None, params, on_sst=done_one)
    else:
        own = pool is None
        if own:
            pool = new_pool(workers)
        try:
            futs = [pool.submit(_merge_task, remote, sources, a, b, params) for a, b in ranges]
            parts = []
            for f in futs:
                pid, part = f.result()
                pids.add(pid)
                for r in part:
                    done_one(r.sst_id)
                parts.append(part)
        finally:
            if own:
                pool.shutdown(wait=True, cancel_futures=True)
        refs = [r for p in parts for r in p]
    run = SortedRun(job.dest_run_id, tuple(refs)) if refs else None
    return JobResult(
        job, run, bytes_in, sum(r.size for r in refs), tuple(r.sst_id for r in refs), time.perf_counter() - t0,
        len(ranges), len(pids),
    )
