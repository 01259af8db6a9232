"""RetryingStore, InstrumentedStore, FaultyStore and the ambiguous-write rule."""

from __future__ import annotations

import pickle
import threading

import pytest

from shaledb.errors import InvalidArgument, ObjectNotFound, PreconditionFailed, Unavailable
from shaledb.storage import FaultyStore, InstrumentedStore, MemoryStore, RetryingStore
from shaledb.storage.wrappers import (
    AddLatency,
    ApplyThenFail,
    FailNth,
    FailRandomly,
    Gate,
    OpStats,
    StoreWrapper,
)


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def retrying(inner, t: FakeTime, **kw):
    return RetryingStore(inner, sleep=t.sleep, clock=t.clock, seed=1, **kw)


# ---------------------------------------------------------------------------
# RetryingStore


def test_retry_until_success_with_backoff():
    t = FakeTime()
    faulty = FaultyStore(MemoryStore())
    faulty.inner.put("k", b"v")
    fault = faulty.add(FailNth(1, "get", times=3))
    store = retrying(faulty, t, base_delay=0.1, max_delay=10.0)
    assert store.get("k") == b"v"
    assert fault.fired == 3
    assert len(t.sleeps) == 3
    for i, s in enumerate(t.sleeps):
        assert 0.05 * 2**i <= s < 0.1 * 2**i  # base * 2**i scaled by jitter in [0.5, 1)


def test_retry_gives_up_after_max_attempts():
    t = FakeTime()
    faulty = FaultyStore(MemoryStore(), FailNth(1, "head", times=100))
    store = retrying(faulty, t, max_attempts=4)
    with pytest.raises(Unavailable, match="after 4 attempts"):
        store.head("k")
    assert len(t.sleeps) == 3


def test_retry_respects_deadline_and_max_delay():
    t = FakeTime()
    faulty = FaultyStore(MemoryStore(), FailNth(1, "put", times=1000))
    store = retrying(faulty, t, max_attempts=1000, base_delay=0.5, max_delay=2.0, deadline=10.0)
    with pytest.raises(Unavailable):
        store.put("k", b"v")
    assert t.now <= 10.0
    assert max(t.sleeps) < 2.0
    assert 4 <= len(t.sleeps) < 20


def test_retry_same_seed_same_delays():
    runs = []
    for _ in range(2):
        t = FakeTime()
        store = retrying(FaultyStore(MemoryStore(), FailNth(1, "delete", times=5)), t)
        store.delete("k")
        runs.append(t.sleeps)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("exc", [ObjectNotFound, PreconditionFailed, InvalidArgument])
def test_no_retry_on_other_errors(exc):
    t = FakeTime()
    fault = FailNth(1, "get", times=5, error=exc)
    store = retrying(FaultyStore(MemoryStore(), fault), t)
    with pytest.raises(exc):
        store.get("k")
    assert fault.fired == 1 and t.sleeps == []


class _FlakyList(StoreWrapper):
    """Fails the first listing after ``after`` entries."""

    def __init__(self, inner, after):
        super().__init__(inner)
        self.after = after
        self.calls = 0

    def list(self, prefix=""):
        self.calls += 1
        it = self.inner.list(prefix)
        if self.calls > 1:
            return it
        return self._broken(it)

    def _broken(self, it):
        for i, m in enumerate(it):
            if i == self.after:
                raise Unavailable("connection reset mid-listing")
            yield m


def test_retry_list_resumes_after_last_key():
    mem = MemoryStore()
    for i in range(10):
        mem.put(f"x/{i}", b"")
    t = FakeTime()
    flaky = _FlakyList(mem, after=4)
    keys = [m.key for m in retrying(flaky, t).list("x/")]
    assert keys == [f"x/{i}" for i in range(10)]
    assert flaky.calls == 2 and len(t.sleeps) == 1


# ---------------------------------------------------------------------------
# ambiguous conditional writes


