"""Model test: a hypothesis state machine drives the engine against a dict.

Operations: put (durable or not), delete, write(batch), put_many, get, scan
(with bounds), flush (WAL or memtable), close-then-reopen, a second open that
fences the first (whose next durable write must fail), and a SIGKILL of the
flusher process after a flush (local and S3).  Tiny arenas
and SSTs make the machine cross generation seals and L0 flushes often.
Runs on memory:// (flusher thread), a local directory and S3 (moto).
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

import shaledb
from engine_util import memory_url, open_db, s3_opts, s3_url

KEYS = st.sampled_from([b"a", b"b", b"c", b"k1", b"k10", b"k2", b"zz", b"\x00", b"\xff" * 3])
VALUES = st.binary(max_size=24)
BOUNDS = st.one_of(st.none(), KEYS)
TINY = dict(arena_bytes=64 << 10, l0_sst_bytes=4 << 10, max_unflushed_bytes=1 << 20, flush_interval=0.01)


class EngineMachine(RuleBasedStateMachine):
    make_root = staticmethod(memory_url)
    extra: dict = {}

    def __init__(self):
        super().__init__()
        self.root, self._cleanup = self.make_root()
        self.db = open_db(self.root, **TINY, **self.extra)
        self.model: dict[bytes, bytes] = {}

    @rule(k=KEYS, v=VALUES, durable=st.booleans())
    def put(self, k, v, durable):
        self.db.put(k, v, await_durable=durable)
        self.model[k] = v

    @rule(k=KEYS)
    def delete(self, k):
        self.db.delete(k, await_durable=False)
        self.model.pop(k, None)

    @rule(ops=st.lists(st.tuples(KEYS, st.one_of(st.none(), VALUES)), min_size=1, max_size=6))
    def write(self, ops):
        b = shaledb.WriteBatch()
        for k, v in ops:
            if v is None:
                b.delete(k)
                self.model.pop(k, None)
            else:
                b.put(k, v)
                self.model[k] = v
        self.db.write(b, await_durable=False)

    @rule(pairs=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=20))
    def put_many(self, pairs):
        self.db.put_many([k for k, _ in pairs], [v for _, v in pairs], await_durable=False)
        for k, v in pairs:
            self.model[k] = v

    @rule(k=KEYS)
    def get(self, k):
        assert self.db.get(k) == self.model.get(k)

    @rule(start=BOUNDS, end=BOUNDS)
    def scan(self, start, end):
        want = sorted((k, v) for k, v in self.model.items() if (start is None or k >= start) and (end is None or k < end))
        assert list(self.db.scan(start, end)) == want

    @rule(memtable=st.booleans())
    def flush(self, memtable):
        self.db.flush(memtable=memtable)

    @precondition(lambda self: self.db is not None)
    @rule()
    def reopen(self):
        self.db.close()
        self.db = None
        self.db = open_db(self.root, **TINY, **self.extra)

    @rule()
    def fence_by_second_open(self):
        """A second open fences this Db; everything flushed before survives."""
        self.db.flush()
        db2 = open_db(self.root, **TINY, **self.extra)
        try:
            with pytest.raises(shaledb.Fenced):
                self.db.put(b"fenced-write", b"x")  # durable: must fail, never land
        finally:
            self.db.close()
        self.db = db2

    @precondition(lambda self: self.db is not None and self.db._proc is not None)
    @rule()
    def crash_flusher_after_flush(self):
        """SIGKILL the flusher; flushed writes survive the reopen."""
        import os
        import signal

        self.db.flush()
        os.kill(self.db.status()["pid"], signal.SIGKILL)
        self.db._proc.join(10)
        try:
            self.db.close()
        except shaledb.ShaleDBError:
            pass
        self.db = None
        self.db = open_db(self.root, **TINY, **self.extra)

    @invariant()
    def whole_scan_matches(self):
        if self.db is not None:
            assert dict(self.db.scan()) == self.model

    def teardown(self):
        try:
            if self.db is not None:
                self.db.close()
        finally:
            self._cleanup()


def _memory_root():
    return memory_url(), lambda: None


def _local_root():
    d = tempfile.mkdtemp(prefix="shaledb-model-")
    return d + "/db", lambda: shutil.rmtree(d, ignore_errors=True)


def _settings(n, steps):
    return settings(
        max_examples=n,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def test_model_memory():
    class M(EngineMachine):
        make_root = staticmethod(_memory_root)

    run_state_machine_as_test(M, settings=_settings(30, 30))


def test_model_local():
    class M(EngineMachine):
        make_root = staticmethod(_local_root)

    run_state_machine_as_test(M, settings=_settings(2, 12))


@pytest.mark.slow
@pytest.mark.s3
def test_model_s3(moto_server):
    client = moto_server.client()
    counter = iter(range(10**6))

    def s3_root():
        bucket = "model-%d" % next(counter)
        client.create_bucket(Bucket=bucket)
        return s3_url(bucket), lambda: None

    class M(EngineMachine):
        make_root = staticmethod(s3_root)
        extra = s3_opts(moto_server)

    run_state_machine_as_test(M, settings=_settings(2, 10))
