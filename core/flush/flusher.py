"""The flusher: the only code that writes to the object store for one open Db.

ONE worker thread performs every store write, in order; control threads only
queue requests (``shaledb.flush.requests.Request``) and wait for answers.  The
worker uploads the WAL (every ``flush_interval``, on request, and at once for a
waiting durable write), turns sealed generations into L0 SSTs published by one
fenced manifest update, and polls the manifest for fencing.  It runs in the
flusher process (``shaledb.flush.process``), or as a thread of the user's
process for a ``memory://`` store.

Invariants: WAL ids are written create-only, in order, without gaps, and a
pending object keeps its bytes and put-id until it lands (an ambiguous write is
recognised as ours, never as a fence); L0 never leads the WAL; arenas return to
the pool only after the manifest lists their SSTs; once fenced or failed
(a store error no retry fixes) nothing more is written.  Backpressure: while
a compactor tends the database, a new L0 waits for room below
``l0_max_ssts`` (docs/compaction.md, "Backpressure").  The long story:
docs/architecture.md ("The flusher").

Thread safety: :class:`Flusher` methods are called from control threads; all
store writes happen on the worker thread.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shaledb.ipc.control import ControlAddress, ControlServer
from shaledb.flush.requests import QUEUED, SERVED_DURING_BUILD, Request
from shaledb.errors import (
    Closed,
    Fenced,
    Internal,
    InvalidArgument,
    ObjectNotFound,
    PreconditionFailed,
    ShaleDBError,
    StorageError,
    Unavailable,
)
from shaledb.failpoints import Failpoints
from shaledb.format.keys import sst_key
from shaledb.format.record import HEADER, record_size
from shaledb.options import Options

log = logging.getLogger("shaledb.flush")  # forwarded to the Db's process (shaledb.ipc.logs)

__all__ = ["Flusher"]


#: A snapshot's records are cut into WAL objects of about this size, so that
#: encoding the next object (a helper thread) overlaps writing this one.
_WAL_OBJECT_BYTES = 16 << 20
#: Snapshots smaller than this are encoded inline (group-commit latency).
_ASYNC_ENCODE_BYTES = 1 << 20
#: The helper thread encodes at most this many objects ahead of the one
#: being written: the flusher holds about (this + 1) x _WAL_OBJECT_BYTES of
#: encoded WAL, however much the writers appended since the last snapshot.
_WAL_ENCODE_AHEAD = 2

#: A WAL upload at least this large means the writers are streaming: the next
#: upload starts as soon as this one ends instead of at the next tick.
_BUSY_WAL_BYTES = 4 << 20

#: Backpressure: L0 counts from ``l0_max_ssts - L0_SLOW_MARGIN`` up to the
#: limit delay each new L0 by ``L0_SLOW_STEP`` seconds per SST over the mark.
L0_SLOW_MARGIN = 2
L0_SLOW_STEP = 0.05
#: How often a stalled flusher re-reads the manifest.
L0_STALL_POLL = 0.05
#: Write pacing (flush/pacing.py): the flusher re-reads the manifest this
#: often while writes are paced.
PACE_POLL = 0.5


class _Queued:
    """A request in the worker's queue, answered through ``done``."""

    __slots__ = ("op", "args", "done", "result", "error")

    def __init__(self, op: Request, args: tuple):
        self.op = op
        self.args = args
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


@dataclass
class _PendingWal:
    """One WAL object of a snapshot: its id and bytes are fixed until it lands
    (the manifest store reuses one put-id per id), so a retry after an
    ambiguous write recognises its own object."""

    wal_id: int
    data: Any  # bytes-like (a read-only view of the encoded object); None until encoded
    max_gen: int
    done: bool = False
    src: Any = None  # (buf, offs) still to encode
    ready: Any = None  # threading.Event set once ``data`` (or ``error``) is there
    error: BaseException | None = None
    ahead: Any = None  # the snapshot's threading.Semaphore of objects encoded but not yet written

    def encoded(self):
        if self.ready is not None:
            self.ready.wait()
        if self.error is not None:
            raise self.error
        return self.data


@dataclass
class _PendingSnapshot:
    objects: list
    token: Any
    max_seq: int


