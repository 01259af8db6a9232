"""The deterministic simulation of the manifest protocol (bench/sim, docs/testing.md)."""

from __future__ import annotations

import random

import pytest

from bench.sim import SimConfig, run, shrink
from bench.sim.world import SimClock, SimStore

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("seed", range(4))
def test_protocol_holds_for_100k_steps(seed):
    """4 x 25k steps: every invariant holds after every step, and every kind
    of actor and fault actually happened."""
    r = run(SimConfig(seed=seed, steps=25_000))
    assert r.ok, f"seed {seed}: {r.violation}\n" + "\n".join(r.log_tail[-30:])
    assert r.steps == 25_000
    c = r.counts
    for what in ("acked", "writer.flush", "compactor.apply", "gc.pass", "reader.read", "checkpoint.read", "fenced.writer", "fenced.compactor"):
        assert c.get(what, 0) > 0, what
    assert c.get("gc.deleted.sst", 0) > 0 and c.get("gc.deleted.wal", 0) > 0
    assert r.faults_injected > 0
    assert sum(v for k, v in c.items() if k.startswith("crash.")) > 0


def test_a_run_replays_exactly():
    a = run(SimConfig(seed=11, steps=4_000))
    b = run(SimConfig(seed=11, steps=4_000))
    c = run(SimConfig(seed=12, steps=4_000))
    assert a.digest == b.digest and a.log_tail == b.log_tail and a.counts == b.counts
    assert a.digest != c.digest


def test_writer_acking_before_the_wal_lands_is_caught_and_shrunk():
    cfg = SimConfig(seed=0, steps=20_000, bug="ack-early")
    r = run(cfg)
    assert not r.ok and "acknowledged write lost" in r.violation
    small, sr = shrink(cfg, budget=60)
    assert not sr.ok and "acknowledged write lost" in sr.violation
    assert small.steps <= r.steps
    assert small.readers == 0 and small.gc == 0  # actors that play no part are shrunk away
    assert run(small).violation == sr.violation  # the shrunk run replays


def test_gc_ignoring_min_age_is_caught():
    found = []
    for seed in range(6):
        r = run(SimConfig(seed=seed, steps=20_000, bug="gc-min-age-0"))
        if not r.ok:
            found.append(r.violation)
    assert found, "a GC that ignores min_age must break a reader or a checkpoint"
    assert all(("lacks acknowledged" in v) or ("missing" in v) or ("deleted" in v) for v in found)


def test_watermarks_are_minted_on_the_injected_clock():
    """Regression (found building the simulation, any seed): the writer's and
    compactor's SST watermarks were minted from the wall clock even with an
    injected clock, so SST ids minted on that clock compared wrongly with
    them and GC could take a running flush's upload for garbage."""
    from shaledb.format.keys import new_sst_id
    from shaledb.manifest.model import ulid_to_bytes
    from shaledb.manifest.store import ManifestStore
    from shaledb.storage.memory import MemoryStore

    clock = SimClock(start_ms=1_000_000)
    ms = ManifestStore.open_writer(MemoryStore(), clock=clock, rng=random.Random(1))
    wm = ms.current.writer_sst_watermark
    ms_of = lambda sid: int.from_bytes(ulid_to_bytes(sid)[:6], "big")  # noqa: E731
    assert ms_of(wm.sst_id) <= clock.peek_ms()
    later = new_sst_id(now_ms=clock.now_ms(), rand=bytes(10))
    assert wm.sst_id < later
    ms.publish_l0((), last_l0_seq=0, replay_after_wal_id=1, next_wal_id=2)
    assert ms_of(ms.current.writer_sst_watermark.sst_id) <= clock.peek_ms()
