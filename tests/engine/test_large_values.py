"""Large values (docs/values.md, "Large values"): a record too big for an
arena gets a shared-memory segment of its own, joins the generation like an
arena, and its segment is unlinked when the generation is released; values
of 4 KiB .. several arenas go through put, put_many, write, the WAL, SSTs,
compaction and reads; a value larger than a block gets a block of its own."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import shaledb
from engine_util import SPAWN, kill, open_db, pack_batch, reap, scan_all, wait_gone
from shaledb.memtable import shm
from shaledb.memtable.arena_pool import ArenaPool
from shaledb.sst import SstReader, build_ssts
from shaledb.storage import MemoryStore
from reference.block import make_run


def _val(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


def _larges(dbtag: str) -> list[str]:
    return sorted(n for n in os.listdir(shm.shm_dir()) if n.startswith(f"{shm.PREFIX}{dbtag}-large-"))


def test_pool_gives_a_big_record_a_segment_of_its_own(tmp_path):
    pool = ArenaPool.create(str(tmp_path / "db"), arena_bytes=128 << 10, initial_arenas=1, max_arenas=4)
    other = ArenaPool.attach(pool.descriptor())  # another process's handle
    try:
        wid = pool.register_writer()
        assert pool.append(wid, *pack_batch([b"a"], [b"small"]))[0] == 1
        big = _val(1 << 20, 1)  # 8 arenas' worth
        n, seq, _ = pool.append(wid, *pack_batch([b"big"], [big]))
        assert n == 1 and seq == 2
        assert len(_larges(pool.dbtag)) == 1
        assert pool.unflushed_bytes() >= len(big)
        for p in (pool, other):
            assert p.lookup(b"big")[3] == big and p.lookup(b"a")[3] == b"small"
        # the writer keeps appending to its own arena; the big one took no more
        assert pool.append(wid, *pack_batch([b"b"], [b"after"]))[0] == 1
        gen = pool.seal()
        (sg,) = pool.sealed_generations()
        assert sg.number == gen
        runs = sg.runs()
        assert sorted(len(offs) for _a, offs in runs) == [1, 2]
        pool.begin_flush(sg)
        pool.release(sg)
        assert _larges(pool.dbtag) == [] and pool.unflushed_bytes() == 0
        assert pool.lookup(b"big") is None and other.lookup(b"big") is None
        # the slot serves ordinary records again, in both processes' views
        wid2 = other.register_writer()
        for i in range(50):
            assert other.append(wid2, *pack_batch([b"n%02d" % i], [b"x" * 100]))[0] == 1
        assert pool.lookup(b"n49")[3] == b"x" * 100
        # a second big record after the first one's release
        assert pool.append(wid, *pack_batch([b"big2"], [big[:300_000]]))[0] == 1
        assert other.lookup(b"big2")[3] == big[:300_000]
        assert len(_larges(pool.dbtag)) == 1
    finally:
        other.close()
        pool.destroy()
    assert _larges(pool.dbtag) == []


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_value_larger_than_a_block_gets_a_block_of_its_own(codec):
    vals = [b"x" * 10, _val(64 << 10, 2), b"y" * 10, b"z" * 10]
    buf, offs = make_run([(k, 1, 1, v) for k, v in zip([b"a", b"b", b"c", b"d"], vals)])
    ((_sst_id, data, _info),) = build_ssts(
        np.frombuffer(buf, dtype=np.uint8), np.array(offs, dtype=np.int64),
        target_bytes=1 << 30, block_size=4096, compression=codec,
    )
    store = MemoryStore()
    store.put("x.sst", data)
    r = SstReader(store, "x.sst")
    _ikeys, boffs = r.block_bounds()
    sizes = np.diff(boffs)
    assert r.num_blocks == 3, sizes  # [a], [b] alone, [c d]
    assert sizes[0] < 4096 and sizes[1] > 64 << 10 and sizes[2] < 4096
    assert r.get(b"b")[2] == vals[1] and r.get(b"c")[2] == b"y" * 10


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_values_4k_to_several_arenas_through_the_engine(tmp_path, codec):
    """1 MiB arenas: 3 MiB values do not fit one; every path still works."""
    root = str(tmp_path / "db")
    model = {}
    sizes = [4 << 10, 64 << 10, 1 << 20, 3 << 20]
    with open_db(root, compression=codec, compactor=False, max_unflushed_bytes=32 << 20) as db:
        for i, n in enumerate(sizes):
            model[b"put%d" % i] = _val(n, i)
            db.put(b"put%d" % i, model[b"put%d" % i])
        keys = [b"many%d" % i for i in range(8)]
        vals = [_val(sizes[i % 4] + i, 10 + i) for i in range(8)]
        db.put_many(keys, vals)
        model.update(zip(keys, vals))
        db.write(shaledb.WriteBatch().put(b"batch", _val(3 << 20, 20)))
        model[b"batch"] = _val(3 << 20, 20)
        db.put(b"buffered", _val(2 << 20, 21), await_durable=False)
        model[b"buffered"] = _val(2 << 20, 21)
        for k, v in model.items():  # from the arenas (and large segments)
            assert db.get(k) == v, k
        db.flush(memtable=True)
        for k, v in model.items():  # from L0
            assert db.get(k) == v, k
        model[b"put3"] = _val(3 << 20, 99)  # overwrite a big one
        db.put(b"put3", model[b"put3"])
        db.delete(b"many1")
        del model[b"many1"]
        db.flush(memtable=True)
        db.compact(full=True)
        assert scan_all(db) == model
        assert db.get(b"put3") == model[b"put3"]
    with open_db(root, compression=codec, compactor=False) as db:
        assert scan_all(db) == model


def _crash_after_big_puts(root: str, conn) -> None:
    db = open_db(root, compactor=False, max_unflushed_bytes=32 << 20)
    db.put(b"small", b"s")
    db.put(b"big", _val(3 << 20, 5))  # durable: in a WAL object
    db.put_many([b"big2", b"tail"], [_val(2 << 20, 6), b"t"])
    conn.send(db.status()["pid"])
    conn.close()
    os.kill(os.getpid(), 9)  # no close: only the WAL has the records


def test_big_values_survive_a_crash_through_the_wal(tmp_path):
    root = str(tmp_path / "db")
    parent, child = SPAWN.Pipe(duplex=False)
    p = SPAWN.Process(target=_crash_after_big_puts, args=(root, child))
    p.start()
    child.close()
    flusher = None
    try:
        assert parent.poll(120), "the child did not report"
        flusher = parent.recv()
    finally:
        reap([p], 60)
        parent.close()
        if flusher is not None and not wait_gone(flusher, 30):
            kill(flusher)
    with open_db(root, compactor=False) as db:
        assert db.get(b"big") == _val(3 << 20, 5)
        assert db.get(b"big2") == _val(2 << 20, 6)
        assert db.get(b"small") == b"s" and db.get(b"tail") == b"t"


def test_100_mib_value_with_default_options(tmp_path):
    """Default options (64 MiB arenas): a 100 MiB value, put, get, L0, reopen."""
    root = str(tmp_path / "db")
    big = _val(100 << 20, 7)
    t0 = time.monotonic()
    with shaledb.open(root, compactor=False) as db:
        db.put(b"big", big)
        db.put(b"k", b"v")
        assert db.get(b"big") == big
        db.flush(memtable=True)
        assert db.get(b"big") == big
    with shaledb.open(root, compactor=False) as db:
        assert db.get(b"big") == big and db.get(b"k") == b"v"
    assert time.monotonic() - t0 < 600  # a hang guard, not a speed check


def test_value_over_the_limit_is_refused_before_any_copy():
    """A memoryview over MAX_VALUE_BYTES is refused by its byte size (its
    len() counts items) before it is copied; np.zeros maps pages lazily, so
    nothing here touches 256 MiB."""
    from shaledb.format.record import MAX_VALUE_BYTES
    from shaledb.memtable.writer import check_value

    big = memoryview(np.zeros(MAX_VALUE_BYTES // 4 + 1, dtype=np.uint32))
    with pytest.raises(shaledb.InvalidArgument, match=str(MAX_VALUE_BYTES + 4)):
        check_value(big)
    assert check_value(memoryview(np.zeros(3, dtype=np.uint32))) == bytes(12)


def test_a_big_list_of_big_values_is_packed_by_copy_the_same_as_joined():
    """``put_many`` with a list: past 32 MiB of items averaging 64 KiB or
    more, the items are copied into one numpy buffer instead of joined
    (docs/values.md); both ways give the same bytes and offsets, with
    bytearray, memoryview and empty items among them."""
    from shaledb.memtable import writer as W

    items = [_val(1 << 20, i) for i in range(33)] + [b"", bytearray(_val(100, 99)), memoryview(_val(70_000, 98))]
    data, offs = W._pack_list(items, "values")
    assert data.nbytes > W._PACK_COPY_BYTES and data.flags.owndata  # the copy, not a view of a joined bytes
    assert not data.flags.writeable  # the joined bytes' view is read-only too: one kernel signature
    expect = [bytes(x) for x in items]
    assert offs.tolist() == np.concatenate(([0], np.cumsum([len(x) for x in expect]))).tolist()
    assert data.tobytes() == b"".join(expect)
    small, small_offs = W._pack_list([b"ab", b"", b"c"], "keys")
    assert small.tobytes() == b"abc" and small_offs.tolist() == [0, 2, 2, 3]


def test_put_many_of_a_list_over_32_mib_reads_back(tmp_path):
    vals = [_val(1 << 20, 1000 + i) for i in range(40)]
    keys = [b"big%03d" % i for i in range(40)]
    with open_db(tmp_path / "db") as db:
        db.put_many(keys, vals)
        assert db.get_many(keys) == vals
        db.flush(memtable=True)
        for k, v in zip(keys, vals):
            assert db.get(k) == v
