"""Run the kernel tests once more with NUMBA_DISABLE_JIT=1: kernel bodies as Python.

Tests marked ``nojit`` are collected in a child pytest; this test is not marked,
so it is not part of that inner run.  Under pure Python, numpy warns on the
uint64 wrap-around that hashing relies on; those warnings are ignored there.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def test_kernel_tests_pass_without_jit():
    if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        pytest.skip("already running without jit")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONDONTWRITEBYTECODE="1")
    for name in [n for n in env if n.startswith("PYTEST_XDIST_")]:
        del env[name]  # under pytest-xdist: the inner run is a plain pytest run
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-m", "nojit", str(HERE),
        "-p", "no:cacheprovider",
        "-W", "ignore:overflow encountered:RuntimeWarning",
    ]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills and reaps the child
        pytest.fail(f"no-jit kernel run exceeded {exc.timeout} s")
    tail = (proc.stdout[-6000:] + "\n" + proc.stderr[-3000:]).strip()
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout, tail
