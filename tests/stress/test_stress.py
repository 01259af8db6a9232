"""``bench.stress`` as a test (docs/testing.md): its expected-state checks,
one short iteration on a local directory and one on moto S3 in the default
suite, and a 2-minute run in all, marked ``slow``: 60 s on a local directory
and 60 s on moto S3 (the suite's 15-minute budget on 2 cores; the long form
is ``python -m bench.stress --duration N``, docs/testing.md)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import shaledb  # noqa: E402
from bench.crashloop import _Log  # noqa: E402
from bench.stress import (  # noqa: E402
    CHECKS,
    ENGINE_OPTIONS,
    StressConfig,
    State,
    _checkpoint,
    _Ops,
    _snapshot,
    _verify_main,
    allowed,
    key_of,
    run,
    value_of,
)

pytestmark = pytest.mark.timeout(900)


def _assert_clean(s: dict) -> None:
    detail = json.dumps(s["failed_iterations"], indent=1)[:4000]
    assert s["ok"], f"stress failures (logs in {s.get('rundir')}):\n{detail}"
    assert all(s[c] == 0 for c in CHECKS)
    assert s["iterations"] > 0 and s["operations"] > 0
    assert s["keys_verified"] == s["iterations"] * 600


def test_allowed_states_of_a_key():
    k = 7
    assert allowed(k, None, 0, 0) is None  # never written
    assert allowed(k, value_of(k, 3), 3, 3) is None
    assert allowed(k, value_of(k, 4), 3, 6) is None  # an unacknowledged write may be there
    assert allowed(k, None, 3, 6) is None  # ... and version 5 is a delete
    assert allowed(k, None, 3, 4) == "lost"
    assert allowed(k, value_of(k, 2), 3, 4) == "lost"
    assert allowed(k, value_of(k, 9), 3, 4) == "phantom"
    assert allowed(k, value_of(k + 1, 3), 3, 3) == "wrong"
    assert allowed(k, value_of(k, 3)[:-1] + b"#", 3, 3) == "wrong"
    assert allowed(k, value_of(k, 5), 0, 9) == "wrong"  # a delete version has no value


def test_unknown_kill_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown kill"):
        run(StressConfig(iterations=1, kills=("nobody",), workdir=str(tmp_path), quiet=True))


def test_verifier_reports_lost_phantom_and_wrong(tmp_path):
    """The reopen check of the expected state finds each kind of damage, and
    the database's state becomes the next baseline."""
    root = str(tmp_path / "db")
    n = 40
    state = State(str(tmp_path / "state"), n, create=True)
    with shaledb.open(root, **ENGINE_OPTIONS) as db:
        for k in range(n):
            db.put(key_of(k), value_of(k, 2))
        db.put(key_of(3), b"garbage")
    state.issued[:] = 2
    state.durable[:] = 2
    state.durable[1] = state.issued[1] = 4  # acknowledged version 4: lost
    state.durable[2] = state.issued[2] = 1  # only 1 was ever issued: 2 is a phantom
    state.issued[4] = 3  # an unacknowledged newer write: either is fine
    state.flush()
    cfg = {"root": root, "opts": ENGINE_OPTIONS, "state": str(tmp_path / "state"), "nkeys": n,
           "checkpoints": str(tmp_path / "none.json"), "reader_opts": {}}
    out = tmp_path / "out.json"
    _verify_main(cfg, str(out))
    res = json.loads(out.read_text())
    assert res["open"] == "ok" and res["verified"] == n
    assert res["counts"]["lost"] == 1 and res["counts"]["phantom"] == 1 and res["counts"]["wrong"] == 1
    assert res["counts"]["reader_wrong"] == 0
    again = State(str(tmp_path / "state"), n)
    assert int(again.durable[1]) == 2 and int(again.durable[4]) == 2 and int(again.issued[4]) == 3
    assert np.all(again.issued >= again.durable)


class _Killed(BaseException):
    """Stands for a SIGKILL that lands inside the call."""


class _DiesInFlush:
    """A database whose snapshot() and create_checkpoint() never return
    (as when the process is killed during their memtable flush)."""

    def __init__(self):
        self.puts = []

    def put(self, key, value, await_durable=False):
        self.puts.append((key, await_durable))

    def snapshot(self):
        raise _Killed

    def create_checkpoint(self, **kw):
        raise _Killed


@pytest.mark.parametrize("call", ["snapshot", "checkpoint"])
def test_writes_are_not_marked_durable_before_the_flushing_call_returns(tmp_path, call):
    """The harness bug of stop 26: acknowledged, not durable writes were
    promoted to durable[k] before snapshot() / create_checkpoint() ran their
    memtable flush, so a kill inside that flush reported them lost."""
    import random

    n = 8
    state = State(str(tmp_path / "state"), n, create=True)
    db = _DiesInFlush()
    ops = _Ops(db, state, 0, n, random.Random(1), _Log(str(tmp_path / "log")))
    for k in range(n):  # acknowledged, not durable
        v = ops._next(k, put_only=True)
        db.put(key_of(k), value_of(k, v), await_durable=False)
        ops._done({k: v}, False)
    assert len(ops.maybe) == n
    cfg = {"lo": 0, "hi": n, "checkpoints": str(tmp_path / "cps.json")}
    with pytest.raises(_Killed):
        if call == "snapshot":
            _snapshot(db, ops, state, random.Random(2), ops.log)
        else:
            _checkpoint(db, ops, state, cfg, [])
    assert np.all(state.durable == 0) and np.all(state.issued == 1)
    assert len(ops.maybe) == n  # still only acknowledged


def test_short_local_run(tmp_path):
    s = run(StressConfig(iterations=2, seed=3, ops=120, processes=1, keys=600, kills=("flusher", "failpoint"),
                         workdir=str(tmp_path), quiet=True))
    _assert_clean(s)
    assert s["iterations"] == 2 and s["checkpoints_verified"] >= 0


def test_short_local_run_with_zstd(tmp_path):
    """The compressed paths (L0 and compaction outputs compressed in one
    zstd call, stored blocks read from the mapping, SSTs pinned
    decompressed) under a crash of the compactor or at a failpoint."""
    pytest.importorskip("zstandard")
    s = run(StressConfig(iterations=1, seed=5, ops=150, processes=1, keys=600, kills=("compactor", "failpoint"),
                         workdir=str(tmp_path), quiet=True, compression="zstd"))
    _assert_clean(s)
    assert s["compression"] == "zstd" and s["actions"]["compact"] >= 1, s["actions"]


def test_short_moto_run(tmp_path, moto_server):
    s = run(StressConfig(endpoint=moto_server.endpoint_url, iterations=1, seed=4, ops=120, processes=1, keys=600,
                         kills=("user",), workdir=str(tmp_path), quiet=True))
    _assert_clean(s)
    assert s["store"] == "moto"


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "moto"])
def test_two_minute_run_in_all(tmp_path, where, request):
    extra = {}
    if where == "moto":
        extra["endpoint"] = request.getfixturevalue("moto_server").endpoint_url
    s = run(StressConfig(duration=60, seed=5, keys=600, ops=200, processes=1, faults=0.0, workdir=str(tmp_path),
                         quiet=True, **extra))
    _assert_clean(s)