class Flusher:
    """The flusher's state and worker.  Construct, :meth:`start`, then
    :meth:`wait_stopped`."""

    def __init__(self, store, options: Options, pool, *, failpoints: Failpoints | None = None):
        """``pool``: this process's handle on the Db's arena pool
        (``shaledb.memtable.arena_pool.ArenaPool``)."""
        self.store = store
        self.options = options
        self.pool = pool
        self.fp = failpoints if failpoints is not None else Failpoints(options.failpoints)
        self.mstore = None
        self.next_wal_id = 0
        self.durable_seq = 0
        self._pending: _PendingWal | None = None
        self._wal_gens: list[tuple[int, int]] = []  # (wal_id, max generation in it), uploaded, ascending
        self._replay_after = 0
        self._last_poll = time.monotonic()
        self._nudged = False
        self._q: "queue.Queue[_Queued]" = queue.Queue()
        # requests that arrived while an L0 build ran and must wait for it
        # (close, seal, flush_memtable, abort); served first, in arrival order
        self._deferred: "collections.deque[_Queued]" = collections.deque()
        self._wal_busy = False  # the last WAL upload was large: go again at once
        self._cond = threading.Condition()
        self._failed: BaseException | None = None
        self._stopped = threading.Event()
        self._worker: threading.Thread | None = None
        self._server: ControlServer | None = None
        # what the worker does for each queued request (see _answer)
        self._work = {
            Request.FLUSH_WAL: self._flush_wal,
            Request.FLUSH_MEMTABLE: self._flush_memtable,
            Request.SEAL: self._seal,
            Request.CLOSE: self._flush_memtable,
            Request.INGEST: self._ingest,
        }
        self.stats = {"wal_uploads": 0, "l0_ssts": 0, "l0_flushes": 0, "manifest_updates": 0, "replayed": 0,
                      "l0_stalls": 0, "l0_slowdowns": 0, "l0_stall_seconds": 0.0, "wal_bytes": 0, "l0_bytes": 0}
        self.request_counts = None  # () -> {op: counts} of the store's requests (set by the flusher process)
        self._compactor_epoch_at_open = 0
        self._l0_probe = None  # a read-only ManifestStore for the backpressure wait
        self._hurry = False  # close or abort asked: no more backpressure waits
        from shaledb.flush.pacing import WritePacer

        self._pacer = WritePacer(self._set_pace_rate, compaction_threshold=options.l0_compaction_threshold,
                                 l0_max_ssts=options.l0_max_ssts, l0_sst_bytes=options.l0_sst_bytes,
                                 max_unflushed_bytes=options.max_unflushed_bytes)
        self._pace_probe = None  # a read-only ManifestStore for the pacer's polls (worker thread only)
        self._last_pace_poll = 0.0

    # ---- startup

    def recover(self) -> dict:
        """Fence older writers, replay the WAL into L0.  Returns open info."""
        from shaledb.manifest.store import ManifestStore
        from shaledb.flush.recovery import read_wal_runs

        self.mstore = ManifestStore(self.store, update_timeout=self.options.request_timeout)
        self.fp.hit("open-before-fence")
        fence_id = self.mstore.create_or_open_writer()
        self.fp.hit("open-before-replay")
        m = self.mstore.current
        self._compactor_epoch_at_open = m.compactor_epoch
        runs, nobj, _ = read_wal_runs(self.store, m.replay_after_wal_id + 1, fence_id, m.last_l0_seq)
        self.next_wal_id = fence_id + 1
        self._replay_after = fence_id
        replayed = sum(len(o) for _, o in runs)
        if runs and self._publish_l0(runs, gen_replay_after=fence_id, throttle=False):
            pass
        elif m.replay_after_wal_id < fence_id:
            self.mstore.publish_l0((), last_l0_seq=m.last_l0_seq, replay_after_wal_id=fence_id, next_wal_id=fence_id + 1)
        self.stats["replayed"] = replayed
        m = self.mstore.current
        log.info("flusher: writer epoch %d opened manifest %d; replayed %d records from %d WAL objects",
                 m.writer_epoch, self.mstore.manifest_id, replayed, nobj)
        self.durable_seq = m.last_l0_seq
        return {
            "last_seq": m.last_l0_seq,
            "writer_epoch": m.writer_epoch,
            "fence_wal_id": fence_id,
            "manifest_id": self.mstore.manifest_id,
            "replayed_records": replayed,
            "replayed_wal_objects": nobj,
        }

    def start(self, control: ControlAddress | None) -> None:
        self.pool.publish_durable(self.durable_seq)
        self.pool.publish_manifest_id(self.mstore.manifest_id)
        self._worker = threading.Thread(target=self._loop, name="shaledb-flusher", daemon=True)
        self._worker.start()
        if control is not None:
            self._server = ControlServer(control, self.handle)

    # ---- requests (control threads)

    def handle(self, op: int, args: tuple) -> Any:
        """Serve one control-channel request (on the caller's thread)."""
        try:
            op = Request(op)
        except ValueError:
            raise InvalidArgument(f"unknown flusher request {op!r}") from None
        if op is Request.STATUS:
            return self.status()
        if op is Request.AWAIT_DURABLE:
            seq = int(args[0])
            if self.durable_seq < seq and self._failed is None:
                self._nudge()  # group commit: upload now, not at the next tick
            return self._await_durable(seq, float(args[1]) if len(args) > 1 else self.options.request_timeout)
        if op is Request.ABORT or op is Request.CLOSE:
            self._hurry = True  # a backpressure wait in progress ends now
            self._pacer.stop()
        if op is Request.ABORT:
            if self._stopped.is_set():
                return True
        else:
            self._check_usable()
        if op is Request.PING:
            return True
        if op not in QUEUED:
            raise InvalidArgument(f"{op.name} is not a request a client may send")
        req = _Queued(op, args)
        self._q.put(req)
        timeout = self.options.close_timeout if op is Request.CLOSE else self.options.request_timeout
        if not req.done.wait(timeout):
            raise Unavailable(f"the flusher did not finish {op.name.lower()!r} within {timeout:g} s")
        if req.error is not None:
            raise req.error
        return req.result

    def _nudge(self) -> None:
        with self._cond:
            if self._nudged:
                return
            self._nudged = True
        self._q.put(_Queued(Request.TICK, ()))

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise _copy_error(self._failed)
        if self._stopped.is_set():
            raise Closed("the database is closed (its flusher has stopped)")

    def _await_durable(self, seq: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.durable_seq < seq:
                if self._failed is not None:
                    raise _copy_error(self._failed)
                if self._stopped.is_set():
                    raise Closed("the database closed before seq %d became durable" % seq)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(f"seq {seq} did not become durable within {timeout:g} s")
                self._cond.wait(min(left, 0.5))
            return self.durable_seq

    def status(self) -> dict:
        return {
            "durable_seq": self.durable_seq,
            "next_wal_id": self.next_wal_id,
            "failed": None if self._failed is None else f"{type(self._failed).__name__}: {self._failed}",
            "stopped": self._stopped.is_set(),
            "l0": len(self.mstore.current.l0) if self.mstore else 0,
            "pid": os.getpid(),
            # (id, Manifest): shaledb.status computes the tree's shape from it
            "manifest": (self.mstore.manifest_id, self.mstore.current) if self.mstore else None,
            "requests": self.request_counts() if self.request_counts else {},
            "write_pace_rate": self._pacer.rate,
            "write_paced_seconds": self.pool.paced_seconds() if self.pool is not None else 0.0,
            **self.stats,
        }

    # ---- worker

    def _loop(self) -> None:
        try:
            self._serve(building=False)
        finally:
            self._stopped.set()
            with self._cond:
                self._cond.notify_all()
            self._drain_queue()

    def _serve(self, *, building: bool) -> None:
        """The worker's request loop: serve queued requests, and do the
        periodic work every ``flush_interval`` (at once while the WAL has a
        backlog).

        At top level (``building`` False) every request is served, deferred
        ones first; returns after ABORT or a successful CLOSE.  While an L0
        build runs on a helper thread (``building``), only the WAL moves
        (periodic uploads, TICK, FLUSH_WAL); other requests are deferred, in
        order; returns when the build reports BUILT.
        REQUIRES: the worker thread.
        """
        interval = self.options.flush_interval
        next_tick = time.monotonic() + interval
        while True:
            req = self._next_request(next_tick, building)
            if req is None:  # the periodic work
                next_tick = time.monotonic() + interval
                self._wal_busy = False
                if self._failed is None:
                    try:
                        if building:
                            self._upload_wal()
                        else:
                            self._background_tick()
                        self._pace_tick()
                    except Exception as exc:  # noqa: BLE001 - retried next tick
                        self._note_error(exc)
                continue
            op = req.op
            if op is Request.BUILT:
                return
            if building and op not in SERVED_DURING_BUILD:
                self._deferred.append(req)
                continue
            if op is Request.TICK:  # a durable write is waiting: upload the WAL now
                with self._cond:
                    self._nudged = False
                if self._failed is None and self.options.wal:
                    try:
                        self._upload_wal()
                    except Exception as exc:  # noqa: BLE001 - retried next tick
                        self._note_error(exc)
                req.done.set()
                continue
            if op is Request.ABORT:  # stop without flushing (fenced or failed Db)
                req.result = True
                req.done.set()
                return
            self._answer(req)
            if op is Request.CLOSE and req.error is None:
                return

    def _next_request(self, next_tick: float, building: bool) -> "_Queued | None":
        """The next request to serve, or None when the periodic work is due.
        Deferred requests come first, except during a build."""
        if self._deferred and not building:
            return self._deferred.popleft()
        # never sleep while the WAL has a backlog: a large upload
        # means more records are probably waiting already
        wait = 0.0 if self._wal_busy else max(0.0, next_tick - time.monotonic())
        try:
            return self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
        except queue.Empty:
            return None

    def _answer(self, req: _Queued) -> None:
        """Do the work of ``req`` and answer it (its result or its error)."""
        try:
            if self._failed is not None:
                raise _copy_error(self._failed)
            req.result = self._work[req.op](*req.args)
        except BaseException as exc:  # noqa: BLE001 - answered to the caller
            self._note_error(exc)
            req.error = exc if isinstance(exc, ShaleDBError) else Internal(f"{type(exc).__name__}: {exc}")
        finally:
            req.done.set()

    def _drain_queue(self) -> None:
        while self._deferred:
            req = self._deferred.popleft()
            req.error = Closed("the flusher stopped")
            req.done.set()
        while True:
            try:
                req = self._q.get_nowait()
            except queue.Empty:
                return
            req.error = Closed("the flusher stopped")
            req.done.set()

    def _note_error(self, exc: BaseException) -> None:
        self.stats["errors"] = self.stats.get("errors", 0) + 1
        message, previous = f"{type(exc).__name__}: {exc}", self.stats.get("last_error")
        self.stats["last_error"] = message
        if self._failed is None and message != previous:  # once per distinct error, not per retry
            log.warning("flusher: %s", message, exc_info=None if isinstance(exc, ShaleDBError) else exc)
        if isinstance(exc, Fenced) and self._failed is None:
            self._failed = exc
            self.pool.publish_fenced()
            with self._cond:
                self._cond.notify_all()
        elif _permanent(exc) and self._failed is None:
            # ENOSPC, permission denied, bucket gone: retrying cannot help.
            # Every waiting and later call fails with it (status()["failed"]).
            self._failed = exc
            self.pool.publish_failed()
            with self._cond:
                self._cond.notify_all()

    def _flush_wal(self) -> int:
        if not self.options.wal:
            return self._flush_memtable()
        self._upload_wal()
        return self.durable_seq

    def _seal(self) -> bool:
        self.pool.seal()
        return True

    def _ingest(self, ssts) -> dict:
        """A bulk ingest (docs/bulk.md): ``ssts`` (SstRefs in key order, not
        overlapping, already verified by the caller) become one new sorted
        run whose records all read as one reserved seq ``S``.

        ``S`` is taken from the shared counter under the pool lock, so every
        write acknowledged before has a smaller seq and every later one a
        larger.  The memtable is then flushed to L0 (replay skips seq <=
        ``last_l0_seq``, which becomes >= ``S``: nothing below ``S`` may stay
        in the WAL only).  Then one fenced manifest update adds the run
        (id: the highest + 2, so a compaction planned before, which writes
        the highest + 1, still lands below it; reads compare seqs anyway).
        A failure before that update leaves the load invisible (``S`` is a
        gap); a repeat of a committed load changes nothing.
        """
        import dataclasses

        from shaledb.format.enums import ManifestFormat
        from shaledb.manifest.model import SortedRun

        ssts = tuple(ssts)
        if not ssts:
            raise InvalidArgument("ingest needs at least one SST")
        with self.pool.lock:  # reserve S: the same lock every append takes its seqs under
            seq = int(self.pool.counter[0])
            self.pool.counter[0] = seq + 1
        self._flush_memtable()
        self.fp.hit("ingest-before-commit")
        refs = tuple(dataclasses.replace(r, min_seq=seq, max_seq=seq, global_seq=seq) for r in ssts)
        ids = {r.sst_id for r in refs}
        box = {}

        def fn(m):
            present = ids & m.sst_ids()
            if present == ids:
                box["already"] = True
                return None  # committed before (a repeated request): nothing to do
            if present:
                raise InvalidArgument(f"{len(present)} of the {len(ids)} SSTs are already in the database, e.g. "
                                      f"{sorted(present)[0]}")
            run_id = (m.sorted_runs[0].run_id + 2) if m.sorted_runs else 1
            box["run_id"] = run_id
            return m.replace(
                sorted_runs=(SortedRun(run_id, refs),) + m.sorted_runs,
                last_l0_seq=max(m.last_l0_seq, seq),
                format_version=max(m.format_version, ManifestFormat.V2),
            )

        self.mstore.update(fn)
        self.stats["manifest_updates"] += 0 if box.get("already") else 1
        self.stats["ingests"] = self.stats.get("ingests", 0) + 1
        self._published()
        self._set_durable(seq)
        self.fp.hit("ingest-after-commit")
        return {
            "seq": seq,
            "run_id": box.get("run_id"),
            "ssts": len(refs),
            "records": sum(r.num_entries for r in refs),
            "bytes": sum(r.size for r in refs),
            "manifest_id": self.mstore.manifest_id,
            "already_ingested": bool(box.get("already")),
        }

    def _background_tick(self) -> None:
        now = time.monotonic()
        if now - self._last_poll >= self.options.manifest_poll_interval:
            self._last_poll = now
            before = self.mstore.manifest_id
            self.mstore.refresh()  # Fenced when a newer writer bumped the epoch
            if self.mstore.manifest_id != before:
                self._published()  # e.g. a compactor's update: readers re-read it
        if self.options.wal:
            self._upload_wal()
        if self.pool.active_bytes() >= self.options.l0_sst_bytes:
            self.pool.seal()
        if self.pool.has_sealed():
            self._flush_sealed()

    def _flush_memtable(self) -> int:
        self.pool.seal()
        if self.options.wal:
            self._upload_wal()
        self._flush_sealed()
        return self.durable_seq

    # ---- WAL

    def _upload_wal(self) -> None:
        """Upload a pending snapshot (a retry, same bytes and ids), then one new
        snapshot of everything appended so far; objects strictly in id order.

        One snapshot suffices for ``flush()``: it is taken after the request
        arrived, so it holds every write made before the call.
        """
        from shaledb.format.wal import encode_wal_view

        for _ in range(2):
            fresh = self._pending is None
            if fresh:
                snap = self.pool.wal_parts()  # one part per arena, nothing copied
                if snap is None:
                    return
                parts, token, max_seq = snap
                objs = []
                wid = self.next_wal_id
                total = 0
                for gen, buf, offs in parts:
                    for lo, hi in _cut(offs, _WAL_OBJECT_BYTES):
                        objs.append(_PendingWal(wid, None, gen, src=(buf, offs[lo:hi])))
                        wid += 1
                    total += int(offs[-1]) - int(offs[0])
                self._encode(objs, total, encode_wal_view)
                self._wal_busy = total >= _BUSY_WAL_BYTES
                self._pending = _PendingSnapshot(objs, token, max_seq)
            p = self._pending
            try:
                for obj in p.objects:
                    if obj.done:
                        continue
                    self._write_wal_object(obj.wal_id, obj.encoded())
                    obj.done = True
                    obj.data = b""
                    if obj.ahead is not None:
                        obj.ahead.release()  # the encoder may take the next one
                    self.next_wal_id = obj.wal_id + 1
                    self._wal_gens.append((obj.wal_id, obj.max_gen))
                    self.stats["wal_uploads"] += 1
            except BaseException:
                # the encoder thread reads shared memory: let it finish before
                # anyone may unmap the arenas (no longer held back: a retry
                # writes the snapshot's remaining objects as they are)
                for obj in p.objects:
                    if obj.ahead is not None:
                        obj.ahead.release()
                for obj in p.objects:
                    if obj.ready is not None:
                        obj.ready.wait()
                raise
            self.fp.hit("after-wal-upload")
            self._pending = None
            self.pool.wal_committed(p.token)
            self._set_durable(p.max_seq)
            if fresh:
                return
            # that was an older snapshot retried: take a new one too

    @staticmethod
    def _encode(objs, total: int, encode) -> None:
        """Encode the WAL objects of a snapshot (one copy of the records each,
        checksummed in place).  A large snapshot is encoded in order on a
        helper thread (kernels without the GIL) so the worker writes object
        k while object k+1 is being encoded, at most ``_WAL_ENCODE_AHEAD``
        objects ahead of the writes (a burst of appends does not become a
        copy of the whole burst in the flusher's memory)."""
        if total < _ASYNC_ENCODE_BYTES or len(objs) == 1:
            for o in objs:
                buf, offs = o.src
                o.data, o.src = encode(buf, offs), None
            return
        ahead = threading.Semaphore(_WAL_ENCODE_AHEAD)
        for o in objs:
            o.ready = threading.Event()
            o.ahead = ahead

        def run():
            for o in objs:
                ahead.acquire()  # released as an object is written (or all at once on a failure)
                try:
                    o.data = encode(*o.src)
                except BaseException as exc:  # noqa: BLE001 - raised on the worker
                    o.error = exc
                o.src = None
                o.ready.set()

        threading.Thread(target=run, name="shaledb-wal-encode", daemon=True).start()

    def _write_wal_object(self, wal_id: int, data: bytes) -> None:
        # Create-only; the manifest store reuses one put-id per WAL id, so an
        # ambiguous earlier attempt that landed is recognised as ours.
        self.mstore.write_wal(wal_id, data)
        self.stats["wal_bytes"] += len(data)

    def _set_durable(self, seq: int) -> None:
        if seq > self.durable_seq:
            with self._cond:
                self.durable_seq = seq
                self._cond.notify_all()
            self.pool.publish_durable(seq)

    # ---- L0

    def _flush_sealed(self) -> None:
        for gen in self.pool.sealed_generations():
            if self.options.wal:
                # L0 never leads the WAL: every record of this generation is uploaded.
                self._upload_wal()
            replay_after = self._replay_point(gen.number)
            self.pool.begin_flush(gen)
            # gen.runs() (a scan of the sealed arenas) runs inside the L0 build,
            # off the worker thread, not ahead of the WAL upload
            if self._publish_l0(gen.runs, gen_replay_after=replay_after):
                pass
            elif replay_after > self._replay_after:
                m = self.mstore.current
                self.mstore.publish_l0(
                    (), last_l0_seq=m.last_l0_seq, replay_after_wal_id=replay_after, next_wal_id=self.next_wal_id
                )
                self.stats["manifest_updates"] += 1
                self._published()
                self.fp.hit("after-manifest")
            self._replay_after = max(self._replay_after, replay_after)
            self.pool.release(gen)
            self.stats["l0_flushes"] += 1
            if not self.options.wal:
                self._set_durable(self.mstore.current.last_l0_seq)

    def _replay_point(self, gen_number: int) -> int:
        """The last WAL id below which every object holds only generations <= gen_number."""
        point = self._replay_after
        keep = []
        blocked = False
        for wal_id, max_gen in self._wal_gens:
            if not blocked and max_gen <= gen_number:
                point = wal_id
            else:
                blocked = True
                keep.append((wal_id, max_gen))
        self._wal_gens = keep
        return point

    def _publish_l0(self, runs, *, gen_replay_after: int, throttle: bool = True) -> bool:
        """Sort, dedupe and encode ``runs`` (a list of record runs, or a
        callable returning one) into L0 SSTs, upload them and publish them in
        one manifest update.  False (nothing written) when there are no records.
        With ``throttle``, the new SSTs wait for room in L0 first
        (:meth:`_await_l0_room`; Unavailable when none comes)."""
        from shaledb.kernels.dedupe import dedupe_sorted
        from shaledb.kernels.sort import concat_runs, sort_records
        from shaledb.manifest.model import SstRef
        from shaledb.sst.writer import build_ssts

        def build():
            rs = [_trim(b, o) for b, o in (runs() if callable(runs) else runs) if len(o)]
            if not rs:
                return None
            if len(rs) == 1:
                buf, offs = rs[0]
            else:
                buf, offs = concat_runs(rs)
            offs = sort_records(buf, offs)
            offs, key_hashes = dedupe_sorted(buf, offs, key_hashes=True)  # one hash per key per flush
            ssts = build_ssts(
                buf,
                offs,
                key_hashes=key_hashes,
                target_bytes=self.options.l0_sst_bytes,
                block_size=self.options.block_size,
                bloom_bits_per_key=self.options.bloom_bits_per_key,
                compression=self.options.compression,
            )
            if throttle:
                self._await_l0_room()  # on the build thread: the WAL keeps moving meanwhile
            return ssts

        ssts = self._build_serving_wal(build)
        if ssts is None:
            return False
        refs = []
        for sst_id, data, info in ssts:
            self.store.put(sst_key(sst_id), data)
            refs.append(SstRef.from_info(info))
        self.fp.hit("after-sst-upload")
        max_seq = max(r.max_seq for r in refs)
        # newest first; the SSTs of one generation do not overlap in key
        self.mstore.publish_l0(
            tuple(reversed(refs)),
            last_l0_seq=max_seq,
            replay_after_wal_id=gen_replay_after,
            next_wal_id=self.next_wal_id,
        )
        self.stats["manifest_updates"] += 1
        self.stats["l0_ssts"] += len(refs)
        self.stats["l0_bytes"] += sum(r.size for r in refs)
        self._published()
        self._pace_observe(self.mstore.manifest_id, self.mstore.current)
        self.fp.hit("after-manifest")
        return True

    def _throttled(self) -> bool:
        """Whether a compactor tends L0: ``Options.compactor``, or one opened
        the database since this writer did (its epoch rose: a standalone
        compactor is running).  Without one, L0 grows as it always did."""
        if self.options.compactor:
            return True
        return self.mstore.current.compactor_epoch > self._compactor_epoch_at_open

    def _await_l0_room(self) -> None:
        """Backpressure before a new L0 (docs/compaction.md, "Backpressure").

        Below ``l0_max_ssts - L0_SLOW_MARGIN`` L0 SSTs: no wait.  From there
        up to the limit: one short pause that grows with the count (the
        compactor gets a head start; writers slow down before they stop).
        At the limit: re-read the manifest every ``L0_STALL_POLL`` until the
        compactor brought L0 below it, for at most half of
        ``request_timeout`` (so the flusher's own error, not the caller's
        timeout, reaches a waiting ``flush()``); then Unavailable, which is
        not a failure: the next tick tries again.  Close and abort skip it.
        Reads only (a separate read-only manifest handle), so it may run on
        the L0 build thread.  REQUIRES: one caller at a time.
        """
        if self._hurry or not self._throttled():
            return
        limit = self.options.l0_max_ssts
        slow = max(1, limit - L0_SLOW_MARGIN)
        if len(self.mstore.current.l0) < slow:
            return
        from shaledb.manifest.store import ManifestStore

        if self._l0_probe is None:
            self._l0_probe = ManifestStore(self.store, update_timeout=self.options.request_timeout)
        t0 = time.monotonic()
        deadline = t0 + self.options.request_timeout / 2
        stalled = False
        try:
            while not self._hurry:
                m = self._l0_probe.refresh()
                self._pace_observe(self._l0_probe.manifest_id, m)
                n = len(m.l0)
                if n < slow:
                    return
                if n < limit:
                    if not stalled:
                        self.stats["l0_slowdowns"] += 1
                        time.sleep(L0_SLOW_STEP * (n - slow + 1))
                    return
                if not stalled:
                    stalled = True
                    self.stats["l0_stalls"] += 1
                    log.info("flusher: L0 is full (%d SSTs, l0_max_ssts=%d): waiting for the compactor", n, limit)
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"L0 is full ({n} SSTs, Options.l0_max_ssts={limit}) and the compactor is not keeping up: "
                        f"no room within {self.options.request_timeout / 2:g} s (the flusher keeps trying)"
                    )
                time.sleep(L0_STALL_POLL)
        finally:
            self.stats["l0_stall_seconds"] += time.monotonic() - t0

    def _set_pace_rate(self, rate: int) -> None:
        if self.pool is not None:
            self.pool.set_pace_rate(rate)

    def _pace_observe(self, manifest_id: int, manifest) -> None:
        """Feed a manifest and the arenas' unflushed bytes to the write pacer
        (flush/pacing.py) when a compactor tends L0 and no close or abort is
        under way."""
        if not self._hurry and self._throttled():
            self._pacer.observe(manifest_id, manifest, self.pool.unflushed_bytes())

    def _pace_tick(self) -> None:
        """Every tick: the pacer sees the unflushed bytes of now.  While
        writes are paced, or L0 is one short of the pacing mark, the
        manifest is also re-read every PACE_POLL seconds, so a compaction
        that landed lifts or raises the rate without waiting for this
        flusher's next publish.  REQUIRES: the worker thread."""
        if self.pool is not None:
            self.pool.pace_seen()  # (writers pace themselves only when this goes stale)
        if self._hurry or self.mstore is None or not self._throttled():
            return
        p = self._pacer
        now = time.monotonic()
        if (p.rate or p.l0 >= p.mark - 1) and now - self._last_pace_poll >= PACE_POLL:
            self._last_pace_poll = now
            from shaledb.manifest.store import ManifestStore

            if self._pace_probe is None:
                self._pace_probe = ManifestStore(self.store, update_timeout=self.options.request_timeout)
            m = self._pace_probe.refresh()
            self._pace_observe(self._pace_probe.manifest_id, m)
        else:
            self._pace_observe(self.mstore.manifest_id, self.mstore.current)

    def _build_serving_wal(self, build):
        """Run ``build()`` (the L0 sort/dedupe/encode: kernels without the GIL,
        no store writes) on a helper thread while this, the worker thread,
        keeps the WAL moving: periodic uploads, group-commit nudges and
        ``flush_wal`` requests are served meanwhile, so a flush never waits
        behind an L0 build.  Every store write stays on the worker thread.
        Other requests wait (in order) until the build is done."""
        if threading.current_thread() is not self._worker or not self.options.wal:
            return build()
        box: dict = {}

        def run():
            try:
                box["result"] = build()
            except BaseException as exc:  # noqa: BLE001 - re-raised on the worker
                box["error"] = exc
            finally:
                self._q.put(_Queued(Request.BUILT, ()))

        t = threading.Thread(target=run, name="shaledb-l0-build", daemon=True)
        t.start()
        self._serve(building=True)
        t.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _published(self) -> None:
        """Tell readers (through shared memory) that a newer manifest exists."""
        self.pool.publish_manifest_id(self.mstore.manifest_id)

    # ---- shutdown

    def wait_stopped(self, poll: float = 0.2) -> None:
        """Block until a close or abort request stopped the worker.  (A dead
        parent is handled by the process's parent watch, which exits.)"""
        while not self._stopped.wait(poll):
            pass

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._worker is not None and self._worker.is_alive():
            self._q.put(_Queued(Request.ABORT, ()))  # the worker stops without flushing
            if threading.current_thread() is not self._worker:
                self._worker.join(10)
            self._stopped.set()


