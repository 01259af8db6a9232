"""Conditional writes raced by several processes (local directory and S3 over HTTP).

Each child reopens the store from ``spec()``, waits at a barrier so that all
start together, and reports what it saw on a queue.  Every wait has a timeout
and every child is reaped (killed if need be) even when the test fails.
"""

from __future__ import annotations

import multiprocessing as mp
import queue

from shaledb.errors import PreconditionFailed

N_PROCS = 4
KEYS = [f"wal/{i:020d}.sst" for i in range(1, 9)]
TIMEOUT = 60


def _payload(tag: str, key: str) -> bytes:
    return f"{tag}|{key}|".encode() * 50


def _race_put_if_absent(url, options, tag, barrier, out):
    from shaledb.storage import open_store

    store = open_store(url, **options)
    barrier.wait(TIMEOUT)
    won = {}
    for key in KEYS:
        try:
            won[key] = store.put_if_absent(key, _payload(tag, key)).etag
        except PreconditionFailed:
            won[key] = None
    out.put((tag, won))
    store.close()


def _cas_increments(url, options, tag, n, barrier, out):
    from shaledb.storage import open_store

    store = open_store(url, **options)
    barrier.wait(TIMEOUT)
    losses = 0
    for _ in range(n):
        while True:
            meta = store.head("counter")
            value = int(store.get("counter").split(b"|")[0])
            try:
                store.put_if_match("counter", f"{value + 1}|{tag}".encode(), meta.etag)
                break
            except PreconditionFailed:
                losses += 1
    out.put((tag, losses))
    store.close()


def _run_children(target, make_args):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(N_PROCS)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=make_args(f"p{i}", barrier, out), daemon=True) for i in range(N_PROCS)]
    try:
        for p in procs:
            p.start()
        results = {}
        for _ in procs:
            try:
                tag, value = out.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"children did not report in {TIMEOUT}s: {[p.exitcode for p in procs]}")
            results[tag] = value
        for p in procs:
            p.join(TIMEOUT)
            assert p.exitcode == 0
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
        out.close()
        out.join_thread()


def test_put_if_absent_race_one_winner(shared_store):
    url, options = shared_store.spec()
    results = _run_children(_race_put_if_absent, lambda tag, b, q: (url, options, tag, b, q))
    assert len(results) == N_PROCS
    for key in KEYS:
        winners = [tag for tag, won in results.items() if won[key] is not None]
        assert len(winners) == 1, (key, winners)
        assert shared_store.get(key) == _payload(winners[0], key)
        assert shared_store.head(key).etag == results[winners[0]][key]


def test_put_if_match_cas_across_processes(shared_store):
    per_proc = 8
    shared_store.put("counter", b"0|init")
    url, options = shared_store.spec()
    results = _run_children(_cas_increments, lambda tag, b, q: (url, options, tag, per_proc, b, q))
    assert len(results) == N_PROCS
    assert int(shared_store.get("counter").split(b"|")[0]) == N_PROCS * per_proc
