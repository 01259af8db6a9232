"""SST write -> store -> read round trips against a plain model."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from formats_testlib import golden_records, ids, model_get, run_arrays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference.block import read_run, sort_key

from shaledb.sst.block_cache import BlockCache
from shaledb.format.enums import CompressionCodec
from shaledb.errors import InvalidArgument
from shaledb.format.keys import sst_key
from shaledb.sst.reader import SstReader
from shaledb.sst.writer import SstInfo, build_ssts
from shaledb.storage import InstrumentedStore, LocalStore, MemoryStore

MAX_SEQ = (1 << 56) - 1


@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryStore()
    return LocalStore(str(tmp_path / "db"), fsync=False)


def _write(store, ssts):
    readers = []
    for sst_id, data, info in ssts:
        store.put(sst_key(sst_id), data)
        readers.append(info)
    return readers


def _scan(readers, start=None, end=None):
    out = []
    for r in readers:
        for buf, offs in r.iter_range(start, end):
            out += read_run(buf, offs)
    return out


@pytest.mark.parametrize("compression", [None, "zstd", CompressionCodec.ZSTD])
def test_round_trip_get_and_scan(store, compression):
    recs = golden_records(2000)
    buf, offs = run_arrays(recs)
    ssts = build_ssts(buf, offs, target_bytes=20_000, block_size=1024, min_bloom_keys=100,
                      compression=compression, new_id=ids())
    assert len(ssts) >= 2
    infos = _write(store, ssts)
    cache = BlockCache(1 << 20)
    readers = [SstReader(store, sst_key(i.sst_id), block_cache=cache, size=i.size) for i in infos]
    assert [r.info for r in readers] == infos
    assert sum(i.num_entries for i in infos) == len(recs)
    # SSTs cover disjoint, ordered key ranges and all versions of a key stay together
    for a, b in zip(infos, infos[1:]):
        assert a.last_key < b.first_key
    assert _scan(readers) == recs
    keys = sorted({r[0] for r in recs})
    firsts = [i.first_key for i in infos]
    for key in keys[::7] + [b"user/", b"user/00001/\x02", b"zzz", b"\x00"]:
        j = max(0, bisect.bisect_right(firsts, key) - 1)
        assert readers[j].get(key) == model_get(recs, key)
        assert readers[j].get(key, max_seq=1_005) == model_get(recs, key, 1_005)
        assert readers[j].get(key, max_seq=0) == model_get(recs, key, 0)
    # a store that maps objects reads blocks from the mapping, others through the cache
    assert (cache.hits > 0) != (readers[0].mapped() is not None)
    # ranges: bounds inside, between and beyond keys
    for start, end in [(keys[10], keys[500]), (None, keys[3]), (keys[-5], None), (b"user/00100", b"user/00200"),
                       (keys[50], keys[50]), (b"a", b"b"), (b"\xff" * 21, None)]:
        expect = [r for r in recs if (start is None or r[0] >= start) and (end is None or r[0] < end)]
        assert _scan(readers, start, end) == expect, (start, end)


def test_reader_without_size_uses_head(store):
    recs = golden_records(50)
    ((sst_id, data, info),) = build_ssts(*run_arrays(recs), target_bytes=1 << 30, new_id=ids())
    store.put(sst_key(sst_id), data)
    r = SstReader(store, sst_key(sst_id))
    assert r.info == info and r.info.size == len(data)
    assert _scan([r]) == recs


def test_info_fields_and_bloom_threshold():
    recs = golden_records(400)
    buf, offs = run_arrays(recs)
    ((sid, data, info),) = build_ssts(buf, offs, target_bytes=1 << 30, min_bloom_keys=len(recs) + 1, new_id=ids())
    ((sid2, data2, info2),) = build_ssts(buf, offs, target_bytes=1 << 30, min_bloom_keys=len(recs), new_id=ids())
    assert len(data2) > len(data)  # the second has a bloom block
    assert isinstance(info, SstInfo) and info.sst_id == sid and info.size == len(data)
    assert info.first_key == recs[0][0] and info.last_key == recs[-1][0]
    assert info.num_entries == len(recs)
    assert info.min_seq == min(r[1] for r in recs) and info.max_seq == MAX_SEQ
    st_ = MemoryStore()
    st_.put(sst_key(sid2), data2)
    r = SstReader(st_, sst_key(sid2), size=len(data2))
    assert r.may_contain(recs[5][0])
    absent = [b"user/%05d/x" % i for i in range(2000)]
    fp = sum(r.may_contain(k) for k in absent) / len(absent)
    assert fp < 0.1


def test_empty_input_and_bad_arguments():
    assert build_ssts(np.zeros(0, np.uint8), np.zeros(0, np.int64), target_bytes=100) == []
    buf, offs = run_arrays([(b"a", 1, 1, b"x")])
    with pytest.raises(InvalidArgument):
        build_ssts(buf, offs, target_bytes=0)
    with pytest.raises(InvalidArgument):
        build_ssts(buf, offs, target_bytes=100, compression="lz77")
    unsorted = run_arrays([(b"b", 1, 1, b""), (b"a", 1, 1, b"")])
    with pytest.raises(InvalidArgument):
        build_ssts(*unsorted, target_bytes=100)


def test_versions_of_one_key_never_split_across_ssts():
    recs = sorted([(b"hot", s, 1, b"v" * 200) for s in range(1, 200)] + [(b"a%03d" % i, 5, 1, b"w" * 200) for i in range(50)]
                  + [(b"z%03d" % i, 5, 1, b"w" * 200) for i in range(50)], key=sort_key)
    ssts = build_ssts(*run_arrays(recs), target_bytes=4096, block_size=1024, new_id=ids())
    holders = [info for _, _, info in ssts if info.first_key <= b"hot" <= info.last_key]
    assert len(holders) == 1 and holders[0].num_entries >= 199


def test_read_ahead_fetches_several_blocks_per_get():
    recs = golden_records(3000)
    ((sid, data, info),) = build_ssts(*run_arrays(recs), target_bytes=1 << 30, block_size=1024, new_id=ids())
    inner = MemoryStore()
    inner.put(sst_key(sid), data)
    st_ = InstrumentedStore(inner)
    r = SstReader(st_, sst_key(sid), size=len(data), read_ahead_bytes=16 * 1024)
    opened = st_.snapshot()["get_range"].count
    assert opened == 1 or len(data) > 64 * 1024
    assert _scan([r]) == recs
    gets = st_.snapshot()["get_range"].count - opened
    assert r.num_blocks > 4 * gets


_keys = st.builds(lambda p, s: p + s, st.sampled_from([b"", b"\x00", b"\xff\xff", b"k/" * 20]), st.binary(min_size=1, max_size=12))


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_keys, st.integers(0, MAX_SEQ), st.sampled_from([0, 1]), st.binary(max_size=600)), max_size=150),
    st.sampled_from([1024, 4096]),
    st.sampled_from([None, "zstd"]),
    st.integers(500, 50_000),
    st.lists(_keys, max_size=6),
)
def test_property_round_trip(raw, block_size, compression, target, probes):
    seen = set()
    recs = []
    for k, s, kind, v in raw:
        if (k, s) not in seen:
            seen.add((k, s))
            recs.append((k, s, kind, v if kind else b""))
    recs.sort(key=sort_key)
    ssts = build_ssts(*run_arrays(recs), target_bytes=target, block_size=block_size, min_bloom_keys=10,
                      compression=compression, new_id=ids())
    store = MemoryStore()
    infos = _write(store, ssts)
    readers = [SstReader(store, sst_key(i.sst_id), size=i.size, read_ahead_bytes=3000) for i in infos]
    assert _scan(readers) == recs
    for key in probes + [r[0] for r in recs[:10]]:
        got = [r.get(key) for r in readers]
        got = [g for g in got if g is not None]
        assert (got[0] if got else None) == model_get(recs, key)
    if len(recs) > 2:
        lo, hi = sorted((recs[1][0], recs[-2][0]))
        assert _scan(readers, lo, hi) == [r for r in recs if lo <= r[0] < hi]


def test_key_hashes_from_dedupe_build_the_same_bytes():
    """The flush path hashes each key once (dedupe) and hands the hashes to
    build_ssts: the SSTs are byte-identical to those built by hashing again."""
    from shaledb.kernels.dedupe import dedupe_sorted

    recs = golden_records(3000)
    buf, offs = run_arrays(recs)
    kept, hashes = dedupe_sorted(buf, offs, key_hashes=True)
    kw = dict(target_bytes=16384, block_size=1024, min_bloom_keys=10)  # every SST gets a bloom filter
    plain = build_ssts(buf, kept, new_id=ids(), **kw)
    hashed = build_ssts(buf, kept, new_id=ids(), key_hashes=hashes, **kw)
    assert len(plain) > 1
    assert [(s, bytes(d)) for s, d, _ in plain] == [(s, bytes(d)) for s, d, _ in hashed]
    with pytest.raises(InvalidArgument, match="key_hashes"):
        build_ssts(buf, kept, target_bytes=16384, key_hashes=hashes[:-1])


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_compress_blocks_makes_what_the_block_compressor_makes(monkeypatch, threads):
    """``compress_blocks`` (every block of an SST in one zstd call, on
    threads) stores each block byte for byte as ``compressor`` does, in
    block order, whatever the thread count: SST bytes do not change."""
    pytest.importorskip("zstandard")
    from shaledb.sst import format as F

    monkeypatch.setattr(F, "ZSTD_THREADS", threads)
    rng = np.random.default_rng(threads)
    parts = [b"x", bytes(rng.integers(0, 256, 5000, dtype=np.uint8)), b"text " * 900, bytes(70_000)]
    parts += [bytes(rng.integers(97, 100, int(n), dtype=np.uint8)) for n in rng.integers(1, 4096, 200)]
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    starts = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=starts[1:])
    one = F.compressor(CompressionCodec.ZSTD)
    assert F.compress_blocks(data, starts, CompressionCodec.ZSTD) == [one(p) for p in parts]
    assert F.compress_blocks(data, starts, CompressionCodec.NONE) is None
    assert F.compress_blocks(data, starts[:1], CompressionCodec.ZSTD) == []


@pytest.mark.parametrize("threads", [1, 3])
def test_decompress_blocks_undoes_compress_blocks_and_names_a_bad_block(monkeypatch, threads):
    """``decompress_blocks`` (checksums in one kernel pass, frames in one
    zstd call) gives the raw blocks back to back with their starts, as one
    block at a time would; a damaged block is Corruption naming it."""
    pytest.importorskip("zstandard")
    from shaledb.errors import Corruption
    from shaledb.sst import format as F

    monkeypatch.setattr(F, "ZSTD_THREADS", threads)
    rng = np.random.default_rng(7)
    parts = [b"text " * int(n) for n in rng.integers(1, 2000, 60)] + [bytes(rng.integers(0, 256, 9000, dtype=np.uint8))]
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    starts = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=starts[1:])
    stored = F.compress_blocks(data, starts, CompressionCodec.ZSTD)
    packed = b"".join(stored)
    sstarts = np.zeros(len(stored) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in stored], out=sstarts[1:])
    raw, rstarts = F.decompress_blocks(packed, sstarts, CompressionCodec.ZSTD, lambda i: f"x: block {i}")
    assert raw.tobytes() == data.tobytes() and rstarts.tolist() == starts.tolist()
    for at, where in ((int(sstarts[17]) + 9, 17), (int(sstarts[40]) + 1, 40), (int(sstarts[3]), 3)):
        bad = bytearray(packed)
        bad[at] ^= 0x10
        with pytest.raises(Corruption, match=rf"x: block {where}\b"):
            F.decompress_blocks(bytes(bad), sstarts, CompressionCodec.ZSTD, lambda i: f"x: block {i}")
