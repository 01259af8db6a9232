"""A reader in another process sees what a writer ``flush()``ed within 3 poll
intervals (issue 13), with the WAL tail (after ``flush()``) and without it
(after ``flush(memtable=True)``), local and on moto S3.

Deterministic, not timed: the reader counts its completed background polls
(``DbReader.polls``).  A poll that starts after the flush returned sees it,
so the value must be visible once two more polls have completed after the
reader learned of the flush: at most three poll intervals later.
"""

from __future__ import annotations

import pytest
from engine_util import SPAWN, open_db, reap, s3_opts, s3_url
from readonly_util import OPTS, kv

POLL = 0.1
TIMEOUT = 120.0


def _reader_main(url, extra, wal_tail, conn):
    """Child: open a reader, then answer each (key, ) with what it sees
    two completed polls later (``polls`` counted, no refresh() call)."""
    import time

    import shaledb

    try:
        with shaledb.open_reader(url, poll_interval=POLL, wal_tail=wal_tail, **extra) as r:
            conn.send("ready")
            while True:
                msg = conn.recv()
                if msg is None:
                    break
                p0 = r.polls
                deadline = time.monotonic() + TIMEOUT
                while r.polls < p0 + 2 and time.monotonic() < deadline:
                    time.sleep(POLL / 10)
                conn.send((r.get(msg), r.polls - p0, repr(r.last_error)))
    except BaseException as exc:  # noqa: BLE001 - report to the test
        conn.send(("error", repr(exc)))
        raise


@pytest.mark.parametrize("where,wal_tail", [
    ("local", True), ("local", False),
    pytest.param("s3", True, marks=pytest.mark.s3),
    pytest.param("s3", False, marks=[pytest.mark.s3, pytest.mark.slow]),
], ids=["local-wal_tail", "local-l0_only", "s3-wal_tail", "s3-l0_only"])
def test_reader_in_another_process_sees_flushed_data(where, wal_tail, tmp_path, request):
    if where == "local":
        url, extra = str(tmp_path / "db"), {}
    else:
        url, extra = s3_url(request.getfixturevalue("s3_bucket")), s3_opts(request.getfixturevalue("moto_server"))
    parent, child = SPAWN.Pipe()
    with open_db(url, **OPTS, **extra) as db:
        db.put(b"seed", b"s")
        db.flush(memtable=True)
        proc = SPAWN.Process(target=_reader_main, args=(url, extra, wal_tail, child), daemon=True)
        proc.start()
        try:
            assert parent.poll(TIMEOUT), "the reader process did not start"
            assert parent.recv() == "ready"
            for rnd in range(3):
                for i in range(rnd * 50, rnd * 50 + 50):
                    db.put(*kv(i, rnd), await_durable=False)
                db.flush(memtable=not wal_tail)
                key, value = kv(rnd * 50 + 7, rnd)
                parent.send(key)
                assert parent.poll(TIMEOUT), "the reader process did not answer"
                got, polls, err = parent.recv()
                assert polls >= 2, f"the reader completed only {polls} polls ({err})"
                assert got == value
            parent.send(None)
        finally:
            reap([proc], timeout=30)
    assert proc.exitcode == 0
