"""Protocol bugs the simulation found, each pinned by a direct test (the seed
that found it is in the docstring; ``python -m bench.sim --seed N`` replays it)."""

from __future__ import annotations

import time

from shaledb.format.keys import wal_key
from shaledb.gc import collect
from shaledb.manifest.store import ManifestStore
from shaledb.storage.memory import MemoryStore


def test_gc_keeps_the_wal_a_recently_superseded_manifest_tails():
    """Found by ``python -m bench.sim --seed 1000 --steps 250000`` (step
    243539): a reader that read manifest M (the latest then) tails the WAL
    past M's ``next_wal_id``.  When the next L0 publish covered those WAL
    objects, GC deleted them at once although M was superseded less than
    ``min_age`` ago (it kept only ``(replay_after, next_wal_id]`` of M), so
    the reader's WAL prefix stopped short of writes acknowledged before it
    began."""
    store = MemoryStore()
    ms = ManifestStore.open_writer(store)
    fence = ms.fence_wal_id
    ms.publish_l0((), last_l0_seq=0, replay_after_wal_id=fence, next_wal_id=fence + 1)  # M: nothing written yet
    for i in (1, 2, 3):
        ms.write_wal(fence + i, b"wal object %d" % i)  # written after M, tailed by M's readers
    ms.publish_l0((), last_l0_seq=0, replay_after_wal_id=fence + 3, next_wal_id=fence + 4)  # covers them
    now = time.time()
    res = collect(store, min_age=60, now=now)
    assert res.keys["wal"] == []
    for i in (1, 2, 3):
        store.head(wal_key(fence + i))
    # once M is out of the min_age window, they go
    res = collect(store, min_age=60, now=now + 120)
    assert sorted(res.keys["wal"]) == [wal_key(fence + i) for i in (1, 2, 3)]
    assert store.head(wal_key(fence)).size == 0  # the fence stays


def test_a_default_checkpoint_pins_the_manifest_it_lands_on():
    """Found by ``python -m bench.sim --seed 90 --steps 100000 --faults 3
    --gc-min-age 0`` (step 24460): ``add_checkpoint()`` pinned the handle's
    cached manifest id.  When that manifest had been superseded by a
    compaction and a GC pass (small ``min_age``) had deleted its inputs
    before the checkpoint landed, the checkpoint named SSTs that were gone."""
    from shaledb.format.keys import new_sst_id, sst_key
    from shaledb.manifest.model import SortedRun, SstRef, decode_manifest
    from shaledb.format.keys import manifest_key

    store = MemoryStore()
    w = ManifestStore.open_writer(store)

    def sst(tag: bytes) -> SstRef:
        sid = new_sst_id()
        store.put(sst_key(sid), b"sst " + tag)
        return SstRef(sid, b"a", b"z", 8, 1, 1, 1)

    a = sst(b"a")
    w.publish_l0([a], last_l0_seq=1, replay_after_wal_id=w.fence_wal_id, next_wal_id=w.fence_wal_id + 1)
    ck = ManifestStore.open_reader(store)  # caches the manifest that lists a
    c = ManifestStore.open_compactor(store)
    b = sst(b"b")
    c.apply_compaction(removed_l0=[a.sst_id], new_runs=[SortedRun(0, (b,))], sst_watermark=new_sst_id())
    gone = collect(store, min_age=0, now=time.time() + 5)
    assert sst_key(a.sst_id) in gone.keys["sst"]
    cp = ck.add_checkpoint(lifetime_ms=60_000)
    pinned = decode_manifest(store.get(manifest_key(cp.manifest_id)), "pinned")
    for ref in pinned.all_ssts():
        store.head(sst_key(ref.sst_id))  # ObjectNotFound before the fix
    assert [r.sst_id for r in pinned.all_ssts()] == [b.sst_id]
