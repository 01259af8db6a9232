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

Two lanes: with ``compact_once(background=True)`` (the service loop and
``run``), a merge of sorted runs runs on a thread of its own while later
passes go on draining L0 (L0 jobs take only L0 SSTs and write a run above
every other, so they never touch what the merge reads or writes); without
it, or for ``full=True``, a pass waits for a running merge and runs every
job itself.  At most one merge of runs runs at a time.

SSTs uploaded but not yet published are listed by ``inflight_ssts()`` for
GC.  The compactor's SST watermark (docs/gc.md) is raised at each publish to
a ULID below any id a later job can mint *and* below the first id of every
job still running (each job takes a start mark before it mints anything),
so a publish by one lane never lets GC collect the other lane's uploads.

Failpoints: ``compact-mid-merge`` (an output SST or range done, the job not),
``compact-after-upload`` (every output uploaded, the manifest not updated),
``compact-after-manifest`` (published, the in-process bookkeeping not yet
cleaned up).

Thread safety: one thread drives a Compactor (it may start the merge
thread); ``inflight_ssts`` and ``refresh`` may be called from any thread.
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

#: After a pass that ran a job the next one starts this soon (seconds), not
#: after a whole ``compaction_interval``: under a sustained load L0 keeps
#: arriving, and an idle second after each job is L0 the writers are paced
#: down for (docs/compaction.md, "Write pacing").
BUSY_PAUSE = 0.05


