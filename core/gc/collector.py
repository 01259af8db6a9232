"""One garbage-collection pass over a database root (docs/gc.md).

What may go, in the order a pass decides it:

1. Expired checkpoints leave the manifest (a reader-role update: GC never
   fences a writer or compactor).
2. The pass LISTS the bucket, and only then reads the latest manifest ``M``.
   Every object in the listing was uploaded before ``M`` was read, so its
   minter had opened (and set its SST watermark) in ``M`` or earlier.
3. Live manifests: ``M``, every manifest a checkpoint of ``M`` pins, and every
   older manifest that stopped being the latest less than ``min_age`` ago
   (a reader in another process may still be scanning it).
4. SSTs: deleted when no live manifest references them, their id is below
   ``min(writer watermark, compactor watermark)`` of ``M`` (so no running
   flush or compaction can still publish them), they are not in
   ``inflight``, and both their ULID time and their ``last_modified`` are
   older than ``min_age``.
5. WAL objects: non-empty ones at or below ``M.replay_after_wal_id`` and
   outside every live manifest's replay range (for a manifest in the
   ``min_age`` window: everything above its replay point, which its
   readers tail).  Zero-byte fences always stay.
6. Manifests: not the latest, not pinned, and whose successor is older than
   ``max(min_age, MIN_MANIFEST_AGE)`` (probing handles with a cached id rely
   on recent versions existing; see shaledb.manifest.versioned).

Thread safety: a pass holds no state between calls; concurrent passes are
safe (deletes are idempotent) but wasteful.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shaledb.errors import InvalidArgument, ObjectNotFound
from shaledb.failpoints import Failpoints
from shaledb.format.keys import (
    COMPACTED_PREFIX,
    MANIFEST_PREFIX,
    WAL_PREFIX,
    manifest_key,
    parse_manifest_key,
    parse_sst_key,
    parse_wal_key,
)
from shaledb.manifest.model import Manifest, SstWatermark, decode_manifest, ulid_to_bytes
from shaledb.manifest.store import ManifestStore
from shaledb.manifest.versioned import SystemClock

__all__ = ["MIN_MANIFEST_AGE", "GcResult", "collect"]

#: Manifests are kept at least this long after a newer one exists, whatever
#: ``min_age`` says: it must exceed every handle's ``max_cache_age`` (60 s by
#: default) plus clock skew, or a handle probing from a cached id could take
#: a deleted id for the end of the sequence and re-create it.
MIN_MANIFEST_AGE = 300.0

_KINDS = ("wal", "sst", "manifest")


@dataclass
class GcResult:
    """What a pass deleted (or, with ``dry_run``, would delete), by kind.

    ``keys[kind]`` lists the object keys; ``counts``/``bytes`` sum them.
    ``expired_checkpoints``: ids dropped from the manifest (not done in a
    dry run).  ``skipped``: reasons a kind was not collected at all.
    """

    dry_run: bool = False
    keys: dict = field(default_factory=lambda: {k: [] for k in _KINDS})
    bytes: dict = field(default_factory=lambda: {k: 0 for k in _KINDS})
    expired_checkpoints: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    @property
    def counts(self) -> dict:
        return {k: len(v) for k, v in self.keys.items()}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _add(self, kind: str, key: str, size: int) -> None:
        self.keys[kind].append(key)
        self.bytes[kind] += size


class _FixedClock(SystemClock):
    """The system clock with wall time replaced by the pass's ``now``."""

    def __init__(self, now: float):
        self._now_ms = int(now * 1000)

    def now_ms(self) -> int:
        return self._now_ms


def _ulid_ms(sst_id: str) -> int:
    return int.from_bytes(ulid_to_bytes(sst_id)[:6], "big")


def _cutoff(m: Manifest) -> tuple[str | None, str | None]:
    """The SST id below which no running publisher can still publish, or
    (None, reason) when some role gives no usable promise."""
    cut: str | None = None
    for role, epoch, wm in (
        ("writer", m.writer_epoch, m.writer_sst_watermark),
        ("compactor", m.compactor_epoch, m.compactor_sst_watermark),
    ):
        if wm is None and epoch == 0:
            continue  # this role never opened: it has nothing in flight
        if not isinstance(wm, SstWatermark) or wm.epoch != epoch:
            return None, f"the {role} of epoch {epoch} set no SST watermark"
        cut = wm.sst_id if cut is None else min(cut, wm.sst_id)
    return cut, None


