"""open_store, bad input, backend-specific behaviour (local files, S3 edges)."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time

import pytest

from shaledb.errors import Corruption, InvalidArgument, ObjectNotFound, PreconditionFailed, StorageError, Unavailable
from shaledb.storage import LocalStore, MemoryStore, S3Store, open_store
from shaledb.storage.local import MAGIC
from shaledb.storage.memory import drop_memory_store
from shaledb.storage.testing import free_port

# ---------------------------------------------------------------------------
# open_store


def test_open_local_forms(tmp_path):
    a = open_store(str(tmp_path / "db"))
    b = open_store(f"file://{tmp_path}/db", fsync=False)
    assert isinstance(a, LocalStore) and isinstance(b, LocalStore)
    assert a.root == b.root and a.fsync and not b.fsync
    a.put("k", b"v")
    assert b.get("k") == b"v"
    assert b.spec() == (f"file://{tmp_path}/db", {"fsync": False})


def test_open_memory_same_name_same_store():
    try:
        a = open_store("memory://t-one")
        assert open_store("memory://t-one") is a
        assert open_store("memory://t-two") is not a
        assert a.spec() == ("memory://t-one", {})
        with pytest.raises(TypeError, match="one process"):
            pickle.dumps(a)
    finally:
        drop_memory_store("t-one")
        drop_memory_store("t-two")
    with pytest.raises(InvalidArgument):
        MemoryStore().spec()


@pytest.mark.parametrize(
    "url",
    ["", "relative/path", "./x", "file://relative", "ftp://host/x", "gs://b/p", "memory://", "memory://a/b", "s3://", None, 5],
)
def test_open_bad_urls(url):
    with pytest.raises(InvalidArgument):
        open_store(url)


def test_open_bad_options(tmp_path):
    with pytest.raises(InvalidArgument):
        open_store(str(tmp_path), compress=True)
    with pytest.raises(InvalidArgument):
        open_store("memory://x", fsync=False)
    with pytest.raises(InvalidArgument, match="credentials"):
        open_store("s3://b/p", aws_secret_access_key="nope")


def test_import_does_not_load_boto3():
    code = "import sys, shaledb.storage; assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_local_store_pickles(tmp_path):
    st = LocalStore(str(tmp_path), fsync=False)
    st.put("k", b"v")
    copy = pickle.loads(pickle.dumps(st))
    assert copy.root == st.root and copy.fsync is False and copy.get("k") == b"v"


# ---------------------------------------------------------------------------
# LocalStore specifics


def test_local_layout_and_file_format(tmp_path):
    st = LocalStore(str(tmp_path), fsync=False)
    r = st.put("wal/00000000000000000001.sst", b"payload", {"a": "b"})
    path = tmp_path / "wal" / "00000000000000000001.sst"
    raw = path.read_bytes()
    assert raw.startswith(MAGIC) and raw.endswith(b"payload")
    assert r.etag.encode() in raw


def test_local_file_dir_conflicts(tmp_path):
    st = LocalStore(str(tmp_path), fsync=False)
    st.put("a/b", b"1")
    for call in (lambda: st.put("a", b"x"), lambda: st.put_if_absent("a", b"x"), lambda: st.put("a/b/c", b"x")):
        with pytest.raises(InvalidArgument, match="a"):
            call()
    with pytest.raises(ObjectNotFound):
        st.get("a")
    with pytest.raises(ObjectNotFound):
        st.get("a/b/c")
    st.delete("a")  # a directory, not an object: nothing to delete
    assert [m.key for m in st.list()] == ["a/b"]


def test_local_temp_and_foreign_names_invisible(tmp_path):
    st = LocalStore(str(tmp_path), fsync=False)
    st.put("x/1", b"1")
    stale = tmp_path / "x" / ".shaledb-tmp-deadbeef"
    stale.write_bytes(b"half written")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    (tmp_path / "x" / ".shaledb-tmp-fresh").write_bytes(b"in progress")
    assert [m.key for m in st.list()] == ["x/1"]
    assert st.remove_temp_files(older_than=3600) == 1
    assert not stale.exists() and (tmp_path / "x" / ".shaledb-tmp-fresh").exists()


def test_local_corrupt_object_names_file(tmp_path):
    st = LocalStore(str(tmp_path), fsync=False)
    (tmp_path / "junk").write_bytes(b"not an object")
    with pytest.raises(Corruption, match="junk"):
        st.get("junk")


def test_local_no_partial_object_visible(tmp_path):
    """Readers racing a writer see one whole version or the other, never a mix."""
    st = LocalStore(str(tmp_path), fsync=False)
    size = 1 << 20
    versions = [bytes([c]) * size for c in b"ab"]
    st.put("obj", versions[0])
    stop = threading.Event()
    bad: list = []

    def reader():
        while not stop.is_set():
            data = st.get("obj")
            if data not in versions:
                bad.append(len(data))
            part = st.get_range("obj", size - 10, None)
            if part not in (b"a" * 10, b"b" * 10):
                bad.append(part)

    th = threading.Thread(target=reader)
    th.start()
    try:
        for i in range(30):
            st.put("obj", versions[i % 2])
    finally:
        stop.set()
        th.join(30)
    assert not bad


def test_local_relative_root_rejected():
    with pytest.raises(InvalidArgument):
        LocalStore("relative")


def test_local_root_is_file(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises((InvalidArgument, StorageError)):
        LocalStore(str(tmp_path / "f"))


# ---------------------------------------------------------------------------
# S3 specifics


@pytest.mark.s3
def test_s3_missing_bucket_fails_fast(moto_server):
    t0 = time.monotonic()
    with pytest.raises(StorageError) as info:
        open_store("s3://no-such-bucket-here/db", endpoint_url=moto_server.endpoint_url)
    assert time.monotonic() - t0 < 10
    assert "no-such-bucket-here" in str(info.value) and moto_server.endpoint_url in str(info.value)
    assert not isinstance(info.value, Unavailable)


@pytest.mark.s3
def test_s3_unreachable_endpoint_fails_fast(moto_server):
    endpoint = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as info:
        open_store("s3://bucket/db", endpoint_url=endpoint)
    assert time.monotonic() - t0 < 10
    assert endpoint in str(info.value) and "bucket" in str(info.value)


@pytest.mark.s3
def test_s3_silent_endpoint_times_out(moto_server):
    """A server that accepts connections but never answers: Unavailable after read_timeout."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        endpoint = f"http://127.0.0.1:{srv.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match=endpoint):
            open_store("s3://bucket/db", endpoint_url=endpoint, read_timeout=0.5)
        st = open_store("s3://bucket/db", endpoint_url=endpoint, read_timeout=0.5, check_bucket=False)
        with pytest.raises(Unavailable):
            st.get("k")
        st.close()
        assert time.monotonic() - t0 < 10


