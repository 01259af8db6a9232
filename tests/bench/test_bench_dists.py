"""The benchmark's key and value distributions (bench.common.make_keys,
make_values, generate_mixed) and one bench.ingest run with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

from bench.common import KEY_DISTS, VALUE_DISTS, generate_mixed, make_keys, make_values

REPO = Path(__file__).resolve().parents[2]


def _items(data, offs) -> list[bytes]:
    return [data[offs[i] : offs[i + 1]].tobytes() for i in range(len(offs) - 1)]


@pytest.mark.parametrize("dist", KEY_DISTS)
def test_keys_unique_deterministic_and_shaped(dist):
    data, offs = make_keys(20_000, dist, seed=3)
    keys = _items(data, offs)
    assert len(set(keys)) == len(keys) == 20_000
    again = make_keys(20_000, dist, seed=3)
    assert np.array_equal(again[0], data) and np.array_equal(again[1], offs)
    lens = np.diff(offs)
    if dist == "prefixed":
        assert lens.min() == 8 and lens.max() == 64
        long = [k for k in keys if len(k) >= 40]
        assert all(k.startswith(b"tenant/") for k in long)
        assert len({k[: k.index(b"/", 12) + 1] for k in long}) <= 64  # 64 prefixes at most
    elif dist == "uuid-text":
        assert set(lens) == {36} and all(k[8:9] == b"-" and k[14:15] == b"4" for k in keys[:100])
    else:
        assert set(lens) == {16}
    if dist == "timestamp":  # nearly in order: out of order only within windows of 64
        order = np.argsort(np.array(keys, dtype=object), kind="stable")
        assert np.abs(order - np.arange(len(keys))).max() < 64


@pytest.mark.parametrize("dist", VALUE_DISTS)
def test_values_sized_deterministic_and_as_compressible_as_said(dist):
    ratios = []
    for size in (100, 4096):
        data, offs = make_values(2_000, dist, size, seed=4)
        assert len(data) == 2_000 * size and np.array_equal(np.diff(offs), np.full(2_000, size))
        assert np.array_equal(make_values(2_000, dist, size, seed=4)[0], data)
        c = zstandard.ZstdCompressor(level=3)
        blocks = [data[i : i + 4096].tobytes() for i in range(0, len(data), 4096)]
        ratios.append(sum(map(len, blocks)) / sum(len(c.compress(b)) for b in blocks))
    if dist == "random":
        assert max(ratios) < 1.01
    else:
        assert min(ratios) > 2.0
    if dist == "json":
        data, offs = make_values(50, dist, 300, seed=4)
        assert all(v.startswith(b'{"id":') for v in _items(data, offs))


def test_mixed_dataset_and_big_values():
    ds = generate_mixed(4, "uuid-text", "json", value_size=1 << 20, seed=1)
    assert ds.n == 4 and ds.payload_bytes == 4 * (36 + (1 << 20))
    assert ds.value(0) != ds.value(1)
    with pytest.raises(ValueError):
        make_keys(10, "nope")
    with pytest.raises(ValueError):
        make_values(10, "nope", 10)


@pytest.mark.slow  # about 30 s; the generators above are the short version
def test_ingest_runs_with_distributions(tmp_path):
    out = tmp_path / "report.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--records", "2000", "--batch", "500", "--duration", "0.2",
         "--reads", "100", "--verify-samples", "50", "--quiet", "--store", str(tmp_path), "--json", str(out),
         "--probe-mib", "0", "--peers", "none", "--writers", "1", "--key-dist", "prefixed",
         "--value-dist", "json", "--value-size", "3000", "--compression", "zstd"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    r = report["engines"]["shaledb"]
    assert r["ok"] and r["verify"]["digest_ok"] and r["verify"]["count"] == 2000
    assert report["config"]["key_dist"] == "prefixed" and report["config"]["value_dist"] == "json"
    assert r["describe"]["compression"] == "zstd"
