"""The manifest store: writer open and fence, WAL writes, merges, invariants, faults.

Tests taking the ``store`` fixture run on memory, local and S3 (moto server).
"""

from __future__ import annotations

import random
import threading

import pytest

from shaledb.errors import Fenced, InvalidArgument
from shaledb.format.keys import manifest_key, new_sst_id, wal_key
from shaledb.manifest.model import Checkpoint, Manifest, SortedRun, SstRef, decode_manifest
from shaledb.manifest.store import ManifestStore, check_transition
from shaledb.storage import MemoryStore
from shaledb.storage.wrappers import ApplyThenFail, Fault, FaultyStore, Gate

_rng = random.Random(7)


def ref(lo: int, hi: int, first: bytes = b"a", last: bytes = b"z") -> SstRef:
    return SstRef(new_sst_id(rand=_rng.randbytes(10)), first, last, 100, lo, hi, hi - lo + 1)


def all_manifests(store) -> list[Manifest]:
    out = []
    for meta in store.list("manifest/"):
        out.append(decode_manifest(store.get(meta.key), meta.key))
    return out


def check_history(store) -> None:
    """Every stored transition is one the invariants allow (for some role)."""
    ms = all_manifests(store)
    for i, (a, b) in enumerate(zip(ms, ms[1:])):
        errs = []
        for role in ("writer", "compactor", "reader"):
            try:
                check_transition(a, b, i + 2, role=role, now_ms=0)
                break
            except InvalidArgument as e:
                errs.append(e)
        else:
            raise AssertionError(f"transition {i + 1}->{i + 2} breaks the invariants: {errs}")


# ----------------------------------------------------------------- open


def test_open_writer_on_empty_root(store):
    w = ManifestStore.open_writer(store)
    assert w.role == "writer" and w.epoch == 1 and w.fence_wal_id == 1
    assert w.manifest_id == 2  # 1 = new database, 2 = epoch bump
    assert w.current.replace(writer_sst_watermark=None) == Manifest(writer_epoch=1)
    assert w.current.writer_sst_watermark.epoch == 1  # set with the epoch bump (docs/gc.md)
    assert store.get(wal_key(1)) == b""
    assert decode_manifest(store.get(manifest_key(1)), "m") == Manifest()
    w2 = ManifestStore.open_writer(store)
    assert (w2.epoch, w2.fence_wal_id, w2.manifest_id) == (2, 2, 3)
    with pytest.raises(Fenced):
        w.write_wal(2, b"late")
    check_history(store)


def test_refuses_a_root_that_is_not_a_database(store):
    store.put("photos/cat.jpg", b"meow")
    with pytest.raises(InvalidArgument, match="photos/cat.jpg"):
        ManifestStore.open_writer(store)
    assert [m.key for m in store.list("")] == ["photos/cat.jpg"]


def test_no_create_and_compactor_need_a_database():
    s = MemoryStore()
    with pytest.raises(InvalidArgument, match="no ShaleDB database"):
        ManifestStore.open_writer(s, create=False)
    with pytest.raises(InvalidArgument, match="no ShaleDB database"):
        ManifestStore.open_compactor(s)
    assert list(s.list("")) == []


def test_fence_goes_to_first_free_wal_after_replay_point():
    s = MemoryStore()
    w = ManifestStore.open_writer(s)
    for i in range(2, 12):
        w.write_wal(i, b"batch")
    w.publish_l0([ref(1, 5)], last_l0_seq=5, replay_after_wal_id=6, next_wal_id=12)
    w2 = ManifestStore.open_writer(s)
    assert w2.fence_wal_id == 12
    assert (w2.current.replay_after_wal_id, w2.current.next_wal_id) == (6, 12)
    # WAL objects below the replay point may be gone (GC): still found
    for i in range(1, 7):
        s.delete(wal_key(i))
    w3 = ManifestStore.open_writer(s)
    assert w3.fence_wal_id == 13


def test_fence_moves_up_on_collision():
    inner = MemoryStore()
    w = ManifestStore.open_writer(inner)
    w.write_wal(2, b"a")

    class OldWriterSneaksIn(Fault):
        """Just before the new writer's fence create at 3, the old writer writes 3 and 4."""

        def apply(self, op, key):
            if key == wal_key(3) and not self.fired:
                self.fired = 1
                w.write_wal(3, b"b")
                w.write_wal(4, b"c")

    faulty = FaultyStore(inner, OldWriterSneaksIn(ops="put_if_absent"))
    w2 = ManifestStore.open_writer(faulty)
    assert w2.fence_wal_id == 5
    with pytest.raises(Fenced):
        w.write_wal(5, b"d")
    assert inner.get(wal_key(5)) == b""
    assert [inner.get(wal_key(i)) for i in (3, 4)] == [b"b", b"c"]


# ----------------------------------------------------------------- WAL writes


