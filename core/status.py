"""What ``Db.status()`` returns, and the shape of a tree read from one
manifest (docs/operations.md, "Watching it").

* :func:`tree_shape` is pure: a manifest in, a :class:`TreeShape` out (L0
  and sorted runs, WAL range, epochs, and the compaction backlog the
  default size-tiered scheduler sees).  ``Db.status()`` computes it from the
  flusher's manifest; ``shaledb info`` from the latest one in the store.
* :class:`DbStatus` nests a :class:`TreeShape`, a :class:`FlusherStatus`
  (WAL and L0 upload counters, store requests by kind), a
  :class:`StallStatus` and a :class:`CompactorStatus` (None when
  ``Options.compactor`` is off).  Counters count from the open of this
  ``Db`` (they are not persisted; a reopen starts at zero).
* Every class is a frozen dataclass (safe to share between threads).
  ``status["l0_stalls"]`` and the other flat names of the earlier dict
  (:data:`LEGACY_KEYS`) still work on a :class:`DbStatus`, and field names
  on a :class:`CompactorStatus`; new code should use attributes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from shaledb.manifest.model import Manifest

__all__ = [
    "LEGACY_KEYS",
    "Backlog",
    "CompactorStatus",
    "DbStatus",
    "FlusherStatus",
    "ManifestWatch",
    "RequestCount",
    "RunShape",
    "StallStatus",
    "TreeShape",
    "WalRange",
    "compactor_status",
    "db_status",
    "tree_shape",
]


class _ByName:
    """``obj["field"]`` and ``obj.get("field", default)`` for scripts written
    against the dicts ``status()`` returned before it was typed."""

    def _lookup(self, key: str) -> Any:
        if not isinstance(key, str) or key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def __getitem__(self, key: str) -> Any:
        return self._lookup(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self._lookup(key)
        except KeyError:
            return default

    def as_dict(self) -> dict:
        """Plain data (nested dicts; keys stay bytes)."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------ tree shape


@dataclass(frozen=True)
class RunShape(_ByName):
    """L0 (``run_id`` None) or one sorted run: SST count, bytes, entries and
    key range (None when empty)."""

    run_id: int | None
    ssts: int
    bytes: int
    entries: int
    first_key: bytes | None
    last_key: bytes | None


@dataclass(frozen=True)
class WalRange(_ByName):
    """The WAL as the manifest records it: objects with ids in
    ``(replay_after_id, next_id)`` hold records not yet in L0 (a running
    writer may have uploaded more since its last manifest update)."""

    replay_after_id: int
    next_id: int


@dataclass(frozen=True)
class Backlog(_ByName):
    """Compaction work waiting: the jobs the default size-tiered scheduler
    (docs/compaction.md) would run on this manifest, their sources and input
    bytes.  Zero jobs: the tree is in shape."""

    jobs: int
    sources: int
    bytes: int


@dataclass(frozen=True)
class TreeShape(_ByName):
    """The shape of a database in one manifest."""

    manifest_id: int
    format_version: int
    writer_epoch: int
    compactor_epoch: int
    last_l0_seq: int
    wal: WalRange
    l0: RunShape
    sorted_runs: tuple[RunShape, ...]
    checkpoints: int
    backlog: Backlog

    @property
    def ssts(self) -> int:
        """SSTs the manifest references (L0 and runs)."""
        return self.l0.ssts + sum(r.ssts for r in self.sorted_runs)

    @property
    def bytes(self) -> int:
        """Bytes of the SSTs the manifest references."""
        return self.l0.bytes + sum(r.bytes for r in self.sorted_runs)


def _run_shape(run_id: int | None, ssts) -> RunShape:
    ssts = tuple(ssts)
    return RunShape(
        run_id=run_id,
        ssts=len(ssts),
        bytes=sum(s.size for s in ssts),
        entries=sum(s.num_entries for s in ssts),
        first_key=min(s.first_key for s in ssts) if ssts else None,
        last_key=max(s.last_key for s in ssts) if ssts else None,
    )