def pause_after(jobs: int, interval: float) -> float:
    """Seconds before the next pass of a compaction loop whose last pass ran
    ``jobs`` jobs: ``BUSY_PAUSE`` after work (at most ``interval``), else
    ``interval``."""
    return min(BUSY_PAUSE, interval) if jobs else interval


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
        # per running job (a token): the SSTs it uploaded and has not
        # published, and its start mark (a ULID at or below every id it mints)
        self._inflight: dict[int, set[str]] = {}
        self._marks: dict[int, str] = {}
        self._tokens = 0
        self._lock = threading.Lock()
        self._mlock = threading.RLock()  # the manifest store, shared by the two lanes
        self._merge: threading.Thread | None = None
        self._merge_error: BaseException | None = None
        self._merged: list = []  # (job, JobResult) of background merges not yet reported
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
            return frozenset(sid for ids in self._inflight.values() for sid in ids)

    def refresh(self):
        """The latest manifest (``ManifestStore.refresh`` under the lane lock)."""
        with self._mlock:
            return self.mstore.refresh()

    def merging(self) -> bool:
        """A merge of sorted runs is running in the background."""
        t = self._merge
        return t is not None and t.is_alive()

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

    @staticmethod
    def _mark() -> str:
        """The start of the previous millisecond as a ULID: at or below every
        id minted from now on (any process on this machine)."""
        return new_sst_id(now_ms=time.time_ns() // 1_000_000 - 1, rand=bytes(10))

    def _watermark(self, token: int) -> str:
        """A ULID at or below every id a later job can mint and every id a
        job still running (other than ``token``, being published) minted,
        never below the watermark this epoch already promised (a running
        job's mark is above every earlier publish's watermark)."""
        cand = self._mark()
        with self._lock:
            others = [mk for t, mk in self._marks.items() if t != token]
        if others:
            cand = min(cand, min(others))
        wm = self.mstore.current.compactor_sst_watermark
        if wm is not None and wm.epoch == self.epoch and wm.sst_id > cand:
            return wm.sst_id
        return cand

    def _begin(self) -> int:
        """Register a job about to run: its token (start mark taken now)."""
        with self._lock:
            self._tokens += 1
            token = self._tokens
            self._marks[token] = self._mark()
            self._inflight[token] = set()
        return token

    def _forget(self, token: int) -> None:
        """The job ended (published, or abandoned: its orphans are GC's):
        drop its mark and its in-flight SSTs."""
        with self._lock:
            self._marks.pop(token, None)
            self._inflight.pop(token, None)

    def compact_once(self, full: bool = False, *, background: bool = False) -> CompactionReport:
        """Plan against the latest manifest, run and publish every job.

        ``background=True`` (not with ``full``): a merge of sorted runs
        starts on the merge thread and this call returns without waiting for
        it (while one runs, run merges are not planned again); L0 jobs run
        here.  The report counts the jobs done here and the background
        merges that finished since the last report.  Otherwise the call
        first waits for a running merge.

        Raises Fenced when a newer compactor opened (nothing more is
        written; the worker pool is shut down), and the storage errors of
        the run (a background merge's error surfaces in the next call).
        """
        try:
            return self._compact_once(full, background and not full)
        except Fenced:
            self.close()
            raise

    def _wait_merge(self) -> None:
        t = self._merge
        if t is not None:
            t.join()
            self._merge = None

    def _merge_outcome(self) -> list:
        """Finished background merges (job, result) since the last call;
        raises the error that ended the last one, once."""
        with self._lock:
            done, self._merged = self._merged, []
            err, self._merge_error = self._merge_error, None
        if err is not None:
            raise err
        return done

    def _compact_once(self, full: bool, background: bool) -> CompactionReport:
        t0 = time.perf_counter()
        if not background:
            self._wait_merge()
        finished = self._merge_outcome()
        m = self.refresh()
        jobs = self.scheduler.plan(m, full=full)
        o = self.options
        params = MergeParams(
            retain_seq=self._retain_seq(m),
            sst_target_bytes=o.sst_target_bytes,
            block_size=o.block_size,
            bloom_bits_per_key=o.bloom_bits_per_key,
            compression=o.compression,
        )
        here = []
        for job in jobs:  # the merge first: the L0 jobs below then run beside it
            if not job.l0 and self.merging():
                continue  # its runs may be the running merge's sources: planned again later
            if background and not job.l0 and not job.trivial_move:
                self._start_merge(m, job, params)
                continue
            here.append(job)
        ran = [(job, self._run_job(m, job, params)) for job in here]
        trivial = sum(job.trivial_move for job, _ in ran)
        b_in, b_out = sum(r.bytes_in for _, r in ran), sum(r.bytes_out for _, r in ran)
        with self._lock:  # (a background merge counted itself when it finished)
            for k, v in (("jobs", len(ran)), ("trivial_moves", trivial), ("bytes_in", b_in), ("bytes_out", b_out)):
                self.stats[k] += v
        if ran:
            log.info("compactor: %d jobs (%d trivial moves), %d bytes in, %d out, %.2f s",
                     len(ran), trivial, b_in, b_out, time.perf_counter() - t0)
        results = [r for _, r in ran + finished]
        return CompactionReport(
            len(results),
            trivial,
            sum(r.bytes_in for r in results),
            sum(r.bytes_out for r in results),
            time.perf_counter() - t0,
            sum(r.subcompactions for r in results),
            max((r.workers for r in results), default=0),
        )

    def _start_merge(self, m, job, params) -> None:
        def body() -> None:
            try:
                res = self._run_job(m, job, params)
            except BaseException as exc:  # noqa: BLE001 - reported by the next compact_once
                with self._lock:
                    self._merge_error = exc
                return
            with self._lock:
                self._merged.append((job, res))
                for k, v in (("jobs", 1), ("bytes_in", res.bytes_in), ("bytes_out", res.bytes_out)):
                    self.stats[k] += v
            log.info("compactor: merged %d sorted runs in the background, %d bytes in, %d out",
                     len(job.runs), res.bytes_in, res.bytes_out)

        self._merge = threading.Thread(target=body, name="shaledb-compactor-merge", daemon=True)
        self._merge.start()

    def _run_job(self, m, job, params) -> JobResult:
        token = self._begin()  # before anything is minted
        try:
            return self._run_registered(m, job, params, token)
        finally:
            self._forget(token)

    def _run_registered(self, m, job, params, token: int) -> JobResult:
        def uploaded(sst_id: str) -> None:
            with self._lock:
                self._inflight[token].add(sst_id)

        self.refresh()  # Fenced before any upload when a newer compactor exists
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
            with self._mlock:
                self.mstore.apply_compaction(
                    removed_l0=job.l0,
                    removed_runs=job.runs,
                    new_runs=(res.run,) if res.run is not None else (),
                    sst_watermark=self._watermark(token),
                )
        except Fenced:
            log.info("compactor epoch %s fenced: stopping", self.epoch)
            raise
        with self._lock:
            self.stats["manifest_updates"] += 1
        self.fp.hit("compact-after-manifest")
        return res

    def close(self) -> None:
        """Wait for a background merge, stop the worker pool (if this
        compactor started it).  Idempotent."""
        if self._merge is not None and self._merge is not threading.current_thread():
            self._wait_merge()
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
                rep = self.compact_once(background=True)
            except Fenced:
                return
            stop.wait(pause_after(rep.jobs, interval))


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
