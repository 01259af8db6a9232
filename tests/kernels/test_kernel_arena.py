"""Arena kernels against the plain-Python model in tests/reference/arena.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.arena import ref_append, ref_init, ref_lookup, ref_record_offsets

from shaledb.kernels import arena as A
from shaledb.format.record import MAX_SEQ

pytestmark = pytest.mark.nojit


def _pack(records):
    keys = np.frombuffer(b"".join(k for k, _, _ in records), dtype=np.uint8)
    values = np.frombuffer(b"".join(v for _, v, _ in records), dtype=np.uint8)
    ko = np.zeros(len(records) + 1, dtype=np.int64)
    vo = np.zeros(len(records) + 1, dtype=np.int64)
    ko[1:] = np.cumsum([len(k) for k, _, _ in records])
    vo[1:] = np.cumsum([len(v) for _, v, _ in records])
    kinds = np.array([kind for _, _, kind in records], dtype=np.uint8)
    return keys, ko, values, vo, kinds


_key = st.one_of(
    st.sampled_from([b"a", b"ab", b"abc", b"\x00", b"\xff", b"\x00\x00", b"k" * 40]),
    st.binary(min_size=1, max_size=12),
    st.binary(min_size=200, max_size=600),
)
_record = st.tuples(_key, st.binary(max_size=80), st.sampled_from([0, 1]))
_batches = st.lists(st.lists(_record, min_size=1, max_size=12), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    batches=_batches,
    size=st.sampled_from([2048, 4096, 16384]),
    slots=st.sampled_from([16, 64]),
    seq0=st.sampled_from([0, 1, MAX_SEQ - 1000]),
)
def test_append_matches_reference_byte_for_byte(batches, size, slots, seq0):
    arena = np.zeros(size, dtype=np.uint8)
    A.arena_init(arena, slots)
    ref = ref_init(size, slots)
    assert arena.tobytes() == bytes(ref)
    seq = seq0
    boundaries = [A.arena_committed(arena)]
    for batch in batches:
        n = A.arena_append(arena, *_pack(batch), seq)
        assert n == ref_append(ref, batch, seq)
        assert n in (0, len(batch))
        assert arena.tobytes() == bytes(ref)
        seq += n
        boundaries.append(A.arena_committed(arena))
    for k in {k for b in batches for k, _, _ in b} | {b"zz-absent"}:
        assert A.arena_lookup(arena, k) == ref_lookup(ref, k)
    for start in boundaries:
        assert A.arena_record_offsets(arena, start).tolist() == ref_record_offsets(ref, start)
    offs = A.arena_record_offsets(arena)
    assert len(offs) == A.arena_header(arena)["record_count"]


def test_whole_batch_or_nothing_and_index_limit():
    arena = np.zeros(4096, dtype=np.uint8)
    A.arena_init(arena, 16)  # at most 12 distinct keys
    recs = [(b"k%02d" % i, b"", 1) for i in range(13)]
    assert A.arena_append(arena, *_pack(recs), 1) == 0
    assert A.arena_header(arena)["record_count"] == 0
    assert A.arena_append(arena, *_pack(recs[:12]), 1) == 12
    big = [(b"x", bytes(4096), 1)]
    assert A.arena_append(arena, *_pack(big), 100) == 0


def test_newest_wins_and_tombstones():
    arena = np.zeros(8192, dtype=np.uint8)
    A.arena_init(arena)
    A.arena_append(arena, *_pack([(b"k", b"v1", 1), (b"k", b"v2", 1)]), 10)
    found, kind, seq, vs, vl = A.arena_lookup(arena, b"k")
    assert (found, kind, seq, arena[vs : vs + vl].tobytes()) == (True, 1, 11, b"v2")
    A.arena_append(arena, *_pack([(b"k", b"", 0)]), 12)
    assert A.arena_lookup(arena, b"k")[:3] == (True, 0, 12)
    assert A.arena_lookup(arena, b"") == (False, 0, 0, 0, 0)


def test_counted_append_reserves_seqs_only_when_it_fits():
    arena = np.zeros(4096, dtype=np.uint8)
    A.arena_init(arena, 16)
    counter = np.array([7], dtype=np.uint64)
    assert A.arena_append_counted(arena, *_pack([(b"a", b"1", 1), (b"b", b"2", 1)]), counter) == (2, 7)
    assert int(counter[0]) == 9
    assert A.arena_append_counted(arena, *_pack([(b"c", bytes(5000), 1)]), counter) == (0, 9)
    assert int(counter[0]) == 9
    assert A.arena_lookup(arena, b"b")[2] == 8


def test_init_recycles_and_bumps_incarnation():
    arena = np.zeros(4096, dtype=np.uint8)
    A.arena_init(arena, 16, generation=3)
    assert A.arena_header(arena)["incarnation"] == 1
    A.arena_append(arena, *_pack([(b"a", b"1", 1)]), 1)
    A.arena_init(arena, 16, generation=4)
    h = A.arena_header(arena)
    assert (h["incarnation"], h["generation"], h["record_count"]) == (2, 4, 0)
    assert not A.arena_lookup(arena, b"a")[0]
    assert A.arena_record_offsets(arena).size == 0


@pytest.mark.skipif(
    os.environ.get("NUMBA_DISABLE_JIT", "0") in ("", "0"),
    reason="needs the kernel body as Python (the NUMBA_DISABLE_JIT pass runs it)",
)
def test_lookup_overlapping_an_append_finds_the_key(monkeypatch):
    """Regression: a lookup that read ``committed`` before an append and the
    key's index slot after it (the slot then points past the ``committed`` it
    read) used to report the key absent from the arena."""
    arena = np.zeros(64 << 10, dtype=np.uint8)
    A.arena_init(arena, 64)
    A.arena_append(arena, *_pack([(b"k", b"v1", 1), (b"x", b"1", 1)]), 1)
    hash_fn = A._xxh64

    def hash_then_append(*args):  # runs after _lookup read committed
        monkeypatch.setattr(A, "_xxh64", hash_fn)
        assert A.arena_append(arena, *_pack([(b"k", b"v2", 1)]), 3) == 1
        return hash_fn(*args)

    monkeypatch.setattr(A, "_xxh64", hash_then_append)
    found, kind, seq, vs, vl = A.arena_lookup(arena, b"k")
    assert A._xxh64 is hash_fn  # the append did overlap the lookup
    assert found and seq == 3 and bytes(arena[vs : vs + vl]) == b"v2"


def test_bad_arguments():
    arena = np.zeros(4096, dtype=np.uint8)
    with pytest.raises(ValueError):
        A.arena_init(arena, 24)
    with pytest.raises(ValueError):
        A.arena_init(np.zeros(256, dtype=np.uint8), 64)
    with pytest.raises(TypeError):
        A.arena_init(np.zeros(4096, dtype=np.int64))
    A.arena_init(arena, 16)
    keys, ko, values, vo, kinds = _pack([(b"a", b"1", 1)])
    with pytest.raises(ValueError):  # empty key
        A.arena_append(arena, keys, np.array([0, 0], dtype=np.int64), values, vo, kinds, 1)
    with pytest.raises(ValueError):
        A.arena_append(arena, keys, ko, values, vo, np.array([7], dtype=np.uint8), 1)
    with pytest.raises(TypeError):
        A.arena_append(arena, keys, ko.astype(np.int32), values, vo, kinds, 1)
    with pytest.raises(ValueError):
        A.arena_append(arena, keys, ko, values, vo, kinds, MAX_SEQ + 1)
    with pytest.raises(ValueError):
        A.arena_append(np.zeros(4096, dtype=np.uint8), keys, ko, values, vo, kinds, 1)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 8, 31, 32, 33, 64, 100, 257])
def test_hash_matches_xxhash(n):
    rng = np.random.default_rng(n)
    buf = rng.integers(0, 256, n + 5, dtype=np.uint8)
    for seed in (0, 1, 2**64 - 1):
        got = int(A._xxh64(buf, 5, n, np.uint64(seed)))
        assert got == xxhash.xxh64_intdigest(buf[5:].tobytes(), seed)


def test_record_offsets_walks_whole_records_only():
    """``record_offsets`` (one walk into an array of one slot per header's
    worth of bytes) against a plain walk: a record cut by ``end`` is left
    out, and a range of header-only (bogus: empty key) records, the most a
    byte range can hold, fits its array."""
    import struct

    def plain(buf, start, end):
        out, pos = [], start
        while pos + 16 <= end:
            kl, vl = struct.unpack_from("<II", buf, pos)
            nxt = (pos + 16 + kl + vl + 7) & ~7
            if nxt > end:
                break
            out.append(pos)
            pos = nxt
        return out

    rec = lambda k, v: (struct.pack("<IIQ", len(k), len(v), 7 << 8 | 1) + k + v).ljust(-(-(16 + len(k) + len(v)) // 8) * 8, b"\0")
    good = np.frombuffer(b"".join(rec(b"k%d" % i, b"v" * (i % 40)) for i in range(500)), dtype=np.uint8)
    for end in (good.shape[0], good.shape[0] - 3, 24):
        assert A.record_offsets(good, 0, end).tolist() == plain(good, 0, end)
    assert len(plain(good, 0, good.shape[0])) == 500
    bogus = np.frombuffer(rec(b"", b"") * 100, dtype=np.uint8)  # 16-byte records
    assert A.record_offsets(bogus, 0, bogus.shape[0]).tolist() == plain(bogus, 0, 1600) == list(range(0, 1600, 16))
