"""The compactor: a process of its own that keeps the LSM's shape
(docs/compaction.md).

:class:`Compactor` is the library: it opens the database root as the
compactor (``compactor_epoch`` + 1 by conditional write, fencing any older
compactor), and ``compact_once`` plans jobs with a :class:`Scheduler`, runs
each (``shaledb.compact.executor``) and publishes it with
``ManifestStore.apply_compaction`` (which re-applies the change on top of a
concurrent writer update, so neither side sees a false fence).  ``run(url)``
is the process loop (``python -m shaledb.compact URL``): poll every
``compaction_interval`` seconds until SIGTERM/SIGINT or a fence.

With ``Options.compaction_workers > 1`` and an ``opener`` (a
:class:`~shaledb.options.StoreOpener`; ``run`` and the service pass one for
every store but ``memory://``), a job's key ranges merge in a pool of
worker processes (``executor.new_pool``) kept for the compactor's life and
shut down on ``close()`` and when the compactor is fenced.

SSTs uploaded but not yet published are listed by ``inflight_ssts()`` for
GC.  The compactor's SST watermark (docs/gc.md) is raised at each publish to
a ULID below any id a later job can mint.

Failpoints: ``compact-mid-merge`` (an output SST or range done, the job not),
``compact-after-upload`` (every output uploaded, the manifest not updated),
``compact-after-manifest`` (published, the in-process bookkeeping not yet
cleaned up).

Thread safety: one thread drives a Compactor; ``inflight_ssts`` may be
called from any thread.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass

from shaledb.compact.executor import JobResult, MergeParams, execute, new_pool
from shaledb.compact.scheduler import Scheduler, SizeTieredScheduler
from shaledb.errors import Fenced, InvalidArgument
from shaledb.failpoints import Failpoints
from shaledb.format.keys import new_sst_id
from shaledb.manifest.store import ManifestStore
from shaledb.options import Options, StoreOpener

__all__ = ["CHECKPOINTS", "CompactionReport", "Compactor", "checkpoint_retain_seq", "run"]

#: ``Compactor(retain_seq=CHECKPOINTS)`` (the default): keep what the oldest
#: live checkpoint can see (:func:`checkpoint_retain_seq`).
CHECKPOINTS = "checkpoints"

log = logging.getLogger("shaledb.compact")


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """What one ``compact_once`` did.  ``ranges``: key ranges merged
    (subcompactions, over all jobs); ``workers``: the most worker processes
    one job merged in (0: every job merged in the compactor's process)."""

    jobs: int = 0
    trivial_moves: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    ranges: int = 0
    workers: int = 0

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


def checkpoint_retain_seq(store, manifest, cache: dict | None = None) -> int | None:
    """The oldest sequence number a live checkpoint of ``manifest`` can see:
    the smallest ``last_l0_seq`` of the manifests its checkpoints pin (0, keep
    every version, when a pinned manifest cannot be read); None when there
    is no checkpoint.  ``cache`` maps manifest id -> last_l0_seq (manifests
    are immutable).  See docs/compaction.md, "Retention"."""
    from shaledb.errors import ObjectNotFound
    from shaledb.format.keys import manifest_key
    from shaledb.manifest.model import decode_manifest

    cache = {} if cache is None else cache
    out = None
    for c in manifest.checkpoints:
        seq = cache.get(c.manifest_id)
        if seq is None:
            try:
                seq = decode_manifest(store.get(manifest_key(c.manifest_id)), manifest_key(c.manifest_id)).last_l0_seq
                cache[c.manifest_id] = seq
            except ObjectNotFound:
                seq = 0
        out = seq if out is None else min(out, seq)
    return out


class Compactor:
    """The compactor of one database root (see the module docstring).

    ``retain_seq``: :data:`CHECKPOINTS` (default) keeps what the oldest live
    checkpoint sees (:func:`checkpoint_retain_seq`, re-read at each
    ``compact_once``); None keeps only the newest version of each key; an
    int, or a callable returning one (or None), is the oldest live snapshot
    or checkpoint seq, above which every version is kept.  ``opener``: how
    worker processes open ``store`` (None: every job merges here).
    Raises InvalidArgument when the root holds no database.
    """

    def __init__(
        self,
        store,
        options: Options | None = None,
        *,
        scheduler: Scheduler | None = None,
        retain_seq=CHECKPOINTS,
        failpoints: Failpoints | None = None,
        pool=None,
        min_subcompaction_bytes: int | None = None,
        manifest_store_options: dict | None = None,
        opener: StoreOpener | None = None,
    ):
        self.store = store
        self.opener = opener
        self.options = options or Options()
        o = self.options
        self.scheduler = scheduler or SizeTieredScheduler(l0_threshold=o.l0_compaction_threshold)
        if not isinstance(self.scheduler, Scheduler):
            raise InvalidArgument("scheduler must have a plan(manifest, full=False) method")
        self._retain = retain_seq
        self._pinned_seqs: dict[int, int] = {}
        self.fp = failpoints if failpoints is not None else Failpoints(o.failpoints)
        self.min_subcompaction_bytes = min_subcompaction_bytes
        self.mstore = ManifestStore.open_compactor(store, **(manifest_store_options or {}))
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self._pool = pool
        self._own_pool = False
        self.stats = {"jobs": 0, "trivial_moves": 0, "bytes_in": 0, "bytes_out": 0, "manifest_updates": 0}

    @property
    def epoch(self) -> int:
        return self.mstore.epoch

    def inflight_ssts(self) -> frozenset[str]:
        """SST ids this compactor uploaded and has not yet published (or
        seen referenced); GC must not delete them."""
        with self._lock:
            return frozenset(self._inflight)

    def _retain_seq(self, m):
        r = self._retain
        if isinstance(r, str) and r == CHECKPOINTS:
            return checkpoint_retain_seq(self.store, m, self._pinned_seqs)
        return r() if callable(r) else r

    def _get_pool(self):
        workers = self.options.compaction_workers
        if workers <= 1:
            return None
        if self._pool is None:
            if self.opener is None:
                return None  # the store cannot reach another process: merge here
            self._pool = new_pool(workers)
            self._own_pool = True
        return self._pool

    def _watermark(self) -> str:
        """A ULID at or below every id a later job can mint (any process on
        this machine): the start of the previous millisecond, never below
        the watermark this epoch already promised."""
        cand = new_sst_id(now_ms=time.time_ns() // 1_000_000 - 1, rand=bytes(10))
        wm = self.mstore.current.compactor_sst_watermark
        if wm is not None and wm.epoch == self.epoch and wm.sst_id > cand:
            return wm.sst_id
        return cand

    def _forget_published(self) -> None:
        """Drop from ``inflight`` what the manifest now references or what no
        job will publish any more (an abandoned job's orphans)."""
        with self._lock:
            self._inflight.clear()

    def compact_once(self, full: bool = False) -> CompactionReport:
        """Plan against the latest manifest, run and publish every job.

        Raises Fenced when a newer compactor opened (nothing more is
        written; the worker pool is shut down), and the storage errors of
        the run.
        """
        try:
            return self._compact_once(full)
        except Fenced:
            self.close()
            raise

    def _compact_once(self, full: bool) -> CompactionReport:
        t0 = time.perf_counter()
        m = self.mstore.refresh()
        jobs = self.scheduler.plan(m, full=full)
        o = self.options
        params = MergeParams(
            retain_seq=self._retain_seq(m),
            sst_target_bytes=o.sst_target_bytes,
            block_size=o.block_size,
            bloom_bits_per_key=o.bloom_bits_per_key,
            compression=o.compression,
        )
        done = trivial = b_in = b_out = ranges = wmax = 0
        for job in jobs:
            res = self._run_job(m, job, params)
            done += 1
            trivial += job.trivial_move
            b_in += res.bytes_in
            b_out += res.bytes_out
            ranges += res.subcompactions
            wmax = max(wmax, res.workers)
        for k, v in (("jobs", done), ("trivial_moves", trivial), ("bytes_in", b_in), ("bytes_out", b_out)):
            self.stats[k] += v
        if done:
            log.info("compactor: %d jobs (%d trivial moves), %d bytes in, %d out, %.2f s",
                     done, trivial, b_in, b_out, time.perf_counter() - t0)
        return CompactionReport(done, trivial, b_in, b_out, time.perf_counter() - t0, ranges, wmax)

    def _run_job(self, m, job, params) -> JobResult:
        def uploaded(sst_id: str) -> None:
            with self._lock:
                self._inflight.add(sst_id)

        self.mstore.refresh()  # Fenced before any upload when a newer compactor exists
        res = execute(
            self.store,
            m,
            job,
            params,
            workers=self.options.compaction_workers,
            pool=self._get_pool(),
            min_subcompaction_bytes=self.min_subcompaction_bytes,
            on_sst=uploaded,
            failpoints=self.fp,
            opener=self.opener,
        )
        self.fp.hit("compact-after-upload")
        try:
            self.mstore.apply_compaction(
                removed_l0=job.l0,
                removed_runs=job.runs,
                new_runs=(res.run,) if res.run is not None else (),
                sst_watermark=self._watermark(),
            )
        except Fenced:
            log.info("compactor epoch %s fenced: stopping", self.epoch)
            raise
        self.stats["manifest_updates"] += 1
        self.fp.hit("compact-after-manifest")
        self._forget_published()
        return res

    def close(self) -> None:
        """Stop the worker pool (if this compactor started it).  Idempotent."""
        if self._own_pool and self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        self._own_pool = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_until(self, stop: threading.Event, *, interval: float | None = None) -> None:
        """Compact every ``interval`` seconds (default ``compaction_interval``)
        until ``stop`` is set; returns quietly when fenced."""
        interval = self.options.compaction_interval if interval is None else interval
        while not stop.is_set():
            try:
                self.compact_once()
            except Fenced:
                return
            stop.wait(interval)


def run(url: str, *, scheduler: Scheduler | None = None, retain_seq=CHECKPOINTS, **options) -> None:
    """Run the compactor of the database at ``url`` until SIGTERM/SIGINT
    (from the main thread) or until a newer compactor fences it.
    ``options``: :class:`shaledb.Options` fields (store_options,
    store_wrapper, compaction_workers, compaction_interval, ...)."""
    from shaledb.storage import open_store

    from shaledb.options import wrap_store

    opts = Options.resolve(None, options)
    store = wrap_store(open_store(url, **dict(opts.store_options)), opts)
    opener = None if url.startswith("memory://") else StoreOpener(url, dict(opts.store_options), opts)
    stop = threading.Event()
    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        with Compactor(store, opts, scheduler=scheduler, retain_seq=retain_seq, opener=opener) as c:
            c.run_until(stop)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        store.close()
