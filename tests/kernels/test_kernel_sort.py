"""sort_records and concat_runs against the reference sort."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernels_testlib import NOJIT, hsettings
from reference.sort import decode_run, encode_run, sort_key, sort_offsets

from shaledb.errors import InvalidArgument
from shaledb.format.record import MAX_SEQ
from shaledb.kernels import sort as sort_kernels
from shaledb.kernels.sort import concat_runs, sort_records

pytestmark = pytest.mark.nojit

MAX_KEY = 64 * 1024

short_key = st.binary(min_size=1, max_size=20)
key_st = st.one_of(
    short_key,
    st.sampled_from([b"\x00", b"\xff", b"\x00\x00", b"\xff" * 8, b"a", b"a\x00", b"ab"]),
    st.tuples(st.sampled_from([b"", b"shared-prefix/", b"x" * 300]), short_key).map(b"".join),
    st.builds(lambda n, tail: b"\x07" * n + tail, st.integers(0, 40), st.binary(max_size=3)).filter(bool),
)
seq_st = st.one_of(st.integers(0, 20), st.just(MAX_SEQ), st.integers(0, MAX_SEQ))
record_st = st.tuples(key_st, seq_st, st.integers(0, 1), st.binary(max_size=12))


def records_st(max_size=150):
    # duplicates: draw a pool of keys and reuse them
    return st.lists(key_st, min_size=1, max_size=12).flatmap(
        lambda pool: st.lists(
            st.tuples(st.sampled_from(pool) | key_st, seq_st, st.integers(0, 1), st.binary(max_size=12)),
            max_size=max_size,
        )
    )


@hsettings(150)
@given(records_st(), st.randoms(use_true_random=False))
def test_sort_matches_reference(records, rnd):
    buf, offs = encode_run(records, gap=rnd.choice([0, 8]))
    perm = list(range(len(records)))
    rnd.shuffle(perm)
    offs = offs[np.array(perm, dtype=np.int64)] if records else offs
    got = sort_records(buf, offs)
    assert got.dtype == np.int64
    assert got.tolist() == sort_offsets(buf, offs)


@hsettings(20)
@given(st.lists(st.tuples(st.integers(0, 3), seq_st), min_size=1, max_size=40))
def test_huge_keys_with_long_shared_prefixes(spec):
    base = bytes(range(256)) * (MAX_KEY // 256)
    keys = [base[: MAX_KEY - 3], base[: MAX_KEY // 2], base, base[:-1] + b"\xff"]
    records = [(keys[t][:MAX_KEY], s, 1, b"") for t, s in spec]
    buf, offs = encode_run(records)
    assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)


def test_many_records_exercise_radix_paths():
    rng = np.random.default_rng(3)
    prefixes = [b"", b"user/", b"user/0000000", b"\xff" * 20]
    records = []
    for i in range(3000):
        p = prefixes[int(rng.integers(len(prefixes)))]
        k = p + rng.integers(0, 4, int(rng.integers(0, 10)), dtype=np.uint8).tobytes()
        records.append((k or b"\x00", int(rng.integers(0, 50)), int(rng.integers(0, 2)), b""))
    buf, offs = encode_run(records)
    got = sort_records(buf, offs)
    assert got.tolist() == sort_offsets(buf, offs)
    assert decode_run(buf, got) == sorted(records, key=sort_key)


def test_empty_and_readonly():
    buf, offs = encode_run([])
    assert sort_records(buf, offs).shape == (0,)
    buf, offs = encode_run([(b"b", 1, 1, b""), (b"a", 1, 1, b"")])
    ro = np.frombuffer(buf.tobytes(), dtype=np.uint8)
    offs.setflags(write=False)
    assert sort_records(ro, offs).tolist() == [24, 0]
    assert sort_records(bytes(buf), [0, 24]).tolist() == [24, 0]


@hsettings(40)
@given(st.lists(records_st(30), max_size=4))
def test_concat_runs(runs):
    encoded = [encode_run(r) for r in runs]
    buf, offs = concat_runs(encoded)
    assert decode_run(buf, offs) == [rec for r in runs for rec in r]
    assert all(o % 8 == 0 for o in offs.tolist())


def test_concat_runs_pads_unaligned_buffers():
    b1, o1 = encode_run([(b"k", 1, 1, b"v")])
    b1 = np.concatenate([b1, np.zeros(3, dtype=np.uint8)])  # length not a multiple of 8
    b2, o2 = encode_run([(b"j", 2, 0, b"")])
    buf, offs = concat_runs([(b1, o1), (b2, o2)])
    assert offs.tolist() == [0, 32]
    assert decode_run(buf, offs) == [(b"k", 1, 1, b"v"), (b"j", 2, 0, b"")]


@pytest.mark.parametrize("bad", [[1], [-8], [10**6], [0, 4]])
def test_rejects_bad_offsets(bad):
    buf, _ = encode_run([(b"a", 1, 1, b"")])
    with pytest.raises(InvalidArgument):
        sort_records(buf, np.array(bad, dtype=np.int64))


def test_rejects_bad_types():
    with pytest.raises(InvalidArgument):
        sort_records(np.zeros(8, dtype=np.int32), [0])
    with pytest.raises(InvalidArgument):
        sort_records(np.zeros(24, dtype=np.uint8), np.zeros((1, 1), dtype=np.int64))
    with pytest.raises(InvalidArgument):
        sort_records(np.zeros(24, dtype=np.uint8), ["x"])


@pytest.mark.parametrize("seed", [1, 2])
def test_large_segments_take_every_path(seed):
    """Enough records sharing prefixes to reach the radix, merge and
    re-visit (beyond the cached 21 bytes) paths, plus long runs of versions."""
    rng = np.random.default_rng(seed)
    n = 2600 if NOJIT else 6000  # 40 % share a prefix: large segments, radix passes
    records = []
    for i in range(n):
        r = rng.random()
        if r < 0.4:
            key = b"shared/prefix/" + rng.integers(48, 52, int(rng.integers(0, 30)), dtype=np.uint8).tobytes()
        elif r < 0.55:
            key = b"x" * 25 + rng.integers(0, 3, int(rng.integers(1, 6)), dtype=np.uint8).tobytes()
        elif r < 0.65:
            key = b"hot-key"  # a long run of versions of one key
        else:
            key = rng.integers(0, 256, int(rng.integers(1, 12)), dtype=np.uint8).tobytes()
        seq = int(rng.integers(0, 40)) if r < 0.65 else int(rng.integers(0, MAX_SEQ))
        records.append((key, seq, int(rng.integers(0, 2)), b""))
    buf, offs = encode_run(records)
    got = sort_records(buf, offs)
    assert got.tolist() == sort_offsets(buf, offs)


def test_empty_keys_sort_first():
    # the engine never writes an empty key, but the kernels order one correctly
    records = [(b"a", 1, 1, b""), (b"", 2, 1, b"x"), (b"\x00", 1, 0, b""), (b"", 5, 0, b"")]
    buf, offs = encode_run(records)
    assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)


def test_deep_shared_prefixes_refill_cached_words():
    """Segments that tie past several sets of cached words (prefixes of 30-70
    bytes, then a few symbols), large and small, with duplicates."""
    rng = np.random.default_rng(5)
    n = 1500 if NOJIT else 5000
    prefixes = [b"p" * 30, b"p" * 44 + b"/", b"q" * 70]
    records = []
    for _ in range(n):
        key = prefixes[int(rng.integers(3))] + rng.integers(48, 51, int(rng.integers(0, 12)), dtype=np.uint8).tobytes()
        records.append((key, int(rng.integers(0, 1000)), int(rng.integers(0, 2)), b""))
    buf, offs = encode_run(records)
    assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)


@pytest.mark.parametrize("tail", [b"", b"a", b"ab", b"b"])
def test_first_level_pairs(tail):
    """Exactly two records tying on the first level: ordered by their cached
    words, key bytes past the cache, or trailers."""
    p = b"k" * 30
    records = [(p + b"b", 3, 1, b""), (p + tail, 7, 0, b""), (b"other", 1, 1, b""), (b"\x00", 2, 1, b"")]
    for recs in (records, records[::-1]):
        buf, offs = encode_run(recs)
        assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)
    same = [(b"s" * 9, 5, 1, b""), (b"s" * 9, 9, 1, b""), (b"t", 1, 1, b"")]
    for recs in (same, same[::-1]):
        buf, offs = encode_run(recs)
        assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)


@hsettings(25)
@given(
    st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=6),
    st.sampled_from([b"0123456789", b"\x00\x01", b"ab", bytes(range(256))]),
    st.integers(0, 2**32 - 1),
)
def test_prefixed_segments_match_reference(prefixes, alphabet, seed):
    """Hundreds of records per shared prefix (the long-segment path: packed
    keys after the common prefix), with keys that are prefixes of each other,
    equal keys, 1-byte keys and a few 64 KiB keys in the same segments."""
    rng = np.random.default_rng(seed)
    n = 200 if NOJIT else 2500
    alpha = np.frombuffer(alphabet, dtype=np.uint8)
    long_tail = bytes(range(256)) * 255
    records = []
    for _ in range(n):
        p = prefixes[int(rng.integers(len(prefixes)))]
        r = rng.random()
        if r < 0.02:
            key = (p + long_tail)[: MAX_KEY - int(rng.integers(0, 3))]
        elif r < 0.07:
            key = bytes([alphabet[int(rng.integers(len(alphabet)))]])
        elif r < 0.12:
            key = p[: int(rng.integers(0, len(p) + 1))] or b"\x00"
        else:
            key = p + rng.choice(alpha, int(rng.integers(0, 12))).tobytes()
        records.append((key or b"\x00", int(rng.integers(0, 30)), int(rng.integers(0, 2)), b""))
    buf, offs = encode_run(records)
    assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)


@hsettings(60)
@given(
    st.lists(
        st.lists(st.integers(0, 2**64 - 1), min_size=3, max_size=3).map(tuple),
        min_size=2,
        max_size=40,
    ),
    st.integers(1, 62),
    st.sampled_from([0, 0x0F0F0F0F0F0F0F0F, 0xFFFFFFFFFFFFFF00, 0xF0F0F0F0F0F0F0F0]),
)
def test_varying_bits_pack_in_key_order(rows, ibits, shared):
    """Packing only the bits that vary between rows keeps their order: a
    smaller packed value means a smaller row, equal rows pack alike, and
    rows that fit in the packed bits pack equal only when equal."""
    keep = np.uint64(~shared & (2**64 - 1))
    words = np.array(rows, dtype=np.uint64) & keep  # some bits constant in every row
    words |= np.uint64(shared) & np.uint64(0x5A5A5A5A5A5A5A5A)
    vm = np.bitwise_or.reduce(words, axis=0) ^ np.bitwise_and.reduce(words, axis=0)
    runs = np.empty((64, 4), dtype=np.uint64)
    nr, total = sort_kernels._varying_runs(vm, np.arange(3), 64 - ibits, runs)
    assert total == min(64 - ibits, sum(bin(int(m)).count("1") for m in vm))
    packed = [int(sort_kernels._packed_bits(words, i, runs, nr, 64 - total)) for i in range(len(rows))]
    as_rows = [tuple(int(x) for x in r) for r in words]
    for a in range(len(rows)):
        for b in range(len(rows)):
            if packed[a] < packed[b]:
                assert as_rows[a] < as_rows[b]
            if as_rows[a] == as_rows[b]:
                assert packed[a] == packed[b]
            if total < 64 - ibits and packed[a] == packed[b]:
                assert as_rows[a] == as_rows[b]


def test_first_level_repacks_when_the_sample_misses_a_varying_bit():
    """The first level plans its packing from a sample of records; a key
    byte that varies only outside the sample makes it pack again."""
    n = 3 * 4096
    keys = [b"same/prefix/%06d" % (i % 97) for i in range(n)]
    keys[1] = b"same/prefix/000000" + b"\x01"  # index 1: between sampled records
    keys[n - 2] = b"same/prefiy/000001"
    records = [(k, i, i % 2, b"") for i, k in enumerate(keys)]
    buf, offs = encode_run(records)
    assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)


@pytest.mark.parametrize("seed", [3, 4])
def test_common_first_words_become_codes(seed):
    """Most keys under one or two 7-byte heads, the rest starting with bytes
    below, between and above them (digits, ``tenant.``, ``tenanu``, short
    keys): the first level codes the first word, and the order holds."""
    rng = np.random.default_rng(seed)
    n = 1500 if NOJIT else 12000
    heads = [b"tenant/", b"tenant/0", b"user/00"]
    others = [b"", b"0", b"tenant", b"tenant.", b"tenant/\x00", b"tenanu", b"zz", b"tenant0"]
    records = []
    for _ in range(n):
        r = rng.random()
        if r < 0.8:
            key = heads[int(rng.integers(0, 3))] + b"%04d/" % int(rng.integers(0, 40))
            key += rng.integers(48, 58, int(rng.integers(0, 30)), dtype=np.uint8).tobytes()
        else:
            key = others[int(rng.integers(0, len(others)))] + rng.integers(46, 60, int(rng.integers(0, 6)), dtype=np.uint8).tobytes()
        records.append((key or b"\x00", int(rng.integers(0, 50)), int(rng.integers(0, 2)), b""))
    buf, offs = encode_run(records)
    assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)
    words = np.array([sort_kernels._chunk_word(buf, int(o), 0) for o in offs], dtype=np.uint64)
    vm0 = np.bitwise_or.reduce(words) ^ np.bitwise_and.reduce(words)
    common = sort_kernels._common_words(words, len(words), vm0)
    assert 1 <= len(common) <= 3  # the heads' first words (7 bytes)
    codes = [int(sort_kernels._first_code(common, w)) for w in np.sort(words)]
    assert codes == sorted(codes)


def _mixed_run(seed: int, n: int):
    """Records with shared prefixes, ties and duplicates (every path of the sort)."""
    rng = np.random.default_rng(seed)
    heads = [b"tenant/%04d/" % i + b"x" * int(rng.integers(0, 20)) for i in range(8)]
    records = []
    for _ in range(n):
        key = heads[int(rng.integers(0, 8))] + rng.integers(48, 52, int(rng.integers(0, 12)), dtype=np.uint8).tobytes()
        records.append((key, int(rng.integers(0, 1000)), int(rng.integers(0, 2)), b"v"))
    return encode_run(records)


def test_kept_scratch_is_reused_and_bounded():
    scale = 20 if NOJIT else 1  # the no-jit pass interprets every kernel
    runs = [_mixed_run(s, n // scale) for s, n in ((1, 3000), (2, 500), (3, 5000))]
    try:
        sort_kernels.keep_scratch(64 << 20)
        for buf, offs in runs + runs:  # smaller after larger: the kept buffer is reused, grown when short
            assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)
        kept = sort_kernels._scratch_buf
        assert kept is not None and kept.shape[0] <= 64 << 20
        buf, offs = runs[2]
        sort_records(buf, offs)
        assert sort_kernels._scratch_buf is kept  # large enough already: not reallocated
        sort_kernels.keep_scratch(1024)  # below what any of these needs: freed, and not kept again
        assert sort_kernels._scratch_buf is None
        assert sort_records(buf, offs).tolist() == sort_offsets(buf, offs)
        assert sort_kernels._scratch_buf is None
    finally:
        sort_kernels.keep_scratch(0)
    assert sort_kernels._scratch_buf is None


def test_kept_scratch_with_concurrent_sorts():
    """Threads sorting at once: one uses the kept buffer, the others their own."""
    import threading

    runs = [_mixed_run(s, 200 if NOJIT else 4000) for s in range(4)]
    want = [sort_offsets(b, o) for b, o in runs]
    errors = []

    def work(i):
        try:
            for _ in range(5):
                b, o = runs[i]
                if sort_records(b, o).tolist() != want[i]:
                    errors.append(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    sort_kernels.keep_scratch(64 << 20)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    finally:
        sort_kernels.keep_scratch(0)
    assert errors == []


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_keep_scratch_rejects_bad_bounds(bad):
    with pytest.raises(InvalidArgument):
        sort_kernels.keep_scratch(bad)
