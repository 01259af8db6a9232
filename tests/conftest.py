"""Shared fixtures.

* ``moto_server``: one moto S3 server per test session, in a child process on
  a loopback port; every process of a test reaches it over HTTP.
* ``s3_bucket``: a fresh bucket per test on that server, with credentials set
  in the environment so child processes inherit them.
* Kernels compiled once: the controlling pytest process (not the xdist
  workers) runs ``shaledb.kernels.warmup`` in a child process before any
  test, filling numba's on-disk cache; from a fresh clone that is one
  compile (about 70 s) instead of every worker compiling the same kernels
  at once inside its first test, which under load pushed that test past
  its timeout.  ``SHALEDB_TEST_NO_WARMUP=1`` skips it.
* Shared-memory hygiene: the session gets a private segment directory
  (``SHALEDB_SHM_DIR``, under /dev/shm when it exists, inherited by every child
  process); after every test, segments named ``shaledb-*`` that the test left
  there are unlinked and the test fails.  Concurrent test sessions on one
  machine never see each other's segments.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest

from shaledb.storage.testing import S3_TEST_CREDENTIALS, MotoServer

def _private_shm_dir() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    path = os.path.join(base, f"shaledbtest-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(path, mode=0o700)
    return path


# Set before any test imports shaledb.memtable.shm (which reads it once per process).
# A nested pytest run (the NUMBA_DISABLE_JIT pass) inherits its parent's directory.
# Under pytest-xdist each worker makes its own (it inherits the controller's).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_OWN_SHM_DIR = "SHALEDB_SHM_DIR" not in os.environ or os.environ.get("SHALEDB_SHM_DIR_OWNER", "") != _WORKER
if _OWN_SHM_DIR:
    os.environ["SHALEDB_SHM_DIR"] = _private_shm_dir()
    os.environ["SHALEDB_SHM_DIR_OWNER"] = _WORKER
_SHM_DIR = os.environ["SHALEDB_SHM_DIR"]


def pytest_configure(config):
    if _WORKER or os.environ.get("SHALEDB_TEST_NO_WARMUP"):
        return
    import subprocess
    import sys
    import time

    t0 = time.monotonic()
    # two compilers: the point-read kernels (the longest module, about 60 %
    # of the compile) beside all the others
    procs = [subprocess.Popen([sys.executable, "-c", code]) for code in (
        "from shaledb.kernels import point; point._warmup()",
        "from shaledb.kernels.warmup import warmup; warmup(skip=('point',))",
    )]
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=1200))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    took = time.monotonic() - t0
    if took > 5:  # a compile (fresh clone or changed kernels), not a cache load: say so
        print(f"shaledb: kernels compiled before the tests in {took:.0f} s (exits {codes})", file=sys.stderr)


def pytest_unconfigure(config):
    if _OWN_SHM_DIR:
        shutil.rmtree(_SHM_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_server():
    for k, v in S3_TEST_CREDENTIALS.items():
        os.environ[k] = v
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server):
    """Name of a new, empty bucket on the session's moto server."""
    name = "t-" + uuid.uuid4().hex[:20]
    moto_server.create_bucket(name)
    return name


def _shaledb_segments() -> set[str]:
    try:
        return {n for n in os.listdir(_SHM_DIR) if n.startswith("shaledb-")}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def _no_leaked_shared_memory():
    before = _shaledb_segments()
    yield
    leaked = _shaledb_segments() - before
    for name in leaked:
        try:
            os.unlink(os.path.join(_SHM_DIR, name))
        except FileNotFoundError:
            pass
    assert not leaked, f"test left shared-memory segments behind: {sorted(leaked)}"
