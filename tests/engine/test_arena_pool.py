"""The arena pool across processes: appends, lookups, sealing, reuse, leftovers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from shaledb.memtable import shm
from shaledb.memtable.arena_pool import NO_ARENA, NO_MEMORY, ArenaPool
from shaledb.format.enums import ArenaState
from engine_util import pack_batch
from shaledb.errors import Closed, Fenced, Internal, InvalidArgument, Unavailable
from shaledb.kernels import arena as K
from shaledb.memtable.writer import Writer

CTX = multiprocessing.get_context("spawn")
WAIT = 60  # seconds any child may take


@pytest.fixture
def make_pool(tmp_path):
    pools = []

    def make(**kw):
        kw.setdefault("arena_bytes", 256 << 10)
        kw.setdefault("max_arenas", 8)
        kw.setdefault("initial_arenas", 1)
        kw.setdefault("max_unflushed_bytes", 64 << 20)
        root = kw.pop("root", str(tmp_path / "db"))
        p = ArenaPool.create(root, **kw)
        pools.append(p)
        return p

    yield make
    for p in pools:
        p.destroy()


def _run_children(target, args_list):
    """Start one spawn child per args; wait (bounded); always reap; return exit codes."""
    procs = [CTX.Process(target=target, args=args) for args in args_list]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + WAIT
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
        return [p.exitcode for p in procs]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)


# ------------------------------------------------------------ children
def _child_writer(desc, wid_tag: int, n: int, batch: int) -> None:
    w = Writer(desc, buffer_puts=False)
    with w:
        for start in range(0, n, batch):
            keys = [b"w%d-%06d" % (wid_tag, i) for i in range(start, min(n, start + batch))]
            w.put_many(keys, [k[::-1] for k in keys], await_durable=False)


def _child_reader(desc, keys, seconds: float, q) -> None:
    """Look keys up while the parent appends; report violations."""
    pool = ArenaPool.attach(desc)
    bad, seen, last = [], 0, {}
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for k in keys:
                e = pool.lookup(k)
                if e is None:
                    continue
                _, seq, kind, value = e
                seen += 1
                if seq >= pool.next_seq():
                    bad.append(("uncommitted seq", k, seq))
                if value != k + b"@%d" % seq:
                    bad.append(("torn value", k, seq, value))
                if seq < last.get(k, 0):
                    bad.append(("went back", k, seq, last[k]))
                last[k] = seq
        q.put((bad[:5], seen))
    finally:
        pool.close()


def _child_crash(root, q) -> None:
    p = ArenaPool.create(root, arena_bytes=128 << 10, max_arenas=2, initial_arenas=2)
    w = Writer(p.descriptor(), pool=p, buffer_puts=False)
    w.put(b"k", b"v", await_durable=False)
    q.put(p.dbtag)
    time.sleep(WAIT)  # killed by the parent


def _child_hold_lock_and_die(desc) -> None:
    pool = ArenaPool.attach(desc)
    pool.lock.__enter__()
    os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------- tests
def test_segments_named_per_database_and_destroyed(make_pool, tmp_path):
    pool = make_pool(initial_arenas=2)
    names = sorted(n for n in os.listdir(shm.shm_dir()) if n.startswith(f"shaledb-{pool.dbtag}-"))
    tag = shm.root_tag(str(tmp_path / "db"))
    assert pool.dbtag.startswith(tag + ".")
    assert names == sorted(f"shaledb-{pool.dbtag}-{k}" for k in ("arena-0", "arena-1", "ctl-0", "live-0", "lock-0"))
    for n in names:
        assert os.stat(os.path.join(shm.shm_dir(), n)).st_mode & 0o777 == 0o600
    pool.destroy()
    assert not [n for n in os.listdir(shm.shm_dir()) if n.startswith(f"shaledb-{pool.dbtag}")]
    with pytest.raises(Closed):
        ArenaPool.attach(pool.descriptor())


def test_concurrent_appends_from_processes(make_pool):
    pool = make_pool(arena_bytes=256 << 10, max_arenas=16)
    n, writers = 3000, 3
    codes = _run_children(_child_writer, [(pool.descriptor(), t, n, 250) for t in range(writers)])
    assert codes == [0] * writers
    seqs = []
    for buf, offs in pool.live_runs():
        for off in offs:
            kl, vl = (int(x) for x in buf[off : off + 8].view("<u4"))
            seqs.append(int(buf[off + 8 : off + 16].view("<u8")[0]) >> 8)
    assert len(seqs) == n * writers
    assert len(set(seqs)) == len(seqs)  # seqs unique across processes
    assert max(seqs) == pool.next_seq() - 1
    for t in range(writers):
        for i in (0, n // 2, n - 1):
            k = b"w%d-%06d" % (t, i)
            assert pool.lookup(k)[3] == k[::-1]
    assert pool.unflushed_bytes() == sum(int(buf.shape[0]) for buf, _ in pool.live_runs())


def test_reader_in_other_process_sees_committed_records_only(make_pool):
    # small arenas: the writer moves to a fresh arena (the older one still
    # live) and recycles often, the setting where a lookup once went back
    pool = make_pool(arena_bytes=64 << 10, max_arenas=4)
    keys = [b"key-%02d" % i for i in range(20)]
    q = CTX.Queue()
    reader = CTX.Process(target=_child_reader, args=(pool.descriptor(), keys, 1.5, q))
    reader.start()
    try:
        wid = pool.register_writer()
        end = time.monotonic() + 1.5
        rounds = 0
        while time.monotonic() < end:
            seq0 = pool.next_seq()
            vals = [k + b"@%d" % (seq0 + j) for j, k in enumerate(keys)]
            n, last, _ = pool.append(wid, *pack_batch(keys, vals))
            if n == 0:  # arena pool full: recycle everything and go on
                pool.seal()
                for g in pool.sealed_generations():
                    pool.release(g)
                continue
            assert last == seq0 + len(keys) - 1
            rounds += 1
        bad, seen = q.get(timeout=WAIT)
        assert bad == [] and seen > 0 and rounds > 0
    finally:
        reader.join(WAIT)
        if reader.is_alive():
            reader.kill()
            reader.join(5)
    assert reader.exitcode == 0


def test_index_never_exposes_bytes_beyond_committed():
    arena = np.zeros(64 << 10, dtype=np.uint8)
    K.arena_init(arena, 64)
    K.arena_append(arena, *pack_batch([b"a"], [b"old"]), 1)
    committed = K.arena_committed(arena)
    K.arena_append(arena, *pack_batch([b"a", b"b"], [b"new", b"x"]), 2)
    arena[32 : 40].view("<u8")[0] = committed  # as if the commit had not happened yet
    assert not K.arena_lookup(arena, b"a")[0] and not K.arena_lookup(arena, b"b")[0]
    assert K.arena_record_offsets(arena).size == 1


def test_sealing_moves_writers_and_orders_seqs(make_pool):
    pool = make_pool(max_arenas=8)
    w1 = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    w2 = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    w1.put(b"a", b"1", await_durable=False)
    w2.put(b"b", b"1", await_durable=False)
    assert pool.seal() == 1
    assert pool.seal() is None  # nothing new: no empty generation
    s1 = w1.put(b"a", b"2", await_durable=False)
    w2.put(b"c", b"2", await_durable=False)
    (g1,) = pool.sealed_generations()
    assert g1.number == 1 and len(g1.slots) == 2
    max_sealed = max(int(buf[off + 8 : off + 16].view("<u8")[0]) >> 8 for buf, offs in g1.runs() for off in offs)
    states = {i: (st, gen) for i, st, gen in pool.live_slots()}
    assert sorted(states.values()) == [(ArenaState.ACTIVE, 2)] * 2 + [(ArenaState.SEALED, 1)] * 2
    for i, (st, gen) in states.items():
        h = K.arena_header(pool.arena(i))
        if gen == 2:
            assert h["min_seq"] > max_sealed
    assert s1 > max_sealed
    # empty active arenas return to the pool at the next seal
    w1.close()
    w2.close()
    assert pool.seal() == 2


def test_seal_bytes_seals_from_the_writer(make_pool):
    pool = make_pool(seal_bytes=4096)
    sealed = []

    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    w._hooks.sealed = lambda p, g: sealed.append(g)
    for i in range(100):
        w.put(b"k%03d" % i, bytes(100), await_durable=False)
    assert sealed and sealed[0] == 1 and pool.has_sealed()
    w.close()


def test_release_reuses_arenas(make_pool):
    pool = make_pool(max_arenas=2, initial_arenas=1)
    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    w.put(b"a", b"1", await_durable=False)
    (slot,) = [i for i, _, _ in pool.live_slots()]
    inc = K.arena_header(pool.arena(slot))["incarnation"]
    pool.seal()
    (gen,) = pool.sealed_generations()
    pool.begin_flush(gen)
    assert pool.slot_info(slot)[0] == ArenaState.FLUSHING
    assert pool.lookup(b"a")[3] == b"1"  # still readable while flushing
    releases = pool.releases()
    pool.release(gen)
    assert pool.releases() == releases + 2  # a seqlock: odd while releasing
    assert pool.unflushed_bytes() == 0 and pool.live_slots() == []
    h = K.arena_header(pool.arena(slot))
    assert h["incarnation"] == inc + 1 and h["record_count"] == 0
    assert pool.lookup(b"a") is None
    w.put(b"b", b"2", await_durable=False)
    assert [i for i, _, _ in pool.live_slots()] == [slot]  # the same segment again
    assert int(pool.ctl[11]) == 1  # no new segment was created
    w.close()


def test_wal_snapshot_is_incremental(make_pool):
    pool = make_pool()
    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    w.put_many([b"a", b"b"], [b"1", b"2"], await_durable=False)
    buf, offs, token, max_gen, max_seq = pool.wal_snapshot()
    assert len(offs) == 2 and max_seq == 2 and max_gen == 1
    pool.wal_committed(token)
    assert pool.wal_snapshot() is None
    w.put(b"c", b"3", await_durable=False)
    pool.seal()
    w.put(b"d", b"4", await_durable=False)  # another arena, next generation
    buf, offs, token, max_gen, max_seq = pool.wal_snapshot()
    got = sorted(bytes(buf[o + 16 : o + 17]) for o in offs)
    assert got == [b"c", b"d"] and max_seq == 4 and max_gen == 2
    parts, token2, max_seq2 = pool.wal_parts()
    assert sorted(g for g, _, _ in parts) == [1, 2] and sum(len(o) for _, _, o in parts) == 2
    assert token2 == token and max_seq2 == 4
    pool.wal_committed(token)
    assert pool.wal_parts() is None
    pool.publish_durable(4)
    assert pool.durable_seq() == 4
    w.close()


def test_leftovers_of_a_killed_process_are_removed_on_next_open(make_pool, tmp_path):
    root = str(tmp_path / "crashed")
    other = make_pool(root=root)  # a live open of the same root must survive
    q = CTX.Queue()
    p = CTX.Process(target=_child_crash, args=(root, q))
    p.start()
    try:
        dbtag = q.get(timeout=WAIT)
        assert os.path.exists(os.path.join(shm.shm_dir(), f"shaledb-{dbtag}-arena-1"))
    finally:
        p.kill()
        p.join(WAIT)
    assert dbtag in shm.list_dbtags(root)
    fresh = make_pool(root=root)
    assert shm.list_dbtags(root) == sorted([other.dbtag, fresh.dbtag])
    assert not [n for n in os.listdir(shm.shm_dir()) if dbtag in n]


def test_lock_of_a_killed_holder_is_released(make_pool):
    pool = make_pool()
    assert _run_children(_child_hold_lock_and_die, [(pool.descriptor(),)]) == [-signal.SIGKILL]
    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False, timeout=5)
    assert w.put(b"k", b"v", await_durable=False) == 1
    w.close()


def test_backpressure_waits_then_raises_unavailable(make_pool):
    pool = make_pool(max_unflushed_bytes=8 << 10, max_arenas=4)
    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False, timeout=0.3)
    w._hooks.request_seal = lambda p: None  # nobody flushes
    w.put(b"a", bytes(6000), await_durable=False)
    wid = pool.register_writer()
    assert pool.append(wid, *pack_batch([b"b"], [bytes(6000)]), nbytes=6024)[:2] == (0, NO_MEMORY)
    t = time.monotonic()
    with pytest.raises(Unavailable, match="max_unflushed_bytes"):
        w.put(b"b", bytes(6000), await_durable=False)
    assert 0.25 < time.monotonic() - t < 5
    # the flusher frees memory: the write goes through
    pool.seal()
    for g in pool.sealed_generations():
        pool.release(g)
    assert w.put(b"b", bytes(6000), await_durable=False) == 2
    w.close()


def test_no_free_arena_is_backpressure_too(make_pool):
    pool = make_pool(max_arenas=1)
    wid1, wid2 = pool.register_writer(), pool.register_writer()
    assert pool.append(wid1, *pack_batch([b"a"], [b"1"]))[0] == 1
    assert pool.append(wid2, *pack_batch([b"b"], [b"1"]))[:2] == (0, NO_ARENA)


def test_batch_larger_than_an_arena_is_invalid(make_pool):
    # (one record of any size fits: tests/engine/test_large_values.py)
    pool = make_pool(arena_bytes=128 << 10)
    wid = pool.register_writer()
    with pytest.raises(InvalidArgument):
        pool.append(wid, *pack_batch([b"a", b"b"], [bytes(100 << 10), bytes(100 << 10)]))
    assert pool.next_seq() == 1 and pool.unflushed_bytes() == 0


def test_status_word_stops_writers(make_pool):
    pool = make_pool()
    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    w.put(b"a", b"1", await_durable=False)
    pool.publish_fenced()
    assert pool.fenced()
    with pytest.raises(Fenced):
        w.put(b"a", b"2", await_durable=False)
    pool.publish_closed()  # the first status sticks
    with pytest.raises(Fenced):
        w.put(b"a", b"2", await_durable=False)
    w.close()
    pool2 = make_pool(root=pool.desc["root"] + "-2")
    pool2.publish_failed()
    with pytest.raises(Unavailable):
        pool2.check_status()


def test_shm_dir_falls_back_when_dev_shm_is_unusable(monkeypatch, tmp_path):
    monkeypatch.setattr(shm, "_dir_cache", None)
    monkeypatch.setenv("SHALEDB_SHM_DIR", str(tmp_path / "missing"))
    d = shm.shm_dir()
    assert d.startswith(__import__("tempfile").gettempdir()) and os.path.isdir(d)
    seg = shm.Segment.create(shm.segment_name("0" * 12 + ".fallback", "arena", 0), 1 << 16)
    try:
        seg.array()[:4] = 7
        other = shm.Segment.attach(seg.name)
        assert other.array()[:4].tolist() == [7] * 4
        other.close()
    finally:
        seg.close()
        seg.unlink()
    assert shm.cleanup_segments("0" * 12 + ".fallback") == []


def _child_batches(desc, tag: int, n: int) -> None:
    w = Writer(desc, buffer_puts=False, timeout=30)
    with w:
        for start in range(0, n, 20):
            w.put_many([b"s%d-%05d" % (tag, i) for i in range(start, start + 20)], [b"v"] * 20, await_durable=False)


def test_generations_order_seqs_under_concurrent_seals(make_pool):
    pool = make_pool(arena_bytes=64 << 10, max_arenas=64)
    procs = [CTX.Process(target=_child_batches, args=(pool.descriptor(), t, 1500)) for t in range(2)]
    try:
        for p in procs:
            p.start()
        seals = 0
        deadline = time.monotonic() + WAIT
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            if seals < 20 and pool.seal() is not None:
                seals += 1
            time.sleep(0.002)
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
        assert [p.exitcode for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
    pool.seal()
    gens = pool.sealed_generations()
    assert len(gens) >= 2
    bounds = []
    for g in gens:
        seqs = [int(buf[o + 8 : o + 16].view("<u8")[0]) >> 8 for buf, offs in g.runs() for o in offs]
        bounds.append((min(seqs), max(seqs), len(seqs)))
    assert sum(b[2] for b in bounds) == 3000
    for (lo1, hi1, _), (lo2, hi2, _) in zip(bounds, bounds[1:]):
        assert hi1 < lo2  # every seq of a sealed generation is below the next one's


def _child_lookup_overlapping_append(desc, q) -> None:
    """Runs with NUMBA_DISABLE_JIT=1: the lookup kernel is Python, so an append
    can be slipped in between its reads.  The append lands right after the
    lookup has read the active arena's ``committed`` and before it probes the
    index: the slot then points past the committed offset the lookup read."""
    from shaledb.kernels import arena as KK

    pool = ArenaPool.attach(desc)
    try:
        wid = pool.register_writer()
        seq_v2 = pool.next_seq()
        pool.append(wid, *pack_batch([b"k"], [b"v2"]))  # the active arena (slot 1)
        seen = pool.lookup(b"k")[1]  # seq_v2, from the active arena
        hash_fn = KK._xxh64
        calls = []

        def hash_with_append(*args):  # the lookup hashes the key once per arena
            calls.append(1)
            if len(calls) == 2:  # slot 1: its committed offset is read already
                KK._xxh64 = hash_fn
                pool.append(wid, *pack_batch([b"k"], [b"v3"]))
            return hash_fn(*args)

        KK._xxh64 = hash_with_append
        try:
            got = pool.lookup(b"k")
        finally:
            KK._xxh64 = hash_fn
        q.put((seq_v2, seen, got[1] if got else None, got[3] if got else None, len(calls)))
    finally:
        pool.close()


def test_lookup_never_goes_back_when_an_append_overlaps_it(make_pool):
    """Regression: a lookup that read an arena's ``committed`` before an append
    and its index slot after it found no version there and fell back to an
    older arena's (went back from seq v2 to v1)."""
    pool = make_pool(max_arenas=2, initial_arenas=1)
    wid = pool.register_writer()
    pool.append(wid, *pack_batch([b"k"], [b"v1"]))  # slot 0
    assert pool.seal() == 1  # slot 0 SEALED: v1 stays readable there
    q = CTX.Queue()
    old = os.environ.get("NUMBA_DISABLE_JIT")
    os.environ["NUMBA_DISABLE_JIT"] = "1"  # the spawn child inherits it
    try:
        codes = _run_children(_child_lookup_overlapping_append, [(pool.descriptor(), q)])
    finally:
        if old is None:
            del os.environ["NUMBA_DISABLE_JIT"]
        else:
            os.environ["NUMBA_DISABLE_JIT"] = old
    assert codes == [0]
    seq_v2, seen, got_seq, got_value, calls = q.get(timeout=WAIT)
    assert seen == seq_v2 and calls >= 2
    assert got_value == b"v3" and got_seq == seq_v2 + 1  # never v1 (seq_v2 - 1)


