"""shaledb.kernels: lazy, sorted re-exports and warmup()."""

from __future__ import annotations

import subprocess
import sys

import shaledb.kernels as K


def test_all_is_sorted_and_resolves():
    assert K.__all__ == sorted(K.__all__)
    for name in K.__all__:
        assert callable(getattr(K, name)), name
    assert {"xxh64", "bloom_build", "bloom_may_contain", "sort_records", "concat_runs", "dedupe_sorted",
            "merge_runs", "warmup"} <= set(K.__all__)


def test_import_is_cheap():
    code = "import sys, shaledb.kernels; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_warmup_runs_and_reports_modules():
    timings = K.warmup()
    assert "hashing+bloom+sort+dedupe+merge" in timings
    assert all(t >= 0 for t in timings.values())
