"""The crash loop (``bench.crashloop``) as a test: SIGKILL of the user process,
the flusher, a writer or all of them at seeded moments, then a reopen in a
fresh process that checks every acknowledged-durable write, every write made
before a ``close()`` that returned normally, and that no shared-memory
segment, control directory or process is left behind.

The short form runs in the default suite (a few iterations per kill target,
local and moto).  The long form is marked ``slow`` and, being long, runs only
when ``SHALEDB_CRASHLOOP_LONG`` is set (its iteration count); it is the
command of docs/operations.md ("Crash loop") in test form.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bench.crashloop import CHECKS, ENGINE_OPTIONS, TARGETS, LoopConfig, verify_reopen, run, value_for  # noqa: E402
import shaledb  # noqa: E402

_LONG = os.environ.get("SHALEDB_CRASHLOOP_LONG", "")


def _assert_clean(summary: dict) -> None:
    assert summary["iterations"] > 0
    detail = json.dumps(summary["failed_iterations"], indent=1)[:4000]
    assert summary["ok"], f"crash loop failures {summary['failures']} (logs in {summary.get('rundir')}):\n{detail}"
    assert all(summary["failures"][c] == 0 for c in CHECKS)
    assert summary["verified"] == summary["acked_durable"]


def _assert_covered(summary: dict, iterations: int) -> None:
    # every kill target was exercised, and most kills hit a live process
    assert all(summary["kills_by_target"][t] >= 1 for t in TARGETS), summary["kills_by_target"]
    assert summary["missed_kills"] <= iterations // 4, summary["failed_iterations"]
    assert summary["acked_durable"] > 0


def test_value_for_is_a_function_of_the_key():
    assert value_for(b"u-000001") == value_for(b"u-000001")
    assert value_for(b"u-000001") != value_for(b"u-000002")
    assert all(1 <= len(value_for(b"k%d" % i)) <= 2048 for i in range(200))


def test_unknown_target_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="kill target"):
        run(LoopConfig(iterations=1, targets=("nobody",), workdir=str(tmp_path), quiet=True))


def test_verifier_reports_lost_wrong_and_foreign_keys(tmp_path):
    """The reopen check itself: a missing acked key is lost, a bad value or a
    key nobody wrote is wrong (so a clean loop means something)."""
    root = str(tmp_path / "db")
    with shaledb.open(root, **ENGINE_OPTIONS) as db:
        db.put(b"u-000000", value_for(b"u-000000"))
        db.put(b"u-000002", b"not the value")
        db.put(b"zz-000000", value_for(b"zz-000000"))
    out = tmp_path / "out.json"
    cfg = {"root": root, "opts": ENGINE_OPTIONS, "durable": ["u-000000", "u-000001"],
           "before_close": ["u-000003"], "prefixes": ["u-", "w0-"]}
    assert verify_reopen(cfg, str(out)) == 0
    res = json.loads(out.read_text())
    assert (res["open"], res["close"]) == ("ok", "ok")
    assert res["lost"] == ["u-000001"]
    assert res["lost_after_close"] == ["u-000003"]
    assert sorted(res["wrong"]) == ["u-000002", "zz-000000"]
    assert res["found"] == 3


@pytest.mark.timeout(240)
def test_crash_loop_local(tmp_path):
    n = 8  # 2 per kill target
    s = run(LoopConfig(iterations=n, store="local", seed=11, workdir=str(tmp_path), ops=80, quiet=True))
    _assert_clean(s)
    _assert_covered(s, n)


@pytest.mark.s3
@pytest.mark.timeout(240)
def test_crash_loop_moto(tmp_path, moto_server):
    n = 4  # 1 per kill target
    s = run(LoopConfig(iterations=n, store="moto", seed=12, endpoint=moto_server.endpoint_url,
                       workdir=str(tmp_path), ops=60, quiet=True))
    _assert_clean(s)
    _assert_covered(s, n)


@pytest.mark.slow
@pytest.mark.skipif(not _LONG, reason="long crash loop: set SHALEDB_CRASHLOOP_LONG=<iterations>")
@pytest.mark.timeout(0)
@pytest.mark.parametrize("store", ["local", pytest.param("moto", marks=pytest.mark.s3)])
def test_crash_loop_long(tmp_path, store, request):
    n = int(_LONG)
    endpoint = request.getfixturevalue("moto_server").endpoint_url if store == "moto" else None
    s = run(LoopConfig(iterations=n, store=store, seed=int(os.environ.get("SHALEDB_CRASHLOOP_SEED", "0")),
                       endpoint=endpoint, workdir=str(tmp_path), quiet=True))
    _assert_clean(s)
    _assert_covered(s, n)
