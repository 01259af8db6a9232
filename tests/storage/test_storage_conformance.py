"""The one store contract, checked on every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from shaledb.errors import InvalidArgument, ObjectNotFound, PreconditionFailed
from shaledb.storage import ObjectMeta, PutResult, open_store, put_if_absent_idempotent, put_if_match_idempotent
from shaledb.storage.base import PUT_ID_KEY

# ---------------------------------------------------------------------------
# basic reads and writes


def test_put_get_roundtrip(store):
    r = store.put("a/b/c.sst", b"hello")
    assert isinstance(r, PutResult) and r.etag and r.put_id
    assert store.get("a/b/c.sst") == b"hello"


@pytest.mark.parametrize(
    "data",
    [b"", b"x", bytearray(b"bytearray"), memoryview(b"view"), np.arange(10, dtype=np.uint8), np.arange(4, dtype=np.int64)],
    ids=["empty", "one", "bytearray", "memoryview", "np-u8", "np-i64"],
)
def test_bytes_like_data(store, data):
    store.put("k", data)
    assert store.get("k") == bytes(memoryview(data).cast("B"))
    assert store.head("k").size == memoryview(data).nbytes


def test_str_data_rejected(store):
    with pytest.raises(InvalidArgument):
        store.put("k", "text")
    with pytest.raises(ObjectNotFound):
        store.get("k")


def test_get_missing(store):
    with pytest.raises(ObjectNotFound) as info:
        store.get("no/such")
    assert isinstance(info.value, KeyError)
    with pytest.raises(ObjectNotFound):
        store.head("no/such")
    with pytest.raises(ObjectNotFound):
        store.get_range("no/such", 0, 1)
    with pytest.raises(ObjectNotFound):
        store.get_range("no/such", 0, 0)


def test_head_and_metadata(store):
    before = time.time()
    r = store.put("m/obj", b"12345", {"kind": "wal", "n-1": "42"}, put_id="pid-1")
    assert r.put_id == "pid-1"
    meta = store.head("m/obj")
    assert isinstance(meta, ObjectMeta)
    assert meta.key == "m/obj" and meta.size == 5 and meta.etag == r.etag
    assert meta.metadata == {"kind": "wal", "n-1": "42", PUT_ID_KEY: "pid-1"}
    assert meta.put_id == "pid-1"
    assert before - 5 <= meta.last_modified <= time.time() + 5
    with pytest.raises(Exception):
        meta.size = 1  # frozen


def test_fresh_put_id_per_write(store):
    a = store.put("k", b"1")
    b = store.put("k", b"1")
    assert a.put_id != b.put_id
    assert store.head("k").put_id == b.put_id


@pytest.mark.parametrize("metadata", [{"Upper": "x"}, {"a": "é"}, {"": "x"}, {"a_b": "x"}, {"a": 1}, ["a"]])
def test_bad_metadata(store, metadata):
    with pytest.raises(InvalidArgument):
        store.put("k", b"x", metadata)


def test_put_overwrites_and_changes_etag(store):
    r1 = store.put("k", b"one")
    r2 = store.put("k", b"two")
    assert store.get("k") == b"two"
    assert r1.etag != r2.etag
    assert store.head("k").etag == r2.etag


def test_delete_idempotent(store):
    store.put("d/x", b"1")
    store.delete("d/x")
    with pytest.raises(ObjectNotFound):
        store.get("d/x")
    store.delete("d/x")
    store.delete("never/was")
    assert list(store.list("d/")) == []


# ---------------------------------------------------------------------------
# conditional writes


def test_put_if_absent(store):
    r = store.put_if_absent("wal/1", b"first", put_id="p1")
    assert r.put_id == "p1"
    with pytest.raises(PreconditionFailed):
        store.put_if_absent("wal/1", b"second")
    assert store.get("wal/1") == b"first"
    assert store.head("wal/1").etag == r.etag


def test_put_if_absent_after_delete(store):
    store.put_if_absent("k", b"1")
    store.delete("k")
    store.put_if_absent("k", b"2")
    assert store.get("k") == b"2"


def test_zero_byte_fence(store):
    store.put_if_absent("wal/00000000000000000007.sst", b"")
    assert store.get("wal/00000000000000000007.sst") == b""
    assert store.head("wal/00000000000000000007.sst").size == 0
    with pytest.raises(PreconditionFailed):
        store.put_if_absent("wal/00000000000000000007.sst", b"data")


def test_put_if_match(store):
    r1 = store.put("man", b"v1")
    r2 = store.put_if_match("man", b"v2", r1.etag)
    assert store.get("man") == b"v2"
    assert r2.etag != r1.etag and store.head("man").etag == r2.etag
    r3 = store.put_if_match("man", b"v3", r2.etag)
    assert store.get("man") == b"v3" and store.head("man").etag == r3.etag


def test_put_if_match_stale_etag(store):
    r1 = store.put("man", b"v1")
    store.put("man", b"v2")
    with pytest.raises(PreconditionFailed):
        store.put_if_match("man", b"v3", r1.etag)
    assert store.get("man") == b"v2"


def test_put_if_match_missing_or_deleted(store):
    r1 = store.put("man", b"v1")
    store.delete("man")
    with pytest.raises(PreconditionFailed):
        store.put_if_match("man", b"v2", r1.etag)
    with pytest.raises(ObjectNotFound):
        store.get("man")
    with pytest.raises(PreconditionFailed):
        store.put_if_match("never", b"v2", '"0123456789abcdef0123456789abcdef"')


def test_put_if_absent_threads_one_winner(store):
    n = 6
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        barrier.wait(10)
        try:
            store.put_if_absent("race", f"writer-{i}".encode())
            results[i] = "won"
        except PreconditionFailed:
            results[i] = "lost"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count("won") == 1 and results.count("lost") == n - 1
    assert store.get("race") == f"writer-{results.index('won')}".encode()


def test_put_if_match_cas_counter_threads(store):
    """Increments through a CAS loop; none may be lost."""
    store.put("counter", b"0")
    n_threads, per_thread = 4, 5

    def run():
        for _ in range(per_thread):
            while True:
                meta = store.head("counter")
                value = int(store.get("counter"))
                try:
                    store.put_if_match("counter", str(value + 1).encode(), meta.etag)
                    break
                except PreconditionFailed:
                    continue

    threads = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert int(store.get("counter")) == n_threads * per_thread


def test_idempotent_helpers(store):
    r = put_if_absent_idempotent(store, "m/1", b"ours", put_id="mine")
    # a retry of the same logical write finds its own object: success
    again = put_if_absent_idempotent(store, "m/1", b"ours", put_id="mine")
    assert again.etag == r.etag and again.put_id == "mine"
    with pytest.raises(PreconditionFailed):
        put_if_absent_idempotent(store, "m/1", b"theirs", put_id="other")
    r2 = put_if_match_idempotent(store, "m/1", b"ours-2", r.etag, put_id="mine-2")
    again2 = put_if_match_idempotent(store, "m/1", b"ours-2", r.etag, put_id="mine-2")
    assert again2.etag == r2.etag
    with pytest.raises(PreconditionFailed):
        put_if_match_idempotent(store, "m/1", b"x", r.etag, put_id="other")


@pytest.mark.parametrize("etag", ["", None, 5])
def test_put_if_match_bad_etag(store, etag):
    store.put("k", b"1")
    with pytest.raises(InvalidArgument):
        store.put_if_match("k", b"2", etag)


# ---------------------------------------------------------------------------
# ranged reads

RANGE_CASES = [
    (0, 0),
    (0, 1),
    (0, 10),
    (3, 7),
    (9, 10),
    (0, 15),
    (9, 100),
    (10, 10),
    (10, 11),
    (10, None),
    (15, 20),
    (15, None),
    (0, None),
    (4, None),
]


def test_get_range_edges(store):
    data = b"0123456789"
    store.put("r", data)
    for start, end in RANGE_CASES:
        assert store.get_range("r", start, end) == data[start:end], (start, end)


def test_get_range_empty_object(store):
    store.put("e", b"")
    for start, end in [(0, 0), (0, 1), (0, None), (5, 10)]:
        assert store.get_range("e", start, end) == b""


@pytest.mark.parametrize("start,end", [(-1, 5), (5, 4), (1.0, 2), (0, 2.5), (True, 3), ("0", 1)])
def test_get_range_invalid(store, start, end):
    store.put("r", b"0123456789")
    with pytest.raises(InvalidArgument):
        store.get_range("r", start, end)


# ---------------------------------------------------------------------------
# listing

LIST_KEYS = ["a-b", "a.x", "a/b", "a/c/d", "a/c/e", "ab", "b", "z/0", "z/00", "\u00e9/x", "~"]


@pytest.fixture
def listed(store):
    for i, k in enumerate(reversed(LIST_KEYS)):
        store.put(k, bytes(i))
    return store


LIST_PREFIXES = ["", "a", "a/", "a/c", "a/c/", "a/c/d", "a/c/d/", "a/b", "a/b/", "z/0", "nope", "\u00e9", "~", "a/x/y/"]


def test_list_prefix_and_order(listed):
    heads = {k: listed.head(k) for k in LIST_KEYS}
    for prefix in LIST_PREFIXES:
        got = list(listed.list(prefix))
        assert [m.key for m in got] == sorted(k for k in LIST_KEYS if k.startswith(prefix)), prefix
        for m in got:
            assert isinstance(m, ObjectMeta) and m.metadata is None
            assert (m.size, m.etag) == (heads[m.key].size, heads[m.key].etag)


def test_list_order_is_byte_order(listed):
    keys = [m.key for m in listed.list()]
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))


def test_list_default_prefix_and_empty_store(store):
    assert list(store.list()) == []
    store.put("x", b"1")
    assert [m.key for m in store.list()] == ["x"]


@pytest.mark.parametrize("prefix", [None, 3, b"a", "/a"])
def test_list_bad_prefix(store, prefix):
    with pytest.raises(InvalidArgument):
        list(store.list(prefix))


def test_list_after_delete(listed):
    listed.delete("a/c/d")
    assert [m.key for m in listed.list("a/c")] == ["a/c/e"]


# ---------------------------------------------------------------------------
# keys

BAD_KEYS = [
    "",
    "/abs",
    "a//b",
    "a/",
    "./a",
    "a/./b",
    "..",
    "a/../b",
    "a/..",
    "tab\there",
    "nul\x00",
    ".shaledb-tmp-x",
    "a/.shaledb-lock",
    "x" * 256,
    "a/" * 600,
    "\udcff",
    None,
    b"bytes",
    7,
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=range(len(BAD_KEYS)))
def test_invalid_keys(store, key):
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.put_if_absent(key, b"x"),
        lambda: store.put_if_match(key, b"x", "etag"),
        lambda: store.get(key),
        lambda: store.get_range(key, 0, 1),
        lambda: store.head(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidArgument):
            call()
    assert list(store.list()) == []


@pytest.mark.parametrize("key", ["a", "a.b/c..d/...", "with space", "\u00e9\u00e8", "x" * 255, "..a", "a/.hidden"])
def test_unusual_valid_keys(store, key):
    store.put(key, b"v")
    assert store.get(key) == b"v"
    assert [m.key for m in store.list()] == [key]


# ---------------------------------------------------------------------------
# reopening


def test_spec_reopens_same_store(store):
    try:
        url, options = store.spec()
    except InvalidArgument:
        pytest.skip("anonymous MemoryStore cannot be reopened")
    store.put("s/1", b"one")
    other = open_store(url, **options)
    try:
        assert other.get("s/1") == b"one"
    finally:
        other.close()