def _ambiguous_stack(store):
    faulty = FaultyStore(store)
    return faulty, RetryingStore(faulty, sleep=lambda s: None, seed=0)


def test_ambiguous_put_if_absent_ours_is_success(store):
    faulty, retry = _ambiguous_stack(store)
    fault = faulty.add(ApplyThenFail("put_if_absent"))
    r = retry.put_if_absent("wal/1", b"ours", put_id="me")
    assert fault.fired == 1
    assert r.put_id == "me" and r.etag == store.head("wal/1").etag
    assert store.get("wal/1") == b"ours"


def test_ambiguous_put_if_absent_theirs_is_precondition_failed(store):
    faulty, retry = _ambiguous_stack(store)

    def someone_else_lands(op, key):
        store.put(key, b"theirs", put_id="them")  # their write lands while ours times out
        return Unavailable("timed out")

    faulty.add(FailNth(1, "put_if_absent", error=someone_else_lands))
    with pytest.raises(PreconditionFailed):
        retry.put_if_absent("wal/1", b"ours", put_id="me")
    assert store.get("wal/1") == b"theirs"


def test_ambiguous_put_if_match_ours_is_success(store):
    r0 = store.put("manifest", b"v0")
    faulty, retry = _ambiguous_stack(store)
    faulty.add(ApplyThenFail("put_if_match"))
    r = retry.put_if_match("manifest", b"v1", r0.etag)
    assert store.get("manifest") == b"v1"
    assert store.head("manifest").put_id == r.put_id and r.etag == store.head("manifest").etag


def test_plain_precondition_failed_is_not_second_guessed():
    mem = MemoryStore()
    mem.put("k", b"theirs", put_id="same")
    calls = InstrumentedStore(mem)
    retry = RetryingStore(calls, sleep=lambda s: None)
    with pytest.raises(PreconditionFailed):
        retry.put_if_absent("k", b"ours", put_id="same")
    assert calls.snapshot()["head"].count == 0  # no ambiguity, no look


def test_ambiguous_without_retrying_store_surfaces_unavailable():
    mem = MemoryStore()
    faulty = FaultyStore(mem, ApplyThenFail("put_if_absent"))
    with pytest.raises(Unavailable):
        faulty.put_if_absent("k", b"x")
    assert mem.get("k") == b"x"  # it landed all the same


# ---------------------------------------------------------------------------
# InstrumentedStore


def test_instrumented_counts_bytes_and_errors():
    t = FakeTime()
    store = InstrumentedStore(MemoryStore(), clock=t.clock)
    store.put("a", b"12345")
    store.put_if_absent("b", bytearray(3))
    with pytest.raises(PreconditionFailed):
        store.put_if_absent("b", b"1")
    store.get("a")
    store.get_range("a", 1, 3)
    with pytest.raises(ObjectNotFound):
        store.get("zz")
    assert len(list(store.list())) == 2
    snap = store.snapshot()
    assert snap["put"] == OpStats(count=1, bytes_written=5)
    assert snap["put_if_absent"].count == 2 and snap["put_if_absent"].errors == 1
    assert snap["put_if_absent"].bytes_written == 4
    assert snap["get"].count == 2 and snap["get"].errors == 1 and snap["get"].bytes_read == 5
    assert snap["get_range"].bytes_read == 2
    assert snap["list"].count == 1
    store.reset()
    assert all(s == OpStats() for s in store.snapshot().values())


def test_instrumented_latency():
    t = FakeTime()
    faulty = FaultyStore(MemoryStore(), AddLatency(0.25, "head", sleep=t.sleep))
    faulty.inner.put("k", b"")
    store = InstrumentedStore(faulty, clock=t.clock)
    store.head("k")
    store.head("k")
    snap = store.snapshot()["head"]
    assert snap.seconds == pytest.approx(0.5) and snap.max_seconds == pytest.approx(0.25)