def test_write_wal_rules():
    s = MemoryStore()
    w = ManifestStore.open_writer(s)
    with pytest.raises(InvalidArgument):
        w.write_wal(1, b"x")  # at or below our fence
    with pytest.raises(InvalidArgument):
        w.write_wal(2, b"")  # zero bytes is a fence
    r = ManifestStore.open_reader(s)
    with pytest.raises(InvalidArgument, match="writer"):
        r.write_wal(2, b"x")
    w.write_wal(2, b"x")
    s.put_if_absent(wal_key(3), b"someone else")
    with pytest.raises(Fenced):
        w.write_wal(3, b"y")
    with pytest.raises(Fenced):  # sticky, no I/O needed
        w.write_wal(4, b"y")
    with pytest.raises(Fenced):
        w.refresh()


@pytest.mark.parametrize("ops", ["put_if_absent"])
def test_wal_apply_then_fail_is_not_a_fence(store, ops):
    faulty = FaultyStore(store)
    w = ManifestStore.open_writer(faulty)
    fault = faulty.add(ApplyThenFail(ops=ops, prefix="wal/"))
    w.write_wal(2, b"landed")  # lands, reports an error, is read back as ours
    assert fault.fired == 1
    assert store.get(wal_key(2)) == b"landed"
    w.write_wal(3, b"next")
    assert not w.fenced
    w.publish_l0([], last_l0_seq=0, replay_after_wal_id=0, next_wal_id=4)
    assert w.current.next_wal_id == 4


def test_manifest_apply_then_fail_no_false_fence_no_duplicate(store):
    faulty = FaultyStore(store)
    w = ManifestStore.open_writer(faulty)
    before = w.manifest_id
    fault = faulty.add(ApplyThenFail(ops="put_if_absent", prefix="manifest/"))
    a = ref(1, 3)
    m = w.publish_l0([a], last_l0_seq=3, replay_after_wal_id=0)
    assert fault.fired == 1
    assert w.manifest_id == before + 1
    assert m.l0 == (a,)
    ids = [int(x.key[9:29]) for x in store.list("manifest/")]
    assert ids == list(range(1, before + 2))
    # idempotent re-publish writes nothing
    assert w.publish_l0([a], last_l0_seq=3, replay_after_wal_id=0) == m
    assert w.manifest_id == before + 1
    check_history(store)


def test_writer_open_under_apply_then_fail_everywhere():
    inner = MemoryStore()
    faulty = FaultyStore(inner, ApplyThenFail(ops="put_if_absent", times=3))
    w = ManifestStore.open_writer(faulty)  # manifest 1, epoch bump and fence each "fail" after landing
    assert (w.manifest_id, w.epoch, w.fence_wal_id) == (2, 1, 1)
    assert sorted(m.key for m in inner.list("")) == [manifest_key(1), manifest_key(2), wal_key(1)]


# ----------------------------------------------------------------- L0, compaction, merging


def test_publish_l0_and_compaction_merge(store):
    w = ManifestStore.open_writer(store)
    c = ManifestStore.open_compactor(store)
    w.refresh()
    a, b = ref(1, 3, b"a", b"f"), ref(4, 6, b"c", b"k")
    w.publish_l0([a], last_l0_seq=3, replay_after_wal_id=0)
    w.publish_l0([b], last_l0_seq=6, replay_after_wal_id=0)
    c.refresh()
    # the writer publishes again while the compactor holds a stale copy
    d = ref(7, 9)
    w.publish_l0([d], last_l0_seq=9, replay_after_wal_id=0)
    run = SortedRun(0, (SstRef(new_sst_id(), b"a", b"k", 150, 1, 6, 6),))
    m = c.apply_compaction(removed_l0=[a.sst_id, b.sst_id], new_runs=[run])
    assert m.l0 == (d,) and m.sorted_runs == (run,) and m.last_l0_seq == 9
    # and the writer, stale now, publishes on top of the compaction
    e = ref(10, 10)
    m2 = w.publish_l0([e], last_l0_seq=10, replay_after_wal_id=0)
    assert m2.l0 == (e, d) and m2.sorted_runs == (run,)
    assert (m2.writer_epoch, m2.compactor_epoch) == (1, 1)
    # replaying the same compaction changes nothing
    assert c.apply_compaction(removed_l0=[a.sst_id, b.sst_id], new_runs=[run]) == m2
    check_history(store)


