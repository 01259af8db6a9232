"""Block compression through the engine (docs/values.md): every codec of
``Options.compression`` round-trips put, put_many, flush, compact, get and
scan; each SST records the codec it was written with; a database written with
one codec reopens with the other; a missing codec module is a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

import shaledb
from shaledb.format.enums import CompressionCodec
from shaledb.sst import SstReader
from shaledb.storage import open_store
from engine_util import open_db, scan_all


def _text(i: int, n: int) -> bytes:
    words = (b"alpha", b"beta", b"gamma", b"delta", b"shale", b"value")
    return b" ".join(words[(i * 7 + j) % 6] for j in range(n // 6 + 1))[:n]


def _codecs(root: str) -> list[int]:
    store = open_store(root)
    return [SstReader(store, m.key, size=m.size).footer.compression
            for m in store.list("compacted/") if m.key.endswith(".sst")]


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_roundtrip_through_flush_and_compaction(tmp_path, codec):
    root = str(tmp_path / "db")
    model = {}
    with open_db(root, compression=codec, compactor=False, gc_min_age=0) as db:
        keys = [b"user/%06d" % i for i in range(4000)]
        vals = [_text(i, 50 + i % 300) for i in range(4000)]
        db.put_many(keys, vals)
        model.update(zip(keys, vals))
        db.put(b"big", _text(1, 20_000))  # larger than a block
        model[b"big"] = _text(1, 20_000)
        db.delete(b"user/000007")
        del model[b"user/000007"]
        db.flush(memtable=True)
        db.put_many(keys[:500], [v[::-1] for v in vals[:500]])
        model.update(zip(keys[:500], [v[::-1] for v in vals[:500]]))
        model.pop(b"user/000007", None)
        model[b"user/000007"] = vals[7][::-1]
        db.flush(memtable=True)
        assert db.get(b"big") == model[b"big"]
        assert db.get(b"user/000003") == model[b"user/000003"]
        assert db.get(b"user/000700") == model[b"user/000700"]
        db.compact(full=True)
        assert scan_all(db) == model
        assert db.get(b"user/003999") == model[b"user/003999"]
        db.gc()
    want = CompressionCodec.ZSTD if codec == "zstd" else CompressionCodec.NONE
    assert set(_codecs(root)) == {want}
    # reopen with the other codec: old SSTs read, new ones use the new codec
    other = "none" if codec == "zstd" else "zstd"
    with open_db(root, compression=other, compactor=False, gc_min_age=0) as db:
        assert scan_all(db) == model
        db.put(b"later", b"x" * 3000)
        db.flush(memtable=True)
        db.compact(full=True)
        model[b"later"] = b"x" * 3000
        assert scan_all(db) == model
        assert db.get(b"big") == model[b"big"]
        db.gc()  # only the compacted run's SSTs stay
    assert set(_codecs(root)) == {CompressionCodec.ZSTD if other == "zstd" else CompressionCodec.NONE}


@pytest.mark.parametrize("pinned", [True, False])
def test_gets_of_compressed_ssts_agree_with_a_model(tmp_path, pinned):
    """Gets and get_many on zstd SSTs across overwrites and deletes in the
    arenas, L0 and sorted runs, and compactions that replace the SSTs, agree
    with a model: pinned (decompressed whole within half the block cache,
    read by the point kernel) or, with a block cache too small for that,
    block by block (stored blocks from the local store's mapping,
    decompressed blocks from the block cache on the second round)."""
    pytest.importorskip("zstandard")
    from shaledb.kernels.point import M_DATA

    model = {}
    keys = [b"user/%05d" % i for i in range(3000)]
    cache = {} if pinned else {"block_cache_bytes": 16 << 10}
    with open_db(str(tmp_path / "db"), compression="zstd", compactor=False, block_size=512, **cache) as db:
        for layer in range(4):
            batch = keys[layer * 500 : layer * 500 + 1500]
            vals = [_text(i + layer, 40 + (i * 13) % 200) for i in range(len(batch))]
            db.put_many(batch, vals)
            model.update(zip(batch, vals))
            for k in batch[::97]:
                db.delete(k)
                model.pop(k, None)
            db.flush(memtable=True)
            if layer == 1:
                db.compact(full=True)
            probe = keys[::7] + [b"nope", b"user/99999"]
            for _ in range(2):  # the second round finds its blocks cached
                assert [db.get(k) for k in probe] == [model.get(k) for k in probe]
        db.put(keys[3], b"in the arenas")  # a newer version in memory beats a cached block
        model[keys[3]] = b"in the arenas"
        assert db.get(keys[3]) == b"in the arenas"
        db.compact(full=True)  # new SSTs: the plan and its readers change
        assert [db.get(k) for k in keys] == [model.get(k) for k in keys]
        assert [db.get(k) for k in keys] == [model.get(k) for k in keys]
        assert db.get_many(keys + [b"nope"]) == [model.get(k) for k in keys] + [None]
        meta = db._reader._point_plan().meta
        assert meta.shape[0] >= 1 and bool((meta[:, M_DATA] != 0).all()) == pinned


def test_zstd_shrinks_compressible_values(tmp_path):
    sizes = {}
    for codec in ("none", "zstd"):
        root = str(tmp_path / codec)
        with open_db(root, compression=codec, compactor=False) as db:
            db.put_many([b"k%06d" % i for i in range(3000)], [_text(i, 400) for i in range(3000)])
            db.flush(memtable=True)
        store = open_store(root)
        sizes[codec] = sum(m.size for m in store.list("compacted/"))
    assert sizes["zstd"] * 2 < sizes["none"], sizes


def test_bad_codec_is_invalid_argument():
    with pytest.raises(shaledb.InvalidArgument, match="compression"):
        shaledb.Options(compression="lz4")
    with pytest.raises(shaledb.InvalidArgument, match="compression"):
        shaledb.Options(compression=None)
    assert shaledb.Options().compression == "none"


def test_missing_zstandard_is_a_clear_error(tmp_path):
    """Without the zstandard module: Options(compression='zstd') and reading
    a zstd SST raise InvalidArgument naming the package; 'none' works."""
    root = str(tmp_path / "db")
    with open_db(root, compression="zstd", compactor=False) as db:
        db.put_many([b"k%04d" % i for i in range(100)], [_text(i, 200) for i in range(100)])
        db.flush(memtable=True)
    code = f"""
import sys
sys.modules["zstandard"] = None  # import zstandard now raises ImportError
import importlib.util
importlib.util.find_spec = lambda name, *a, _f=importlib.util.find_spec: None if name == "zstandard" else _f(name, *a)
import shaledb
from shaledb.storage import open_store
from shaledb.sst import SstReader
try:
    shaledb.Options(compression="zstd")
except shaledb.InvalidArgument as e:
    print("OPTIONS:", e)
assert shaledb.Options(compression="none").compression == "none"
store = open_store({root!r})
m = next(m for m in store.list("compacted/") if m.key.endswith(".sst"))
r = SstReader(store, m.key, size=m.size)
try:
    list(r.iter_range())
except shaledb.InvalidArgument as e:
    print("READ:", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(x.startswith("OPTIONS:") and "zstandard" in x and "compression='none'" in x for x in lines), out.stdout
    assert any(x.startswith("READ:") and "zstandard" in x for x in lines), out.stdout