def collect(
    store,
    *,
    min_age: float,
    now: float | None = None,
    dry_run: bool = False,
    inflight=frozenset(),
    failpoints: Failpoints | str = "",
) -> GcResult:
    """Run one GC pass over ``store`` (a database root); see the module docstring.

    ``min_age`` (seconds, >= 0): how long an object stays after it could
    first be collected (readers mid-scan on an older manifest are safe for
    that long).  ``now``: POSIX seconds (default: the wall clock).
    ``inflight``: SST ids some publisher in this process has uploaded and
    not yet published (kept whatever the watermarks say).  ``dry_run``:
    report, change nothing.  Returns a :class:`GcResult`.
    """
    if isinstance(min_age, bool) or not isinstance(min_age, (int, float)) or not min_age >= 0:
        raise InvalidArgument(f"min_age must be a number of seconds >= 0, got {min_age!r}")
    now = time.time() if now is None else float(now)
    fp = failpoints if isinstance(failpoints, Failpoints) else Failpoints(failpoints)
    inflight = frozenset(inflight)
    res = GcResult(dry_run=dry_run)
    ms = ManifestStore(store, clock=_FixedClock(now))
    if not ms.exists():
        raise InvalidArgument(f"no ShaleDB database at {store!r} (no manifest)")

    # 1. expired checkpoints leave the manifest first
    now_ms = int(now * 1000)
    expired = [c.id for c in ms.current.checkpoints if c.expired(now_ms)]
    if expired:
        res.expired_checkpoints = expired
        if not dry_run:
            gone = set(expired)
            ms.update(
                lambda m: m.replace(checkpoints=tuple(c for c in m.checkpoints if c.id not in gone)),
                drop_checkpoints=gone,
            )

    # 2. list, then read the latest manifest
    manifests = {}
    for meta in store.list(MANIFEST_PREFIX):
        i = parse_manifest_key(meta.key)
        if i is not None:
            manifests[i] = meta
    wals = [(parse_wal_key(m.key), m) for m in store.list(WAL_PREFIX)]
    ssts = [(parse_sst_key(m.key), m) for m in store.list(COMPACTED_PREFIX)]
    latest = ms.refresh()
    if dry_run and expired:
        gone = set(expired)
        latest = latest.replace(checkpoints=tuple(c for c in latest.checkpoints if c.id not in gone))
    latest_id = ms.manifest_id

    # 3. live manifests
    pinned = {c.manifest_id for c in latest.checkpoints}
    ids = sorted(i for i in manifests if i < latest_id)
    succ_time = {}  # manifest id -> when it stopped being the latest
    for a, b in zip(ids, ids[1:] + [latest_id]):
        succ_time[a] = manifests[b].last_modified if b in manifests else now
    window = {i for i in ids if succ_time[i] > now - min_age}
    if min_age > 0:  # written after the listing and already superseded: just now
        window |= set(range(max(manifests, default=0) + 1, latest_id))
    live: dict[int, Manifest] = {latest_id: latest}
    complete = True
    for i in sorted((pinned | window) - {latest_id}):
        try:
            live[i] = decode_manifest(store.get(manifest_key(i)), manifest_key(i))
        except ObjectNotFound:
            if i in pinned:
                complete = False  # a pin on a missing manifest: do not guess what it needed
    if not complete:
        res.skipped.append("a checkpoint pins a manifest that is missing: no SST or WAL collected")

    # 4. SSTs
    if complete:
        cut, why = _cutoff(latest)
        if cut is None:
            res.skipped.append(f"SSTs: {why}")
        else:
            referenced = set()
            for m in live.values():
                referenced |= m.sst_ids()
            age_ms = now_ms - int(min_age * 1000)
            for sid, meta in ssts:
                if sid is None or sid in referenced or sid in inflight or sid >= cut:
                    continue
                if _ulid_ms(sid) > age_ms or meta.last_modified > now - min_age:
                    continue
                res._add("sst", meta.key, meta.size)

    # 5. WAL objects (never a zero-byte fence).  A pinned manifest needs its
    # range; a reader of a recently superseded one tails the WAL past its
    # next_wal_id (objects written after it), so it keeps everything above
    # its replay point until it leaves the window.
    if complete:
        keep = [(m.replay_after_wal_id, m.next_wal_id) for i, m in live.items() if m is not latest]
        tails = [m.replay_after_wal_id for i, m in live.items() if m is not latest and i in window]
        for wid, meta in wals:
            if wid is None or meta.size == 0 or wid > latest.replay_after_wal_id:
                continue
            if any(lo < wid <= hi for lo, hi in keep) or any(lo < wid for lo in tails):
                continue
            res._add("wal", meta.key, meta.size)

    # 6. manifests
    keep_for = max(min_age, MIN_MANIFEST_AGE)
    for i in ids:
        if i in pinned or i in window or succ_time[i] > now - keep_for:
            continue
        res._add("manifest", manifests[i].key, manifests[i].size)

    if not dry_run:
        first = True
        for kind in ("sst", "wal", "manifest"):  # manifests oldest first
            for key in res.keys[kind]:
                store.delete(key)
                if first:
                    fp.hit("gc-mid-delete")
                    first = False
    return res
