"""SSTs read through the local store's mapping (``LocalStore.mmap``): the
same answers as a plain read, a block verified the first time it is touched
(and never hashed again), and damage found through the mapping raised as
Corruption naming the object and the block."""

from __future__ import annotations

import os

import numpy as np
import pytest
from formats_testlib import golden_records, ids, model_get, run_arrays
from reference.block import read_run

from shaledb.errors import Corruption
from shaledb.sst.reader import SstReader
from shaledb.sst.writer import build_ssts
from shaledb.storage import LocalStore, MemoryStore
from shaledb.storage.wrappers import FaultyStore, RetryingStore

NAME = "compacted/mapped.sst"


def _sst(n=300, compression=None):
    recs = golden_records(n)
    ((_, data, _),) = build_ssts(*run_arrays(recs), target_bytes=1 << 30, block_size=256, min_bloom_keys=1,
                                 compression=compression, new_id=ids())
    return recs, data


def _local(tmp_path, data):
    st = LocalStore(str(tmp_path / "db"), fsync=False)
    st.put(NAME, data)
    return st


def _file(st) -> str:
    return os.path.join(st.root, *NAME.split("/"))


def test_mmap_returns_the_object_bytes_read_only(tmp_path):
    _, data = _sst(20)
    st = _local(tmp_path, data)
    view = st.mmap(NAME)
    assert bytes(view) == data and view.readonly
    # wrappers forward it; the fault injector does not (its faults live on get_range)
    assert bytes(RetryingStore(st).mmap(NAME)) == data
    assert FaultyStore(st).mmap(NAME) is None
    assert not hasattr(MemoryStore(), "mmap") or MemoryStore().mmap(NAME) is None


def test_mapped_reads_equal_plain_reads_and_verify_each_block_once(tmp_path):
    recs, data = _sst()
    st = _local(tmp_path, data)
    r = SstReader(st, NAME, size=len(data))
    plain = SstReader(_memory(data), NAME, size=len(data))
    mapped, verified = r.mapped()
    assert plain.mapped() is None
    assert mapped.shape[0] == plain.footer.data_end and not mapped.flags.writeable
    assert not verified.any()
    keys = sorted({k for k, *_ in recs})
    for k in keys + [k + b"\x00" for k in keys[::5]] + [b"\x00", b"\xff"]:
        want = model_get(recs, k)
        assert r.get(k) == want == plain.get(k)
        assert r.find(k, np.frombuffer(k, dtype=np.uint8)) == plain.find(k, np.frombuffer(k, dtype=np.uint8))
        assert r.get(k, max_seq=1_100) == model_get(recs, k, 1_100)
    assert verified.all()  # every block was touched, and flagged
    assert [(b.tobytes(), o.tolist()) for b, o in r.iter_range(keys[10], keys[200])] == \
        [(b.tobytes(), o.tolist()) for b, o in plain.iter_range(keys[10], keys[200])]


def _memory(data):
    st = MemoryStore()
    st.put(NAME, data)
    return st