# ------------------------------------------------- the mid-append failpoint
def _child_dies_mid_append(desc) -> None:
    w = Writer(desc, buffer_puts=False)
    for i in range(3):
        w.put(b"m%d" % i, b"v", await_durable=False)


def test_mid_append_error_leaves_reserved_seqs_and_uncommitted_bytes(make_pool):
    """The pool stages the failpoint's moment itself: lock held, the batch's
    seqs reserved, some bytes beyond the committed offset, nothing committed.
    An injected error leaves exactly that (and frees the lock)."""
    pool = make_pool(failpoints="mid-append=error@2")
    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    try:
        assert w.put(b"a", b"1", await_durable=False) == 1
        a = pool.arena(pool.arena_of(w.writer_id))
        committed = K.arena_committed(a)
        with pytest.raises(Internal):
            w.put_many([b"bbbbbbbb", b"cccccccc"], [b"2", b"3"], await_durable=False)
        assert pool.next_seq() == 4  # seqs 2 and 3 reserved: a gap, never a duplicate
        assert K.arena_committed(a) == committed
        assert bytes(a[committed : committed + 16]) == b"\xab" * 16
        assert pool.lookup(b"bbbbbbbb") is None and pool.lookup(b"cccccccc") is None
        assert K.arena_record_offsets(a).shape[0] == 1
        # the lock is free again: another handle (its failpoint count at 1) appends
        other = ArenaPool.attach(pool.descriptor())
        w2 = Writer(other.descriptor(), pool=other, buffer_puts=False)
        try:
            assert w2.put(b"d", b"4", await_durable=False) == 4
        finally:
            w2.close()
            other.close()
        assert pool.lookup(b"d")[1:] == (4, 1, b"4")
        assert pool.lookup(b"a")[1:] == (1, 1, b"1")
    finally:
        w.close()


def test_writer_killed_mid_append(make_pool):
    """SIGKILL at mid-append (armed through the descriptor, in the child
    only): the lock is dropped by the kernel, the batch never appears, its
    seq stays a gap, and the other writers carry on."""
    pool = make_pool()
    desc = dict(pool.descriptor(), failpoints="mid-append=kill@2")
    assert _run_children(_child_dies_mid_append, [(desc,)]) == [-signal.SIGKILL]
    assert pool.lookup(b"m0")[1:] == (1, 1, b"v")
    assert pool.lookup(b"m1") is None and pool.lookup(b"m2") is None
    assert pool.next_seq() == 3
    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    try:
        assert w.put(b"z", b"1", await_durable=False) == 3
    finally:
        w.close()
    assert sorted(k for a, o in pool.live_runs() for k in _keys(a, o)) == [b"m0", b"z"]


def _keys(buf, offs):
    out = []
    for off in offs:
        kl = int(buf[off : off + 4].view("<u4")[0])
        out.append(bytes(buf[off + 16 : off + 16 + kl]))
    return out
