"""The arena pool: fixed-size shared-memory arenas, the sequence counter,
the generations, and everything writers and the flusher share.

The Db process creates the pool (:meth:`ArenaPool.create`, the owner);
writer and flusher processes attach by its picklable descriptor.  Segments:
``live-0`` (liveness flock), ``lock-0`` (the pool lock), ``ctl-0`` (control
words, ``C_*`` below), ``arena-<i>`` (``shaledb.kernels.arena``).

Invariants:
* Every record of a sealed generation has a smaller seq than every record of
  any later generation: an append reserves its seqs and re-checks that its
  arena is ACTIVE in the current generation in one hold of the pool lock, and
  sealing bumps the generation under that lock.
* A writer killed mid-append leaves a gap of reserved seqs (never a
  duplicate) and bytes beyond ``committed`` (never read).
* A WAL snapshot taken under the lock is a consistent cut.
* ``releases`` is a seqlock: lookups never mix a recycled arena with a live one.

The pool lock (thread lock + ``flock``) is taken once per batch append, seal,
arena hand-out, release and WAL snapshot, never per record.  A gone database
raises Closed, never an OS error.  Thread-safe; a forked child reopens the
locks and is never the owner.  Layout, life cycle, the surface by process and
the ``mid-append`` failpoint: docs/format/arena.md.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import time
import weakref
from dataclasses import dataclass
import numpy as np

from shaledb.memtable import shm
from shaledb.format.enums import ArenaState, PoolStatus
from shaledb.format.record import RECORD_ALIGN, RECORD_HEADER
from shaledb.errors import Closed, Fenced, Internal, InvalidArgument, Unavailable


class _ArenaKernels:
    """``shaledb.kernels.arena``, imported at its first use: importing it
    imports numba (about 0.15 s), which the flusher's start does not need
    (it attaches to the pool and recovers before any kernel runs), so it is
    kept off the critical path of ``shaledb.open``."""

    def __getattr__(self, name: str):
        from shaledb.kernels import arena

        globals()["K"] = arena
        return getattr(arena, name)


K = _ArenaKernels()

__all__ = ["ArenaPool", "SealedGeneration", "NO_MEMORY", "NO_ARENA"]

POOL_MAGIC = int.from_bytes(b"SHLPOOL1", "little")
POOL_VERSION = 1

C_MAGIC, C_VERSION, C_ARENA_BYTES, C_MAX_ARENAS = 0, 1, 2, 3
C_INDEX_SLOTS, C_NEXT_SEQ, C_DURABLE, C_GENERATION = 4, 5, 6, 7
C_STATUS, C_UNFLUSHED, C_MAX_UNFLUSHED, C_CREATED = 8, 9, 10, 11
C_NEXT_WRITER, C_RELEASES, C_GEN_BYTES, C_SEAL_BYTES = 12, 13, 14, 15
C_MANIFEST_ID, C_LARGE_IDS = 16, 17
# write pacing (smooth backpressure, set by the flusher): bytes/s the writers
# may append together (0: no limit), the CLOCK_MONOTONIC ns at which the next
# append may start, and the nanoseconds writers have waited for it in all
C_PACE_RATE, C_PACE_NEXT, C_PACED_NS = 18, 19, 20
# the CLOCK_MONOTONIC ns at which the flusher last looked at the backlog
# (0: never; a flusher that predates this word never sets it)
C_PACE_SEEN = 21
# words 22..31 are reserved (zero)
SLOT0, SLOT_WORDS = 32, 8
S_STATE, S_GEN, S_WRITER, S_BYTES, S_WAL_END, S_WAL_INC, S_LARGE = 0, 1, 2, 3, 4, 5, 6

#: Writers' own pacing, before the flusher set a rate: once the unflushed
#: bytes pass this fraction of ``max_unflushed_bytes`` ...
WRITER_PACE_MARK = 0.5
#: ... appends share this rate (bytes/s) until the flusher sets one, or the
#: arenas drain below the mark.  docs/compaction.md, "Write pacing".
WRITER_PACE_RATE = 64 << 20
#: Only while the flusher has not looked at the backlog for this long (ns):
#: a flusher that looks and sets no rate (no compactor, or a backlog below
#: its own marks) is not overruled.
WRITER_PACE_STALE_NS = 500_000_000

# append() result codes (in place of a seq when n == 0)
NO_MEMORY = -1  # unflushed bytes would exceed max_unflushed_bytes
NO_ARENA = -2  # every arena is in use and max_arenas exist

_FREE, _ACTIVE, _FULL, _SEALED, _FLUSHING = (int(s) for s in ArenaState)
_LIVE = (_ACTIVE, _FULL, _SEALED, _FLUSHING)
_FENCED = int(PoolStatus.FENCED)


_pools: "weakref.WeakSet[ArenaPool]" = weakref.WeakSet()


def _reset_pools_after_fork() -> None:
    for p in list(_pools):
        p._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_pools_after_fork)


class _PoolLock:
    """Mutex among the threads of a process and, by flock, among processes."""

    def __init__(self, path: str, create: bool):
        self._fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        self._tlock = threading.Lock()

    def __enter__(self):
        self._tlock.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._tlock.release()
            raise
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._tlock.release()

    def close(self):
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass
class SealedGeneration:
    """The arenas of one sealed generation, for the flusher."""

    number: int
    slots: list[int]
    pool: "ArenaPool"

    def runs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(arena, offs)`` record runs, one per arena: views into shared
        memory, valid until :meth:`ArenaPool.release` of this generation."""
        return [(a, K.arena_record_offsets(a)) for a in (self.pool.arena(i) for i in self.slots)]