def tree_shape(manifest: Manifest, manifest_id: int, *, l0_compaction_threshold: int | None = None) -> TreeShape:
    """The :class:`TreeShape` of ``manifest`` (version ``manifest_id``).

    The backlog is what a ``SizeTieredScheduler(l0_threshold=
    l0_compaction_threshold)`` would plan (default: ``Options``' default).
    Pure: no I/O.
    """
    from shaledb.compact.scheduler import SizeTieredScheduler, job_ssts
    from shaledb.options import Options

    m = manifest
    threshold = Options.l0_compaction_threshold if l0_compaction_threshold is None else l0_compaction_threshold
    jobs = SizeTieredScheduler(l0_threshold=threshold).plan(m)
    sources = [s for j in jobs for s in job_ssts(m, j)]
    return TreeShape(
        manifest_id=int(manifest_id),
        format_version=int(m.format_version),
        writer_epoch=m.writer_epoch,
        compactor_epoch=m.compactor_epoch,
        last_l0_seq=m.last_l0_seq,
        wal=WalRange(replay_after_id=m.replay_after_wal_id, next_id=m.next_wal_id),
        l0=_run_shape(None, m.l0),
        sorted_runs=tuple(_run_shape(r.run_id, r.ssts) for r in m.sorted_runs),
        checkpoints=len(m.checkpoints),
        backlog=Backlog(
            jobs=len(jobs),
            sources=sum(j.num_sources for j in jobs),
            bytes=sum(s.size for src in sources for s in src),
        ),
    )


# -------------------------------------------------------------- processes


@dataclass(frozen=True)
class RequestCount(_ByName):
    """Store requests of one kind (``get``, ``put``, ``list`` ...) the
    flusher made, retries included."""

    count: int
    errors: int
    bytes_written: int
    bytes_read: int


@dataclass(frozen=True)
class FlusherStatus(_ByName):
    """The flusher: the one writer of the store for this writer epoch.

    ``failed`` is ``"Kind: message"`` once it failed for good (the Db then
    raises it), ``last_error`` the latest error it retried or gave up on.
    ``requests`` is empty when the flusher runs as a thread (``memory://``).
    """

    pid: int
    stopped: bool
    failed: str | None
    last_error: str | None
    errors: int
    next_wal_id: int
    wal_uploads: int
    wal_bytes: int
    l0_flushes: int
    l0_ssts: int
    l0_bytes: int
    manifest_updates: int
    replayed: int
    requests: Mapping[str, RequestCount] = field(default_factory=dict)


@dataclass(frozen=True)
class StallStatus(_ByName):
    """Writer backpressure on a full L0 (docs/compaction.md), since this
    Db opened: ``slowdowns`` short pauses near the limit, ``stalls`` waits at
    the limit, ``seconds`` spent in both (by the flusher, before new L0
    SSTs).  Write pacing (flush/pacing.py): ``pace_rate`` the bytes/s the
    writers may append together now (0: not paced), ``paced_seconds`` the
    seconds writers waited for their turn in it, summed over writers."""

    stalls: int
    slowdowns: int
    seconds: float
    pace_rate: int = 0
    paced_seconds: float = 0.0


@dataclass(frozen=True)
class CompactorStatus(_ByName):
    """The compactor service of this Db (since it started).

    ``alive`` False: its process died (``last_error`` says how); the other
    fields are then zero.  ``fenced``: another compactor opened the
    database and this one stopped.  ``l0`` and ``sorted_runs`` are counts in
    the last manifest the compactor saw.
    """

    alive: bool
    pid: int | None = None
    epoch: int | None = None
    fenced: bool = False
    compactions: int = 0
    jobs: int = 0
    trivial_moves: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    compaction_seconds: float = 0.0
    gc_runs: int = 0
    gc_deleted: Mapping[str, int] = field(default_factory=dict)
    gc_bytes: Mapping[str, int] = field(default_factory=dict)
    inflight_ssts: int = 0
    l0: int = 0
    sorted_runs: int = 0
    last_error: str | None = None


#: flat key of the pre-typed ``status()`` dict -> attribute path on DbStatus
LEGACY_KEYS: dict[str, str] = {
    "durable_seq": "durable_seq",
    "next_wal_id": "flusher.next_wal_id",
    "failed": "flusher.failed",
    "stopped": "flusher.stopped",
    "pid": "flusher.pid",
    "last_error": "flusher.last_error",
    "errors": "flusher.errors",
    "wal_uploads": "flusher.wal_uploads",
    "l0_ssts": "flusher.l0_ssts",
    "l0_flushes": "flusher.l0_flushes",
    "manifest_updates": "flusher.manifest_updates",
    "replayed": "flusher.replayed",
    "l0": "tree.l0.ssts",
    "l0_stalls": "stall.stalls",
    "l0_slowdowns": "stall.slowdowns",
    "l0_stall_seconds": "stall.seconds",
    "write_pace_rate": "stall.pace_rate",
    "write_paced_seconds": "stall.paced_seconds",
    "compactor": "compactor",
}


