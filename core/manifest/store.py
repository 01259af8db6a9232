"""The manifest store: fenced, versioned manifests of one database root.

This module plugs the manifest (:mod:`shaledb.manifest.model`) into the generic
versioned object (:mod:`shaledb.manifest.versioned`): the codec, the epoch fields and
the invariants checked before every write.  One :class:`ManifestStore` is a
handle in one of three roles:

* **writer** (``ManifestStore.open_writer(store)``): creates manifest 1 in an
  empty root, bumps ``writer_epoch``, writes a zero-byte fence at the first
  free WAL id after ``replay_after_wal_id`` and refreshes.  It owns the WAL
  (``write_wal``), L0 additions, ``next_wal_id``, ``replay_after_wal_id`` and
  ``last_l0_seq`` (``publish_l0``).
* **compactor** (``ManifestStore.open_compactor(store)``): bumps
  ``compactor_epoch``; owns the sorted runs and L0 removals
  (``apply_compaction``).
* **reader** (``ManifestStore(store)`` then ``refresh()``): follows the
  latest manifest; may add or remove checkpoints; never fences.

Every update is a pure function of the latest manifest, re-applied when
another writer wins the race, so a writer update and a compactor update that
collide merge (each re-applies its own change on top of the other's) instead
of failing.  What each role may change is checked before every write.

Invariants checked before every write (``check_transition``):

* epochs, ``next_wal_id``, ``replay_after_wal_id``, ``last_l0_seq`` and the
  format version never go back; ``replay_after_wal_id < next_wal_id``;
* L0 changes only by adding new SSTs at the front (newest first) and by
  removing its oldest entries; an SST id is never reused (not present in the
  previous manifest, nor retired from an earlier one this handle has seen);
  an SST entry never changes;
* a checkpoint never disappears unless it expired (injected clock) or was
  removed explicitly, so no SST a checkpoint references (through the
  manifest it pins) is ever released; a checkpoint pins an id that exists;
* a writer never touches sorted runs (except adding runs above the highest:
  a bulk ingest) or the compactor epoch; a compactor
  never touches the writer's fields or adds L0 SSTs; a reader changes only
  checkpoints.

WAL writes (``write_wal``) are create-only.  When the key exists, the object
is read back: if it carries our put-id (an earlier ambiguous attempt landed)
the write succeeded; otherwise a newer writer's fence (or data) is there,
and the handle raises Fenced from then on.  The engine must write WAL ids
contiguously from ``fence_wal_id + 1``, one write per id, and treat a WAL
object as durable only once every lower id is.

Thread safety: a handle may be shared by threads; manifest operations
serialize on one lock, ``write_wal`` runs outside it.
"""

from __future__ import annotations

import random
import threading
from typing import Callable, Iterable, Sequence

from shaledb.errors import Fenced, InvalidArgument, ObjectNotFound, Unavailable
from shaledb.format.keys import MANIFEST_PREFIX, manifest_key, new_sst_id, parse_manifest_key, wal_key
from shaledb.manifest.model import (
    Checkpoint,
    Manifest,
    SortedRun,
    SstRef,
    SstWatermark,
    decode_manifest,
    encode_manifest,
    ulid_from_bytes,
    ulid_to_bytes,
)
from shaledb.manifest.versioned import Clock, FenceableObject, SystemClock, Version, VersionedObject, create_only

__all__ = ["ManifestStore", "check_transition"]

WRITER = "writer"
COMPACTOR = "compactor"
READER = "reader"

#: How many SST ids that left the manifest a handle remembers (to refuse reuse).
_MAX_RETIRED = 1_000_000

_WRITER_FIELDS = ("writer_epoch", "next_wal_id", "replay_after_wal_id", "last_l0_seq")


class _Codec:
    encode = staticmethod(encode_manifest)
    decode = staticmethod(decode_manifest)


