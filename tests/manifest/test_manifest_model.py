"""Model-based test: the manifest store against a plain model.

Hypothesis drives random interleavings of writer opens (each one fencing the
previous writers), WAL writes and L0 publishes by current and stale writers,
compactor opens and compactions by current and stale compactors, and fault
injection (writes that land but report failure, writes that fail before
landing).  After every step a fresh reader must see exactly the model's
manifest, manifest ids must be gap-free, every stored transition must obey
the invariants, and handles must be fenced exactly when the model says so.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shaledb.errors import Fenced
from shaledb.format.keys import new_sst_id, parse_manifest_key, wal_key
from shaledb.manifest.model import SortedRun, SstRef, decode_manifest
from shaledb.manifest.store import ManifestStore, check_transition
from shaledb.storage import MemoryStore
from shaledb.storage.wrappers import ApplyThenFail, FailNth, FaultyStore, RetryingStore


class NoSleepClock:
    def __init__(self):
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now_ms(self) -> int:
        return int(self.t * 1000)

    def sleep(self, s: float) -> None:
        self.t += s


class Writer:
    def __init__(self, handle: ManifestStore):
        self.h = handle
        self.epoch = handle.epoch
        self.next_wal = handle.fence_wal_id + 1
        self.last_written = handle.fence_wal_id


class ManifestModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.inner = MemoryStore()
        self.store = FaultyStore(self.inner)
        self.clock = NoSleepClock()
        # handles see the store as the engine does: Unavailable is retried by
        # RetryingStore (the one retry layer), on the model's clock
        self.retrying = RetryingStore(self.store, sleep=self.clock.sleep, clock=self.clock.monotonic, seed=0)
        self.rng = random.Random(0)
        self.writers: list[Writer] = []
        self.compactors: list[ManifestStore] = []
        # the model
        self.writer_epoch = 0
        self.compactor_epoch = 0
        self.l0: list[str] = []  # newest first
        self.runs: list[tuple[int, tuple[str, ...]]] = []  # highest run id first
        self.last_l0_seq = 0
        self.replay_after = 0
        self.next_wal_id = 1
        self.wal_ids: set[int] = set()
        self.seq = 0
        self.run_id = 0
        self.exists = False

    def handle(self, kind: str) -> ManifestStore:
        opener = ManifestStore.open_writer if kind == "w" else ManifestStore.open_compactor
        return opener(self.retrying, clock=self.clock, rng=random.Random(self.rng.random()))

    def new_sst(self, first: bytes, last: bytes, lo: int, hi: int) -> SstRef:
        return SstRef(new_sst_id(now_ms=1, rand=self.rng.randbytes(10)), first, last, 10, lo, hi, 1)

    # ------------------------------------------------------------ faults

    @rule(where=st.sampled_from(["manifest/", "wal/"]), kind=st.sampled_from(["apply", "before"]))
    def inject_fault(self, where, kind):
        self.store.clear()
        if kind == "apply":
            self.store.add(ApplyThenFail(ops="put_if_absent", prefix=where))
        else:
            self.store.add(FailNth(1, ops="put_if_absent", prefix=where, times=2))

    # ------------------------------------------------------------ writers

    @initialize(fault=st.sampled_from([None, "apply", "before"]))
    def create_database(self, fault):
        if fault is not None:
            self.inject_fault("manifest/", fault)
        self.open_writer()

    @rule()
    def open_writer(self):
        w = Writer(self.handle("w"))
        if not self.exists:
            self.exists = True
        self.writer_epoch += 1
        expected_fence = self.replay_after + 1
        while expected_fence in self.wal_ids:
            expected_fence += 1
        assert w.epoch == self.writer_epoch
        assert w.h.fence_wal_id == expected_fence
        self.wal_ids.add(expected_fence)
        self.writers.append(w)

    def current_writer(self) -> Writer | None:
        return self.writers[-1] if self.writers else None

    @precondition(lambda self: self.writers)
    @rule(pick=st.integers(0, 10), data_len=st.integers(1, 20))
    def write_wal(self, pick, data_len):
        w = self.writers[pick % len(self.writers)]
        current = w is self.writers[-1]
        try:
            w.h.write_wal(w.next_wal, b"x" * data_len)
        except Fenced:
            assert not current, "the current writer was fenced by a WAL write"
            event("stale writer fenced on WAL write")
            return
        assert current, "a stale writer's WAL write succeeded"
        self.wal_ids.add(w.next_wal)
        w.last_written = w.next_wal
        w.next_wal += 1

    @precondition(lambda self: self.writers)
    @rule(pick=st.integers(0, 10), n=st.integers(0, 2), upto=st.integers(0, 3))
    def publish_l0(self, pick, n, upto):
        w = self.writers[pick % len(self.writers)]
        current = w is self.writers[-1]
        ssts = []
        lo = self.seq + 1
        for i in range(n):
            self.seq += 1
            ssts.append(self.new_sst(b"a", b"z", self.seq, self.seq))
        # replay point: some WAL id we have written (or our fence)
        replay = max(w.h.fence_wal_id, w.last_written - upto)
        try:
            m = w.h.publish_l0(
                ssts[::-1], last_l0_seq=self.seq, replay_after_wal_id=replay, next_wal_id=w.last_written + 1
            )
        except Fenced:
            assert not current, "the current writer was fenced by a publish"
            event("stale writer fenced on publish")
            self.seq = lo - 1
            return
        assert current, "a stale writer published"
        self.l0 = [s.sst_id for s in ssts[::-1]] + self.l0
        self.last_l0_seq = max(self.last_l0_seq, self.seq)
        self.replay_after = max(self.replay_after, replay)
        self.next_wal_id = max(self.next_wal_id, w.last_written + 1, self.replay_after + 1)
        assert [s.sst_id for s in m.l0] == self.l0

    # ------------------------------------------------------------ compactors

    @precondition(lambda self: self.exists)
    @rule()
    def open_compactor(self):
        c = self.handle("c")
        self.compactor_epoch += 1
        assert c.epoch == self.compactor_epoch
        self.compactors.append(c)

    @precondition(lambda self: self.compactors)
    @rule(pick=st.integers(0, 10), k=st.integers(1, 3), merge_runs=st.booleans())
    def compact(self, pick, k, merge_runs):
        c = self.compactors[pick % len(self.compactors)]
        current = c is self.compactors[-1]
        take = self.l0[-k:] if self.l0 else []
        drop_runs = [rid for rid, _ in self.runs] if merge_runs else []
        if not take and not drop_runs:
            return
        self.run_id += 1
        out = SortedRun(self.run_id, (self.new_sst(b"a", b"z", 0, self.last_l0_seq),))
        try:
            c.apply_compaction(removed_l0=take, removed_runs=drop_runs, new_runs=[out])
        except Fenced:
            assert not current, "the current compactor was fenced"
            event("stale compactor fenced")
            return
        assert current, "a stale compactor compacted"
        self.l0 = [s for s in self.l0 if s not in take]
        self.runs = [(out.run_id, (out.ssts[0].sst_id,))] + [r for r in self.runs if r[0] not in drop_runs]

    # ------------------------------------------------------------ checks

    @invariant()
    def reader_sees_the_model(self):
        if not self.exists:
            return
        m = ManifestStore.open_reader(self.inner).current
        assert (m.writer_epoch, m.compactor_epoch) == (self.writer_epoch, self.compactor_epoch)
        assert [s.sst_id for s in m.l0] == self.l0
        assert [(r.run_id, tuple(s.sst_id for s in r.ssts)) for r in m.sorted_runs] == self.runs
        assert (m.last_l0_seq, m.replay_after_wal_id, m.next_wal_id) == (
            self.last_l0_seq,
            self.replay_after,
            self.next_wal_id,
        )
        assert {i for i in range(1, max(self.wal_ids, default=0) + 1)} == self.wal_ids
        for i in self.wal_ids:
            self.inner.head(wal_key(i))

    def teardown(self):
        fired = sum(f.fired for f in self.store._faults)
        if fired:
            event("an injected fault fired")
        if not self.exists:
            return
        keys = [m.key for m in self.inner.list("manifest/")]
        ids = [parse_manifest_key(k) for k in keys]
        assert ids == list(range(1, len(ids) + 1)), "manifest ids have gaps or duplicates"
        ms = [decode_manifest(self.inner.get(k), k) for k in keys]
        for i, (a, b) in enumerate(zip(ms, ms[1:])):
            errs = []
            for role in ("writer", "compactor"):
                try:
                    check_transition(a, b, i + 2, role=role, now_ms=0)
                    break
                except Exception as e:  # noqa: BLE001
                    errs.append(e)
            else:
                raise AssertionError(f"illegal transition {i + 1}->{i + 2}: {errs}")


ManifestModel.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_manifest_store_matches_model = ManifestModel.TestCase