@pytest.mark.s3
def test_s3_endpoint_from_environment(moto_server, storage_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    st = open_store(f"s3://{storage_bucket}/env-test")
    try:
        assert st.endpoint == moto_server.endpoint_url
        assert st.spec() == (f"s3://{storage_bucket}/env-test", {"endpoint_url": moto_server.endpoint_url})
    finally:
        st.close()


@pytest.mark.s3
def test_s3_prefix_isolation_and_pickle(moto_server, storage_bucket):
    client = moto_server.client()
    client.put_object(Bucket=storage_bucket, Key="iso/outside", Body=b"x")
    client.put_object(Bucket=storage_bucket, Key="iso/dbx/y", Body=b"x")
    st = S3Store(storage_bucket, "iso/db/", endpoint_url=moto_server.endpoint_url)
    st.put("k/1", b"v", {"n": "1"})
    raw = client.head_object(Bucket=storage_bucket, Key="iso/db/k/1")
    assert raw["Metadata"]["n"] == "1" and "shaledb-put-id" in raw["Metadata"]
    assert [m.key for m in st.list()] == ["k/1"]
    copy = pickle.loads(pickle.dumps(st))
    assert copy.get("k/1") == b"v"
    copy.close()
    st.close()
    with pytest.raises(StorageError, match="closed"):
        st.get("k/1")


@pytest.mark.s3
def test_s3_list_paginates(moto_server, storage_bucket):
    st = S3Store(storage_bucket, "pages", endpoint_url=moto_server.endpoint_url)
    keys = [f"k/{i:03d}" for i in range(23)]
    for k in keys:
        st.put(k, b"")
    real = st._client.list_objects_v2
    pages = []

    def small_pages(**kwargs):
        page = real(MaxKeys=5, **kwargs)
        pages.append(len(page.get("Contents", ())))
        return page

    st._client.list_objects_v2 = small_pages  # force several continuation tokens
    assert [m.key for m in st.list("k/")] == keys
    assert pages == [5, 5, 5, 5, 3]
    st.close()


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.s3
@pytest.mark.parametrize(
    "op,code,status,expected",
    [
        ("get", "NoSuchKey", 404, ObjectNotFound),
        ("head", "404", 404, ObjectNotFound),
        ("put_if_match", "NoSuchKey", 404, PreconditionFailed),
        ("put_if_absent", "PreconditionFailed", 412, PreconditionFailed),
        ("put_if_match", "PreconditionFailed", 412, PreconditionFailed),
        ("put_if_absent", "ConditionalRequestConflict", 409, Unavailable),
        ("put", "SlowDown", 503, Unavailable),
        ("get", "InternalError", 500, Unavailable),
        ("get", "Throttling", 400, Unavailable),
        ("put", "TooManyRequests", 429, Unavailable),
        ("get", "AccessDenied", 403, StorageError),
        ("get", "NoSuchBucket", 404, StorageError),
        ("put", "EntityTooLarge", 400, StorageError),
    ],
)
def test_s3_error_mapping(moto_server, storage_bucket, op, code, status, expected):
    st = S3Store(storage_bucket, "map", endpoint_url=moto_server.endpoint_url, check_bucket=False)
    try:
        err = st._translate(op, "k", _client_error(code, status))
    finally:
        st.close()
    assert type(err) is expected
    if expected is StorageError:
        assert not isinstance(err, (ObjectNotFound, PreconditionFailed))


def test_public_names_pinned():
    import shaledb.storage as storage

    assert storage.__all__ == sorted(storage.__all__)
    assert set(storage.__all__) == {
        "FaultyStore",
        "InstrumentedStore",
        "LocalStore",
        "MemoryStore",
        "ObjectMeta",
        "ObjectNotFound",
        "ObjectStore",
        "PreconditionFailed",
        "PutResult",
        "RetryingStore",
        "S3Store",
        "StorageError",
        "Unavailable",
        "open_store",
        "put_if_absent_idempotent",
        "put_if_match_idempotent",
    }
    for name in storage.__all__:
        assert getattr(storage, name) is not None