@dataclass(frozen=True)
class DbStatus(_ByName):
    """``Db.status()``: see the module docstring and docs/operations.md.

    ``durable_seq``: every write with a sequence number up to it is durable
    (in a WAL object, or in L0 with the WAL off).  ``tree``: the shape in the
    flusher's latest manifest.
    """

    durable_seq: int
    tree: TreeShape
    flusher: FlusherStatus
    stall: StallStatus
    compactor: CompactorStatus | None

    def _lookup(self, key: str) -> Any:
        path = LEGACY_KEYS.get(key) if isinstance(key, str) else None
        if path is None:
            return super()._lookup(key)
        obj: Any = self
        for part in path.split("."):
            if obj is None:
                return None
            obj = getattr(obj, part)
        return obj


class ManifestWatch:
    """Reads the latest manifest of a store for ``Db.status()``, within a
    short deadline (a store that does not answer leaves the caller with the
    flusher's view instead of a wait).  A reader-role handle: never writes.
    Safe to share between threads (one read at a time)."""

    def __init__(self, store, timeout: float = 2.0):
        import threading

        self.store = store
        self.timeout = timeout
        self._ms = None
        self._lock = threading.Lock()

    def latest(self) -> tuple[int, Manifest] | None:
        """``(id, manifest)``, or None when it could not be read in time."""
        from shaledb.errors import ShaleDBError
        from shaledb.manifest.store import ManifestStore
        from shaledb.storage.wrappers import call_deadline

        try:
            with self._lock, call_deadline(self.timeout):
                if self._ms is None:
                    self._ms = ManifestStore(self.store)
                m = self._ms.refresh()
                return self._ms.manifest_id, m
        except ShaleDBError:
            return None


def _int(d: Mapping, k: str) -> int:
    return int(d.get(k) or 0)


def compactor_status(d: Mapping | None) -> CompactorStatus | None:
    """A :class:`CompactorStatus` from the compactor service's STATUS answer
    (a dict; None when there is no compactor)."""
    if d is None:
        return None
    names = {f.name for f in dataclasses.fields(CompactorStatus)}
    return CompactorStatus(**{k: v for k, v in d.items() if k in names})


def db_status(
    flusher: Mapping,
    compactor: Mapping | None,
    *,
    latest: tuple[int, Manifest] | None = None,
    l0_compaction_threshold: int | None = None,
) -> DbStatus:
    """A :class:`DbStatus` from the flusher's STATUS answer (a dict with its
    counters and ``manifest``: ``(id, Manifest)``) and the compactor's.  The
    tree is the newer of the flusher's manifest and ``latest`` (the flusher
    sees compactions only at its next manifest update)."""
    f = flusher
    mid, m = max((x for x in (f.get("manifest"), latest) if x), key=lambda x: x[0], default=(0, Manifest()))
    reqs = {
        op: RequestCount(int(r["count"]), int(r["errors"]), int(r["bytes_written"]), int(r["bytes_read"]))
        for op, r in (f.get("requests") or {}).items()
    }
    return DbStatus(
        durable_seq=_int(f, "durable_seq"),
        tree=tree_shape(m, mid, l0_compaction_threshold=l0_compaction_threshold),
        flusher=FlusherStatus(
            pid=_int(f, "pid"),
            stopped=bool(f.get("stopped")),
            failed=f.get("failed"),
            last_error=f.get("last_error"),
            errors=_int(f, "errors"),
            next_wal_id=_int(f, "next_wal_id"),
            wal_uploads=_int(f, "wal_uploads"),
            wal_bytes=_int(f, "wal_bytes"),
            l0_flushes=_int(f, "l0_flushes"),
            l0_ssts=_int(f, "l0_ssts"),
            l0_bytes=_int(f, "l0_bytes"),
            manifest_updates=_int(f, "manifest_updates"),
            replayed=_int(f, "replayed"),
            requests=reqs,
        ),
        stall=StallStatus(
            stalls=_int(f, "l0_stalls"),
            slowdowns=_int(f, "l0_slowdowns"),
            seconds=float(f.get("l0_stall_seconds") or 0.0),
            pace_rate=_int(f, "write_pace_rate"),
            paced_seconds=float(f.get("write_paced_seconds") or 0.0),
        ),
        compactor=compactor_status(compactor),
    )
