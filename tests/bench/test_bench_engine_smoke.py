"""Smoke test of ``python -m bench.engine``: tiny sizes, in a subprocess.

Checks that the run exits 0 and writes every figure it printed to the JSON
report; timings are never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    env["TMPDIR"] = str(tmp_path)
    # subprocess.run kills and reaps the child on timeout
    return subprocess.run(
        [sys.executable, "-m", "bench.engine", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_local_and_putget_write_their_figures(tmp_path):
    out = tmp_path / "engine.json"
    proc = _bench(tmp_path, "local", "putget", "--records", "2000", "--batch", "500", "--putget-records", "300", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    figs = report["figures"]
    assert set(figs) == {"local_put_many_writers1", "local_put_many_writers2", "local_putget"}
    for name, values in figs.items():
        assert values and all(v > 0 for v in values.values()), (name, values)
    assert report["records"] == 2000 and "python" in json.dumps(report["machine"]).lower()
    assert "put_many writers=2" in proc.stdout and "durable put" in proc.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("shaledb-bench-engine-")], "temp dir left behind"


def test_unknown_mode_is_a_usage_error(tmp_path):
    proc = _bench(tmp_path, "nosuchmode", timeout=60)
    assert proc.returncode == 2 and "unknown mode" in proc.stderr