def check_transition(
    old: Manifest,
    new: Manifest,
    new_id: int,
    *,
    role: str,
    now_ms: int,
    retired: Iterable[str] = (),
    drop_checkpoints: Iterable[str] = (),
) -> None:
    """Raise InvalidArgument unless ``old -> new`` (as version ``new_id``) is allowed for ``role``."""

    def bad(msg: str) -> InvalidArgument:
        return InvalidArgument(f"manifest update to {new_id} refused ({role}): {msg}")

    if new.format_version < old.format_version:
        raise bad("format version goes back")
    for f in ("writer_epoch", "compactor_epoch", "next_wal_id", "replay_after_wal_id", "last_l0_seq"):
        if getattr(new, f) < getattr(old, f):
            raise bad(f"{f} goes back from {getattr(old, f)} to {getattr(new, f)}")

    old_refs = {s.sst_id: s for s in old.all_ssts()}
    new_refs = {s.sst_id: s for s in new.all_ssts()}
    if not isinstance(retired, (set, frozenset, dict)):
        retired = set(retired)
    for sid, ref in new_refs.items():
        if sid in old_refs:
            if old_refs[sid] != ref:
                raise bad(f"SST {sid} changed its entry")
        elif sid in retired:
            raise bad(f"SST id {sid} was used before")

    old_l0 = [s.sst_id for s in old.l0]
    new_l0 = [s.sst_id for s in new.l0]
    old_l0_set = set(old_l0)
    split = next((i for i, sid in enumerate(new_l0) if sid in old_l0_set), len(new_l0))
    added, kept = new_l0[:split], new_l0[split:]
    for sid in added:
        if sid in old_refs:
            raise bad(f"SST {sid} cannot be added to L0: it is already in the manifest")
    it = iter(old_l0)
    if not all(sid in it for sid in kept):  # kept must be a subsequence of old L0
        raise bad("L0 may only gain SSTs at the front and lose existing ones; order changed")

    # checkpoints
    old_cps = {c.id: c for c in old.checkpoints}
    new_cps = {c.id: c for c in new.checkpoints}
    drop = set(drop_checkpoints)
    for cid, cp in old_cps.items():
        if cid not in new_cps:
            if not (cid in drop or cp.expired(now_ms)):
                raise bad(f"checkpoint {cid} would be dropped without being removed or expiring")
        elif new_cps[cid] != cp and not (cid in drop and new_cps[cid].replace_expiry(cp.expires_at_ms) == cp):
            # (a checkpoint named in drop_checkpoints may also get a new expiry: a refresh)
            raise bad(f"checkpoint {cid} changed")
    for cid, cp in new_cps.items():
        if cid not in old_cps and cp.manifest_id > new_id:
            raise bad(f"checkpoint {cid} pins manifest {cp.manifest_id}, beyond {new_id}")

    # SST low watermarks (docs/gc.md): within one epoch a watermark never goes back
    for f, ef in (("writer_sst_watermark", "writer_epoch"), ("compactor_sst_watermark", "compactor_epoch")):
        ow, nw = getattr(old, f), getattr(new, f)
        if ow is not None and nw is None:
            raise bad(f"{f} disappears")
        if ow is not None and nw.epoch == ow.epoch and nw.sst_id < ow.sst_id:
            raise bad(f"{f} goes back within epoch {ow.epoch}")
        if nw is not None and nw.epoch > getattr(new, ef):
            raise bad(f"{f} carries epoch {nw.epoch}, beyond {ef} {getattr(new, ef)}")

    # ownership
    if role == WRITER:
        # a writer may add sorted runs above every existing one (a bulk
        # ingest, docs/bulk.md), never change or remove one
        top = max((r.run_id for r in old.sorted_runs), default=-1)
        if tuple(r for r in new.sorted_runs if r.run_id <= top) != old.sorted_runs:
            raise bad("a writer may not change sorted runs (only add runs above the highest)")
        if any(s.sst_id in old_refs for r in new.sorted_runs if r.run_id > top for s in r.ssts):
            raise bad("an added sorted run may only hold new SSTs")
        if new.compactor_epoch != old.compactor_epoch:
            raise bad("a writer may not change the compactor epoch")
        if new.compactor_sst_watermark != old.compactor_sst_watermark:
            raise bad("a writer may not change the compactor's SST watermark")
        if kept != old_l0:
            raise bad("a writer may not remove L0 SSTs")
    elif role == COMPACTOR:
        for f in _WRITER_FIELDS:
            if getattr(new, f) != getattr(old, f):
                raise bad(f"a compactor may not change {f}")
        if new.writer_sst_watermark != old.writer_sst_watermark:
            raise bad("a compactor may not change the writer's SST watermark")
        if added:
            raise bad("a compactor may not add L0 SSTs")
        if kept != old_l0[: len(kept)]:
            raise bad("a compactor may only remove the oldest L0 SSTs")
    else:
        if new.replace(checkpoints=old.checkpoints) != old:
            raise bad("a reader may only change checkpoints")


