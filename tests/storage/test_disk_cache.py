"""DiskCacheStore (shaledb.storage.cache): ranged reads of immutable objects
cached in part files; hits, misses, what is never cached, eviction under the
byte bound, damaged part files refetched, a directory shared by processes;
and the engine with ``Options.cache_dir`` on S3 (a corrupt SST read through
the cache is Corruption naming the object)."""

from __future__ import annotations

import multiprocessing
import os
import random

import pytest
from hypothesis import given, settings, strategies as st

import shaledb
from shaledb.storage import MemoryStore, open_store
from shaledb.storage.cache import PART_HEADER, DiskCacheStore
from shaledb.storage.wrappers import InstrumentedStore

SPAWN = multiprocessing.get_context("spawn")
PART = 1024


def _store(name="c"):
    inner = InstrumentedStore(open_store(f"memory://cache-test-{name}-{random.getrandbits(40):x}"))
    return inner


def _gets(inner) -> int:
    return inner.snapshot().get("get_range").count if "get_range" in inner.snapshot() else 0


def _part_files(root):
    out = []
    for d, _dirs, files in os.walk(root):
        out += [os.path.join(d, f) for f in files]
    return sorted(out)


def test_hit_after_miss(tmp_path):
    inner = _store()
    data = os.urandom(5 * PART + 17)
    inner.put("compacted/a.sst", data)
    c = DiskCacheStore(inner, tmp_path, 1 << 20, cacheable=("compacted/",), part_bytes=PART)
    assert c.get_range("compacted/a.sst", 100, 3000) == data[100:3000]
    assert _gets(inner) == 1  # parts 0..2 in one ranged GET
    assert c.get_range("compacted/a.sst", 1500, 2500) == data[1500:2500]
    assert c.get_range("compacted/a.sst", 0, 3 * PART) == data[: 3 * PART]
    assert _gets(inner) == 1  # all hits
    assert c.get_range("compacted/a.sst", 2000, 6 * PART) == data[2000:]  # cut short at the end
    assert _gets(inner) == 2  # only parts 3..5 fetched
    assert c.get_range("compacted/a.sst", 0, 10 * PART) == data
    assert _gets(inner) == 2
    assert c.stats["misses"] == 6 and c.stats["hits"] > 0


def test_never_cached_keys_go_to_the_store(tmp_path):
    inner = _store()
    inner.put("manifest/00000000000000000001.manifest", b"m1" * 100)
    inner.put("wal/00000000000000000001.sst", b"w" * 100)
    c = DiskCacheStore(inner, tmp_path, 1 << 20, cacheable=("compacted/",), part_bytes=PART)
    for _ in range(2):
        assert c.get_range("manifest/00000000000000000001.manifest", 0, 10) == b"m1" * 5
        assert c.get_range("wal/00000000000000000001.sst", 5, 50) == b"w" * 45
    assert _gets(inner) == 4 and _part_files(tmp_path) == []
    inner.put("manifest/00000000000000000001.manifest", b"changed!!!")  # a manifest may change: never stale
    assert c.get_range("manifest/00000000000000000001.manifest", 0, 10) == b"changed!!!"


def test_missing_object_raises(tmp_path):
    c = DiskCacheStore(_store(), tmp_path, 1 << 20, cacheable=("compacted/",), part_bytes=PART)
    with pytest.raises(shaledb.ObjectNotFound):
        c.get_range("compacted/nope.sst", 0, 10)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 4 * PART + 3), st.lists(st.tuples(st.integers(0, 6 * PART), st.integers(0, 3 * PART)), max_size=8))
def test_ranges_match_the_store(size, ranges):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        inner = _store()
        data = os.urandom(size)
        inner.put("compacted/x.sst", data)
        c = DiskCacheStore(inner, d, 1 << 20, part_bytes=PART)
        for start, n in ranges * 2:  # each range twice: miss, then hit
            assert c.get_range("compacted/x.sst", start, start + n) == data[start : start + n]


def test_eviction_keeps_the_bound(tmp_path):
    inner = _store()
    objs = {f"compacted/{i}.sst": os.urandom(4 * PART) for i in range(20)}
    for k, v in objs.items():
        inner.put(k, v)
    cap = 10 * (PART + PART_HEADER.size)
    c = DiskCacheStore(inner, tmp_path, cap, part_bytes=PART)
    for k, v in objs.items():
        assert c.get_range(k, 0, 4 * PART) == v
        assert c.cached_bytes() <= cap
    assert c.stats["evicted"] > 0
    assert 0 < c.cached_bytes() <= cap
    # the most recently read object is still cached
    before = _gets(inner)
    assert c.get_range("compacted/19.sst", 0, 4 * PART) == objs["compacted/19.sst"]
    assert _gets(inner) == before
    # an evicted one is fetched again, correctly
    assert c.get_range("compacted/0.sst", 0, 4 * PART) == objs["compacted/0.sst"]
    assert _gets(inner) == before + 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_part_file_is_refetched(tmp_path, damage):
    inner = _store()
    data = os.urandom(2 * PART)
    inner.put("compacted/a.sst", data)
    c = DiskCacheStore(inner, tmp_path, 1 << 20, part_bytes=PART)
    assert c.get_range("compacted/a.sst", 0, 2 * PART) == data
    path = _part_files(tmp_path)[0]
    with open(path, "rb") as f:
        raw = f.read()
    if damage == "truncate":
        raw = raw[: len(raw) - 100]
    elif damage == "flip":
        raw = raw[:-1] + bytes([raw[-1] ^ 1])
    elif damage == "garbage":
        raw = b"x" * len(raw)
    else:
        raw = b""
    with open(path, "wb") as f:
        f.write(raw)
    n = _gets(inner)
    assert c.get_range("compacted/a.sst", 0, 2 * PART) == data  # never the damaged bytes
    assert _gets(inner) == n + 1 and c.stats["refetched"] == 1
    assert c.get_range("compacted/a.sst", 0, 2 * PART) == data  # rewritten: a hit again
    assert _gets(inner) == n + 1


