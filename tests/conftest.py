"""Shared fixtures.

* ``moto_server``: one moto S3 server per test session, in a child process on
  a loopback port; every process of a test reaches it over HTTP.
* ``s3_bucket``: a fresh bucket per test on that server, with credentials set
  in the environment so child processes inherit them.
* Shared-memory hygiene: after every test, segments named ``shaledb-*`` that
  the test left behind are unlinked and the test fails.
"""

from __future__ import annotations

import os
import uuid

import pytest

from shaledb.storage.testing import S3_TEST_CREDENTIALS, MotoServer

_SHM_DIR = "/dev/shm"


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
