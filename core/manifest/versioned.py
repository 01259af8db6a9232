"""Versioned objects over an object store: compare-and-swap by create-only writes.

A *versioned object* is a sequence of immutable snapshots ``1, 2, 3, ...``
stored under one prefix (the key of version ``n`` is ``key_of(n)``).  The
latest version is the highest id.  An update writes version ``n+1`` with
``put_if_absent``; whoever creates ``n+1`` first wins, the others refresh and
try again on top of the winner.  This module knows nothing of manifests or
SSTs: the value type, its codec, the invariants checked before every write
and the epoch used for fencing are plugged in.

* :class:`VersionedObject`: ``refresh()``, ``current``, ``dirty()`` /
  ``try_write()`` (one compare-and-swap), ``update(mutator)`` (bounded retry
  with a deadline; on conflict the mutator is re-applied to the newer state,
  or a ``merge`` callback decides), ``create_initial()``.
* :class:`FenceableObject`: at ``init_epoch()`` bumps an epoch field through
  ``update``; from then on any version carrying a newer epoch makes every
  call raise :class:`shaledb.Fenced` (sticky).

Finding the latest version: with a cached id that was confirmed latest less
than ``max_cache_age`` seconds ago, probe ``id+1, id+2, ...`` (at most
``probe_limit`` GETs; the first missing id ends the walk); otherwise, or when
every probe hits, LIST the prefix and take the highest id.  The age bound is
what keeps probing sound while GC deletes old versions: GC must only delete
versions older than its minimum age, which must exceed ``max_cache_age``.

Ambiguous writes: every create carries a put-id (object metadata, see
:mod:`shaledb.storage.base`).  A create that fails its precondition, or
fails with a retryable error, is settled by reading the object back: if it
carries our put-id, our write landed and counts as won.  A lost race is only
ever concluded from an object that is provably someone else's.

Thread safety: one instance may be shared by threads; its methods serialize
on an internal lock.  Separate instances (and processes) coordinate only
through the store.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, TypeVar

from shaledb.errors import (
    Conflict,
    Fenced,
    Internal,
    InvalidArgument,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    Unavailable,
)

__all__ = [
    "Clock",
    "Codec",
    "Dirty",
    "FenceableObject",
    "SystemClock",
    "Version",
    "VersionedObject",
    "create_only",
]

T = TypeVar("T")


class Codec(Protocol[T]):
    def encode(self, value: T) -> bytes: ...

    def decode(self, data: bytes, name: str) -> T: ...


class Clock(Protocol):
    """Time as the versioned object sees it (inject a fake one in tests)."""

    def monotonic(self) -> float: ...

    def now_ms(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Version(Generic[T]):
    """One stored snapshot: its id and decoded value."""

    id: int
    value: T


@dataclass
class Dirty(Generic[T]):
    """A working copy: edit ``value``, then hand it to ``try_write``.

    ``base_id`` is the version it was taken from; the write targets
    ``base_id + 1`` and fails with Conflict if that already exists.
    """

    base_id: int
    value: T


def create_only(store, key: str, data: bytes, *, put_id: str, clock: Clock, deadline: float) -> bool:
    """Create ``key`` if absent.  True if the object there is ours, False if not.

    "Ours" means it carries ``put_id``: this call or an earlier call with the
    same put-id created it (an ambiguous write that landed).  One attempt:
    retrying Unavailable is the store's business (the engine's
    ``RetryingStore``), bounded here by ``deadline`` (``clock.monotonic``
    time) through a ``call_deadline``.  After a failure the object is read
    back (``storage.base.settle_conditional_put``), so a write that landed is
    never reported lost; when nothing is there the error is raised.
    REQUIRES: the same ``put_id`` and ``data`` for every retry of one write.
    """
    from shaledb.storage.base import put_if_absent_idempotent, settle_conditional_put
    from shaledb.storage.wrappers import call_deadline, deadline_left

    left = deadline - clock.monotonic()
    if left <= 0:
        raise Unavailable(f"create of {key!r}: its deadline passed before the attempt")
    outer = deadline_left()
    scope = call_deadline(left, clock=clock.monotonic) if outer is None or left < outer else contextlib.nullcontext()
    with scope:
        try:
            put_if_absent_idempotent(store, key, data, put_id=put_id)
            return True
        except PreconditionFailed:
            return False  # settled: someone else's object is there
        except (Unavailable, StorageError) as e:
            if isinstance(e, ObjectNotFound):
                raise
            err = e  # ambiguous: the write may have landed
        try:
            settle_conditional_put(store, key, put_id, err)
            return True
        except PreconditionFailed:
            return False


class VersionedObject(Generic[T]):
    """A value stored as numbered immutable snapshots; see the module docstring.

    ``validate(old, new, new_id)`` runs before every write and raises (for
    example InvalidArgument) to refuse a transition; nothing is written then.
    ``observe(previous, new)`` is called each time a newer version becomes
    current (read or written).
    """

    def __init__(
        self,
        store,
        codec: Codec[T],
        *,
        prefix: str,
        key_of: Callable[[int], str],
        id_of: Callable[[str], int | None],
        validate: Callable[[T, T, int], None] | None = None,
        clock: Clock | None = None,
        probe_limit: int = 4,
        max_cache_age: float = 60.0,
        update_timeout: float = 60.0,
        max_conflicts: int = 32,
        observe: Callable[[Version[T] | None, Version[T]], None] | None = None,
    ):
        if probe_limit < 0 or max_cache_age < 0 or update_timeout <= 0 or max_conflicts < 1:
            raise InvalidArgument("probe_limit, max_cache_age >= 0; update_timeout > 0; max_conflicts >= 1")
        self.store = store
        self.codec = codec
        self.prefix = prefix
        self.key_of = key_of
        self.id_of = id_of
        self._validate = validate
        self._observe_cb = observe
        self.clock: Clock = clock or SystemClock()
        self.probe_limit = probe_limit
        self.max_cache_age = max_cache_age
        self.update_timeout = update_timeout
        self.max_conflicts = max_conflicts
        self._lock = threading.RLock()
        self._cur: Version[T] | None = None
        self._confirmed_at = float("-inf")  # monotonic time _cur was last known latest

    # ------------------------------------------------------------ handle state

    @property
    def lock(self) -> threading.RLock:
        """The handle's (reentrant) lock: hold it to make several calls one step."""
        return self._lock

    @property
    def loaded(self) -> bool:
        """Whether a version is cached (no I/O)."""
        return self._cur is not None

    def share_cache(self, other: "VersionedObject[T]") -> None:
        """Start from ``other``'s cached version and its age (no I/O), e.g.
        when a handle of another role replaces ``other`` on the same object."""
        with self._lock, other._lock:
            self._cur = other._cur
            self._confirmed_at = other._confirmed_at

    # ------------------------------------------------------------------ reads

    @property
    def current(self) -> Version[T]:
        """The cached latest version (no I/O).  REQUIRES: loaded (refresh/create)."""
        with self._lock:
            if self._cur is None:
                raise InvalidArgument(f"versioned object {self.prefix!r} is not loaded; call refresh() first")
            self._check(self._cur.value)
            return self._cur

    def load(self) -> Version[T] | None:
        """Read the latest version; None when no version exists at all."""
        with self._lock:
            found = self._read_latest()
            if found is not None:
                self._adopt(found)
            return found

    def refresh(self) -> Version[T]:
        """Read the latest version (ObjectNotFound if there is none)."""
        found = self.load()
        if found is None:
            raise ObjectNotFound(f"no version of {self.prefix!r} exists")
        with self._lock:
            self._check(self._cur.value)
            return self._cur

    def _adopt(self, v: Version[T]) -> None:
        if self._cur is not None and v.id < self._cur.id:
            raise Internal(f"{self.prefix}: latest version went back from {self._cur.id} to {v.id}")
        prev, self._cur = self._cur, v
        self._confirmed_at = self.clock.monotonic()
        if self._observe_cb is not None and (prev is None or prev.id != v.id):
            self._observe_cb(prev, v)

    def _get(self, vid: int) -> bytes | None:
        try:
            return self.store.get(self.key_of(vid))
        except ObjectNotFound:
            return None

    def _read_latest(self) -> Version[T] | None:
        cur = self._cur
        fresh = cur is not None and self.clock.monotonic() - self._confirmed_at <= self.max_cache_age
        if fresh:
            best: tuple[int, bytes] | None = None
            for i in range(1, self.probe_limit + 1):
                data = self._get(cur.id + i)
                if data is None:
                    if best is None:
                        return cur
                    return self._decode(*best)
                best = (cur.id + i, data)
            # every probe hit: fall back to a listing
        for _ in range(8):
            ids = [i for i in (self.id_of(m.key) for m in self.store.list(self.prefix)) if i is not None]
            if not ids:
                return None
            top = max(ids)
            data = self._get(top)
            if data is not None:
                return self._decode(top, data)
            # listed but gone (GC raced us): list again
        raise Unavailable(f"{self.prefix}: the latest version kept vanishing while being read")

    def _decode(self, vid: int, data: bytes) -> Version[T]:
        return Version(vid, self.codec.decode(data, self.key_of(vid)))

    # ----------------------------------------------------------------- writes

    def create_initial(self, value: T) -> bool:
        """Write version 1 if no version exists; True if ours was written.

        Either way the object is loaded afterwards.
        """
        with self._lock:
            deadline = self.clock.monotonic() + self.update_timeout
            from shaledb.storage.base import new_put_id

            won = create_only(
                self.store,
                self.key_of(1),
                self.codec.encode(value),
                put_id=new_put_id(),
                clock=self.clock,
                deadline=deadline,
            )
            if won:
                self._cur = None
                self._adopt(Version(1, value))
            else:
                self.refresh()
            return won

    def dirty(self) -> Dirty[T]:
        """A working copy of the current version (values should be immutable)."""
        cur = self.current
        return Dirty(cur.id, cur.value)

    def try_write(self, dirty: Dirty[T]) -> Version[T]:
        """One compare-and-swap: write ``dirty.base_id + 1``.

        Raises Conflict (after refreshing) if that id exists and is not ours,
        or if ``dirty`` is not based on the current version.
        """
        with self._lock:
            deadline = self.clock.monotonic() + self.update_timeout
            cur = self.current
            if dirty.base_id != cur.id:
                raise Conflict(f"{self.prefix}: dirty copy of version {dirty.base_id}, current is {cur.id}")
            if self._write_next(cur, dirty.value, deadline, checked=False):
                return self._cur
            self._refresh_after_loss()
            raise Conflict(f"{self.prefix}: version {cur.id + 1} was written by someone else")

    def update(
        self,
        mutator: Callable[[T], T | None],
        *,
        merge: Callable[[T, T], T | None] | None = None,
    ) -> Version[T]:
        """Apply ``mutator`` to the latest value and store the result as a new version.

        ``mutator(latest)`` returns the new value, or None (or an equal value)
        to write nothing (checked against the latest version, not just the
        cached one).  When another writer wins the race, the object is
        refreshed and the next proposal is ``merge(newer, rejected)`` if
        ``merge`` is given, else ``mutator(newer)``.  Gives up with Conflict
        after ``max_conflicts`` lost races and with Unavailable when
        ``update_timeout`` passes.  Returns the version that is current after
        the call.  A mutator may run several times: make it a pure function
        of its input.
        """
        with self._lock:
            deadline = self.clock.monotonic() + self.update_timeout
            if self._cur is None:
                self.refresh()
            elif self.clock.monotonic() - self._confirmed_at > self.max_cache_age:
                self._cur_refresh_listing()
            rejected: T | None = None
            losses = 0
            confirmed = False
            while True:
                base = self.current  # checks the epoch (fenceable variant)
                try:
                    if rejected is not None and merge is not None:
                        new = merge(base.value, rejected)
                    else:
                        new = mutator(base.value)
                    noop = new is None or new == base.value
                    if not noop:
                        self._check_write(base, new)
                except InvalidArgument:
                    # A refusal is only final when judged on the latest version.
                    if confirmed or self._reconfirm(base):
                        raise
                    confirmed, rejected = True, None
                    continue
                if noop:
                    # Nothing to write on our copy: only final on the latest.
                    if confirmed or self._reconfirm(base):
                        return base
                    confirmed, rejected = True, None
                    continue
                if self._write_next(base, new, deadline):
                    return self._cur
                losses += 1
                if losses >= self.max_conflicts:
                    self._refresh_after_loss()
                    raise Conflict(f"{self.prefix}: lost {losses} races in a row; giving up")
                if self.clock.monotonic() > deadline:
                    raise Unavailable(f"{self.prefix}: update did not succeed within {self.update_timeout}s")
                rejected = new
                self._refresh_after_loss()

    def _cur_refresh_listing(self) -> None:
        self._confirmed_at = float("-inf")  # forces a LIST, not probes
        self.refresh()

    def _refresh_after_loss(self) -> None:
        before = self._cur.id
        self.refresh()
        if self._cur.id == before:
            # The id we lost on exists but probing from a stale cache missed
            # it, or it is being deleted: list to be sure.
            self._cur_refresh_listing()

    def _reconfirm(self, base: Version[T]) -> bool:
        """Refresh; True if ``base`` is still the latest version."""
        return self.refresh().id == base.id

    def _check_write(self, base: Version[T], value: T) -> None:
        if self._validate is not None:
            self._validate(base.value, value, base.id + 1)
        self._before_write(base.value, value)

    def _write_next(self, base: Version[T], value: T, deadline: float, checked: bool = True) -> bool:
        from shaledb.storage.base import new_put_id

        new_id = base.id + 1
        if not checked:
            self._check_write(base, value)
        data = self.codec.encode(value)
        won = create_only(
            self.store,
            self.key_of(new_id),
            data,
            put_id=new_put_id(),
            clock=self.clock,
            deadline=deadline,
        )
        if won:
            self._adopt(Version(new_id, value))
        return won

    # ------------------------------------------------------------ subclass hooks

    def _check(self, value: T) -> None:
        """Raise if ``value`` (a version just seen) means this handle must stop."""

    def _before_write(self, old: T, new: T) -> None:
        """Last check before a write is sent."""


