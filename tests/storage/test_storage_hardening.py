"""Store hardening (issue 9): per-call deadlines in RetryingStore, listing past
damaged or foreign local files, and an S3 endpoint that never answers."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from shaledb.errors import Corruption, Unavailable
from shaledb.storage import LocalStore, MemoryStore, RetryingStore, open_store
from shaledb.storage.local import DAMAGED_ETAG
from shaledb.storage.wrappers import FailNth, FaultyStore, call_deadline, deadline_left


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self):
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# -- call_deadline ------------------------------------------------------------


def test_call_deadline_stops_retries_that_the_per_op_budget_allows():
    t = FakeTime()
    inner = MemoryStore()
    inner.put("k", b"v")
    faulty = FaultyStore(inner, FailNth(1, ops="get", times=1000))
    store = RetryingStore(faulty, sleep=t.sleep, clock=t.clock, seed=1, max_attempts=1000, deadline=1000.0)
    with call_deadline(1.0, clock=t.clock):
        with pytest.raises(Unavailable, match="deadline of 1s"):
            store.get("k")
    assert t.now <= 1.0  # never slept past the call's deadline


def test_call_deadline_is_shared_by_the_operations_of_one_call():
    t = FakeTime()
    inner = MemoryStore()
    for k in "abc":
        inner.put(k, b"v")
    # every object read fails twice, then succeeds: each op alone is fine
    faulty = FaultyStore(inner)
    store = RetryingStore(faulty, sleep=t.sleep, clock=t.clock, seed=1, base_delay=0.4, max_delay=0.4)
    with call_deadline(1.0, clock=t.clock):
        faulty.add(FailNth(1, ops="get", times=2))
        assert store.get("a") == b"v"  # two retries: about 0.4 s of the budget
        faulty.clear()
        faulty.add(FailNth(1, ops="get", times=2))
        with pytest.raises(Unavailable, match="deadline"):
            store.get("b")  # what is left of the same budget is not enough
    faulty.clear()
    faulty.add(FailNth(1, ops="get", times=2))
    assert store.get("c") == b"v"  # outside any call deadline: the per-op budget rules


def test_no_attempt_starts_after_the_deadline():
    t = FakeTime()
    inner = MemoryStore()
    inner.put("k", b"v")
    store = RetryingStore(inner, sleep=t.sleep, clock=t.clock)
    with call_deadline(1.0, clock=t.clock):
        t.now += 1.5  # a slow earlier operation of the same call
        with pytest.raises(Unavailable, match="deadline"):
            store.get("k")
        with pytest.raises(Unavailable, match="deadline"):
            list(store.list(""))


def test_nested_deadline_keeps_the_earlier_end_and_unwinds():
    t = FakeTime()
    assert deadline_left() is None
    with call_deadline(1.0, clock=t.clock):
        with call_deadline(5.0, clock=t.clock):
            assert deadline_left() == pytest.approx(1.0)
        with call_deadline(0.5, clock=t.clock):
            assert deadline_left() == pytest.approx(0.5)
        assert deadline_left() == pytest.approx(1.0)
    assert deadline_left() is None


def test_deadline_belongs_to_its_thread():
    seen = []
    with call_deadline(10.0):
        th = threading.Thread(target=lambda: seen.append(deadline_left()))
        th.start()
        th.join(10)
    assert seen == [None]


# -- local listing past damaged headers ----------------------------------------


def test_local_list_names_damaged_and_foreign_files(tmp_path):
    store = LocalStore(str(tmp_path))
    store.put("a/1", b"one")
    store.put("a/2", b"two")
    store.put("a/3", b"three")
    path = os.path.join(str(tmp_path), "a", "2")
    with open(path, "r+b") as f:
        f.write(b"X")  # damage the magic
    with open(os.path.join(str(tmp_path), "a", "0"), "wb") as f:
        f.write(b"not ours")
    metas = {m.key: m for m in store.list("a/")}
    assert sorted(metas) == ["a/0", "a/1", "a/2", "a/3"]
    assert metas["a/0"].etag == DAMAGED_ETAG and metas["a/0"].size == len(b"not ours")
    assert metas["a/2"].etag == DAMAGED_ETAG
    assert metas["a/1"].size == 3 and metas["a/1"].etag != DAMAGED_ETAG
    for key in ("a/0", "a/2"):
        with pytest.raises(Corruption, match=key.replace("/", ".")):
            store.get(key)
        with pytest.raises(Corruption):
            store.head(key)
    assert store.get("a/3") == b"three"


# -- S3 endpoint that accepts but never answers ----------------------------------


class _SilentServer:
    """A loopback TCP server that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.conns.append(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent_endpoint(moto_server):  # moto_server: sets the test credentials in the environment
    srv = _SilentServer()
    try:
        yield f"http://127.0.0.1:{srv.port}", srv
    finally:
        srv.close()


def test_s3_endpoint_that_never_answers_fails_open_in_seconds(silent_endpoint):
    endpoint, srv = silent_endpoint
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as info:
        open_store("s3://bucket/db", endpoint_url=endpoint, probe_timeout=1.0)
    elapsed = time.monotonic() - t0
    assert srv.conns, "the probe never connected"
    assert endpoint in str(info.value) and "did not answer" in str(info.value)
    assert elapsed < 10.0, elapsed  # the read timeout alone was 30 s


def test_s3_default_probe_timeout_is_seconds(silent_endpoint):
    endpoint, _srv = silent_endpoint
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match="did not answer"):
        open_store("s3://bucket/db", endpoint_url=endpoint)
    assert time.monotonic() - t0 < 15.0
