"""The writer: validation, buffering, batches, put_many, pickling, durability hook."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time

import numpy as np
import pytest

from engine_util import block_linger_appends

from shaledb.memtable.arena_pool import ArenaPool
from shaledb.errors import Closed, InvalidArgument, Unavailable
from shaledb.memtable.writer import WriteBatch, Writer, check_bound, check_key, check_value
from shaledb.options import MAX_KEY_BYTES

CTX = multiprocessing.get_context("spawn")
WAIT = 60


@pytest.fixture
def pool(tmp_path):
    p = ArenaPool.create(
        str(tmp_path / "db"), arena_bytes=256 << 10, max_arenas=16, initial_arenas=1, max_unflushed_bytes=64 << 20
    )
    yield p
    p.destroy()


@pytest.fixture
def writer(pool):
    w = Writer(pool.descriptor(), pool=pool)
    yield w
    w.close()


def _value(pool, key):
    e = pool.lookup(key)
    return None if e is None else e[3]


def _nothing_written(pool):
    assert pool.next_seq() == 1 and pool.unflushed_bytes() == 0


BAD_KEYS = ["str", 5, None, b"", b"x" * (MAX_KEY_BYTES + 1), [b"a"]]
BAD_VALUES = ["str", 5, None, object()]


def _type_id(v) -> str:
    """A test id that is the same in every process (repr of an object() is an address)."""
    return type(v).__name__ if type(v) is object else repr(v)


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys(pool, writer, key):
    for call in (
        lambda: writer.put(key, b"v"),
        lambda: writer.put(key, b"v", await_durable=False),
        lambda: writer.delete(key),
        lambda: WriteBatch().put(key, b"v"),
        lambda: writer.put_many([b"ok", key], [b"1", b"2"], await_durable=False),
    ):
        with pytest.raises(InvalidArgument):
            call()
    _nothing_written(pool)


@pytest.mark.parametrize("value", BAD_VALUES, ids=_type_id)
def test_bad_values(pool, writer, value):
    with pytest.raises(InvalidArgument):
        writer.put(b"k", value)
    with pytest.raises(InvalidArgument):
        WriteBatch().put(b"k", value)
    with pytest.raises(InvalidArgument):
        writer.put_many([b"k"], [value], await_durable=False)
    _nothing_written(pool)


def test_bad_batches_and_arrays(pool, writer):
    with pytest.raises(InvalidArgument):
        writer.write([(b"k", b"v")])
    with pytest.raises(InvalidArgument):
        writer.write(WriteBatch())
    with pytest.raises(InvalidArgument):
        writer.put_many([b"a", b"b"], [b"1"])
    with pytest.raises(InvalidArgument):
        writer.put_many([], [])
    with pytest.raises(InvalidArgument):
        writer.put_many(b"abc", [b"1", b"2", b"3"])
    data = np.frombuffer(b"abcd", dtype=np.uint8)
    with pytest.raises(InvalidArgument):  # int32 offsets
        writer.put_many((data, np.array([0, 2, 4], dtype=np.int32)), [b"1", b"2"])
    with pytest.raises(InvalidArgument):  # decreasing
        writer.put_many((data, np.array([0, 3, 2], dtype=np.int64)), [b"1", b"2"])
    with pytest.raises(InvalidArgument):  # past the end
        writer.put_many((data, np.array([0, 2, 9], dtype=np.int64)), [b"1", b"2"])
    with pytest.raises(InvalidArgument):  # empty key
        writer.put_many((data, np.array([0, 0, 4], dtype=np.int64)), [b"1", b"2"])
    with pytest.raises(InvalidArgument):  # wrong dtype of data
        writer.put_many((data.astype(np.int16), np.array([0, 2, 4], dtype=np.int64)), [b"1", b"2"])
    # (one record larger than an arena is fine: tests/engine/test_large_values.py)
    big = WriteBatch()
    for i in range(40):
        big.put(b"k%d" % i, bytes(8 << 10))
    with pytest.raises(InvalidArgument, match="one arena"):
        writer.write(big)
    _nothing_written(pool)


def test_buffered_puts_are_seen_after_drain_and_keep_order(pool, writer):
    assert writer.put(b"a", b"1", await_durable=False) is None
    assert writer.delete(b"b", await_durable=False) is None
    assert writer.put(b"b", b"2", await_durable=False) is None
    assert writer.has_buffered()
    assert writer.lookup(b"a")[3] == b"1"  # lookup drains first
    assert writer.put(b"a", b"3", await_durable=False) is None
    seq = writer.write(WriteBatch().put(b"a", b"4").delete(b"c"), await_durable=False)
    assert seq == 6  # the buffered put (seq 4) went first
    assert _value(pool, b"a") == b"4" and _value(pool, b"b") == b"2"
    assert pool.lookup(b"c")[2] == 0  # a tombstone
    assert writer.drain() is None


def test_unbuffered_puts_return_seqs(pool):
    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    assert [w.put(b"k%d" % i, b"v", await_durable=False) for i in range(3)] == [1, 2, 3]
    assert w.delete(b"k0", await_durable=False) == 4
    w.close()


def test_buffer_appends_when_full_or_after_linger(pool):
    w = Writer(pool.descriptor(), pool=pool, buffer_records=10, linger=0.01)
    for i in range(10):
        w.put(b"k%d" % i, b"v", await_durable=False)
    assert not w.has_buffered() and pool.next_seq() == 11
    w.put(b"late", b"v", await_durable=False)
    deadline = time.monotonic() + 10
    while pool.lookup(b"late") is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert _value(pool, b"late") == b"v"  # appended by the linger thread
    w.close()


def test_put_many_bytes_and_numpy_split_across_arenas(pool, writer):
    n = 5000
    keys = [b"key%06d" % i for i in range(n)]
    vals = [b"v%d" % i * 3 for i in range(n)]
    last = writer.put_many(keys, vals, await_durable=False)
    assert last == n
    kd = np.frombuffer(b"".join(keys), dtype=np.uint8)
    ko = np.arange(0, 9 * n + 1, 9, dtype=np.int64)
    vd = np.full(20 * n, 7, dtype=np.uint8)
    vo = np.arange(0, 20 * n + 1, 20, dtype=np.int64)
    assert writer.put_many((kd, ko), (vd, vo), await_durable=False) == 2 * n
    assert len(pool.live_slots()) > 1  # did not fit one arena
    for i in (0, 1234, n - 1):
        assert _value(pool, keys[i]) == bytes([7]) * 20
    assert sum(len(o) for _, o in pool.live_runs()) == 2 * n


def test_write_batch_is_atomic_in_one_arena(pool, writer):
    b = WriteBatch()
    for i in range(50):
        b.put(b"k%02d" % i, bytes(1000))
    writer.put_many([b"fill%d" % i for i in range(150)], [bytes(1000)] * 150, await_durable=False)
    seq = writer.write(b, await_durable=False)
    slots = {i for i, _, _ in pool.live_slots()}
    holding = [
        i for i in slots if any(pool.arena(i)[o + 16 : o + 19].tobytes() == b"k00" for o in _offs(pool, i))
    ]
    assert len(holding) == 1
    assert pool.lookup(b"k49")[1] == seq and pool.lookup(b"k00")[1] == seq - 49


def _offs(pool, i):
    from shaledb.kernels.arena import arena_record_offsets

    return arena_record_offsets(pool.arena(i))


def test_await_durable_hook_waits_for_the_watermark(pool):
    w = Writer(pool.descriptor(), pool=pool, timeout=5)
    threading.Timer(0.05, pool.publish_durable, args=(1,)).start()
    t = time.monotonic()
    assert w.put(b"a", b"1") == 1
    assert time.monotonic() - t >= 0.04
    w2 = Writer(pool.descriptor(), pool=pool, timeout=0.2)
    with pytest.raises(Unavailable, match="durable"):
        w2.put(b"b", b"2")
    w.close()
    w2.close()


def test_closed_writer_raises(pool):
    w = Writer(pool.descriptor(), pool=pool)
    w.put(b"a", b"1", await_durable=False)
    w.close()
    assert _value(pool, b"a") == b"1"  # close drained the buffer
    with pytest.raises(Closed):
        w.put(b"b", b"2", await_durable=False)
    w.close()  # idempotent


def _child_put(w, n):
    with w:
        for i in range(n):
            w.put(b"child%04d" % i, b"x", await_durable=False)


def test_pickled_writer_in_child_process(pool):
    w = Writer(pool.descriptor(), buffer_puts=True, timeout=10)
    w2 = pickle.loads(pickle.dumps(w))
    assert w2._desc == pool.descriptor()
    p = CTX.Process(target=_child_put, args=(w, 500))
    p.start()
    try:
        p.join(WAIT)
    finally:
        if p.is_alive():
            p.kill()
        p.join(5)
    assert p.exitcode == 0
    assert _value(pool, b"child0499") == b"x" and pool.next_seq() == 501
    # the child's arena was handed back (FULL), so sealing takes it
    assert pool.seal() == 1


def _child_put_no_close(w, n):
    for i in range(n):
        w.put(b"nc%04d" % i, b"y", await_durable=False)  # buffered, never closed


def test_buffered_writes_of_an_exiting_child_are_appended(pool):
    w = Writer(pool.descriptor(), buffer_records=1 << 20, linger=1000, timeout=10)
    p = CTX.Process(target=_child_put_no_close, args=(w, 100))
    p.start()
    try:
        p.join(WAIT)
    finally:
        if p.is_alive():
            p.kill()
        p.join(5)
    assert p.exitcode == 0
    assert _value(pool, b"nc0099") == b"y"


def test_buffered_put_raises_once_the_pool_is_fenced_or_closed(pool):
    from shaledb.errors import Fenced

    w = Writer(pool.descriptor(), pool=pool, linger=1000)
    assert w.put(b"a", b"1", await_durable=False) is None
    pool.publish_fenced()
    with pytest.raises(Fenced):
        w.put(b"b", b"2", await_durable=False)
    w.close()


def _forked_child(w, n):
    for i in range(n):
        w.put(b"fork%04d" % i, b"f", await_durable=False)
    w.close()


def test_writer_inherited_by_fork_gets_its_own_lock_and_arena(pool):
    w = Writer(pool.descriptor(), pool=pool)
    w.put(b"parent-buffered", b"p", await_durable=False)  # must not be appended twice
    p = multiprocessing.get_context("fork").Process(target=_forked_child, args=(w, 300))
    p.start()
    try:
        for i in range(300):
            w.put(b"par%04d" % i, b"q", await_durable=False)
        w.drain()
        p.join(WAIT)
    finally:
        if p.is_alive():
            p.kill()
        p.join(5)
    assert p.exitcode == 0
    assert _value(pool, b"fork0299") == b"f" and _value(pool, b"par0299") == b"q"
    runs = pool.live_runs()
    seqs = [int(buf[o + 8 : o + 16].view("<u8")[0]) >> 8 for buf, offs in runs for o in offs]
    assert len(seqs) == 601 and len(set(seqs)) == 601
    w.close()


# ------------------------------------------ one validation for every entry point
KEY_TYPES = [bytes, bytearray, memoryview]


@pytest.mark.parametrize("kind", KEY_TYPES, ids=lambda t: t.__name__)
def test_every_entry_point_accepts_the_same_key_types(pool, writer, kind):
    """put, delete, the read path's lookup, put_many, WriteBatch and scan
    bounds all validate through check_key / check_value / check_bound, so
    they take bytes, bytearray and memoryview alike (and store bytes)."""

    def k(s: bytes):
        return kind(s) if kind is not memoryview else memoryview(b"#" + s + b"#")[1:-1]

    assert check_key(k(b"key")) == b"key" and type(check_key(k(b"key"))) is bytes
    assert check_value(k(b"val")) == b"val" and type(check_value(k(b"val"))) is bytes
    assert check_value(k(b"")) == b""
    assert check_bound("start", k(b"a")) == b"a" and type(check_bound("end", k(b"z"))) is bytes
    assert check_bound("start", None) is None
    writer.put(k(b"p"), k(b"1"), await_durable=False)
    writer.delete(k(b"d"), await_durable=False)
    writer.put_many([k(b"m1"), k(b"m2")], [k(b"x"), k(b"yy")], await_durable=False)
    writer.write(WriteBatch().put(k(b"b"), k(b"2")).delete(k(b"p")), await_durable=False)
    assert writer.lookup(k(b"m2"))[::2] == (b"m2", 1)
    assert writer.lookup(k(b"m2"))[3] == b"yy"
    assert writer.lookup(k(b"b"))[3] == b"2"
    assert writer.lookup(k(b"p"))[2:] == (0, None)  # deleted by the batch
    assert writer.lookup(k(b"d"))[2:] == (0, None)
    assert pool.next_seq() == 7


def test_memoryview_values_are_stored_as_their_bytes(pool, writer):
    """A memoryview of wider items counts bytes, not items, on every path."""
    mv = memoryview(np.arange(3, dtype=np.uint16))
    writer.put(b"one", mv, await_durable=False)
    writer.put_many([memoryview(np.frombuffer(b"many", dtype=np.uint16))], [mv], await_durable=False)
    assert _value(pool, b"one") == b"\x00\x00\x01\x00\x02\x00"
    writer.drain()
    assert _value(pool, b"many") == b"\x00\x00\x01\x00\x02\x00"


def _bad_key_variants():
    too_long = b"x" * (MAX_KEY_BYTES + 1)
    out = [("str", "key")]
    for t in KEY_TYPES:
        out.append((f"empty {t.__name__}", t(b"")))
        out.append((f"too long {t.__name__}", t(too_long)))
    return out


@pytest.mark.parametrize("key", [v for _, v in _bad_key_variants()], ids=[n for n, _ in _bad_key_variants()])
def test_every_entry_point_rejects_the_same_keys(pool, writer, key):
    """The same keys fail everywhere, with the same message where the key
    goes through check_key alone (put, delete, lookup, WriteBatch)."""
    with pytest.raises(InvalidArgument) as first:
        check_key(key)
    for call in (
        lambda: writer.put(key, b"v", await_durable=False),
        lambda: writer.put(key, b"v"),
        lambda: writer.delete(key, await_durable=False),
        lambda: writer.lookup(key),
        lambda: WriteBatch().put(key, b"v"),
        lambda: WriteBatch().delete(key),
    ):
        with pytest.raises(InvalidArgument) as e:
            call()
        assert str(e.value) == str(first.value)
    with pytest.raises(InvalidArgument):
        writer.put_many([b"ok", key], [b"1", b"2"], await_durable=False)
    if isinstance(key, str):  # values refuse str the same way
        with pytest.raises(InvalidArgument, match="values must be bytes, got str"):
            check_value(key)
    _nothing_written(pool)


@pytest.mark.parametrize("bound", ["a", 5, [b"a"], object()], ids=_type_id)
def test_scan_bounds_reject_what_keys_reject_by_type(bound):
    """Bounds take the key types (any length: a bound need not be a key)."""
    for name in ("start", "end"):
        with pytest.raises(InvalidArgument, match=f"scan {name} must be bytes or None"):
            check_bound(name, bound)
    assert check_bound("start", b"") == b""
    assert check_bound("end", memoryview(b"x" * (MAX_KEY_BYTES + 1))) == b"x" * (MAX_KEY_BYTES + 1)


def test_has_buffered_key(pool, writer):
    writer.put(b"k1", b"v", await_durable=False)
    writer.delete(b"k2", await_durable=False)
    assert writer.has_buffered_key(b"k1") and writer.has_buffered_key(b"k2")
    assert not writer.has_buffered_key(b"k3")
    writer.drain()
    assert not writer.has_buffered_key(b"k1") and not writer.has_buffered()


def test_buffer_reads_as_buffered_until_the_linger_threads_append_lands(pool, monkeypatch):
    """The linger thread appends the buffer while the user thread reads: until
    the records are in the arenas, ``has_buffered``/``has_buffered_key`` must
    say so (a read then drains, waiting for the linger thread), or the read
    skips the drain and misses an acknowledged put (CI: get_many returned
    None for a key put just before)."""
    w = Writer(pool.descriptor(), pool=pool, linger=0.001)
    entered, release = block_linger_appends(monkeypatch)
    try:
        w.put(b"k", b"v", await_durable=False)
        assert entered.wait(10), "the linger thread did not start its append"
        assert w.has_buffered() and w.has_buffered_key(b"k")  # in flight: not in the arenas yet
        assert pool.lookup(b"k") is None
        threading.Timer(0.2, release.set).start()
        assert w.lookup(b"k")[3] == b"v"  # drains: waits for the linger thread's append
        assert not w.has_buffered() and not w.has_buffered_key(b"k")
    finally:
        release.set()
        w.close()