class FenceableObject(VersionedObject[T]):
    """A versioned object owned by one epoch at a time.

    ``epoch_of(value)`` reads the epoch field and ``with_epoch(value, e)``
    sets it.  ``init_epoch()`` bumps the stored epoch through ``update`` and
    keeps the new value as this handle's epoch.  Afterwards, seeing a stored
    epoch newer than ours raises Fenced, now and on every later call; seeing
    an older one is impossible (Internal).  Updates may not change the epoch.
    """

    def __init__(
        self,
        store,
        codec: Codec[T],
        *,
        epoch_of: Callable[[T], int],
        with_epoch: Callable[[T, int], T],
        role: str = "owner",
        **kwargs,
    ):
        super().__init__(store, codec, **kwargs)
        self.epoch_of = epoch_of
        self.with_epoch = with_epoch
        self.role = role
        self.epoch: int | None = None
        self.fenced = False

    def init_epoch(self) -> int:
        """Bump the epoch (create-only write of a new version); returns our epoch."""
        with self._lock:
            if self.epoch is not None:
                raise InvalidArgument(f"{self.role} epoch already initialized ({self.epoch})")
            self._bumping = True
            try:
                v = super().update(lambda val: self.with_epoch(val, self.epoch_of(val) + 1))
            finally:
                self._bumping = False
            self.epoch = self.epoch_of(v.value)
            return self.epoch

    _bumping = False

    def _check(self, value: T) -> None:
        if self.fenced:
            raise Fenced(f"this {self.role} (epoch {self.epoch}) has been fenced by a newer one")
        if self.epoch is None:
            return
        stored = self.epoch_of(value)
        if stored > self.epoch:
            self.fenced = True
            raise Fenced(f"a newer {self.role} (epoch {stored}) owns {self.prefix!r}; this one has epoch {self.epoch}")
        if stored < self.epoch:
            raise Internal(f"stored {self.role} epoch {stored} is older than ours ({self.epoch})")

    def _before_write(self, old: T, new: T) -> None:
        if self._bumping:
            return
        if self.epoch is None:
            raise InvalidArgument(f"{self.role} handle has no epoch yet; call init_epoch() first")
        if self.epoch_of(new) != self.epoch:
            raise InvalidArgument(f"an update may not change the {self.role} epoch")

    def fence(self) -> None:
        """Mark this handle fenced (a WAL collision proved a newer owner)."""
        with self._lock:
            self.fenced = True

    def check(self) -> None:
        """Raise Fenced if this handle is known to be fenced (no I/O)."""
        with self._lock:
            if self.fenced:
                self._check(None)  # type: ignore[arg-type]