class ArenaPool:
    """One process's handle on a database's arena pool (see module docstring)."""

    def __init__(self, desc: dict, owner: bool, live: shm.LiveLock):
        self.desc = desc
        self.dbtag = desc["dbtag"]
        self.owner = owner
        self._live = live
        self._closed = False
        try:
            self._ctl_seg = shm.Segment.attach(shm.segment_name(self.dbtag, "ctl"))
        except FileNotFoundError:
            live.close()
            raise Closed(_GONE.format(self.dbtag)) from None
        self.ctl = self._ctl_seg.array("<u8")
        if int(self.ctl[C_MAGIC]) != POOL_MAGIC:
            live.close()
            raise Unavailable(f"shared memory {self.dbtag} is not an arena pool")
        self.counter = self.ctl[C_NEXT_SEQ : C_NEXT_SEQ + 1]
        self.arena_bytes = int(self.ctl[C_ARENA_BYTES])
        self.max_arenas = int(self.ctl[C_MAX_ARENAS])
        self.index_slots = int(self.ctl[C_INDEX_SLOTS])
        try:
            self.lock = _PoolLock(shm.segment_path(shm.segment_name(self.dbtag, "lock")), create=False)
        except FileNotFoundError:
            live.close()
            raise Closed(_GONE.format(self.dbtag)) from None
        self._fp = None  # failpoints, read at the first arena creation
        self._segs: dict[int, shm.Segment] = {}
        self._arenas: dict[int, np.ndarray] = {}
        self._hdrs: dict[int, np.ndarray] = {}
        self._mapped_large: dict[int, int] = {}  # slot -> large segment id mapped here
        self._states = self.ctl[SLOT0 + S_STATE :: SLOT_WORDS]  # per-arena state column
        self._larges = self.ctl[SLOT0 + S_LARGE :: SLOT_WORDS]  # per-arena large segment id
        self._owned: dict[int, int] = {}  # writer_id -> slot, this process
        #: records one batch may hold (the index stays <= 3/4 full)
        self.max_batch_records = self.index_slots * 3 // 4
        _pools.add(self)

    # computed at first use, not at attach: they need the arena kernels' layout
    @functools.cached_property
    def max_batch_bytes(self) -> int:
        """Record bytes (padding included) a batch of many records may take:
        an empty arena of the default geometry (header and index excluded)."""
        return (self.arena_bytes // 8) * 8 - K.HEADER_BYTES - 8 * self.index_slots

    @functools.cached_property
    def max_record_bytes(self) -> int:
        """Record bytes one record (or a batch of <= SMALL_BATCH_RECORDS) may
        take: an empty arena re-formatted with the smallest index."""
        return self.batch_capacity(1)

    def batch_capacity(self, n_records: int) -> int:
        """Record bytes (16-byte headers and padding included) that a batch of
        ``n_records`` may take: an empty arena whose index is just large
        enough for them (``arena_bytes - 128 - 8 * slots``)."""
        slots = min(self.index_slots, K.index_slots_for(n_records))
        return (self.arena_bytes // 8) * 8 - K.HEADER_BYTES - 8 * slots

    def _after_fork_in_child(self) -> None:
        """A forked child must not share the parent's lock file description
        (flock would not exclude them) nor its writers' arenas: reopen the
        locks, forget arena ownership, and never destroy the segments."""
        if self._closed:
            return
        old_lock, old_live = self.lock, self._live
        self.lock = _PoolLock(shm.segment_path(shm.segment_name(self.dbtag, "lock")), create=False)
        self._live = shm.LiveLock(self.dbtag)
        old_lock.close()
        old_live.close()
        self._owned = {}
        self.owner = False

    # ------------------------------------------------------------ lifetime
    @classmethod
    def create(
        cls,
        root: str,
        *,
        arena_bytes: int = 64 << 20,
        max_arenas: int = 64,
        initial_arenas: int = 2,
        max_unflushed_bytes: int = 512 << 20,
        seal_bytes: int = 0,
        index_slots: int | None = None,
        prefault: bool = True,
        failpoints: str = "",
    ) -> "ArenaPool":
        """Create the pool of one open of ``root`` (the owner's call).  Removes
        the segments of dead earlier opens of the same root first.
        ``seal_bytes`` > 0: a writer seals the generation itself once it holds
        that many bytes (0: only :meth:`seal` calls do).  ``failpoints``: a
        spec (``shaledb.failpoints``) that travels in the descriptor, so every
        process attached to the pool arms ``mid-append`` and
        ``mid-arena-create`` alike (``SHALEDB_FAILPOINTS`` is read too)."""
        if arena_bytes < 64 << 10 or arena_bytes % 8:
            raise InvalidArgument("arena_bytes must be a multiple of 8 and >= 64 KiB")
        if not 1 <= initial_arenas <= max_arenas <= 100_000:
            raise InvalidArgument("need 1 <= initial_arenas <= max_arenas")
        slots = K.default_index_slots(arena_bytes) if index_slots is None else int(index_slots)
        shm.cleanup_stale(root)
        dbtag = shm.new_dbtag(root)
        live = shm.LiveLock(dbtag, create=True)
        try:
            _PoolLock(shm.segment_path(shm.segment_name(dbtag, "lock")), create=True).close()
            seg = shm.Segment.create(shm.segment_name(dbtag, "ctl"), 8 * (SLOT0 + SLOT_WORDS * max_arenas))
            ctl = seg.array("<u8")
            ctl[C_VERSION] = POOL_VERSION
            ctl[C_ARENA_BYTES] = arena_bytes
            ctl[C_MAX_ARENAS] = max_arenas
            ctl[C_INDEX_SLOTS] = slots
            ctl[C_NEXT_SEQ] = 1
            ctl[C_GENERATION] = 1
            ctl[C_MAX_UNFLUSHED] = max_unflushed_bytes
            ctl[C_NEXT_WRITER] = 1
            ctl[C_SEAL_BYTES] = seal_bytes
            ctl[C_MAGIC] = POOL_MAGIC
            del ctl
            seg.close()
            desc = {"dbtag": dbtag, "root": root, "prefault": prefault}
            if failpoints:
                desc["failpoints"] = failpoints
            pool = cls(desc, True, live)
            with pool.lock:
                for _ in range(initial_arenas):
                    pool._create_arena_locked()
            return pool
        except BaseException:
            live.close()
            shm.cleanup_segments(dbtag)
            raise

    def descriptor(self) -> dict:
        """Picklable; :meth:`attach` it in another process."""
        return dict(self.desc)

    @classmethod
    def attach(cls, desc: dict) -> "ArenaPool":
        """Attach to a pool created by another process (Closed if it is gone)."""
        try:
            live = shm.LiveLock(desc["dbtag"])
        except Unavailable:
            raise Closed(_GONE.format(desc["dbtag"])) from None
        return cls(desc, False, live)

    def close(self) -> None:
        """Detach this process (unmaps; the segments stay).  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._arenas.clear()
        self._hdrs.clear()
        self._mapped_large.clear()
        self._states = self._larges = None
        self.ctl = self.counter = None
        for seg in self._segs.values():
            seg.close()
        self._segs.clear()
        self._ctl_seg.close()
        self.lock.close()
        self._live.close()

    def destroy(self) -> None:
        """Detach and unlink every segment of the pool (the owner, at close)."""
        self.close()
        shm.cleanup_segments(self.dbtag)

    def cleanup_orphaned(self) -> None:
        """The flusher's last act when the owner died: unlink everything."""
        self.destroy()

    # --------------------------------------------------------------- arenas
    def arena(self, i: int) -> np.ndarray:
        """The uint8 view of arena ``i`` (mapped on first use in this process;
        re-mapped when the slot moved to or from a large segment)."""
        a = self._arenas.get(i)
        if a is None or self._mapped_large.get(i, 0) != int(self._larges[i]):
            a = self._map(i, int(self._larges[i]))
        return a

    def _map(self, i: int, large: int) -> np.ndarray:
        """Map slot ``i``'s segment: ``arena-<i>``, or ``large-<large>`` when
        ``large`` > 0 (a one-record arena sized for its record)."""
        self._unmap(i)
        name = shm.segment_name(self.dbtag, "large", large) if large else shm.segment_name(self.dbtag, "arena", i)
        try:
            seg = shm.Segment.attach(name)
        except FileNotFoundError:
            if large and not self._live.gone():
                # released meanwhile (a lock-free reader raced the flusher):
                # the slot is back on its own segment; the reader's seqlock
                # check sees the release and retries
                return self._map(i, 0)
            raise Closed(_GONE.format(self.dbtag)) from None
        return self._install(i, large, seg)

    def _install(self, i: int, large: int, seg: shm.Segment) -> np.ndarray:
        self._segs[i] = seg
        if large:
            self._mapped_large[i] = large
        a = self._arenas[i] = seg.array()
        return a

    def _unmap(self, i: int) -> None:
        self._arenas.pop(i, None)
        self._hdrs.pop(i, None)
        self._mapped_large.pop(i, None)
        seg = self._segs.pop(i, None)
        if seg is not None:
            seg.close()

    def _drop_stale_large(self) -> None:
        """Unmap the large segments of this process whose slot moved on (the
        segment was released): their pages are freed once nobody maps them.
        Cheap when none is mapped (the usual case)."""
        if self._mapped_large:
            for i, k in list(self._mapped_large.items()):
                if int(self._larges[i]) != k:
                    self._unmap(i)

    def _slot(self, i: int) -> int:
        return SLOT0 + SLOT_WORDS * i

    def slot_info(self, i: int) -> tuple[int, int, int]:
        """(state, generation, writer_id) of arena ``i``."""
        b = self._slot(i)
        return int(self.ctl[b + S_STATE]), int(self.ctl[b + S_GEN]), int(self.ctl[b + S_WRITER])

    def _set(self, i: int, state: int, gen: int, writer: int) -> None:
        b = self._slot(i)
        self.ctl[b + S_GEN] = gen
        self.ctl[b + S_WRITER] = writer
        self.ctl[b + S_STATE] = state
        h = self.arena(i)[: K.HEADER_BYTES].view("<u8")  # mirror, for tools
        h[K.H_GENERATION] = gen
        h[K.H_WRITER_ID] = writer
        h[K.H_STATE] = state

    def _failpoints(self):
        fp = self._fp
        if fp is None:
            from shaledb.failpoints import Failpoints

            fp = self._fp = Failpoints(self.desc.get("failpoints", ""))
        return fp

    def _create_arena_locked(self) -> int:
        """Create arena ``C_CREATED`` and count it.  Idempotent: the segment
        file is made before the counter moves, so a process killed in between
        leaves a file of that name that no live process has mapped (readers
        only map arenas below the counter); it is replaced here.  A gone
        database (its segments removed) raises Closed and creates nothing.

        REQUIRES: the pool lock is held."""
        n = int(self.ctl[C_CREATED])
        if n >= self.max_arenas:
            return -1
        if self._live.gone():
            raise Closed(_GONE.format(self.dbtag))
        seg = shm.Segment.create(
            shm.segment_name(self.dbtag, "arena", n),
            self.arena_bytes,
            prefault=self.desc.get("prefault", True),
            replace=True,
        )
        try:
            a = seg.array()
            K.arena_init(a, self.index_slots)
            self._segs[n] = seg
            self._arenas[n] = a
            self._set(n, _FREE, 0, 0)
            self._failpoints().hit("mid-arena-create")
        except BaseException:
            self._segs.pop(n, None)
            self._arenas.pop(n, None)
            a = None
            seg.close()
            seg.unlink()
            raise
        self.ctl[C_CREATED] = n + 1
        return n

    def _reformat_locked(self, i: int, slots: int, state: int, gen: int, writer: int) -> None:
        """Re-format the EMPTY arena ``i`` with ``slots`` index slots (bumps
        its incarnation; readers discard what they read across it).
        REQUIRES: the pool lock; arena ``i`` holds no committed record."""
        K.arena_init(self.arena(i), slots)
        self._hdrs.pop(i, None)
        self._set(i, state, gen, writer)

    def _acquire_locked(self, writer_id: int) -> int:
        gen = int(self.ctl[C_GENERATION])
        for i in range(int(self.ctl[C_CREATED])):
            if int(self.ctl[self._slot(i) + S_STATE]) == _FREE:
                h = self.arena(i)[: K.HEADER_BYTES].view("<u8")
                if int(h[K.H_INDEX_SLOTS]) != self.index_slots:  # held one big record
                    self._reformat_locked(i, self.index_slots, _ACTIVE, gen, writer_id)
                else:
                    self._set(i, _ACTIVE, gen, writer_id)
                return i
        i = self._create_arena_locked()
        if i >= 0:
            self._set(i, _ACTIVE, gen, writer_id)
        return i

    def live_slots(self) -> list[tuple[int, int, int]]:
        """(slot, state, generation) of every arena holding memtable data."""
        out = []
        for i in range(int(self.ctl[C_CREATED])):
            b = self._slot(i)
            st = int(self.ctl[b + S_STATE])
            if st in _LIVE:
                out.append((i, st, int(self.ctl[b + S_GEN])))
        return out

    # --------------------------------------------------------------- status
    def status(self) -> PoolStatus:
        return PoolStatus(int(self.ctl[C_STATUS]))

    def check_status(self) -> None:
        """Raise Closed / Fenced / Unavailable unless the pool is open.
        Closed also when the database is gone (its shared memory removed:
        its process died and the flusher cleaned up)."""
        if self.ctl is None:
            raise Closed("this handle is closed")
        st = int(self.ctl[C_STATUS])
        if st:
            _raise_status(st)
        if self._live.gone():
            raise Closed(_GONE.format(self.dbtag))

    def check_gone(self) -> None:
        """Raise Closed if this handle is closed or the database is gone (its
        shared memory removed); the status word is not looked at."""
        if self.ctl is None:
            raise Closed("this handle is closed")
        if self._live.gone():
            raise Closed(_GONE.format(self.dbtag))

    def _publish_status(self, st: PoolStatus) -> None:
        if self.ctl is not None and int(self.ctl[C_STATUS]) == 0:
            self.ctl[C_STATUS] = int(st)

    def publish_closed(self) -> None:
        self._publish_status(PoolStatus.CLOSED)

    def publish_fenced(self) -> None:
        self._publish_status(PoolStatus.FENCED)

    def publish_failed(self) -> None:
        self._publish_status(PoolStatus.FAILED)

    def fenced(self) -> bool:
        return self.ctl is not None and int(self.ctl[C_STATUS]) == _FENCED

    def publish_manifest_id(self, mid: int) -> None:
        if self.ctl is not None:
            self.ctl[C_MANIFEST_ID] = mid

    def manifest_id(self) -> int:
        return int(self.ctl[C_MANIFEST_ID])

    # ---------------------------------------------------------- seq numbers
    def set_next_seq(self, seq: int) -> None:
        """Recovery: the next seq to hand out (last recovered seq + 1).  Also
        raises the durable watermark to ``seq - 1`` (recovered = durable)."""
        with self.lock:
            self.ctl[C_NEXT_SEQ] = max(int(self.ctl[C_NEXT_SEQ]), seq)
            if int(self.ctl[C_DURABLE]) < seq - 1:
                self.ctl[C_DURABLE] = seq - 1

    def next_seq(self) -> int:
        return int(self.ctl[C_NEXT_SEQ])

    def durable_seq(self) -> int:
        return int(self.ctl[C_DURABLE])

    def publish_durable(self, seq: int) -> None:
        """The flusher: every seq <= ``seq`` is durable (monotonic)."""
        if self.ctl is not None and int(self.ctl[C_DURABLE]) < seq:
            self.ctl[C_DURABLE] = seq

    def unflushed_bytes(self) -> int:
        return int(self.ctl[C_UNFLUSHED])

    # ---------------------------------------------------------- write pacing
    def set_pace_rate(self, rate: int) -> None:
        """The flusher: writers together may append ``rate`` bytes/s from
        now on (0: no limit).  docs/compaction.md, "Backpressure"."""
        if self.ctl is not None:
            self.ctl[C_PACE_RATE] = max(0, int(rate))

    def pace_rate(self) -> int:
        ctl = self.ctl
        return 0 if ctl is None else int(ctl[C_PACE_RATE])

    def pace_seen(self) -> None:
        """The flusher: it has just looked at the backlog (and set the rate
        it wants, 0 included)."""
        if self.ctl is not None:
            self.ctl[C_PACE_SEEN] = time.monotonic_ns()

    def pacing(self) -> bool:
        """Whether appends must take a turn in :meth:`pace` now: the flusher
        set a rate, or :meth:`_writers_pace` (no lock: a stale answer costs
        one append of lateness either way)."""
        ctl = self.ctl
        if ctl is None:
            return False
        return bool(ctl[C_PACE_RATE]) or self._writers_pace(ctl)

    @staticmethod
    def _writers_pace(ctl) -> bool:
        """The writers' own pacing applies: the unflushed bytes passed
        ``WRITER_PACE_MARK`` and the flusher has not looked at the backlog
        for ``WRITER_PACE_STALE_NS`` (busy, e.g. with a large WAL upload)."""
        if int(ctl[C_UNFLUSHED]) <= WRITER_PACE_MARK * int(ctl[C_MAX_UNFLUSHED]):
            return False
        return time.monotonic_ns() - int(ctl[C_PACE_SEEN]) > WRITER_PACE_STALE_NS

    def paced_seconds(self) -> float:
        """Seconds writers of this pool have waited for the pacing in all."""
        ctl = self.ctl
        return 0.0 if ctl is None else int(ctl[C_PACED_NS]) / 1e9

    def pace(self, nbytes: int) -> float:
        """Reserve ``nbytes`` of the shared write rate: the seconds the caller
        must wait before its append (0.0 when no rate is set).  The writers
        of every process share one schedule (a token bucket without burst):
        an append starts no earlier than the previous reservation's end, so
        together they append at most ``pace_rate()`` bytes/s.

        While the flusher has set no rate and has not looked at the backlog
        lately, the writers pace themselves at ``WRITER_PACE_RATE`` once the
        unflushed bytes pass ``WRITER_PACE_MARK`` of ``max_unflushed_bytes``:
        a load that starts faster than the flusher can build L0 would
        otherwise fill every arena within its first second, while the
        flusher is busy with its first WAL upload, and then wait seconds for
        the first L0 SSTs."""
        with self.lock:
            ctl = self.ctl
            if ctl is None:
                return 0.0
            rate = int(ctl[C_PACE_RATE])
            if not rate:
                if not self._writers_pace(ctl):
                    return 0.0
                rate = WRITER_PACE_RATE
            now = time.monotonic_ns()
            start = max(now, int(ctl[C_PACE_NEXT]))
            ctl[C_PACE_NEXT] = start + max(1, int(nbytes)) * 1_000_000_000 // rate
            wait = start - now
            ctl[C_PACED_NS] = int(ctl[C_PACED_NS]) + wait
            return wait / 1e9

    def max_unflushed_bytes(self) -> int:
        return int(self.ctl[C_MAX_UNFLUSHED])

    def releases(self) -> int:
        """A seqlock over arena releases: odd while one is in progress, +2 per
        release.  A reader of arenas + manifest that sees it change (or odd)
        may have missed data moved to L0 and should retry."""
        return int(self.ctl[C_RELEASES])

    # --------------------------------------------------------------- writer
    def register_writer(self) -> int:
        with self.lock:
            wid = int(self.ctl[C_NEXT_WRITER])
            self.ctl[C_NEXT_WRITER] = wid + 1
        return wid

    def detach_writer(self, writer_id: int) -> None:
        """The writer leaves: its ACTIVE arena becomes FULL (sealed later)."""
        if self.ctl is None:
            return
        with self.lock:
            i = self._owned.pop(writer_id, None)
            if i is not None:
                st, gen, w = self.slot_info(i)
                if st == _ACTIVE and w == writer_id:
                    self._set(i, _FULL, gen, 0)

    def append(
        self, writer_id: int, keys, key_offs, values, value_offs, kinds, nbytes: int = 0
    ) -> tuple[int, int, int]:
        """Append one batch (atomically, into one arena) for ``writer_id``.

        Return ``(n, last_seq, sealed_gen)``: ``n`` records appended with seqs
        ``last_seq - n + 1 .. last_seq``; ``sealed_gen`` > 0 if this append
        sealed the generation (``seal_bytes`` reached).  ``(0, NO_MEMORY, 0)``
        or ``(0, NO_ARENA, 0)``: nothing written, wait for the flusher.
        Raises InvalidArgument if the batch can never fit an arena, and
        Closed / Fenced / Unavailable per the pool status.

        REQUIRES: arguments valid for ``arena_append`` (the writer checks).
        """
        n_rec = kinds.shape[0]
        fp = self._fp if self._fp is not None else self._failpoints()
        if n_rec > self.max_batch_records:
            raise InvalidArgument(
                f"a batch of {n_rec} records exceeds the {self.max_batch_records} one arena can index"
            )
        with self.lock:
            ctl = self.ctl
            if ctl is None:
                raise Closed("this handle is closed")
            st = int(ctl[C_STATUS])
            if st:
                _raise_status(st)
            if self._live.gone():  # one fstat: never append to a dead database
                raise Closed(_GONE.format(self.dbtag))
            unflushed = int(ctl[C_UNFLUSHED])
            if nbytes and unflushed and unflushed + nbytes > int(ctl[C_MAX_UNFLUSHED]):
                return 0, NO_MEMORY, 0
            self._drop_stale_large()
            if n_rec == 1:
                need = nbytes or _records_bytes(key_offs, value_offs)  # the writer passes the padded size
                if need > self.max_record_bytes:
                    return self._append_large_locked(writer_id, keys, key_offs, values, value_offs, kinds, need)
            i = self._owned.get(writer_id, -1)
            gen = int(ctl[C_GENERATION])
            if i >= 0:
                b = SLOT0 + SLOT_WORDS * i
                if (
                    int(ctl[b + S_STATE]) != _ACTIVE
                    or int(ctl[b + S_WRITER]) != writer_id
                    or int(ctl[b + S_GEN]) != gen
                ):
                    i = -1
            for _attempt in range(3):
                if i < 0:
                    i = self._acquire_locked(writer_id)
                    if i < 0:
                        self._owned.pop(writer_id, None)
                        return 0, NO_ARENA, 0
                    self._owned[writer_id] = i
                a = self.arena(i)
                h = a[: K.HEADER_BYTES].view("<u8")
                before = int(h[K.H_COMMITTED])
                if fp and _attempt == 0:
                    fp.hit("mid-append", when_firing=lambda: self._half_append_locked(a, before, n_rec, len(keys)))
                n, base = K.arena_append_counted(a, keys, key_offs, values, value_offs, kinds, self.counter)
                if n:
                    used = int(h[K.H_COMMITTED]) - before
                    b = SLOT0 + SLOT_WORDS * i
                    ctl[b + S_BYTES] = int(ctl[b + S_BYTES]) + used
                    ctl[C_UNFLUSHED] = unflushed + used
                    gb = int(ctl[C_GEN_BYTES]) + used
                    ctl[C_GEN_BYTES] = gb
                    sealed = 0
                    sb = int(ctl[C_SEAL_BYTES])
                    if sb and gb >= sb:
                        sealed = self._seal_locked() or 0
                    return n, base + n - 1, sealed
                if before == int(h[K.H_LOG_OFF]):
                    # an empty arena: give it the smallest index this batch needs
                    # (a few big records), once; else the batch can never fit
                    slots = min(self.index_slots, K.index_slots_for(n_rec))
                    if int(h[K.H_INDEX_SLOTS]) != slots:
                        self._reformat_locked(i, slots, _ACTIVE, gen, writer_id)
                        continue
                    raise InvalidArgument(_too_big(self, n_rec, key_offs, value_offs))
                # full: it stays in the generation; the writer moves to a fresh arena
                self._set(i, _FULL, gen, 0)
                self._owned.pop(writer_id, None)
                i = -1
            return 0, NO_ARENA, 0  # pragma: no cover - a fresh, fitted arena always fits

    def _append_large_locked(self, writer_id: int, keys, key_offs, values, value_offs, kinds, need: int):
        """Append one record too big for an arena into a segment of its own
        (``large-<id>``, sized for it) in a FREE slot, which goes FULL at
        once: it joins the current generation and is flushed, logged and
        released like any arena (its segment is unlinked at release).
        docs/values.md, "Large values".  REQUIRES: the pool lock."""
        ctl = self.ctl
        gen = int(ctl[C_GENERATION])
        i = -1
        for j in range(int(ctl[C_CREATED])):
            if int(ctl[self._slot(j) + S_STATE]) == _FREE:
                i = j
                break
        if i < 0:
            i = self._create_arena_locked()
            if i < 0:
                return 0, NO_ARENA, 0
        if self._live.gone():
            raise Closed(_GONE.format(self.dbtag))
        slots = K.index_slots_for(1)
        size = K.HEADER_BYTES + 8 * slots + ((need + 4095) & ~4095)
        large = int(ctl[C_LARGE_IDS]) + 1
        ctl[C_LARGE_IDS] = large
        seg = shm.Segment.create(
            shm.segment_name(self.dbtag, "large", large), size, prefault=self.desc.get("prefault", True), replace=True
        )
        try:
            a = seg.array()
            K.arena_init(a, slots)
        except BaseException:
            seg.close()
            seg.unlink()
            raise
        self._unmap(i)
        b = self._slot(i)
        ctl[b + S_LARGE] = large
        self._install(i, large, seg)
        self._set(i, _ACTIVE, gen, writer_id)
        n, base = K.arena_append_counted(a, keys, key_offs, values, value_offs, kinds, self.counter)
        h = a[: K.HEADER_BYTES].view("<u8")
        used = int(h[K.H_COMMITTED]) - int(h[K.H_LOG_OFF])
        if n != 1:  # pragma: no cover - the segment is sized for the record
            self._set(i, _FREE, 0, 0)
            ctl[b + S_LARGE] = 0
            self._unmap(i)
            seg.unlink()
            raise Internal(f"a large record of {need} bytes did not fit its own segment of {size} bytes")
        ctl[b + S_BYTES] = used
        ctl[C_UNFLUSHED] = int(ctl[C_UNFLUSHED]) + used
        gb = int(ctl[C_GEN_BYTES]) + used
        ctl[C_GEN_BYTES] = gb
        self._set(i, _FULL, gen, 0)  # nothing else goes in
        sealed = 0
        sb = int(ctl[C_SEAL_BYTES])
        if sb and gb >= sb:
            sealed = self._seal_locked() or 0
        return 1, base, sealed

    def _half_append_locked(self, a: np.ndarray, committed: int, n_rec: int, nbytes: int) -> None:
        """The ``mid-append`` failpoint's moment: the seqs of the batch are
        reserved (a gap if the append never completes) and some of its bytes
        are written beyond the committed offset, nothing committed.  A
        SIGKILL here is the worst moment for a writer to die; an ``error``
        leaves this state behind and raises; a ``sleep`` carries on (the real
        append overwrites the bytes, after the gap).
        REQUIRES: the pool lock; ``a`` is the appender's ACTIVE arena."""
        self.counter[0] = self.counter[0] + np.uint64(n_rec)
        end = min(a.shape[0], committed + min(nbytes, 64))
        a[committed:end] = 0xAB

    def arena_of(self, writer_id: int) -> int:
        """The arena ``writer_id`` appended to last from this process (-1 if
        none); it may have been sealed since.  For tests and tools."""
        return self._owned.get(writer_id, -1)

    # -------------------------------------------------------------- sealing
    def seal(self) -> int | None:
        """Seal the current generation: every ACTIVE/FULL arena with records
        becomes SEALED, empty ones FREE; writers move to fresh arenas at their
        next append.  Return the sealed generation, or None if it was empty."""
        with self.lock:
            return self._seal_locked()

    def _seal_locked(self) -> int | None:
        ctl = self.ctl
        cur = int(ctl[C_GENERATION])
        found = False
        for i, st, gen in self.live_slots():
            if st in (_ACTIVE, _FULL):
                if int(ctl[self._slot(i) + S_BYTES]):
                    self._set(i, _SEALED, gen, 0)
                    found = True
                else:
                    self._set(i, _FREE, 0, 0)
        if not found:
            return None
        ctl[C_GENERATION] = cur + 1
        ctl[C_GEN_BYTES] = 0
        return cur

    def active_bytes(self) -> int:
        """Record bytes of the current (unsealed) generation."""
        return int(self.ctl[C_GEN_BYTES])

    def has_sealed(self) -> bool:
        return any(st == _SEALED for _, st, _ in self.live_slots())

    def sealed_generations(self) -> list[SealedGeneration]:
        """Sealed (and flushing) generations, oldest first."""
        gens: dict[int, list[int]] = {}
        for i, st, gen in self.live_slots():
            if st in (_SEALED, _FLUSHING):
                gens.setdefault(gen, []).append(i)
        return [SealedGeneration(g, gens[g], self) for g in sorted(gens)]

    def begin_flush(self, gen: SealedGeneration) -> None:
        with self.lock:
            for i in gen.slots:
                st, g, _ = self.slot_info(i)
                if st == _SEALED:
                    self._set(i, _FLUSHING, g, 0)

    def release(self, gen: SealedGeneration) -> None:
        """Return the arenas of a flushed generation to the pool (after its L0
        is in the manifest).  Re-formats them outside the pool lock."""
        with self.lock:
            self.ctl[C_RELEASES] = int(self.ctl[C_RELEASES]) + 1  # odd: in progress
            for i in gen.slots:
                self._set(i, _FLUSHING, gen.number, 0)
        larges = []
        for i in gen.slots:
            large = int(self._larges[i])
            if large:
                K.arena_init(self.arena(i), K.index_slots_for(1))  # bumps the incarnation
                larges.append(large)
            else:
                K.arena_init(self.arena(i), self.index_slots)  # bumps the incarnation
        with self.lock:
            ctl = self.ctl
            freed = 0
            for i in gen.slots:
                b = self._slot(i)
                freed += int(ctl[b + S_BYTES])
                ctl[b + S_BYTES] = 0
                ctl[b + S_WAL_END] = 0
                ctl[b + S_WAL_INC] = 0
                if int(ctl[b + S_LARGE]):
                    ctl[b + S_LARGE] = 0  # back to its own arena segment (FREE, empty)
                    self._unmap(i)
                self._set(i, _FREE, 0, 0)
            for large in larges:  # pages go back once every process unmapped it
                try:
                    os.unlink(shm.segment_path(shm.segment_name(self.dbtag, "large", large)))
                except FileNotFoundError:
                    pass
            ctl[C_UNFLUSHED] = max(0, int(ctl[C_UNFLUSHED]) - freed)
            ctl[C_RELEASES] = int(ctl[C_RELEASES]) + 1  # even: done

    # ------------------------------------------------------------------ WAL
    def wal_parts(self):
        """Like :meth:`wal_snapshot`, without concatenating arenas:
        ``(parts, token, max_seq)`` with one ``(generation, arena, offs)`` part
        per arena holding records not in the WAL yet (views into shared
        memory, nothing copied), or None.  Same consistent cut, same token."""
        with self.lock:
            max_seq = int(self.ctl[C_NEXT_SEQ]) - 1
            cut = []
            for i, _st, gen in self.live_slots():
                a = self.arena(i)
                h = a[: K.HEADER_BYTES].view("<u8")
                inc = int(h[K.H_INCARNATION])
                end = int(h[K.H_COMMITTED])
                b = self._slot(i)
                start = int(self.ctl[b + S_WAL_END]) if int(self.ctl[b + S_WAL_INC]) == inc else 0
                cut.append((i, a, inc, start, end, gen))
        parts, token = [], []
        for i, a, inc, start, end, gen in cut:
            offs = K.arena_record_offsets(a, start, end)
            token.append((i, inc, end))
            if len(offs):
                parts.append((gen, a, offs))
        if not parts:
            self.wal_committed(token)
            return None
        return parts, token, max_seq

    def wal_snapshot(self):
        """What is committed but not in the WAL yet, as one record run:
        ``(buf, offs, token, max_gen, max_seq)``, or None if nothing.

        Taken under the pool lock, so it is a consistent cut: every seq <=
        ``max_seq`` is either in this run or in an earlier WAL upload (or in
        a reserved-but-never-committed gap).  ``buf`` is a private copy when
        several arenas contribute, else a view of the arena.  After the upload
        lands call :meth:`wal_committed` with ``token``."""
        snap = self.wal_parts()
        if snap is None:
            return None
        parts, token, max_seq = snap
        runs = [(a, offs) for _gen, a, offs in parts]
        max_gen = max(gen for gen, _a, _offs in parts)
        if len(runs) == 1:
            buf, offs = runs[0]
        else:
            from shaledb.kernels.sort import concat_runs

            buf, offs = concat_runs(runs)
        return buf, np.ascontiguousarray(offs), token, max_gen, max_seq

    def wal_committed(self, token) -> None:
        """Record that the ranges of a :meth:`wal_snapshot` are in the WAL."""
        with self.lock:
            for i, inc, end in token:
                a = self.arena(i)
                if int(a[: K.HEADER_BYTES].view("<u8")[K.H_INCARNATION]) == inc:
                    b = self._slot(i)
                    self.ctl[b + S_WAL_END] = end
                    self.ctl[b + S_WAL_INC] = inc

    # ---------------------------------------------------------------- reads
    def lookup(self, key: bytes):
        """Newest committed version of ``key`` in any live arena:
        ``(key, seq, kind, value or None)`` or None.

        Consistent against a concurrent :meth:`release`: the answer comes from
        a pass that no release overlapped (retried, for up to about a second,
        while one is in progress), so it never mixes a recycled arena of a
        generation with a still-live one.  Records of released generations
        are in L0; callers read L0 after the arenas."""
        ctl = self.ctl
        if not ctl[C_UNFLUSHED]:
            # no arena holds a record (every append adds to the unflushed
            # bytes, under the lock, before it returns; only a release of the
            # arenas takes them off again)
            return None
        karr = np.frombuffer(bytes(key), dtype=np.uint8)
        if karr.shape[0] == 0:
            return None
        best = None
        self._drop_stale_large()
        for attempt in range(200):
            r = int(ctl[C_RELEASES])
            if r & 1:
                time.sleep(0.005)
                continue
            best = self._lookup_pass(key, karr)
            if int(ctl[C_RELEASES]) == r:
                return best
        return best

    def lookup_many(self, kdata: np.ndarray, koffs: np.ndarray):
        """:meth:`lookup` of keys ``kdata[koffs[i]:koffs[i+1]]`` (valid keys,
        uint8 data, int64 offsets), one kernel pass per arena: arrays
        ``(rows, seqs, kinds, value starts, value lengths, values)`` for the
        keys some live arena holds (key ``rows[j]``'s newest version: value
        ``values[starts[j]:starts[j]+lengths[j]]``, empty for a tombstone),
        or None when no arena holds a record.  Same consistency as
        :meth:`lookup` (a pass no release overlapped)."""
        ctl = self.ctl
        if not ctl[C_UNFLUSHED]:
            return None
        found = None
        for attempt in range(200):
            r = int(ctl[C_RELEASES])
            if r & 1:
                time.sleep(0.005)
                continue
            found = self._lookup_many_pass(kdata, koffs)
            if int(ctl[C_RELEASES]) == r:
                return found
        return found

    def _lookup_many_pass(self, kdata, koffs):
        from shaledb.kernels import getmany as G

        states = self._states
        n = koffs.shape[0] - 1
        best_seq = np.full(n, -1, dtype=np.int64)
        out = np.empty((n, G.A_COLS), dtype=np.int64)
        src = np.full(n, -1, dtype=np.int64)  # per key: index in ``parts`` of its newest arena version
        at = np.zeros(n, dtype=np.int64)  # and its row there
        parts = []  # per arena with hits: (seqs, kinds, lengths, value data, value bounds)
        for i in range(int(self.ctl[C_CREATED])):
            if not states[i]:
                continue
            a = self._arenas.get(i)
            if a is None or self._mapped_large.get(i, 0) != int(self._larges[i]):
                a = self.arena(i)
            h = self._hdrs.get(i)
            if h is None:
                h = self._hdrs[i] = a[: K.HEADER_BYTES].view("<u8")
            inc = h[K.H_INCARNATION]
            before = best_seq.copy()
            if not G.arena_lookup_many(a, kdata, koffs, best_seq, out):
                continue
            rows = np.flatnonzero(out[:, G.A_OFF] >= 0)
            vdata = np.empty(int(out[rows, G.A_VLEN].sum()), dtype=np.uint8)
            voffs = np.empty(rows.shape[0] + 1, dtype=np.int64)
            G.copy_values(a, out, rows, vdata, voffs)
            if h[K.H_INCARNATION] != inc or states[i] == _FREE:  # recycled meanwhile: not this arena's
                best_seq = before
                continue
            src[rows] = len(parts)
            at[rows] = np.arange(rows.shape[0])
            parts.append((out[rows, G.A_SEQ], out[rows, G.A_KIND], voffs, vdata))
        rows = np.flatnonzero(src >= 0)
        if not parts:
            return rows, rows, rows, rows, rows, np.empty(0, dtype=np.uint8)
        base = np.cumsum([0] + [p[3].shape[0] for p in parts])
        seqs = np.empty(rows.shape[0], dtype=np.int64)
        kinds = np.empty(rows.shape[0], dtype=np.int64)
        starts = np.empty(rows.shape[0], dtype=np.int64)
        lens = np.empty(rows.shape[0], dtype=np.int64)
        for k, (pseq, pkind, pvoffs, _pdata) in enumerate(parts):
            sel = src[rows] == k
            j = at[rows[sel]]
            seqs[sel] = pseq[j]
            kinds[sel] = pkind[j]
            starts[sel] = base[k] + pvoffs[j]
            lens[sel] = pvoffs[j + 1] - pvoffs[j]
        return rows, seqs, kinds, starts, lens, np.concatenate([p[3] for p in parts])

    def _lookup_pass(self, key, karr):
        states = self._states
        best = None
        best_seq = -1
        for i in range(int(self.ctl[C_CREATED])):
            if not states[i]:
                continue
            a = self._arenas.get(i)
            if a is None or self._mapped_large.get(i, 0) != int(self._larges[i]):
                a = self.arena(i)
            h = self._hdrs.get(i)
            if h is None:
                h = self._hdrs[i] = a[: K.HEADER_BYTES].view("<u8")
            inc = h[K.H_INCARNATION]
            off, kind, seq, vs, vl = K.lookup_record(a, karr)
            if off < 0 or seq <= best_seq:
                continue
            value = a[vs : vs + vl].tobytes() if kind else None
            if h[K.H_INCARNATION] != inc or states[i] == _FREE:
                continue
            best_seq = int(seq)
            best = (key, best_seq, int(kind), value)
        return best

    def live_runs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Private copies ``(buf, offs)`` of the committed records of every
        live arena (unsorted; only the record log is copied), from a pass that
        no release overlapped (as :meth:`lookup`)."""
        out: list = []
        for _attempt in range(200):
            r = int(self.ctl[C_RELEASES])
            if r & 1:
                time.sleep(0.005)
                continue
            out = self._live_runs_pass()
            if int(self.ctl[C_RELEASES]) == r:
                break
        return out

    def _live_runs_pass(self) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for i, _st, _gen in self.live_slots():
            a = self.arena(i)
            h = a[: K.HEADER_BYTES].view("<u8")
            inc = int(h[K.H_INCARNATION])
            start = int(h[K.H_LOG_OFF])
            end = int(h[K.H_COMMITTED])
            if end <= start:
                continue
            buf = a[start:end].copy()
            if int(h[K.H_INCARNATION]) != inc or int(self.ctl[self._slot(i) + S_STATE]) == _FREE:
                continue
            out.append((buf, K.record_offsets(buf, 0, buf.shape[0])))
        return out

    def sorted_runs_snapshot(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`live_runs`, each sorted by (key asc, seq desc)."""
        from shaledb.kernels.sort import sort_records

        return [(buf, sort_records(buf, offs)) for buf, offs in self.live_runs()]


_GONE = (
    "the database is gone (its shared memory {} was removed: it was closed, or its "
    "process died); open it again"
)


def _records_bytes(key_offs, value_offs) -> int:
    """Arena bytes of a batch's records (headers and padding included)."""
    pad = RECORD_ALIGN - 1
    return int(((RECORD_HEADER + np.diff(key_offs) + np.diff(value_offs) + pad) & ~np.int64(pad)).sum())


def _too_big(pool: "ArenaPool", n_rec: int, key_offs, value_offs) -> str:
    pad = RECORD_ALIGN - 1
    need = int(((RECORD_HEADER + np.diff(key_offs) + np.diff(value_offs) + pad) & ~np.int64(pad)).sum())
    cap = pool.batch_capacity(n_rec)
    what = "a record" if n_rec == 1 else f"a batch of {n_rec} records"
    return (
        f"{what} of {need} bytes (16-byte record headers and 8-byte padding included) does not "
        f"fit into one arena: an arena of arena_bytes={pool.arena_bytes} holds at most {cap} "
        f"record bytes for {n_rec} record(s) (the rest is its header and hash index); "
        f"raise Options.arena_bytes" + ("" if n_rec == 1 else " or split the batch")
    )


def _raise_status(st: int) -> None:
    if st == PoolStatus.CLOSED:
        raise Closed("the database is closed")
    if st == PoolStatus.FENCED:
        raise Fenced("a newer writer opened this database; this handle is fenced")
    raise Unavailable("the database's flusher failed; reopen the database")