def _cut(offs: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """Index ranges of ``offs`` (ascending record offsets) of about ``chunk`` bytes each."""
    n = len(offs)
    span = int(offs[-1]) - int(offs[0])
    if span < chunk:
        return [(0, n)]
    bounds = np.searchsorted(offs, int(offs[0]) + np.arange(chunk, span + 1, chunk, dtype=np.int64))
    cuts = [0, *sorted({int(b) for b in bounds if 0 < b < n}), n]
    return list(zip(cuts[:-1], cuts[1:]))


def _trim(buf: np.ndarray, offs: np.ndarray):
    """The byte range of ``buf`` its records occupy (offsets rebased), so that
    concatenating arenas copies records, not whole segments."""
    lo = int(offs.min())
    last = int(offs.max())
    klen, vlen, _trailer = HEADER.unpack_from(buf, last)
    hi = last + record_size(klen, vlen)
    return buf[lo:hi], (offs - lo).astype(np.int64, copy=False)


def _permanent(exc: BaseException) -> bool:
    """A store error that no retry can fix (not Unavailable, not a lost
    condition or a missing object, which the manifest store interprets)."""
    return isinstance(exc, StorageError) and not isinstance(exc, (ObjectNotFound, PreconditionFailed))


def _copy_error(exc: BaseException) -> BaseException:
    return type(exc)(str(exc)) if isinstance(exc, ShaleDBError) else Internal(str(exc))
