"""A writer and a compactor updating one manifest flat out, in two processes
(issue 11): each merges the other's change when it loses a conditional
write, neither ever sees a false Fenced, and nothing either published is
lost.  An update that loses ``max_conflicts`` (32) races in a row gives up
with Conflict; each side then does what the engine does (the flusher
publishes again at its next tick, the compactor plans again), and the run
reports how often that happened.

The two sides drive :class:`ManifestStore` exactly as the flusher
(``publish_l0``) and the compactor (``apply_compaction``) do, without the
data path, so hundreds of manifest updates take seconds.  Afterwards the
whole manifest history is read back: every step is a legal writer or
compactor transition, the epochs never moved, and every L0 SST the writer
published is either still in L0 or was consumed by exactly one compaction,
whose output runs account for every entry.  Local and S3 (moto), 500
updates each; ``SHALEDB_DUEL_LONG=1`` adds 3000 (local) and 2000 (S3).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time

import pytest

from shaledb.errors import Conflict, InvalidArgument, PreconditionFailed
from shaledb.format.keys import new_sst_id, sst_key
from shaledb.manifest.model import SortedRun, SstRef, decode_manifest
from shaledb.manifest.store import ManifestStore, check_transition
from shaledb.storage import open_store
from shaledb.storage.wrappers import StoreWrapper

WAIT = 120.0  # every wait for the other process
RUN = 400.0  # at most this long flat out (the target count ends a run far sooner)


class ConflictCounter(StoreWrapper):
    """Counts create-only manifest writes that lost to another writer."""

    def __init__(self, inner):
        super().__init__(inner)
        self.lost = 0

    def put_if_absent(self, key, data, metadata=None, *, put_id=None):
        try:
            return self.inner.put_if_absent(key, data, metadata, put_id=put_id)
        except PreconditionFailed:
            if key.startswith("manifest/"):
                self.lost += 1
            raise


def _done(count, target: int, deadline: float) -> bool:
    return count.value >= target or time.monotonic() > deadline


def _bump(count) -> None:
    with count.get_lock():
        count.value += 1


def _l0_backpressure(w, deadline: float) -> None:
    """As the flusher's ``_await_l0_room`` with the default ``l0_max_ssts``:
    a short pause near the limit, a wait for the compactor at it.  Without
    it a writer publishing back to back can win every race on a slow
    machine (the compactor's refresh-merge-write takes longer than the
    writer's cycle) and L0 grows without bound; the engine never runs so."""
    from shaledb.flush.flusher import L0_SLOW_MARGIN, L0_SLOW_STEP, L0_STALL_POLL
    from shaledb.options import Options

    limit = Options().l0_max_ssts
    slow = limit - L0_SLOW_MARGIN
    if len(w.current.l0) < slow:
        return
    while time.monotonic() < deadline:
        n = len(w.refresh().l0)
        if n < slow:
            return
        if n < limit:
            time.sleep(L0_SLOW_STEP * (n - slow + 1))
            return
        time.sleep(L0_STALL_POLL)


def writer_side(url, opts, target, count, writer_open, go, results) -> None:
    """As the flusher: a WAL object, an L0 SST upload, then one manifest
    update publishing it (the same store requests, tiny objects), with the
    flusher's L0 backpressure."""
    res = {"role": "writer", "updates": 0, "published": [], "lost": 0, "gave_up": 0, "epoch": None}
    store = None
    try:
        store = ConflictCounter(open_store(url, **opts))
        rng = random.Random(7)
        w = ManifestStore.open_writer(store, rng=rng)
        res["epoch"] = w.epoch
        writer_open.set()
        go.wait(WAIT)
        deadline = time.monotonic() + RUN
        wal = w.fence_wal_id
        seq = w.current.last_l0_seq
        while not _done(count, target, deadline):
            seq += 1
            key = b"k%08d" % seq
            wal += 1
            w.write_wal(wal, key)
            sst = SstRef(new_sst_id(), key, key, 100, seq, seq, 1)
            store.put(sst_key(sst.sst_id), key)
            _l0_backpressure(w, deadline)
            while True:  # as the flusher's next tick: publish again (idempotent) after giving up
                try:
                    w.publish_l0([sst], last_l0_seq=seq, replay_after_wal_id=wal, next_wal_id=wal + 1)
                    break
                except Conflict:
                    res["gave_up"] += 1
            res["published"].append(sst.sst_id)
            res["updates"] += 1
            _bump(count)
    except BaseException as exc:  # noqa: BLE001 - reported to the test, a Fenced included
        res["error"] = f"{type(exc).__name__}: {exc}"
    res["lost"] = store.lost if store is not None else 0
    results.put(res)


def compactor_side(url, opts, target, count, writer_open, go, results) -> None:
    """As the compactor: moves the oldest L0 SSTs into a new top run, and
    merges the runs when there are three; each job uploads its output SST,
    then updates the manifest."""
    res = {"role": "compactor", "updates": 0, "consumed": [], "lost": 0, "gave_up": 0, "epoch": None,
           "run_merges": 0}
    store = None
    try:
        store = ConflictCounter(open_store(url, **opts))
        rng = random.Random(11)
        writer_open.wait(WAIT)
        c = ManifestStore.open_compactor(store, rng=rng)
        res["epoch"] = c.epoch
        go.wait(WAIT)
        deadline = time.monotonic() + RUN
        while not _done(count, target, deadline):
            m = c.refresh()
            if len(m.l0) >= 2:
                take = m.l0[-8:]  # the oldest, as an L0 job takes them
                out = SstRef(
                    new_sst_id(),
                    min(s.first_key for s in take),
                    max(s.last_key for s in take),
                    sum(s.size for s in take),
                    min(s.min_seq for s in take),
                    max(s.max_seq for s in take),
                    sum(s.num_entries for s in take),
                )
                top = m.sorted_runs[0].run_id + 1 if m.sorted_runs else 0
                store.put(sst_key(out.sst_id), b"out")
                try:
                    c.apply_compaction(removed_l0=[s.sst_id for s in take], new_runs=(SortedRun(top, (out,)),),
                                       sst_watermark=out.sst_id)  # the job's only (smallest) unpublished id
                except Conflict:  # as the compactor service: plan again on the next pass
                    res["gave_up"] += 1
                    continue
                res["consumed"] += [s.sst_id for s in take]
            elif len(m.sorted_runs) >= 3:
                runs = m.sorted_runs  # every run: consecutive in recency
                ssts = [s for r in runs for s in r.ssts]
                out = SstRef(
                    new_sst_id(),
                    min(s.first_key for s in ssts),
                    max(s.last_key for s in ssts),
                    sum(s.size for s in ssts),
                    min(s.min_seq for s in ssts),
                    max(s.max_seq for s in ssts),
                    sum(s.num_entries for s in ssts),
                )
                store.put(sst_key(out.sst_id), b"out")
                try:
                    c.apply_compaction(removed_runs=[r.run_id for r in runs],
                                       new_runs=(SortedRun(runs[0].run_id, (out,)),),
                                       sst_watermark=out.sst_id)
                except Conflict:
                    res["gave_up"] += 1
                    continue
                res["run_merges"] += 1
            else:
                time.sleep(0.001)  # nothing to compact yet: let the writer publish
                continue
            res["updates"] += 1
            _bump(count)
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        res["error"] = f"{type(exc).__name__}: {exc}"
    res["lost"] = store.lost if store is not None else 0
    results.put(res)


def duel(url: str, opts: dict, target: int) -> dict:
    ctx = mp.get_context("spawn")
    count = ctx.Value("q", 0)
    writer_open, go = ctx.Event(), ctx.Barrier(2)
    results = ctx.Queue()
    procs = [ctx.Process(target=fn, args=(url, opts, target, count, writer_open, go, results), daemon=True)
             for fn in (writer_side, compactor_side)]
    out: dict = {}
    try:
        for p in procs:
            p.start()
        for _ in procs:
            r = results.get(timeout=RUN + WAIT)
            out[r["role"]] = r
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


def check_history(store, w: dict, c: dict) -> None:
    keys = sorted(m.key for m in store.list("manifest/"))
    ms = [decode_manifest(store.get(k), k) for k in keys]
    for i, (a, b) in enumerate(zip(ms, ms[1:])):
        roles = []
        for role in ("writer", "compactor"):
            try:
                check_transition(a, b, i + 2, role=role, now_ms=0)
                roles.append(role)
            except InvalidArgument:
                pass
        assert roles, f"manifest {i + 2} is no legal writer or compactor step"
    final = ms[-1]
    assert final.writer_epoch == w["epoch"] == 1 and final.compactor_epoch == c["epoch"] == 1
    published, consumed = set(w["published"]), c["consumed"]
    assert len(consumed) == len(set(consumed)), "an L0 SST was compacted twice"
    l0 = {s.sst_id for s in final.l0}
    assert set(consumed) <= published and l0 | set(consumed) == published and not l0 & set(consumed)
    in_runs = sum(s.num_entries for r in final.sorted_runs for s in r.ssts)
    assert in_runs == len(consumed)  # every consumed entry is in exactly one run
    assert final.last_l0_seq == len(published)


def run_duel(url: str, opts: dict, target: int) -> None:
    out = duel(url, opts, target)
    w, c = out["writer"], out["compactor"]
    assert "error" not in w and "error" not in c, (w.get("error"), c.get("error"))  # no false Fenced, nothing else
    print(f"writer {w['updates']} updates ({w['lost']} lost races merged, gave up {w['gave_up']} times), "
          f"compactor {c['updates']} ({c['lost']} lost races merged, gave up {c['gave_up']} times, "
          f"{c['run_merges']} run merges)")
    assert w["updates"] + c["updates"] >= target
    assert w["updates"] > target // 4 and c["updates"] > target // 10  # both ran flat out, interleaved
    assert w["lost"] + c["lost"] > 0  # they did race: conflicts happened and were merged
    check_history(open_store(url, **opts), w, c)


def test_duel_local(tmp_path):
    run_duel(f"file://{tmp_path}/db", {"fsync": False}, 500)


@pytest.mark.s3
def test_duel_s3(s3_bucket, moto_server):
    run_duel(f"s3://{s3_bucket}/db", {"endpoint_url": moto_server.endpoint_url}, 500)


LONG = pytest.mark.skipif(not os.environ.get("SHALEDB_DUEL_LONG"),
                          reason="the long duel runs with SHALEDB_DUEL_LONG=1 (1-3 minutes each)")


@pytest.mark.slow
@pytest.mark.timeout(900)
@LONG
def test_duel_local_long(tmp_path):
    run_duel(f"file://{tmp_path}/db", {}, 3000)


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.timeout(900)
@LONG
def test_duel_s3_long(s3_bucket, moto_server):
    run_duel(f"s3://{s3_bucket}/db", {"endpoint_url": moto_server.endpoint_url}, 2000)
