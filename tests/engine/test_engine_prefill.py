"""Regression: prefill from several writer processes, then db.flush().

SlateDB #235: after a burst of non-durable writes, ``flush()`` raced the
background WAL upload for the same object, lost the create-only write and
reported a false fence.  In ShaleDB only the flusher uploads and ``flush()``
is a request to it, so the flush must succeed every time, also with a slow
store (latency widens any race) and with ambiguous WAL writes (the write
lands, the caller is told it failed, the retry finds its own object).
"""

from __future__ import annotations

import pytest

from engine_util import SPAWN, open_db, reap, s3_opts, s3_url, scan_all


def _prefill(handle, prefix: bytes, n: int, batch: int) -> None:
    with handle as w:
        for i in range(0, n, batch):
            keys = [prefix + b"%06d" % j for j in range(i, min(n, i + batch))]
            w.put_many(keys, [prefix] * len(keys), await_durable=False)
            w.put(prefix + b"single%06d" % i, b"s", await_durable=False)  # buffered small puts too


def _slow_store(store):
    from shaledb.storage.wrappers import AddLatency, ApplyThenFail, FaultyStore

    return FaultyStore(
        store,
        AddLatency(0.01, ops="write"),
        ApplyThenFail("put_if_absent", prefix="wal/", n=2, times=2),  # ambiguous WAL creates
    )


def _expected(rounds: int, writers: int, n: int, batch: int) -> dict:
    out = {}
    for r in range(rounds):
        for w in range(writers):
            prefix = b"r%d-w%d-" % (r, w)
            for j in range(n):
                out[prefix + b"%06d" % j] = prefix
            for i in range(0, n, batch):
                out[prefix + b"single%06d" % i] = b"s"
    return out


def _run(root, rounds=3, writers=2, n=3000, batch=500, **opts):
    with open_db(root, **opts) as db:
        for r in range(rounds):
            procs = [
                SPAWN.Process(target=_prefill, args=(db.writer(), b"r%d-w%d-" % (r, w), n, batch))
                for w in range(writers)
            ]
            try:
                for p in procs:
                    p.start()
                # the background flushing runs meanwhile; flush() while writers are busy too
                db.flush()
            finally:
                reap(procs, 120)
            assert [p.exitcode for p in procs] == [0] * writers
            for _ in range(3):
                db.flush()  # never a (false) Fenced, never a lost write
        st = db.status()
        assert st["failed"] is None, st
    expected = _expected(rounds, writers, n, batch)
    with open_db(root, **opts) as db:
        assert scan_all(db) == expected


def test_prefill_then_flush_local(tmp_path):
    _run(str(tmp_path / "db"))


def test_prefill_then_flush_slow_ambiguous_store(tmp_path):
    _run(str(tmp_path / "db"), rounds=2, store_wrapper=_slow_store)


@pytest.mark.s3
def test_prefill_then_flush_s3(moto_server, s3_bucket):
    _run(s3_url(s3_bucket), rounds=2, n=2000, **s3_opts(moto_server))