def test_instrumented_thread_safe():
    store = InstrumentedStore(MemoryStore())
    store.put("k", b"xy")

    def run():
        for _ in range(500):
            store.get("k")

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    snap = store.snapshot()["get"]
    assert snap.count == 2000 and snap.bytes_read == 4000


# ---------------------------------------------------------------------------
# FaultyStore injectors


def test_fail_nth_counts_only_matching_ops():
    faulty = FaultyStore(MemoryStore())
    fault = faulty.add(FailNth(2, "write", prefix="wal/"))
    faulty.put("wal/1", b"")
    faulty.put("other", b"")  # not matching the prefix
    faulty.get("wal/1")  # not a write
    with pytest.raises(Unavailable, match="injected"):
        faulty.put_if_absent("wal/2", b"")
    faulty.delete("wal/3")
    assert fault.seen == 3 and fault.fired == 1
    with pytest.raises(ObjectNotFound):
        faulty.get("wal/2")  # before-phase failure: nothing written


def test_fail_randomly_is_reproducible():
    def pattern(seed):
        faulty = FaultyStore(MemoryStore(), FailRandomly(0.3, "put", seed=seed))
        out = []
        for i in range(50):
            try:
                faulty.put(f"k{i}", b"")
                out.append(0)
            except Unavailable:
                out.append(1)
        return out

    a, b, c = pattern(5), pattern(5), pattern(6)
    assert a == b and a != c and 5 < sum(a) < 30


def test_gate_holds_then_releases():
    faulty = FaultyStore(MemoryStore())
    gate = faulty.add(Gate("put_if_absent", prefix="manifest/"))
    done = threading.Event()

    def writer():
        faulty.put_if_absent("manifest/1", b"m")
        done.set()

    th = threading.Thread(target=writer)
    th.start()
    try:
        assert gate.wait_arrived(10)
        assert not done.wait(0.2)
        with pytest.raises(ObjectNotFound):
            faulty.get("manifest/1")  # held before it reached the store
        faulty.put("wal/1", b"")  # other ops pass
    finally:
        gate.open()
        th.join(10)
    assert done.is_set() and faulty.get("manifest/1") == b"m"


def test_gate_timeout_raises_instead_of_hanging():
    faulty = FaultyStore(MemoryStore(), Gate("get", timeout=0.05))
    with pytest.raises(Unavailable, match="gate"):
        faulty.get("k")


def test_apply_then_fail_nth_and_composition():
    mem = MemoryStore()
    latency = AddLatency(0.0, "put", sleep=lambda s: None)
    atf = ApplyThenFail("put", n=2)
    faulty = FaultyStore(mem, latency, atf)
    faulty.put("a", b"1")
    with pytest.raises(Unavailable):
        faulty.put("b", b"2")
    faulty.put("c", b"3")
    assert [m.key for m in mem.list()] == ["a", "b", "c"]
    assert latency.fired == 3 and atf.fired == 1
    faulty.remove(atf)
    faulty.clear()


def test_apply_then_fail_not_after_failed_op():
    mem = MemoryStore()
    mem.put("k", b"old")
    atf = ApplyThenFail("put_if_absent")
    faulty = FaultyStore(mem, atf)
    with pytest.raises(PreconditionFailed):
        faulty.put_if_absent("k", b"new")
    assert atf.seen == 0


def test_unknown_op_name_rejected():
    with pytest.raises(ValueError):
        FailNth(1, "gett")


def test_wrappers_forward_spec_and_refuse_pickle(tmp_path):
    from shaledb.storage import LocalStore

    local = LocalStore(str(tmp_path / "s"), fsync=False)
    stack = RetryingStore(InstrumentedStore(FaultyStore(local)))
    assert stack.spec() == local.spec()
    with pytest.raises(TypeError):
        pickle.dumps(stack)
    stack.put("k", b"v")
    assert local.get("k") == b"v"
