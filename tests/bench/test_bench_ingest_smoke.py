"""Smoke test of ``python -m bench.ingest``: tiny sizes, in a subprocess.

Checks only that the run exits 0, verifies its data and writes every phase
to the JSON report.  Timings are never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shaledb

REPO = Path(__file__).resolve().parents[2]
PHASES = ("prefill", "flush", "mixed", "read", "scan", "close")

pytestmark = pytest.mark.skipif(
    not callable(getattr(shaledb, "open", None)),
    reason="shaledb.open does not exist yet: the engine (issue 5) has not landed",
)


def _run(tmp_path: Path, *extra: str, timeout: float = 240) -> dict:
    out = tmp_path / "report.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--records", "3000", "--batch", "500", "--duration", "0.3",
         "--reads", "200", "--verify-samples", "100", "--quiet", "--store", str(tmp_path), "--json", str(out), *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(out.read_text())
    # The default store is removed at the end (no --keep).
    assert not list(tmp_path.glob("shaledb-bench-*")), "the run left its store directory behind"
    return report


def _check_engine(report: dict, engine: str) -> None:
    r = report["engines"][engine]
    assert r["ok"], r.get("error")
    assert set(PHASES) <= set(r["phases"]), sorted(r["phases"])
    assert {"cold", "warm"} <= set(r["phases"]["read"])
    assert r["verify"]["count"] == r["n"]
    assert r["verify"]["digest_ok"] and r["verify"]["in_order"]


def test_ingest_smoke_no_peers(tmp_path):
    report = _run(tmp_path, "--peers", "none", "--writers", "2")
    assert report["ok"]
    assert report["config"]["engines"] == ["shaledb"]
    _check_engine(report, "shaledb")
    assert report["engines"]["shaledb"]["phases"]["prefill"]["writers"] == 2
    assert "machine" in report and "ratios" in report


@pytest.mark.skipif(importlib.util.find_spec("rocksdict") is None, reason="rocksdict is not installed")
def test_ingest_smoke_with_rocksdict(tmp_path):
    report = _run(tmp_path, "--peers", "rocksdict", "--writers", "1")
    assert report["ok"]
    for engine in ("shaledb", "rocksdict"):
        _check_engine(report, engine)
    assert "rocksdict" in report["ratios"]["prefill records/s"]
