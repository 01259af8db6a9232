"""Store fixtures for the storage suite.

``store`` runs a test once per backend: memory, local (fsync on), local
(fsync off), S3 on the session's moto server (over HTTP), and a FaultyStore
with no faults.  ``make_store(kind)`` builds more stores of one kind that
share the same underlying objects when asked (``same_as=``).
"""

from __future__ import annotations

import uuid

import pytest

from shaledb.storage import FaultyStore, LocalStore, MemoryStore, S3Store

BACKENDS = [
    "memory",
    "local",
    "local-nofsync",
    pytest.param("s3", marks=pytest.mark.s3),
    "faulty",
]


def build_store(kind: str, request, tmp_path):
    if kind == "memory":
        return MemoryStore()
    if kind == "local":
        return LocalStore(str(tmp_path / "store"))
    if kind == "local-nofsync":
        return LocalStore(str(tmp_path / "store"), fsync=False)
    if kind == "s3":
        server = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("storage_bucket")
        return S3Store(bucket, f"db/{uuid.uuid4().hex}", endpoint_url=server.endpoint_url)
    if kind == "faulty":
        return FaultyStore(MemoryStore())
    raise AssertionError(kind)


@pytest.fixture(scope="session")
def storage_bucket(moto_server):
    """One bucket for the storage suite; every S3 store gets its own fresh prefix in it."""
    name = "storage-" + uuid.uuid4().hex[:16]
    moto_server.create_bucket(name)
    return name


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    st = build_store(request.param, request, tmp_path)
    try:
        yield st
    finally:
        st.close()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def shared_store(request, tmp_path):
    """A store another process can reopen through ``spec()`` (local and S3)."""
    st = build_store(request.param, request, tmp_path)
    try:
        yield st
    finally:
        st.close()
