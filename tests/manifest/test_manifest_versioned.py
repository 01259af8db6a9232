"""The generic versioned object and its fenceable variant, with a toy codec."""

from __future__ import annotations

import json
import threading

import pytest

from shaledb.errors import Conflict, Corruption, Fenced, InvalidArgument, ObjectNotFound, Unavailable
from shaledb.storage import MemoryStore
from shaledb.storage.wrappers import ApplyThenFail, FailNth, FaultyStore, InstrumentedStore, RetryingStore
from shaledb.manifest.versioned import FenceableObject, VersionedObject, create_only


class JsonCodec:
    def encode(self, value: dict) -> bytes:
        return json.dumps(value, sort_keys=True).encode()

    def decode(self, data: bytes, name: str) -> dict:
        try:
            return json.loads(data)
        except ValueError:
            raise Corruption(f"{name}: not json") from None


def key_of(i: int) -> str:
    return f"obj/{i:020d}.json"


def id_of(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1]
    return int(name[:20]) if name.endswith(".json") and len(name) == 25 else None


class FakeClock:
    def __init__(self):
        self.t = 1000.0
        self.slept = []

    def monotonic(self) -> float:
        return self.t

    def now_ms(self) -> int:
        return int(self.t * 1000)

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def make(store, cls=VersionedObject, **kw):
    kw.setdefault("clock", FakeClock())
    return cls(store, JsonCodec(), prefix="obj/", key_of=key_of, id_of=id_of, **kw)


def fenceable(store, **kw):
    return make(
        store,
        FenceableObject,
        epoch_of=lambda v: v["epoch"],
        with_epoch=lambda v, e: {**v, "epoch": e},
        **kw,
    )


def incr(v):
    return {**v, "n": v["n"] + 1}


def test_create_refresh_update():
    s = MemoryStore()
    a = make(s)
    assert a.load() is None
    with pytest.raises(ObjectNotFound):
        a.refresh()
    assert a.create_initial({"n": 0, "epoch": 0})
    assert a.current.id == 1
    assert a.update(incr).value["n"] == 1
    assert a.current.id == 2
    b = make(s)
    assert not b.create_initial({"n": 99, "epoch": 0})  # lost: loads the latest instead
    assert b.current.id == 2 and b.current.value["n"] == 1
    # no-op mutators write nothing
    assert a.update(lambda v: None).id == 2
    assert a.update(lambda v: dict(v)).id == 2


def test_conflict_reapplies_mutator_to_newer_state():
    s = MemoryStore()
    a, b = make(s), make(s)
    a.create_initial({"n": 0})
    b.refresh()
    a.update(incr)
    a.update(incr)
    v = b.update(incr)  # b's cached id 1 is stale: it loses on 2, refreshes, re-applies
    assert v.id == 4 and v.value["n"] == 3


def test_merge_callback_sees_newer_state_and_rejected_proposal():
    s = MemoryStore()
    a, b = make(s), make(s)
    a.create_initial({"items": []})
    b.refresh()
    a.update(lambda v: {"items": v["items"] + ["a"]})
    seen = []

    def merge(newer, rejected):
        seen.append((newer, rejected))
        return {"items": newer["items"] + [x for x in rejected["items"] if x not in newer["items"]]}

    v = b.update(lambda v: {"items": v["items"] + ["b"]}, merge=merge)
    assert v.value == {"items": ["a", "b"]}
    assert seen == [({"items": ["a"]}, {"items": ["b"]})]


def test_dirty_and_try_write():
    s = MemoryStore()
    a, b = make(s), make(s)
    a.create_initial({"n": 0})
    b.refresh()
    d = a.dirty()
    d.value = {"n": 5}
    assert a.try_write(d).id == 2
    d2 = b.dirty()
    d2.value = {"n": 6}
    with pytest.raises(Conflict):
        b.try_write(d2)
    assert b.current.id == 2  # refreshed after losing
    with pytest.raises(Conflict):
        b.try_write(d2)  # based on version 1, no longer current


def test_latest_by_probing_then_listing():
    inner = MemoryStore()
    s = InstrumentedStore(inner)
    a, b = make(inner), make(s, probe_limit=3)
    a.create_initial({"n": 0})
    b.refresh()
    s.reset()
    for _ in range(2):
        a.update(incr)
    assert b.refresh().id == 3
    ops = s.snapshot()
    assert ops["get"].count == 3 and ops["list"].count == 0  # probes 2, 3, 4(miss)
    for _ in range(5):
        a.update(incr)
    s.reset()
    assert b.refresh().id == 8  # 3 probes all hit: falls back to one listing
    assert s.snapshot()["list"].count == 1


def test_stale_cache_lists_instead_of_probing():
    inner = MemoryStore()
    s = InstrumentedStore(inner)
    clock = FakeClock()
    b = make(s, clock=clock, max_cache_age=10)
    a = make(inner)
    a.create_initial({"n": 0})
    for _ in range(3):
        a.update(incr)
    b.refresh()  # b caches version 4
    a.update(incr)
    a.update(incr)
    inner.delete(key_of(5))  # GC took 5: a probe from 4 would stop there
    clock.t += 11
    s.reset()
    assert b.refresh().id == 6
    assert s.snapshot()["list"].count == 1


