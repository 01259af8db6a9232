"""Fixtures of the manifest suite.

* ``--rewrite-manifest-golden``: regenerate tests/manifest/golden/* on
  purpose (``--rewrite-golden`` works too when registered elsewhere).
* ``store_url``: a fresh database root on each backend (memory, local, S3
  over the moto server), as ``(kind, url, options)``; ``open_url`` opens it.
"""

from __future__ import annotations

import uuid

import pytest

from shaledb.storage import open_store


def pytest_addoption(parser):
    parser.addoption(
        "--rewrite-manifest-golden",
        action="store_true",
        default=False,
        help="rewrite the manifest golden byte fixtures in tests/manifest/golden/",
    )


@pytest.fixture
def rewrite_golden(request) -> bool:
    cfg = request.config
    own = cfg.getoption("--rewrite-manifest-golden", default=False)
    shared = cfg.getoption("--rewrite-golden", default=False)
    return bool(own or shared)


def _url(kind: str, tmp_path, request) -> tuple[str, dict]:
    if kind == "memory":
        return f"memory://manifest-{uuid.uuid4().hex}", {}
    if kind == "local":
        return f"file://{tmp_path}/db", {"fsync": False}
    bucket = request.getfixturevalue("s3_bucket")
    server = request.getfixturevalue("moto_server")
    return f"s3://{bucket}/db", {"endpoint_url": server.endpoint_url}


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def store_url(request, tmp_path):
    url, opts = _url(request.param, tmp_path, request)
    return request.param, url, opts


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def shared_store_url(request, tmp_path):
    """A root that other processes can open too (no memory store)."""
    url, opts = _url(request.param, tmp_path, request)
    return request.param, url, opts


@pytest.fixture
def store(store_url):
    kind, url, opts = store_url
    s = open_store(url, **opts)
    yield s
    s.close()
    if kind == "memory":
        from shaledb.storage.memory import drop_memory_store

        drop_memory_store(url.split("://", 1)[1])
