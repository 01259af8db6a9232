"""The simulated world: a clock, an object store with seeded faults, and a baton.

Every actor of the simulation runs the real protocol code (ManifestStore,
gc.collect, the WAL codec and recovery) in a thread of its own, but only one
thread runs at a time: every store call *parks* the calling actor and hands
the baton back to the scheduler, which picks the next actor with the seeded
rng.  So a run is a pure function of its seed and configuration, and two
actors' requests reach the store in whatever order the seed says.

* :class:`SimClock`: simulated time (``versioned.Clock``); ``now_ms`` ticks
  one millisecond per reading, so ULIDs minted on it are in time order.
* :class:`SimStore`: objects in a dict with deterministic etags and
  ``last_modified`` on the sim clock.  Faults, drawn from the world rng when
  an operation runs: a read or write that fails (Unavailable, nothing
  done), a write that lands and then reports failure, and a write that
  reports failure and lands *later* (at a seeded later step, or never if its
  condition no longer holds then).  Every call adds a seeded latency.
* :class:`Baton`: the hand-off between the scheduler thread and the actors.

Nothing here is thread-safe by locks: the baton guarantees one runner.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from shaledb.errors import InvalidArgument, ObjectNotFound, PreconditionFailed, Unavailable
from shaledb.storage.base import (
    PUT_ID_KEY,
    ObjectMeta,
    ObjectStore,
    PutResult,
    check_data,
    check_key,
    check_metadata,
    check_prefix,
    check_range,
)

__all__ = ["Baton", "Crash", "Faults", "Hang", "SimClock", "SimStore", "Stop", "new_signal"]

#: 2023-11-14T22:13:20Z: the sim's wall clock starts here (any fixed value would do)
START_MS = 1_700_000_000_000


class Stop(BaseException):
    """Raised inside an actor thread to end it (BaseException: real code's
    ``except Exception`` must not swallow it)."""


class Crash(BaseException):
    """Raised inside an actor thread at a store call: its process dies here."""


class Hang(Exception):
    """An actor did not hand the baton back in time."""


class SimClock:
    """Simulated time.  ``monotonic`` and ``now_ms`` share one counter (µs).

    Each ``now_ms()`` reading advances time by 1 ms, so two readings (and
    the ULIDs minted from them) are strictly ordered.
    """

    def __init__(self, start_ms: int = START_MS):
        self.start_ms = start_ms
        self.us = 0

    def monotonic(self) -> float:
        return self.us / 1e6

    def now_ms(self) -> int:
        self.us += 1000
        return self.start_ms + self.us // 1000

    def peek_ms(self) -> int:
        """Wall ms without ticking (for checks)."""
        return self.start_ms + self.us // 1000

    def wall(self) -> float:
        """POSIX seconds now (no tick)."""
        return (self.start_ms * 1000 + self.us) / 1e6

    def sleep(self, seconds: float) -> None:
        self.us += max(0, int(seconds * 1e6))

    def advance(self, us: int) -> None:
        self.us += us


class _Obj:
    __slots__ = ("data", "etag", "mtime", "metadata")

    def __init__(self, data: bytes, etag: str, mtime: float, metadata: dict):
        self.data = data
        self.etag = etag
        self.mtime = mtime
        self.metadata = metadata


@dataclass(frozen=True)
class Faults:
    """Per-operation fault probabilities and latency (µs) of the SimStore."""

    read_fail: float = 0.0
    write_fail: float = 0.0
    land_then_fail: float = 0.0
    land_late: float = 0.0
    max_latency_us: int = 20_000
    late_max_us: int = 2_000_000

    @classmethod
    def level(cls, level: int) -> "Faults":
        if level <= 0:
            return cls()
        p = min(0.2, 0.01 * level)
        return cls(read_fail=p, write_fail=p, land_then_fail=p, land_late=p)


class SimStore:
    """The simulated bucket; actors reach it through :meth:`view` handles."""

    def __init__(self, world):
        self.world = world
        self.clock: SimClock = world.clock
        self.objs: dict[str, _Obj] = {}
        self.version = 0  # bumps on every mutation
        self._etag = 0
        self.limbo: list[tuple[int, int, str, str, bytes, dict]] = []  # (due_us, n, op, key, data, meta)
        self._limbo_n = 0
        self.faults_injected = 0
        self.on_create = None  # callback(key, data) when an object is created

    # --------------------------------------------------------------- internal

    def _apply(self, op: str, key: str, data: bytes | None, meta: dict | None) -> PutResult | None:
        if op == "delete":
            if self.objs.pop(key, None) is not None:
                self.version += 1
            return None
        if op == "put_if_absent" and key in self.objs:
            raise PreconditionFailed(f"object {key!r} already exists")
        self._etag += 1
        obj = _Obj(data, f"e{self._etag}", self.clock.wall(), meta)
        self.objs[key] = obj
        self.version += 1
        if self.on_create is not None:
            self.on_create(key, data)
        return PutResult(obj.etag, meta.get(PUT_ID_KEY))

    def deliver_due(self, force: bool = False) -> list[str]:
        """Land the late writes whose time has come (all with ``force``)."""
        out = []
        keep = []
        for item in self.limbo:
            due, _n, op, key, data, meta = item
            if force or due <= self.clock.us:
                try:
                    self._apply(op, key, data, meta)
                    out.append(f"late {op} {key} landed")
                except PreconditionFailed:
                    out.append(f"late {op} {key} lost its condition")
            else:
                keep.append(item)
        self.limbo = keep
        return out

    def view(self, actor) -> "StoreView":
        return StoreView(self, actor)


class StoreView(ObjectStore):
    """One actor's connection to the SimStore: every call parks the actor."""

    def __init__(self, sim: SimStore, actor):
        self.sim = sim
        self.actor = actor

    def __repr__(self) -> str:
        return f"SimStore(view of {self.actor.name})"

    def spec(self) -> tuple[str, dict[str, Any]]:
        raise InvalidArgument("the simulated store cannot be reopened elsewhere")

    def _call(self, op: str, key: str):
        """Park, then draw latency and a fault for ``op``; returns the fault kind."""
        w = self.sim.world
        w.baton.park(self.actor, f"{op} {key}")
        f = w.faults
        rng = w.rng
        self.sim.clock.advance(rng.randrange(f.max_latency_us + 1))
        r = rng.random()
        if op in ("get", "get_range", "head", "list"):
            kind = "fail" if r < f.read_fail else "ok"
        else:
            kind = "ok"
            for name, p in (("fail", f.write_fail), ("land_then_fail", f.land_then_fail), ("late", f.land_late)):
                if r < p:
                    kind = name
                    break
                r -= p
            if kind == "late" and op == "delete":
                kind = "land_then_fail"
        if kind != "ok":
            self.sim.faults_injected += 1
        w.note(self.actor, f"{op} {key}" + ("" if kind == "ok" else f" [{kind}]"))
        return kind

    def _unavailable(self, op: str, key: str) -> Unavailable:
        return Unavailable(f"simulated failure of {op} {key!r}")

    def get(self, key: str) -> bytes:
        check_key(key)
        if self._call("get", key) == "fail":
            raise self._unavailable("get", key)
        obj = self.sim.objs.get(key)
        if obj is None:
            raise ObjectNotFound(f"object {key!r} not found")
        return obj.data

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        start, end = check_range(start, end)
        return self.get(key)[start:end]

    def head(self, key: str) -> ObjectMeta:
        check_key(key)
        if self._call("head", key) == "fail":
            raise self._unavailable("head", key)
        obj = self.sim.objs.get(key)
        if obj is None:
            raise ObjectNotFound(f"object {key!r} not found")
        return ObjectMeta(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        check_prefix(prefix)
        if self._call("list", prefix) == "fail":
            raise self._unavailable("list", prefix)
        items = sorted((k, o) for k, o in self.sim.objs.items() if k.startswith(prefix))
        return iter([ObjectMeta(k, len(o.data), o.etag, o.mtime, None) for k, o in items])

    def _write(self, op: str, key: str, data, metadata, put_id) -> PutResult | None:
        check_key(key)
        body = meta = None
        if op != "delete":
            body = check_data(data).tobytes()
            meta = check_metadata(metadata, put_id)
        kind = self._call(op, key)
        if kind == "fail":
            raise self._unavailable(op, key)
        if kind == "late":
            sim = self.sim
            sim._limbo_n += 1
            due = sim.clock.us + 1 + self.sim.world.rng.randrange(sim.world.faults.late_max_us)
            sim.limbo.append((due, sim._limbo_n, op, key, body, meta))
            raise self._unavailable(op, key)
        res = self.sim._apply(op, key, body, meta)
        if kind == "land_then_fail":
            raise self._unavailable(op, key)
        return res

    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None) -> PutResult:
        return self._write("put", key, data, metadata, put_id)

    def put_if_absent(
        self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        return self._write("put_if_absent", key, data, metadata, put_id)

    def put_if_match(self, key, data, etag, metadata=None, *, put_id=None) -> PutResult:
        raise InvalidArgument("the simulated protocol uses no put_if_match")

    def delete(self, key: str) -> None:
        self._write("delete", key, None, None, None)


class Baton:
    """Exactly one of (scheduler, actors) runs; the scheduler picks who.

    An actor thread calls :meth:`park` at every store call and operation
    boundary; the scheduler calls :meth:`step` to let one parked actor run
    to its next park.  A ``signal`` (Crash, Stop) set on the actor is raised
    from its park.
    """

    def __init__(self, timeout: float = 60.0):
        self._main = new_signal()
        self.timeout = timeout

    def park(self, actor, what: str) -> None:
        actor.pending = what
        self._main.release()
        actor.sem.acquire()
        sig = actor.signal
        if sig is not None:
            actor.signal = None
            raise sig

    def start(self, actor) -> None:
        """Start the actor's thread; it runs until its first park."""
        actor.thread = threading.Thread(target=actor.thread_main, name=f"sim-{actor.name}", daemon=True)
        actor.thread.start()
        if not self._main.acquire(timeout=self.timeout):
            raise Hang(f"actor {actor.name} did not reach its first store call")

    def step(self, actor, signal: BaseException | None = None) -> None:
        actor.signal = signal
        actor.sem.release()
        if not self._main.acquire(timeout=self.timeout):
            raise Hang(f"actor {actor.name} did not hand the baton back within {self.timeout}s (at {actor.pending})")

    def finished(self) -> None:
        """Called by an actor thread as it ends."""
        self._main.release()


def new_signal():
    """A binary semaphore that starts at 0: a held lock (release = signal,
    acquire = wait).  The baton alternates strictly, so it never overflows."""
    lock = threading.Lock()
    lock.acquire()
    return lock