def test_listing_ignores_foreign_keys():
    s = MemoryStore()
    s.put("obj/notes.txt", b"x")
    s.put("obj/00000000000000000009.json.tmp", b"x")
    a = make(s)
    a.create_initial({"n": 0})
    assert make(s).refresh().id == 1


def test_validate_runs_before_every_write():
    s = MemoryStore()

    def validate(old, new, new_id):
        if new["n"] < old["n"]:
            raise InvalidArgument("n goes back")

    a = make(s, validate=validate)
    a.create_initial({"n": 5})
    with pytest.raises(InvalidArgument):
        a.update(lambda v: {"n": 1})
    assert [m.key for m in s.list("obj/")] == [key_of(1)]


def test_too_many_conflicts_and_deadline():
    s = MemoryStore()
    a = make(s, max_conflicts=3)
    a.create_initial({"n": 0})
    other = make(s)
    other.refresh()

    def sabotage(v):  # someone else always wins first
        other.update(incr)
        return incr(v)

    with pytest.raises(Conflict, match="3 races"):
        a.update(sabotage)
    clock = FakeClock()
    c = make(s, clock=clock, update_timeout=5)
    c.refresh()

    def slow(v):
        other.update(incr)
        clock.t += 3
        return incr(v)

    with pytest.raises(Unavailable):
        c.update(slow)


def test_apply_then_fail_counts_as_won_not_conflict():
    inner = MemoryStore()
    s = FaultyStore(inner)
    a = make(s)
    a.create_initial({"n": 0})
    fault = s.add(ApplyThenFail(ops="put_if_absent", prefix="obj/"))
    v = a.update(incr)
    assert fault.fired == 1
    assert v.id == 2 and v.value["n"] == 1
    assert [m.key for m in inner.list("obj/")] == [key_of(1), key_of(2)]


def test_failed_create_is_retried_with_backoff():
    # the retry layer is the store's (RetryingStore, as the engine wraps every
    # store), not the versioned object's: it sleeps on the object's clock here
    inner = MemoryStore()
    clock = FakeClock()
    s = RetryingStore(
        FaultyStore(inner, FailNth(1, ops="put_if_absent", times=3)), sleep=clock.sleep, clock=clock.monotonic, seed=0
    )
    a = make(s, clock=clock)
    assert a.create_initial({"n": 0})
    assert len(clock.slept) == 3


def test_create_only_reports_someone_elses_object():
    s = MemoryStore()
    clock = FakeClock()
    s.put_if_absent("k", b"theirs", put_id="them")
    assert not create_only(s, "k", b"mine", put_id="me", clock=clock, deadline=clock.t + 5)
    assert create_only(s, "k", b"theirs", put_id="them", clock=clock, deadline=clock.t + 5)
    f = FaultyStore(s, FailNth(1, ops=["put_if_absent", "head"], times=100))
    with pytest.raises(Unavailable):
        create_only(f, "k2", b"x", put_id="me", clock=clock, deadline=clock.t + 2)


# ----------------------------------------------------------------- fencing


def test_fenceable_epochs():
    s = MemoryStore()
    make(s).create_initial({"n": 0, "epoch": 0})
    a = fenceable(s)
    a.refresh()
    with pytest.raises(InvalidArgument, match="init_epoch"):
        a.update(incr)
    assert a.init_epoch() == 1
    a.update(incr)
    with pytest.raises(InvalidArgument, match="epoch"):
        a.update(lambda v: {**v, "epoch": 7})
    b = fenceable(s)
    b.refresh()
    assert b.init_epoch() == 2
    with pytest.raises(Fenced):
        a.update(incr)
    assert a.fenced
    for call in (lambda: a.current, a.refresh, lambda: a.update(incr), a.check):
        with pytest.raises(Fenced):
            call()
    assert b.update(incr).value == {"n": 2, "epoch": 2}


def test_fenced_on_refresh_and_sees_older_epoch_as_internal_bug():
    s = MemoryStore()
    make(s).create_initial({"n": 0, "epoch": 0})
    a, b = fenceable(s), fenceable(s)
    a.refresh(), b.refresh()
    a.init_epoch()
    b.init_epoch()  # loses the race on id 2, refreshes, bumps to 2
    assert (a.epoch, b.epoch) == (1, 2)
    with pytest.raises(Fenced):
        a.refresh()


def test_threads_racing_updates_lose_nothing():
    s = MemoryStore()
    make(s).create_initial({"n": 0})
    errors = []

    def worker():
        o = make(s, clock=None)
        o.refresh()
        try:
            for _ in range(20):
                o.update(incr)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    final = make(s)
    assert final.refresh().value["n"] == 80
    assert final.current.id == 81
