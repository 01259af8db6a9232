"""Writers racing to open one root: exactly one ends current, the rest are fenced.

Each racer opens a writer at the same moment, waits until every racer has
finished opening, then tries three rounds of (WAL write, L0 publish).  The
racer with the highest epoch must succeed in all of them; every other racer
that got through its open must raise Fenced on its very first operation;
nothing a fenced racer tried to publish may appear in any manifest.

Threads run on memory, local and S3 (moto) stores; processes (spawn) on
local and S3.  Every wait has a timeout and every child is reaped.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
import threading

import pytest

from shaledb.errors import Fenced
from shaledb.format.keys import new_sst_id
from shaledb.manifest.model import SstRef, decode_manifest
from shaledb.manifest.store import ManifestStore, check_transition
from shaledb.storage import open_store

WAIT = 60.0
ROUNDS = 3


def race_worker(url, opts, name, start, opened, results) -> None:
    """One racer; puts a result dict on ``results`` (a queue) whatever happens."""
    res = {"name": name, "open": None, "epoch": None, "fence": None, "published": [], "attempted": [], "fenced_at": None}
    try:
        store = open_store(url, **opts)
        rng = random.Random(name)
        start.wait(WAIT)
        w = None
        try:
            w = ManifestStore.open_writer(store, rng=rng)
            res.update(open="ok", epoch=w.epoch, fence=w.fence_wal_id)
        except Fenced:
            res["open"] = "fenced"
        opened.wait(WAIT)
        if w is not None:
            wal = w.fence_wal_id
            for i in range(ROUNDS):
                sst = SstRef(new_sst_id(rand=rng.randbytes(10)), b"a", b"b", 10, i + 1, i + 1, 1)
                res["attempted"].append(sst.sst_id)
                try:
                    wal += 1
                    w.write_wal(wal, f"{name}-{i}".encode())
                    w.publish_l0([sst], last_l0_seq=i + 1, replay_after_wal_id=wal - 1, next_wal_id=wal + 1)
                    res["published"].append(sst.sst_id)
                except Fenced:
                    res["fenced_at"] = i
                    break
    except BaseException as e:  # reported to the parent, never swallowed
        res["error"] = f"{type(e).__name__}: {e}"
    results.put(res)


def check_outcome(store, results: list[dict]) -> None:
    errors = [r for r in results if "error" in r]
    assert not errors, errors
    opened = [r for r in results if r["open"] == "ok"]
    assert opened, results
    winner = max(opened, key=lambda r: r["epoch"])
    current = [r for r in opened if r["fenced_at"] is None]
    assert current == [winner], results
    assert len(winner["published"]) == ROUNDS
    for r in opened:
        if r is not winner:
            assert r["fenced_at"] == 0 and r["published"] == [], r  # fenced on its very next operation
    # history: one writer epoch per racer, transitions legal, nothing of a loser published
    manifests = [decode_manifest(store.get(m.key), m.key) for m in store.list("manifest/")]
    for i, (a, b) in enumerate(zip(manifests, manifests[1:])):
        check_transition(a, b, i + 2, role="writer", now_ms=0)
    final = manifests[-1]
    assert final.writer_epoch == winner["epoch"] == len(opened) + sum(r["open"] == "fenced" for r in results)
    ever = set().union(*(m.sst_ids() for m in manifests))
    losers = {s for r in results if r is not winner for s in r["attempted"]}
    assert not ever & losers
    assert [s.sst_id for s in final.l0] == winner["published"][::-1]
    epochs = [r["epoch"] for r in opened]
    assert len(set(epochs)) == len(epochs)


def run_threads(url, opts, n: int) -> list[dict]:
    start, opened = threading.Barrier(n), threading.Barrier(n)
    results: queue.Queue = queue.Queue()
    threads = [
        threading.Thread(target=race_worker, args=(url, opts, f"t{i}", start, opened, results), daemon=True)
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert not any(t.is_alive() for t in threads), "a racer thread hung"
    return [results.get(timeout=1) for _ in range(n)]


def run_processes(url, opts, n: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    start, opened = ctx.Barrier(n), ctx.Barrier(n)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=race_worker, args=(url, opts, f"p{i}", start, opened, results), daemon=True)
        for i in range(n)
    ]
    out: list[dict] = []
    try:
        for p in procs:
            p.start()
        for _ in range(n):
            out.append(results.get(timeout=WAIT * 2))
        for p in procs:
            p.join(WAIT)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
        results.close()
        results.join_thread()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return out


def test_threads_race_to_open(store_url):
    kind, url, opts = store_url
    store = open_store(url, **opts)
    results = run_threads(url, opts, 3)
    check_outcome(store, results)


def test_processes_race_to_open(shared_store_url):
    kind, url, opts = shared_store_url
    store = open_store(url, **opts)
    results = run_processes(url, opts, 3)
    check_outcome(store, results)


@pytest.mark.parametrize("n", [2, 4])
def test_threads_race_repeatedly_on_memory(n):
    for round_ in range(5):
        url = f"memory://race-{n}-{round_}-{random.random()}"
        results = run_threads(url, {}, n)
        check_outcome(open_store(url), results)


def test_slower_opener_never_fences_above_the_newer_writer():
    """A bumps its epoch, then C opens completely before A looks for a free WAL
    id.  A must find itself fenced before it writes a fence, so that its fence
    never lands above C's and C's first WAL write goes through."""
    from shaledb.errors import ObjectNotFound
    from shaledb.storage import MemoryStore
    from shaledb.storage.wrappers import StoreWrapper

    base = MemoryStore()
    ManifestStore.open_writer(base).write_wal(2, b"old writer")  # some history
    newer = {}

    class OpenNewerWriterFirst(StoreWrapper):
        def head(self, key):
            if key.startswith("wal/") and not newer:
                newer["c"] = ManifestStore.open_writer(base)  # C: epoch bump + fence
            return self.inner.head(key)

    with pytest.raises(Fenced):
        ManifestStore.open_writer(OpenNewerWriterFirst(base))  # A
    c = newer["c"]
    c.write_wal(c.fence_wal_id + 1, b"c's first WAL object")  # no false fence
    wal_ids = sorted(int(m.key[4:24]) for m in base.list("wal/"))
    assert wal_ids == list(range(1, c.fence_wal_id + 2)), wal_ids
    with pytest.raises(ObjectNotFound):
        base.head(f"wal/{c.fence_wal_id + 2:020d}.sst")