@pytest.mark.parametrize(
    "role, fn, match",
    [
        ("writer", lambda m, x: m.replace(last_l0_seq=m.last_l0_seq - 1), "last_l0_seq"),
        ("writer", lambda m, x: m.replace(next_wal_id=m.next_wal_id - 1, replay_after_wal_id=0), "next_wal_id"),
        ("writer", lambda m, x: m.replace(l0=m.l0[1:]), "may not remove L0"),
        ("writer", lambda m, x: m.replace(l0=m.l0[::-1]), "order"),
        ("writer", lambda m, x: m.replace(sorted_runs=()), "sorted runs"),
        ("writer", lambda m, x: m.replace(l0=(x,) + m.l0), "used before"),
        ("writer", lambda m, x: m.replace(checkpoints=()), "checkpoint"),
        ("writer", lambda m, x: m.replace(compactor_epoch=9), "compactor epoch"),
        ("compactor", lambda m, x: m.replace(l0=m.l0[1:]), "oldest"),
        ("compactor", lambda m, x: m.replace(last_l0_seq=m.last_l0_seq + 1), "last_l0_seq"),
        ("compactor", lambda m, x: m.replace(l0=(ref(0, 0),) + m.l0), "add L0"),
        ("reader", lambda m, x: m.replace(next_wal_id=m.next_wal_id + 1), "only change checkpoints"),
    ],
)
def test_invariants_refuse_bad_updates(role, fn, match):
    s = MemoryStore()
    w = ManifestStore.open_writer(s)
    gone = ref(1, 2)
    w.publish_l0([gone], last_l0_seq=2, replay_after_wal_id=0, next_wal_id=4)
    c = ManifestStore.open_compactor(s)
    c.apply_compaction(removed_l0=[gone.sst_id], new_runs=[])  # gone: retired forever
    w.refresh()
    w.publish_l0([ref(3, 4, b"a", b"c"), ref(5, 6, b"d", b"f")], last_l0_seq=6, replay_after_wal_id=1)
    c.refresh()
    c.apply_compaction(new_runs=[SortedRun(1, (ref(0, 0),))])
    w.refresh()
    w.add_checkpoint(name="keep")
    handle = {"writer": w, "compactor": c, "reader": ManifestStore.open_reader(s)}[role]
    handle.refresh()
    before = handle.manifest_id
    with pytest.raises(InvalidArgument, match=match):
        handle.update(lambda m: fn(m, gone))
    assert handle.refresh() is not None and handle.manifest_id == before


class StepClock:
    def __init__(self):
        self.ms = 1_000_000

    def monotonic(self) -> float:
        return self.ms / 1000

    def now_ms(self) -> int:
        return self.ms

    def sleep(self, s: float) -> None:
        self.ms += int(s * 1000) + 1


def test_checkpoints():
    s = MemoryStore()
    clock = StepClock()
    w = ManifestStore.open_writer(s, clock=clock)
    r = ManifestStore.open_reader(s, clock=clock)
    cp = r.add_checkpoint(name="backup")
    assert isinstance(cp, Checkpoint) and cp.manifest_id == 2
    short = r.add_checkpoint(lifetime_ms=10)
    assert short.expires_at_ms == clock.ms + 10
    w.publish_l0([ref(1, 1)], last_l0_seq=1, replay_after_wal_id=0)  # stale writer merges the checkpoints in
    assert w.current.checkpoints == (cp, short)
    with pytest.raises(InvalidArgument, match="pins manifest"):
        r.add_checkpoint(manifest_id=99)
    # expired checkpoints may be dropped by any update; others only explicitly
    with pytest.raises(InvalidArgument, match="dropped"):
        w.update(lambda m: m.replace(checkpoints=(cp,)))
    clock.ms += 10
    w.update(lambda m: m.replace(checkpoints=(cp,)))
    with pytest.raises(InvalidArgument, match="dropped"):
        w.update(lambda m: m.replace(checkpoints=()))
    assert r.remove_checkpoint(cp.id).checkpoints == ()


# ----------------------------------------------------------------- zombies


@pytest.mark.parametrize("where", ["manifest/", "wal/"])
def test_paused_old_writer_resumes_fenced(where):
    """The old writer stalls inside a create; a new writer opens; the old one resumes."""
    inner = MemoryStore()
    faulty = FaultyStore(inner)
    old = ManifestStore.open_writer(faulty)
    gate = faulty.add(Gate(ops="put_if_absent", prefix=where, timeout=30))
    sst = ref(1, 1)
    outcome = []

    def zombie():
        try:
            if where == "wal/":
                old.write_wal(2, b"late")
            else:
                old.publish_l0([sst], last_l0_seq=1, replay_after_wal_id=0)
            outcome.append("ok")
        except Fenced:
            outcome.append("fenced")

    t = threading.Thread(target=zombie)
    t.start()
    assert gate.wait_arrived(10)
    new = ManifestStore.open_writer(inner)
    gate.open()
    t.join(30)
    assert outcome == ["fenced"]
    assert new.fence_wal_id == 2
    assert inner.get(wal_key(2)) == b""
    assert all(sst.sst_id not in m.sst_ids() for m in all_manifests(inner))
    new.write_wal(3, b"fine")
    assert new.publish_l0([ref(2, 2)], last_l0_seq=2, replay_after_wal_id=2).writer_epoch == 2
