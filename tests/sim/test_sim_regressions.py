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