def _damage(path, offset):
    with open(path, "r+b") as f:
        f.seek(-(os.path.getsize(path) - offset) if offset >= 0 else offset, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("block", [0, 3])
def test_a_damaged_block_found_through_the_mapping_is_corruption(tmp_path, block):
    recs, data = _sst()
    st = _local(tmp_path, data)
    r = SstReader(st, NAME, size=len(data))
    _, offs = r.block_bounds()
    size = len(data)
    # flip one byte in the middle of the block (the file is the header then the object)
    path = _file(st)
    header = os.path.getsize(path) - size
    _damage(path, header + (int(offs[block]) + int(offs[block + 1])) // 2)
    keys = [k for k, *_ in recs]
    r2 = SstReader(st, NAME, size=size)  # a fresh mapping of the damaged file
    in_block = [k for k in keys if r2.block_bounds()[0][block] >= k and (block == 0 or r2.block_bounds()[0][block - 1] < k)]
    with pytest.raises(Corruption, match=rf"{NAME}: block {block}\b"):
        r2.get(in_block[0])
    with pytest.raises(Corruption, match=NAME):
        list(r2.iter_range())


def test_a_truncated_object_is_corruption_not_a_short_mapping(tmp_path):
    recs, data = _sst()
    st = _local(tmp_path, data)
    r = SstReader(st, NAME, size=len(data))  # opened (footer, index) before the damage
    os.truncate(_file(st), os.path.getsize(_file(st)) - 10)
    with pytest.raises(Corruption, match=NAME):
        r.get(recs[0][0])


def test_compressed_ssts_are_not_mapped(tmp_path):
    pytest.importorskip("zstandard")
    recs, data = _sst(compression="zstd")
    st = _local(tmp_path, data)
    r = SstReader(st, NAME, size=len(data))
    assert r.mapped() is None
    for k, *_ in recs[::7]:
        assert r.get(k) == model_get(recs, k)


class _CountingStore(LocalStore):
    """A local store that counts ranged reads."""

    ranged = 0

    def get_range(self, key, start, end):
        self.ranged += 1
        return super().get_range(key, start, end)


def test_compressed_ssts_read_their_stored_blocks_from_the_mapping(tmp_path):
    """Gets and scans of a zstd SST on a local directory take each stored
    block from the mapping (no ranged read per block) and decompress it."""
    pytest.importorskip("zstandard")
    recs, data = _sst(compression="zstd")
    st = _CountingStore(str(tmp_path / "db"), fsync=False)
    st.put(NAME, data)
    r = SstReader(st, NAME, size=len(data))
    opened = st.ranged
    keys = [k for k, *_ in recs]
    for k in keys[::5] + [b"user/00003/\x00", b"zzz"]:
        assert r.get(k) == model_get(recs, k)
    got = []
    for buf, offs in r.iter_range(keys[10], keys[-10]):
        got += read_run(buf, offs)
    assert [g[0] for g in got] == [k for k in keys if keys[10] <= k < keys[-10]]
    assert st.ranged == opened
    assert r.num_blocks > 10


@pytest.mark.parametrize("block", [0, 3])
def test_a_damaged_compressed_block_found_through_the_mapping_is_corruption(tmp_path, block):
    pytest.importorskip("zstandard")
    recs, data = _sst(compression="zstd")
    st = _local(tmp_path, data)
    _, offs = SstReader(st, NAME, size=len(data)).block_bounds()
    path = _file(st)
    _damage(path, os.path.getsize(path) - len(data) + (int(offs[block]) + int(offs[block + 1])) // 2)
    r = SstReader(st, NAME, size=len(data))
    bounds = r.block_bounds()[0]
    in_block = [k for k, *_ in recs if bounds[block] >= k and (block == 0 or bounds[block - 1] < k)]
    with pytest.raises(Corruption, match=rf"{NAME}: block {block}\b"):
        r.get(in_block[0])
    with pytest.raises(Corruption, match=rf"{NAME}: block {block}\b"):
        list(SstReader(st, NAME, size=len(data)).iter_range())


def test_a_truncated_compressed_object_is_corruption(tmp_path):
    pytest.importorskip("zstandard")
    recs, data = _sst(compression="zstd")
    st = _local(tmp_path, data)
    r = SstReader(st, NAME, size=len(data))  # opened (footer, index) before the damage
    os.truncate(_file(st), os.path.getsize(_file(st)) - 10)
    with pytest.raises(Corruption, match=NAME):
        r.get(recs[0][0])


def test_the_read_path_reports_a_damaged_mapped_block(tmp_path):
    """Through the engine: a bit flipped in an SST's data block is found by
    the first get (and get_many) that touches the block, as Corruption
    naming the object; other blocks still read."""
    import shaledb
    from shaledb.format.keys import sst_key
    from shaledb.storage import open_store

    root = str(tmp_path / "db")
    vals = {b"key%05d" % i: b"value-%05d" % i * 3 for i in range(2000)}
    with shaledb.open(root, block_size=1024, compactor=False) as db:
        db.put_many(list(vals), list(vals.values()), await_durable=False)
        db.flush(memtable=True)
    st = open_store(root)
    meta = max(st.list("compacted/"), key=lambda m: m.size)
    sid = meta.key.rsplit("/", 1)[1][: -len(".sst")]
    r = SstReader(st, sst_key(sid), size=meta.size)
    seps, offs = r.block_bounds()
    assert len(seps) > 6
    path = os.path.join(root, *meta.key.split("/"))
    header = os.path.getsize(path) - meta.size
    _damage(path, header + (int(offs[5]) + int(offs[6])) // 2)
    victim = next(k for k in sorted(vals) if seps[4] < k <= seps[5])
    with shaledb.open(root, block_size=1024, compactor=False) as db:
        first = next(k for k in sorted(vals) if k <= seps[0])
        assert db.get(first) == vals[first]
        with pytest.raises(Corruption, match=rf"{sid}.*block 5"):
            db.get(victim)
        with pytest.raises(Corruption, match=sid):
            db.get_many([first, victim])
        assert db.get(first) == vals[first]


def test_a_scan_verifies_each_mapped_block_once(tmp_path):
    """Scans share the point reads' per-block flags: a scan checks a block's
    checksum the first time it decodes it and flags it (later scans and
    gets do not hash it again); a damaged block met first by a scan is
    Corruption naming it, and stays unflagged."""
    recs, data = _sst()
    st = _local(tmp_path, data)
    r = SstReader(st, NAME, size=len(data))
    _, verified = r.mapped()
    assert not verified.any()
    want = [(b.tobytes(), o.tolist()) for b, o in r.iter_range()]
    assert verified.all()
    assert [(b.tobytes(), o.tolist()) for b, o in r.iter_range()] == want  # from flagged blocks
    _, offs = r.block_bounds()
    path = _file(st)
    _damage(path, os.path.getsize(path) - len(data) + (int(offs[2]) + int(offs[3])) // 2)
    r2 = SstReader(st, NAME, size=len(data))  # a fresh mapping of the damaged file
    with pytest.raises(Corruption, match=rf"{NAME}: block 2\b"):
        list(r2.iter_range())
    flags = r2.mapped()[1]
    assert flags[2] == 0 and flags[:2].all()