def test_delete_drops_cached_parts(tmp_path):
    inner = _store()
    inner.put("compacted/a.sst", b"a" * 3000)
    c = DiskCacheStore(inner, tmp_path, 1 << 20, part_bytes=PART)
    c.get_range("compacted/a.sst", 0, 3000)
    assert _part_files(tmp_path)
    c.delete("compacted/a.sst")
    assert _part_files(tmp_path) == []
    with pytest.raises(shaledb.ObjectNotFound):
        c.get_range("compacted/a.sst", 0, 10)


def test_bad_arguments(tmp_path):
    for bad in (0, -1, True, 1.5):
        with pytest.raises(shaledb.InvalidArgument):
            DiskCacheStore(_store(), tmp_path, bad)
    with pytest.raises(shaledb.InvalidArgument):
        DiskCacheStore(_store(), tmp_path, 1 << 20, part_bytes=0)
    for bad in (dict(cache_dir=""), dict(cache_dir=5), dict(cache_bytes=1000), dict(cache_bytes=True)):
        with pytest.raises(shaledb.InvalidArgument):
            shaledb.Options(**bad)


def _reader_proc(directory, root, rounds, q):
    from shaledb.storage import open_store as _open
    from shaledb.storage.cache import DiskCacheStore as _C

    store = _C(_open(root), directory, 6 * 1024, part_bytes=1024)
    rng = random.Random(os.getpid())
    ok = True
    for _ in range(rounds):
        i = rng.randrange(8)
        start = rng.randrange(4000)
        got = store.get_range(f"compacted/{i}.sst", start, start + 1500)
        ok &= got == (bytes([i]) * 4096)[start : start + 1500]
    q.put(ok)


def test_processes_share_one_directory(tmp_path):
    """Two processes read through one cache directory (small bound: parts are
    written, replaced and evicted under each other's feet); every read is right."""
    root = (tmp_path / "store").as_uri()
    store = open_store(root)
    for i in range(8):
        store.put(f"compacted/{i}.sst", bytes([i]) * 4096)
    q = SPAWN.Queue()
    procs = [SPAWN.Process(target=_reader_proc, args=(str(tmp_path / "cache"), root, 300, q)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        results = [q.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(10)
    assert results == [True, True]
    assert not [f for f in _part_files(tmp_path / "cache") if ".tmp-" in f]


# -- the engine on S3 --------------------------------------------------------


def _s3_db(moto_server, bucket, cache_dir, **kw):
    return shaledb.open(f"s3://{bucket}/db", compactor=False, cache_dir=str(cache_dir), l0_sst_bytes=1 << 18,
                        store_options={"endpoint_url": moto_server.endpoint_url}, **kw)


def test_engine_reads_through_the_cache(moto_server, s3_bucket, tmp_path):
    model = {b"k%05d" % i: b"v%05d" % i * 10 for i in range(3000)}
    with _s3_db(moto_server, s3_bucket, tmp_path / "cache") as db:
        db.put_many(list(model), list(model.values()))
        db.flush(memtable=True)
    for _ in range(2):  # cold, then warm (parts on disk)
        with _s3_db(moto_server, s3_bucket, tmp_path / "cache") as db:
            assert db.get(b"k00042") == model[b"k00042"]
            assert dict(db.scan()) == model
    files = _part_files(tmp_path / "cache")
    assert files and not [f for f in files if ".tmp-" in f]


def test_corrupt_sst_through_the_cache_is_corruption(moto_server, s3_bucket, tmp_path):
    model = {b"k%05d" % i: b"v" * 50 for i in range(2000)}
    with _s3_db(moto_server, s3_bucket, tmp_path / "cache") as db:
        db.put_many(list(model), list(model.values()))
        db.flush(memtable=True)
        sst = db._reader.manifest().l0[0]
    raw = open_store(f"s3://{s3_bucket}/db", endpoint_url=moto_server.endpoint_url)
    key = f"compacted/{sst.sst_id}.sst"
    data = bytearray(raw.get(key))
    data[100] ^= 0xFF  # inside the first data block
    raw.put(key, bytes(data))
    with _s3_db(moto_server, s3_bucket, tmp_path / "cache") as db:
        with pytest.raises(shaledb.Corruption, match=sst.sst_id):
            list(db.scan_arrays())
        with pytest.raises(shaledb.Corruption, match=sst.sst_id):
            list(db.scan_arrays())  # the damaged bytes now come from the cache: still Corruption
