"""Read-path hardening (issue 9, items 6 and 9): one deadline per public read
call, and a referenced SST that the store lacks is Corruption.

Faults are injected only in the test's own process (the user process): the
flusher opens the same ``store_wrapper`` in its process and gets the bare
store, so writes, flushes and close run normally.
"""

from __future__ import annotations

import glob
import os
import time

import pytest

import shaledb
from engine_util import open_db
from shaledb.storage.wrappers import AddLatency, FailRandomly, FaultyStore

#: FaultyStores made by _UserProcessFaults in this process (one per open Db)
_FAULTY: list[FaultyStore] = []

TIMEOUT = 3.0
L0_SSTS = 24
LATENCY = 0.5  # per read; L0_SSTS * LATENCY is far past TIMEOUT


class _UserProcessFaults:
    """A picklable ``store_wrapper``: a FaultyStore (with no faults yet) in
    the process that made it, the bare store in any other process."""

    def __init__(self):
        self.pid = os.getpid()

    def __call__(self, store):
        if os.getpid() != self.pid:
            return store
        fs = FaultyStore(store)
        _FAULTY.append(fs)
        return fs


@pytest.fixture
def many_l0(tmp_path):
    """A Db (request_timeout TIMEOUT) with L0_SSTS L0 SSTs and its user-process FaultyStore."""
    _FAULTY.clear()
    # compactor=False: the test needs L0_SSTS separate L0 SSTs; a compactor would merge them
    db = open_db(
        str(tmp_path / "db"), store_wrapper=_UserProcessFaults(), request_timeout=TIMEOUT, compactor=False
    )
    try:
        assert len(_FAULTY) == 1
        for i in range(L0_SSTS):
            db.put(b"k%03d" % i, b"v%03d" % i)
            db.flush(memtable=True)  # one L0 SST each; the reader re-plans on the next get
        yield db, _FAULTY[0]
    finally:
        _FAULTY[0].clear()
        db.close()
        _FAULTY.clear()


def _slow(fs):
    fs.add(AddLatency(LATENCY, ops="read"))


def _flaky(fs):
    # most attempts fail: each object read needs several retries
    fs.add(FailRandomly(0.7, ops="read", seed=11))


@pytest.mark.parametrize("fault", [_slow, _flaky], ids=["slow", "flaky"])
def test_get_has_one_deadline_across_all_store_reads(many_l0, fault):
    db, fs = many_l0
    fault(fs)
    t0 = time.monotonic()
    with pytest.raises(shaledb.Unavailable, match="deadline"):
        db.get(b"k000")  # the oldest L0: the first get opens every L0 SST
    elapsed = time.monotonic() - t0
    # one deadline, plus at most one attempt already under way (generous bound);
    # without it every SST open had its own retry budget and this took > 12 s
    assert elapsed < TIMEOUT + LATENCY + 4.0, elapsed
    fs.clear()
    assert db.get(b"k000") == b"v000"  # nothing broken: the next call starts a new deadline


@pytest.mark.parametrize("fault", [_slow, _flaky], ids=["slow", "flaky"])
def test_scan_has_one_deadline(many_l0, fault):
    db, fs = many_l0
    fault(fs)
    t0 = time.monotonic()
    with pytest.raises(shaledb.Unavailable, match="deadline"):
        list(db.scan())
    assert time.monotonic() - t0 < TIMEOUT + LATENCY + 4.0
    fs.clear()
    assert len(list(db.scan())) == L0_SSTS


def test_get_within_deadline_still_answers(many_l0):
    """A little latency that fits in the deadline changes nothing."""
    db, fs = many_l0
    fs.add(AddLatency(0.01, ops="read"))
    assert db.get(b"k005") == b"v005"
    assert dict(db.scan(b"k010", b"k012")) == {b"k010": b"v010", b"k011": b"v011"}


def test_missing_referenced_sst_is_corruption_naming_it(tmp_path):
    root = str(tmp_path / "db")
    with open_db(root) as db:
        db.put(b"a", b"1")
        db.flush(memtable=True)
    ssts = glob.glob(os.path.join(root, "compacted", "*.sst"))
    assert len(ssts) == 1
    name = "compacted/" + os.path.basename(ssts[0])
    os.remove(ssts[0])
    with open_db(root) as db:
        with pytest.raises(shaledb.Corruption, match=name) as ei:
            db.get(b"a")
        assert not isinstance(ei.value, shaledb.ObjectNotFound)
        with pytest.raises(shaledb.Corruption, match=name):
            list(db.scan())
