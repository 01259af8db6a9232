"""Store wrappers: retrying, instrumented, fault-injecting.

Each wrapper derives from :class:`StoreWrapper`, which forwards every call to
the wrapped store, and overrides only what it changes, so wrappers stack in
any order::

    store = RetryingStore(InstrumentedStore(FaultyStore(open_store(url))))

``spec()`` of a wrapper is the spec of the store at the bottom: reopening it
elsewhere gives the bare backend, and the other process wraps it as it likes.
Wrappers are not picklable.  All wrappers are thread-safe.

Per-call deadlines: a public engine call (``get``, a step of ``scan``) runs
its store operations inside ``with call_deadline(seconds):``.  Every
:class:`RetryingStore` below it then stops retrying, and starts no new
attempt, once that one deadline has passed, raising Unavailable: the call's
retries share one budget instead of each operation having its own.  The
deadline lives in a ``contextvars.ContextVar``, so it belongs to one thread
(or task) and nests (an inner deadline never extends an outer one).
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from shaledb.errors import PreconditionFailed, Unavailable
from shaledb.storage.base import ObjectMeta, ObjectStore, PutResult, check_prefix, new_put_id, settle_conditional_put

__all__ = [
    "AddLatency",
    "ApplyThenFail",
    "FailNth",
    "FailRandomly",
    "Fault",
    "FaultyStore",
    "Gate",
    "InstrumentedStore",
    "OpStats",
    "RetryingStore",
    "StoreWrapper",
    "call_deadline",
    "deadline_left",
]

OPS = ("get", "get_range", "head", "put", "put_if_absent", "put_if_match", "delete", "list")
_GROUPS = {
    "read": ("get", "get_range", "head", "list"),
    "write": ("put", "put_if_absent", "put_if_match", "delete"),
    "conditional": ("put_if_absent", "put_if_match"),
    "all": OPS,
}


class StoreWrapper(ObjectStore):
    """Forwards every operation to ``inner``; subclasses override what they change."""

    def __init__(self, inner: ObjectStore):
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} is not picklable; pickle or spec() the store it wraps")

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        return self.inner.get_range(key, start, end)

    def head(self, key: str) -> ObjectMeta:
        return self.inner.head(key)

    def mmap(self, key: str):
        """The inner store's ``mmap(key)`` (a read-only memoryview of the
        object), or None when it cannot map objects."""
        fn = getattr(self.inner, "mmap", None)
        return fn(key) if fn is not None else None

    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None) -> PutResult:
        return self.inner.put(key, data, metadata, put_id=put_id)

    def put_if_absent(
        self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        return self.inner.put_if_absent(key, data, metadata, put_id=put_id)

    def put_if_match(
        self, key: str, data, etag: str, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        return self.inner.put_if_match(key, data, etag, metadata, put_id=put_id)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self.inner.list(prefix)

    def spec(self) -> tuple[str, dict[str, Any]]:
        return self.inner.spec()

    def close(self) -> None:
        self.inner.close()


# ---------------------------------------------------------------------------
# Per-call deadline

#: (clock, end time on that clock, seconds granted) of the innermost call_deadline, or None
_CALL_DEADLINE: contextvars.ContextVar = contextvars.ContextVar("shaledb_call_deadline", default=None)


class call_deadline:
    """``with call_deadline(seconds):`` gives the store operations inside one
    deadline, ``seconds`` from now on ``clock`` (default ``time.monotonic``).

    RetryingStore raises Unavailable instead of starting an attempt or a
    retry after the deadline (an attempt already running is bounded by the
    backend's own timeouts).  Nested deadlines keep the earlier end.
    REQUIRES: ``seconds > 0``.  Not reentrant: one ``with`` per instance.
    """

    __slots__ = ("seconds", "clock", "_token")

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic):
        self.seconds = float(seconds)
        self.clock = clock
        self._token = None

    def __enter__(self) -> "call_deadline":
        end = self.clock() + self.seconds
        outer = _CALL_DEADLINE.get()
        if outer is not None and outer[0] == self.clock and outer[1] <= end:
            self._token = _CALL_DEADLINE.set(outer)
        else:
            self._token = _CALL_DEADLINE.set((self.clock, end, self.seconds))
        return self

    def __exit__(self, *exc) -> None:
        _CALL_DEADLINE.reset(self._token)
        self._token = None


def deadline_left() -> float | None:
    """Seconds left before the current call's deadline (may be <= 0), or None if there is none."""
    d = _CALL_DEADLINE.get()
    if d is None:
        return None
    return d[1] - d[0]()


def _check_call_deadline(op: str, key: str, attempts: int, err: BaseException | None = None) -> None:
    """Raise Unavailable if the current call's deadline has passed."""
    d = _CALL_DEADLINE.get()
    if d is not None and d[0]() >= d[1]:
        cause = f": {err}" if err is not None else ""
        raise Unavailable(
            f"{op} {key!r}: the call's deadline of {d[2]:g}s passed after {attempts} attempt(s){cause}"
        ) from err


# ---------------------------------------------------------------------------
# RetryingStore


class _Backoff:
    """Attempt bookkeeping for one logical operation."""

    def __init__(self, store: "RetryingStore", op: str, key: str):
        self.store = store
        self.op = op
        self.key = key
        self.attempt = 0
        self.started = store._clock()

    def failed(self, err: Unavailable) -> None:
        """Sleep before the next attempt, or raise if the budget is spent."""
        s = self.store
        self.attempt += 1
        elapsed = s._clock() - self.started
        delay = min(s.max_delay, s.base_delay * (2 ** (self.attempt - 1)))
        with s._rng_lock:
            delay *= 0.5 + 0.5 * s._rng.random()
        d = _CALL_DEADLINE.get()
        # Inside a call deadline that deadline alone bounds the retries (one
        # budget for the whole call); otherwise the per-operation budget does.
        if d is None and (self.attempt >= s.max_attempts or elapsed + delay > s.deadline):
            raise Unavailable(
                f"{self.op} {self.key!r} still unavailable after {self.attempt} attempts "
                f"over {elapsed:.2f}s: {err}"
            ) from err
        if d is not None:
            left = d[1] - d[0]()
            if left <= 0 or delay >= left:
                raise Unavailable(
                    f"{self.op} {self.key!r}: the call's deadline of {d[2]:g}s passes before the next "
                    f"attempt ({self.attempt} attempt(s) so far): {err}"
                ) from err
        s._sleep(delay)


class RetryingStore(StoreWrapper):
    """Retries operations that raise Unavailable, with bounded exponential backoff.

    Attempt ``n`` (from 1) that fails is followed by a sleep of
    ``min(max_delay, base_delay * 2**(n-1))`` scaled by a jitter factor in
    [0.5, 1) from ``rng`` (seeded by ``seed``).  It gives up, raising
    Unavailable, after ``max_attempts`` attempts or when the next sleep would
    end more than ``deadline`` seconds after the first attempt began.
    ``sleep`` and ``clock`` are injectable so tests run without waiting.

    Conditional puts keep one put-id across attempts.  When an attempt was
    ambiguous (raised Unavailable) and a later attempt fails its precondition,
    the object is examined: if it carries our put-id, the earlier attempt
    landed and the put is reported as a success (see ``docs/storage.md``).
    Other errors (ObjectNotFound, PreconditionFailed, InvalidArgument, ...)
    pass through at once.  ``list`` resumes after the last key it yielded.
    Inside :class:`call_deadline`, no attempt starts and no retry sleeps past
    the call's deadline (Unavailable instead), whatever ``deadline`` allows.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        max_attempts: int = 8,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        deadline: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ):
        super().__init__(inner)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.deadline = deadline
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def _retry(self, op: str, key: str, fn: Callable[[], Any]):
        backoff = _Backoff(self, op, key)
        while True:
            _check_call_deadline(op, key, backoff.attempt)
            try:
                return fn()
            except Unavailable as e:
                backoff.failed(e)

    def get(self, key: str) -> bytes:
        return self._retry("get", key, lambda: self.inner.get(key))

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        return self._retry("get_range", key, lambda: self.inner.get_range(key, start, end))

    def head(self, key: str) -> ObjectMeta:
        return self._retry("head", key, lambda: self.inner.head(key))

    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None) -> PutResult:
        if put_id is None:
            put_id = new_put_id()
        return self._retry("put", key, lambda: self.inner.put(key, data, metadata, put_id=put_id))

    def _conditional(self, op: str, key: str, put_id: str, fn: Callable[[], PutResult]) -> PutResult:
        ambiguous = False

        def attempt() -> PutResult:
            nonlocal ambiguous
            try:
                return fn()
            except Unavailable:
                ambiguous = True
                raise
            except PreconditionFailed as e:
                if not ambiguous:
                    raise
                return settle_conditional_put(self, key, put_id, e)

        return self._retry(op, key, attempt)

    def put_if_absent(
        self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        if put_id is None:
            put_id = new_put_id()
        return self._conditional(
            "put_if_absent", key, put_id, lambda: self.inner.put_if_absent(key, data, metadata, put_id=put_id)
        )

    def put_if_match(
        self, key: str, data, etag: str, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        if put_id is None:
            put_id = new_put_id()
        return self._conditional(
            "put_if_match", key, put_id, lambda: self.inner.put_if_match(key, data, etag, metadata, put_id=put_id)
        )

    def delete(self, key: str) -> None:
        self._retry("delete", key, lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectMeta]:
        backoff = _Backoff(self, "list", prefix)
        last: str | None = None
        while True:
            _check_call_deadline("list", prefix, backoff.attempt)
            try:
                for meta in self.inner.list(prefix):
                    if last is not None and meta.key <= last:
                        continue
                    last = meta.key
                    yield meta
                return
            except Unavailable as e:
                backoff.failed(e)


# ---------------------------------------------------------------------------
# InstrumentedStore


@dataclass(frozen=True)
class OpStats:
    """Figures for one operation kind since the last reset.

    ``bytes_written`` counts payload sent to the store, ``bytes_read``
    payload received; ``seconds`` is total wall time (for ``list``: until the
    iterator was exhausted or dropped); ``errors`` counts calls that raised.
    """

    count: int = 0
    errors: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    max_seconds: float = 0.0


class _Acc:
    __slots__ = ("count", "errors", "bytes_written", "bytes_read", "seconds", "max_seconds")

    def __init__(self):
        self.count = self.errors = self.bytes_written = self.bytes_read = 0
        self.seconds = self.max_seconds = 0.0


class InstrumentedStore(StoreWrapper):
    """Counts calls, errors, bytes and latency per operation kind.

    ``snapshot()`` returns ``{op: OpStats}`` for every op in OPS; ``reset()``
    zeroes them.  ``clock`` is injectable (default ``time.perf_counter``).
    """

    def __init__(self, inner: ObjectStore, *, clock: Callable[[], float] = time.perf_counter):
        super().__init__(inner)
        self._clock = clock
        self._lock = threading.Lock()
        self._stats = {op: _Acc() for op in OPS}

    def _record(self, op: str, t0: float, ok: bool, written: int = 0, read: int = 0) -> None:
        dt = self._clock() - t0
        with self._lock:
            acc = self._stats[op]
            acc.count += 1
            acc.errors += not ok
            acc.bytes_written += written
            acc.bytes_read += read
            acc.seconds += dt
            if dt > acc.max_seconds:
                acc.max_seconds = dt

    def _measure(self, op: str, fn: Callable[[], Any], written: int = 0, read_of=None):
        t0 = self._clock()
        try:
            result = fn()
        except BaseException:
            self._record(op, t0, False, written)
            raise
        self._record(op, t0, True, written, len(result) if read_of else 0)
        return result

    def snapshot(self) -> dict[str, OpStats]:
        with self._lock:
            return {
                op: OpStats(a.count, a.errors, a.bytes_written, a.bytes_read, a.seconds, a.max_seconds)
                for op, a in self._stats.items()
            }

    def reset(self) -> None:
        with self._lock:
            self._stats = {op: _Acc() for op in OPS}

    def get(self, key: str) -> bytes:
        return self._measure("get", lambda: self.inner.get(key), read_of=True)

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        return self._measure("get_range", lambda: self.inner.get_range(key, start, end), read_of=True)

    def head(self, key: str) -> ObjectMeta:
        return self._measure("head", lambda: self.inner.head(key))

    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None) -> PutResult:
        return self._measure("put", lambda: self.inner.put(key, data, metadata, put_id=put_id), _nbytes(data))

    def put_if_absent(
        self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        return self._measure(
            "put_if_absent", lambda: self.inner.put_if_absent(key, data, metadata, put_id=put_id), _nbytes(data)
        )

    def put_if_match(
        self, key: str, data, etag: str, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        return self._measure(
            "put_if_match", lambda: self.inner.put_if_match(key, data, etag, metadata, put_id=put_id), _nbytes(data)
        )

    def delete(self, key: str) -> None:
        self._measure("delete", lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        t0 = self._clock()
        try:
            it = iter(self.inner.list(prefix))
        except BaseException:
            self._record("list", t0, False)
            raise
        return self._list(it, t0)

    def _list(self, it: Iterator[ObjectMeta], t0: float) -> Iterator[ObjectMeta]:
        ok = False
        try:
            yield from it
            ok = True
        except GeneratorExit:
            ok = True
            raise
        finally:
            self._record("list", t0, ok)


def _nbytes(data) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return 0


# ---------------------------------------------------------------------------
# FaultyStore and its injectors


def _expand_ops(ops: str | Iterable[str] | None) -> frozenset[str]:
    if ops is None:
        return frozenset(OPS)
    if isinstance(ops, str):
        ops = (ops,)
    out: set[str] = set()
    for op in ops:
        if op in _GROUPS:
            out.update(_GROUPS[op])
        elif op in OPS:
            out.add(op)
        else:
            raise ValueError(f"unknown store operation {op!r}; known: {OPS + tuple(_GROUPS)}")
    return frozenset(out)


def _make_error(error, op: str, key: str, why: str) -> BaseException:
    if error is None:
        return Unavailable(f"injected fault: {why} ({op} {key!r})")
    if isinstance(error, type) and issubclass(error, BaseException):
        return error(f"injected fault: {why} ({op} {key!r})")
    return error(op, key)


class Fault:
    """Base of the injectors.

    A fault applies to the operations named in ``ops`` (op names or the groups
    "read", "write", "conditional", "all"; None = all) on keys starting with
    ``prefix``.  ``phase`` is "before" (runs before the operation reaches the
    wrapped store) or "after" (runs after it succeeded).  ``fired`` counts how
    often the fault acted.
    """

    phase = "before"

    def __init__(self, ops: str | Iterable[str] | None = None, prefix: str = ""):
        self.ops = _expand_ops(ops)
        self.prefix = prefix
        self.fired = 0
        self._lock = threading.Lock()

    def matches(self, op: str, key: str) -> bool:
        if op not in self.ops:
            return False
        return not self.prefix or (isinstance(key, str) and key.startswith(self.prefix))

    def apply(self, op: str, key: str) -> None:
        """Act on one matching operation: return, sleep, wait, or raise."""
        raise NotImplementedError


class _Counted(Fault):
    """A fault that acts on matching operations number ``n`` .. ``n + times - 1``
    (counting from 1); ``error`` as in :class:`FailNth`."""

    def __init__(self, ops, prefix: str, n: int, times: int, error):
        super().__init__(ops, prefix)
        if n < 1 or times < 1:
            raise ValueError("n and times must be >= 1")
        self.n = n
        self.times = times
        self.error = error
        self.seen = 0

    def _count(self) -> int | None:
        """Count one matching operation; its number if the fault acts on it."""
        with self._lock:
            self.seen += 1
            if self.n <= self.seen < self.n + self.times:
                self.fired += 1
                return self.seen
        return None


class FailNth(_Counted):
    """Fail matching operations number ``n`` .. ``n + times - 1`` (counting from 1).

    ``error``: an exception class (called with a message) or a callable
    ``(op, key) -> exception``; default Unavailable.
    """

    def __init__(self, n: int, ops=None, prefix: str = "", *, times: int = 1, error=None):
        super().__init__(ops, prefix, n, times, error)

    def apply(self, op: str, key: str) -> None:
        count = self._count()
        if count is not None:
            raise _make_error(self.error, op, key, f"call #{count}")


class FailRandomly(Fault):
    """Fail each matching operation with ``probability``, from a seeded RNG."""

    def __init__(self, probability: float, ops=None, prefix: str = "", *, seed: int = 0, error=None):
        super().__init__(ops, prefix)
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be in [0, 1]")
        self.probability = probability
        self.error = error
        self._rng = random.Random(seed)

    def apply(self, op: str, key: str) -> None:
        with self._lock:
            hit = self._rng.random() < self.probability
            if hit:
                self.fired += 1
        if hit:
            raise _make_error(self.error, op, key, f"random failure p={self.probability}")


class AddLatency(Fault):
    """Sleep ``seconds`` before each matching operation (``sleep`` injectable)."""

    def __init__(self, seconds: float, ops=None, prefix: str = "", *, sleep: Callable[[float], None] = time.sleep):
        super().__init__(ops, prefix)
        self.seconds = seconds
        self._sleep = sleep

    def apply(self, op: str, key: str) -> None:
        with self._lock:
            self.fired += 1
        self._sleep(self.seconds)


class Gate(Fault):
    """Hold matching operations until the gate is opened.

    ``event`` is anything with ``wait(timeout) -> bool`` and ``set()``
    (default a new ``threading.Event``); ``open()`` sets it.  ``arrived`` is
    set when the first operation reaches the closed gate, so a test can wait
    for it.  An operation held longer than ``timeout`` seconds raises
    Unavailable instead of hanging the test.
    """

    def __init__(self, ops=None, prefix: str = "", *, event=None, timeout: float = 30.0):
        super().__init__(ops, prefix)
        self.event = event if event is not None else threading.Event()
        self.arrived = threading.Event()
        self.timeout = timeout

    def open(self) -> None:
        self.event.set()

    def wait_arrived(self, timeout: float = 10.0) -> bool:
        return self.arrived.wait(timeout)

    def apply(self, op: str, key: str) -> None:
        with self._lock:
            self.fired += 1
        self.arrived.set()
        if not self.event.wait(self.timeout):
            raise Unavailable(f"injected fault: gate stayed closed for {self.timeout}s ({op} {key!r})")


class ApplyThenFail(_Counted):
    """Let the write land, then raise (default Unavailable) to the caller.

    Acts on matching successful operations number ``n`` .. ``n + times - 1``
    (default: writes, the first one only).  This is the ambiguous write: the
    store changed, but the caller cannot know.
    """

    phase = "after"

    def __init__(self, ops="write", prefix: str = "", *, n: int = 1, times: int = 1, error=None):
        super().__init__(ops, prefix, n, times, error)

    def apply(self, op: str, key: str) -> None:
        if self._count() is not None:
            raise _make_error(self.error, op, key, "the write was applied")


class FaultyStore(StoreWrapper):
    """Runs the injected faults around every operation of the wrapped store.

    Faults run in the order added; with no faults it is a plain pass-through
    (the conformance suite runs it that way).
    """

    def __init__(self, inner: ObjectStore, *faults: Fault):
        super().__init__(inner)
        self._faults: list[Fault] = list(faults)
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _run(self, op: str, key: str, fn: Callable[[], Any]):
        with self._lock:
            faults = list(self._faults)
        for f in faults:
            if f.phase == "before" and f.matches(op, key):
                f.apply(op, key)
        result = fn()
        for f in faults:
            if f.phase == "after" and f.matches(op, key):
                f.apply(op, key)
        return result

    def get(self, key: str) -> bytes:
        return self._run("get", key, lambda: self.inner.get(key))

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        return self._run("get_range", key, lambda: self.inner.get_range(key, start, end))

    def mmap(self, key: str):
        """None: reads go through ``get_range``, where the faults run."""
        return None

    def head(self, key: str) -> ObjectMeta:
        return self._run("head", key, lambda: self.inner.head(key))

    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None) -> PutResult:
        return self._run("put", key, lambda: self.inner.put(key, data, metadata, put_id=put_id))

    def put_if_absent(
        self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        return self._run("put_if_absent", key, lambda: self.inner.put_if_absent(key, data, metadata, put_id=put_id))

    def put_if_match(
        self, key: str, data, etag: str, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        return self._run(
            "put_if_match", key, lambda: self.inner.put_if_match(key, data, etag, metadata, put_id=put_id)
        )

    def delete(self, key: str) -> None:
        self._run("delete", key, lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return self._run("list", prefix, lambda: self.inner.list(prefix))