def _where(store) -> str:
    """The store's location for a message (its spec URL), else its repr."""
    try:
        return store.spec()[0]
    except Exception:  # noqa: BLE001 - a message helper must not fail
        return repr(store)


def _raise_watermark(cur: SstWatermark | None, epoch: int, to: str | None) -> SstWatermark:
    """The watermark of ``epoch`` raised to ``to`` (default: a fresh ULID).

    REQUIRES: ``to`` is not below the watermark ``epoch`` already promised
    (InvalidArgument: a caller that lowers it broke its earlier promise).
    """
    sid = new_sst_id() if to is None else to
    wm = SstWatermark(epoch, sid)  # validates the ULID
    if cur is not None and cur.epoch == epoch and sid < cur.sst_id:
        raise InvalidArgument(f"SST watermark {sid} is below the one already promised ({cur.sst_id})")
    return wm


class ManifestStore:
    """Manifests of one database root, as a writer, compactor or reader handle.

    Construct with ``ManifestStore(store)`` (a reader) and then call
    ``create_or_open_writer()`` or ``init_compactor()``, or use the
    ``open_writer`` / ``open_compactor`` / ``open_reader`` shortcuts.
    ``clock`` (monotonic, wall ms, sleep) and ``rng`` are injectable.
    """

    def __init__(
        self,
        store,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        update_timeout: float = 60.0,
        probe_limit: int = 4,
        max_cache_age: float = 60.0,
        max_conflicts: int = 32,
    ):
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.update_timeout = update_timeout
        self._opts = dict(
            prefix=MANIFEST_PREFIX,
            key_of=manifest_key,
            id_of=parse_manifest_key,
            validate=self._validate,
            observe=self._observe,
            clock=self.clock,
            probe_limit=probe_limit,
            max_cache_age=max_cache_age,
            update_timeout=update_timeout,
            max_conflicts=max_conflicts,
        )
        self.role = READER
        self._obj: VersionedObject[Manifest] = VersionedObject(store, _Codec(), **self._opts)
        self.fence_wal_id: int | None = None
        self._retired: dict[str, None] = {}  # insertion-ordered set of SST ids seen leaving
        self._drop: frozenset[str] = frozenset()
        self._wal_lock = threading.Lock()
        self._wal_put_ids: dict[int, str] = {}
        self._last_id: str | None = None  # the last watermark id minted on an injected clock

    # ------------------------------------------------------------- shortcuts

    @classmethod
    def open_writer(cls, store, *, create: bool = True, **kwargs) -> "ManifestStore":
        """A writer handle (see :meth:`create_or_open_writer`)."""
        ms = cls(store, **kwargs)
        ms.create_or_open_writer(create=create)
        return ms

    @classmethod
    def open_compactor(cls, store, **kwargs) -> "ManifestStore":
        ms = cls(store, **kwargs)
        ms.init_compactor()
        return ms

    @classmethod
    def open_reader(cls, store, **kwargs) -> "ManifestStore":
        ms = cls(store, **kwargs)
        ms.refresh()
        return ms

    # ------------------------------------------------------------------ state

    @property
    def current(self) -> Manifest:
        """The latest manifest this handle knows (no I/O); Fenced if fenced."""
        return self._obj.current.value

    @property
    def manifest_id(self) -> int:
        return self._obj.current.id

    @property
    def version(self) -> Version[Manifest]:
        return self._obj.current

    @property
    def epoch(self) -> int | None:
        """Our writer or compactor epoch (None for a reader)."""
        return getattr(self._obj, "epoch", None)

    @property
    def fenced(self) -> bool:
        return bool(getattr(self._obj, "fenced", False))

    def refresh(self) -> Manifest:
        """Read the latest manifest; Fenced if a newer epoch of our role exists."""
        return self._obj.refresh().value

    def exists(self) -> bool:
        """Whether any manifest exists at the root (loads it when it does)."""
        return self._obj.load() is not None

    # ---------------------------------------------------------------- updates

    def update(self, fn: Callable[[Manifest], Manifest | None], *, drop_checkpoints: Iterable[str] = ()) -> Manifest:
        """Store ``fn(latest)`` as the next manifest (fenced CAS with retry).

        ``fn`` may run several times, each time on a newer manifest; make it
        a pure function of its argument.  Returning None or an unchanged
        manifest writes nothing.  Raises Fenced, InvalidArgument (a refused
        transition; nothing written), Conflict (too many lost races) or
        Unavailable (deadline).  Returns the manifest now current.
        """
        with self._obj.lock:
            self._drop = frozenset(drop_checkpoints)
            try:
                return self._obj.update(fn).value
            finally:
                self._drop = frozenset()

    def publish_l0(
        self,
        ssts: Sequence[SstRef],
        *,
        last_l0_seq: int,
        replay_after_wal_id: int,
        next_wal_id: int | None = None,
        sst_watermark: str | None = None,
    ) -> Manifest:
        """Writer: add ``ssts`` (newest first) in front of L0 and advance the replay point.

        Also raises ``last_l0_seq`` and ``replay_after_wal_id`` (never
        lowers them) and ``next_wal_id`` (to at least ``replay_after_wal_id +
        1``).  Idempotent: SSTs already in the manifest are not added again.

        Raises the writer's SST watermark (docs/gc.md) to ``sst_watermark``,
        or by default to a fresh ULID minted now.  REQUIRES: every SST id
        this writer will still publish is >= that value; the default holds
        when no other L0 build of this process has minted ids it has not
        published yet (the flusher builds one generation at a time).  With
        overlapping builds, pass the smallest id still unpublished.
        """
        self._require(WRITER)
        refs = tuple(s if isinstance(s, SstRef) else SstRef.from_info(s) for s in ssts)

        def fn(m: Manifest) -> Manifest:
            present = m.sst_ids()
            add = tuple(s for s in refs if s.sst_id not in present)
            replay = max(m.replay_after_wal_id, replay_after_wal_id)
            nxt = max(m.next_wal_id, next_wal_id or 0, replay + 1)
            new = m.replace(
                l0=add + m.l0,
                last_l0_seq=max(m.last_l0_seq, last_l0_seq),
                replay_after_wal_id=replay,
                next_wal_id=nxt,
            )
            if new == m:
                return m  # idempotent: a repeated publish writes nothing
            return new.replace(
                writer_sst_watermark=_raise_watermark(m.writer_sst_watermark, self.epoch, sst_watermark or self._new_id())
            )

        return self.update(fn)

    def advance_wal(self, next_wal_id: int) -> Manifest:
        """Writer: record that WAL objects below ``next_wal_id`` are written."""
        self._require(WRITER)
        return self.update(lambda m: m.replace(next_wal_id=max(m.next_wal_id, next_wal_id)))

    def apply_compaction(
        self,
        *,
        removed_l0: Iterable[str] = (),
        removed_runs: Iterable[int] = (),
        new_runs: Sequence[SortedRun] = (),
        sst_watermark: str | None = None,
    ) -> Manifest:
        """Compactor: drop the compacted L0 SSTs and runs, add the output runs.

        Idempotent: applying the same compaction twice changes nothing.
        ``sst_watermark`` (docs/gc.md): the smallest SST id any of this
        compactor's running jobs has minted and not yet published, or a
        fresh ``new_sst_id()`` when none has; it raises the compactor's
        watermark so GC can collect what compactions retired.  None keeps
        the watermark where it is (always safe; GC then keeps every
        unreferenced SST minted since it was last raised).
        """
        self._require(COMPACTOR)
        rm_l0 = frozenset(removed_l0)
        rm_runs = frozenset(removed_runs)
        outs = tuple(new_runs)

        def fn(m: Manifest) -> Manifest:
            runs = [r for r in m.sorted_runs if r.run_id not in rm_runs]
            have = {r.run_id: r for r in runs}
            for r in outs:
                if r.run_id in have:
                    if have[r.run_id] != r:
                        raise InvalidArgument(f"sorted run {r.run_id} already exists")
                    continue
                runs.append(r)
            runs.sort(key=lambda r: -r.run_id)
            new = m.replace(l0=tuple(s for s in m.l0 if s.sst_id not in rm_l0), sorted_runs=tuple(runs))
            if new == m or sst_watermark is None:
                return new  # idempotent: a repeated compaction writes nothing
            return new.replace(
                compactor_sst_watermark=_raise_watermark(m.compactor_sst_watermark, self.epoch, sst_watermark)
            )

        return self.update(fn)

    def add_checkpoint(
        self, *, manifest_id: int | None = None, lifetime_ms: int | None = None, name: str = ""
    ) -> Checkpoint:
        """Pin ``manifest_id`` (default: the latest one when the checkpoint
        lands, i.e. the version the update is based on); returns the checkpoint.

        The default is never a cached id: a manifest superseded before the
        pin lands may already have lost its SSTs to a GC pass with a small
        ``min_age`` (found by bench.sim, docs/testing.md)."""
        expires = 0 if lifetime_ms is None else self.clock.now_ms() + lifetime_ms
        cid = new_sst_id(now_ms=self.clock.now_ms(), rand=self.rng.randbytes(10))
        made: list[Checkpoint] = []

        def fn(m: Manifest) -> Manifest | None:
            if any(c.id == cid for c in m.checkpoints):
                return None
            pin = manifest_id if manifest_id is not None else self.manifest_id  # the base of this attempt
            made.append(Checkpoint(id=cid, manifest_id=pin, expires_at_ms=expires, name=name))
            return m.replace(checkpoints=m.checkpoints + (made[-1],))

        m = self.update(fn)
        return next((c for c in m.checkpoints if c.id == cid), made[-1])

    def refresh_checkpoint(self, checkpoint_id: str, *, lifetime_ms: int | None) -> Checkpoint | None:
        """Set a live checkpoint's expiry to now + ``lifetime_ms`` (None: never);
        returns it, or None when the latest manifest has no such live checkpoint."""
        expires = 0 if lifetime_ms is None else self.clock.now_ms() + lifetime_ms

        def fn(m: Manifest) -> Manifest | None:
            now = self.clock.now_ms()
            if not any(c.id == checkpoint_id and not c.expired(now) for c in m.checkpoints):
                return None
            return m.replace(checkpoints=tuple(
                c.replace_expiry(expires) if c.id == checkpoint_id else c for c in m.checkpoints))

        m = self.update(fn, drop_checkpoints=[checkpoint_id])
        return next((c for c in m.checkpoints if c.id == checkpoint_id and c.expires_at_ms == expires), None)

    def remove_checkpoint(self, checkpoint_id: str) -> Manifest:
        return self.update(
            lambda m: m.replace(checkpoints=tuple(c for c in m.checkpoints if c.id != checkpoint_id)),
            drop_checkpoints=[checkpoint_id],
        )

    # ---------------------------------------------------------- writer open

    def create_or_open_writer(self, *, create: bool = True) -> int:
        """Become the writer: returns the WAL id of our zero-byte fence.

        Creates manifest 1 if the root is empty (and ``create``); refuses a
        root that holds objects but no manifest.  Bumps ``writer_epoch``,
        fences the WAL at the first free id after ``replay_after_wal_id``
        (moving up on collision, re-checking the epoch each time), and
        refreshes.  Recovery replays WAL ids in
        ``(current.replay_after_wal_id, fence_wal_id)``; the engine's first
        WAL object is ``fence_wal_id + 1``.
        """
        if self.role != READER:
            raise InvalidArgument(f"this handle is already a {self.role}")
        self._load_or_create(create)
        # the epoch bump also sets our SST watermark: every SST we mint comes later
        self._become(
            WRITER,
            epoch_of=lambda m: m.writer_epoch,
            with_epoch=lambda m, e: m.replace(writer_epoch=e, writer_sst_watermark=SstWatermark(e, self._new_id())),
        )
        self.fence_wal_id = self._write_fence()
        self.refresh()
        return self.fence_wal_id

    def init_compactor(self) -> int:
        """Become the compactor: bump ``compactor_epoch``; returns our epoch."""
        if self.role != READER:
            raise InvalidArgument(f"this handle is already a {self.role}")
        if self._obj.load() is None:
            raise InvalidArgument(f"no ShaleDB database at {self.store!r} (no manifest)")
        return self._become(
            COMPACTOR,
            epoch_of=lambda m: m.compactor_epoch,
            with_epoch=lambda m, e: m.replace(compactor_epoch=e, compactor_sst_watermark=SstWatermark(e, self._new_id())),
        )

    def _become(self, role: str, *, epoch_of, with_epoch) -> int:
        """Switch this handle to ``role``: a fenceable object on the same
        cache, then the epoch bump (CAS); returns the new epoch."""
        obj: FenceableObject[Manifest] = FenceableObject(
            self.store, _Codec(), epoch_of=epoch_of, with_epoch=with_epoch, role=role, **self._opts
        )
        obj.share_cache(self._obj)
        self._obj = obj
        self.role = role
        return obj.init_epoch()

    def _load_or_create(self, create: bool) -> None:
        if self._obj.load() is not None:
            return
        if not create:
            raise InvalidArgument(f"no ShaleDB database at {self.store!r} (no manifest)")
        foreign = None
        for meta in self.store.list(""):
            if parse_manifest_key(meta.key) is not None:
                break
            foreign = meta.key
            break
        if foreign is not None and self._obj.load() is None:
            raise InvalidArgument(
                f"{_where(self.store)} is not a ShaleDB database: it holds objects but no manifest "
                f"(first: {foreign!r}); refusing to create a database there; "
                "open an empty location or an existing database"
            )
        if not self._obj.loaded:
            self._obj.create_initial(Manifest())

    def _first_free_wal_id(self, after: int) -> int:
        """The lowest id > ``after`` with no WAL object (WAL ids are contiguous)."""

        def exists(i: int) -> bool:
            try:
                self.store.head(wal_key(i))
                return True
            except ObjectNotFound:
                return False

        lo, step = after, 1
        hi = after + 1
        while exists(hi):
            lo = hi
            step *= 2
            hi = after + step
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if exists(mid):
                lo = mid
            else:
                hi = mid
        return hi

    def _write_fence(self) -> int:
        from shaledb.storage.base import new_put_id

        deadline = self.clock.monotonic() + self.update_timeout
        cand = self._first_free_wal_id(self.current.replay_after_wal_id)
        # Check the epoch between learning that every id below ``cand`` is
        # taken and writing at ``cand``: a newer writer bumps the epoch before
        # it places its fence, so if its fence is below ``cand`` we are fenced
        # here, and if it places one later it lands at or above ``cand``.
        # Without this check a slower concurrent opener could place its fence
        # above the newer writer's, and the newer writer's first WAL write
        # would collide with it and report a false fence.  The loop below
        # keeps the same order (collision, refresh, next id).
        self.refresh()
        while True:
            if create_only(
                self.store,
                wal_key(cand),
                b"",
                put_id=new_put_id(),
                clock=self.clock,
                deadline=deadline,
            ):
                return cand
            m = self.refresh()  # Fenced if a newer writer bumped the epoch
            cand = max(cand + 1, m.replay_after_wal_id + 1)
            if self.clock.monotonic() > deadline:
                raise Unavailable(f"could not place a WAL fence within {self.update_timeout}s")

    # ---------------------------------------------------------------- WAL

    def write_wal(self, wal_id: int, data, *, timeout: float | None = None) -> None:
        """Writer: create ``wal/<wal_id>`` with ``data`` (non-empty).

        Returns when the object is ours.  Raises Fenced when the key holds
        someone else's object (a newer writer's fence or data) and from then
        on; Unavailable when the store does not answer in time (call again
        with the same id and data: the same put-id is reused, so a write that
        landed meanwhile is recognised as ours).
        """
        self._require(WRITER)
        self._obj.check()
        if not isinstance(wal_id, int) or wal_id <= self.fence_wal_id:
            raise InvalidArgument(f"WAL id must be above our fence {self.fence_wal_id}, got {wal_id!r}")
        if len(data) == 0:
            raise InvalidArgument("a WAL object may not be empty (zero bytes is a fence)")
        from shaledb.storage.base import new_put_id

        with self._wal_lock:
            put_id = self._wal_put_ids.setdefault(wal_id, new_put_id())
        t = self.update_timeout if timeout is None else timeout
        won = create_only(
            self.store,
            wal_key(wal_id),
            data,
            put_id=put_id,
            clock=self.clock,
            deadline=self.clock.monotonic() + t,
        )
        with self._wal_lock:
            self._wal_put_ids.pop(wal_id, None)
        if not won:
            self._obj.fence()
            raise Fenced(f"{wal_key(wal_id)} holds another writer's object: a newer writer fenced this one")

    # -------------------------------------------------------------- internals

    def _new_id(self) -> str:
        """A fresh ULID for a watermark, on this handle's clock and rng when
        they are injected (so watermarks and SST ids minted on that clock
        compare in time order); the process-monotonic ``new_sst_id()`` on
        the system clock."""
        if type(self.clock) is SystemClock:
            return new_sst_id()
        sid = new_sst_id(now_ms=self.clock.now_ms(), rand=self.rng.randbytes(10))
        last = self._last_id
        if last is not None and sid <= last:  # a clock that stands still: stay increasing
            sid = ulid_from_bytes((int.from_bytes(ulid_to_bytes(last), "big") + 1).to_bytes(16, "big"))
        self._last_id = sid
        return sid

    def _require(self, role: str) -> None:
        if self.role != role:
            raise InvalidArgument(f"only a {role} handle may do this (this one is a {self.role})")

    def _validate(self, old: Manifest, new: Manifest, new_id: int) -> None:
        check_transition(
            old,
            new,
            new_id,
            role=self.role,
            now_ms=self.clock.now_ms(),
            retired=self._retired,
            drop_checkpoints=self._drop,
        )

    def _observe(self, prev: Version[Manifest] | None, new: Version[Manifest]) -> None:
        if prev is not None:
            gone = prev.value.sst_ids() - new.value.sst_ids()
            if gone:
                self._retired.update(dict.fromkeys(sorted(gone)))
                while len(self._retired) > _MAX_RETIRED:  # oldest first
                    del self._retired[next(iter(self._retired))]
