"""A writer and a compactor updating the manifest concurrently lose nothing.

The writer publishes L0 SSTs with disjoint key ranges while the compactor,
in another thread, repeatedly moves the oldest L0 SSTs into a new sorted
run.  Their updates collide on the same manifest ids; each side re-applies
its change on top of the other's, so at the end every published SST is in
L0 or in exactly one run, every compaction is there, and each side's fields
are intact.
"""

from __future__ import annotations

import random
import threading

from shaledb.format.keys import new_sst_id
from shaledb.manifest.model import SortedRun, SstRef, decode_manifest
from shaledb.manifest.store import ManifestStore, check_transition
from shaledb.storage import open_store

N_SSTS = 24


def test_writer_and_compactor_merge(store_url):
    kind, url, opts = store_url
    store = open_store(url, **opts)
    w = ManifestStore.open_writer(store, rng=random.Random(1))
    c = ManifestStore.open_compactor(store, rng=random.Random(2))
    w.refresh()
    rng = random.Random(3)
    published: list[str] = []
    runs: list[SortedRun] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def writer():
        try:
            for i in range(N_SSTS):
                key = b"k%04d" % i
                s = SstRef(new_sst_id(rand=rng.randbytes(10)), key, key + b"~", 10, i + 1, i + 1, 1)
                w.write_wal(w.fence_wal_id + 1 + i, b"batch %d" % i)
                w.publish_l0([s], last_l0_seq=i + 1, replay_after_wal_id=w.fence_wal_id + i, next_wal_id=w.fence_wal_id + i + 2)
                published.append(s.sst_id)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            done.set()

    def compactor():
        try:
            run_id = 0
            while True:
                finished = done.is_set()
                m = c.refresh()
                if len(m.l0) >= 3 or (finished and m.l0):
                    take = m.l0[-3:] if not finished else m.l0
                    run_id += 1
                    run = SortedRun(run_id, tuple(sorted(take, key=lambda s: s.first_key)))
                    c.apply_compaction(removed_l0=[s.sst_id for s in take], new_runs=[run])
                    runs.append(run)
                elif finished:
                    return
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=compactor)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), "writer or compactor hung"
    assert not errors, errors

    final = ManifestStore.open_reader(store).current
    assert final.l0 == ()
    assert sorted(final.sorted_runs, key=lambda r: r.run_id) == runs
    assert sorted(s.sst_id for r in final.sorted_runs for s in r.ssts) == sorted(published)
    assert len(published) == N_SSTS
    assert (final.writer_epoch, final.compactor_epoch) == (1, 1)
    assert final.last_l0_seq == N_SSTS
    assert final.replay_after_wal_id == w.fence_wal_id + N_SSTS - 1
    assert final.next_wal_id == w.fence_wal_id + N_SSTS + 1
    ms = [decode_manifest(store.get(m.key), m.key) for m in store.list("manifest/")]
    for i, (a, b) in enumerate(zip(ms, ms[1:])):
        role = "writer" if b.sorted_runs == a.sorted_runs and b.compactor_epoch == a.compactor_epoch else "compactor"
        check_transition(a, b, i + 2, role=role, now_ms=0)
