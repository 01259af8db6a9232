"""Bloom filters: byte-equal to the reference, no false negatives, FP rate near theory."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernels_testlib import NOJIT, hsettings
from reference import bloom as ref
from reference.sort import encode_run

from shaledb.errors import Corruption, InvalidArgument
from shaledb.kernels.bloom import bloom_build, bloom_build_from_hashes, bloom_may_contain, bloom_probe
from shaledb.kernels.dedupe import dedupe_sorted
from shaledb.kernels.hashing import xxh64
from shaledb.kernels.sort import sort_records

pytestmark = pytest.mark.nojit

keys_st = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=40),
        st.sampled_from([b"\x00", b"\xff", b"\x00" * 9, b"\xff" * 33]),
        st.binary(min_size=1, max_size=10).map(lambda s: b"p" * 200 + s),
    ),
    max_size=60,
)


def _run(keys):
    return encode_run([(k, i, 1, b"v") for i, k in enumerate(keys)])


@hsettings(60)
@given(keys_st, st.sampled_from([1, 4, 10, 16.5, 64]))
def test_matches_reference_bytes(keys, bpk):
    buf, offs = _run(keys)
    filt = bloom_build(buf, offs, bpk)
    assert filt.tobytes() == ref.build(keys, bpk)
    for k in keys:
        assert bloom_may_contain(filt, k)


@hsettings(40)
@given(keys_st, st.lists(st.binary(max_size=20), max_size=20))
def test_probe_agrees_with_reference(keys, probes):
    buf, offs = _run(keys)
    filt = bloom_build(buf, offs, 6)
    raw = filt.tobytes()
    for p in probes + keys:
        assert bloom_may_contain(filt, p) == ref.may_contain(raw, p)
        assert bloom_may_contain(raw, p) == ref.may_contain(raw, p)


def test_empty_run_contains_nothing():
    buf, offs = encode_run([])
    filt = bloom_build(buf, offs)
    assert filt.shape[0] == 16 + 8
    assert not bloom_may_contain(filt, b"a")
    assert not bloom_may_contain(filt, b"")


@pytest.mark.parametrize("bpk", [5, 10, 16])
def test_no_false_negatives_and_fp_rate_near_theory(bpk):
    rng = random.Random(bpk)
    n = 20_000 if not NOJIT else 2_000
    keys = list({rng.randbytes(rng.randint(1, 24)) for _ in range(n)})
    buf, offs = encode_run([(k, 1, 1, b"") for k in keys])
    filt = bloom_build(buf, offs, bpk)
    assert all(bloom_may_contain(filt, k) for k in keys)
    present = set(keys)
    trials = 100_000 if not NOJIT else 5_000
    probe = np.frombuffer(b"".join(i.to_bytes(8, "little") + b"\x01" for i in range(trials)), dtype=np.uint8)
    fps = sum(
        bool(bloom_probe(filt, probe, 9 * i, 9)) for i in range(trials) if bytes(probe[9 * i : 9 * i + 9]) not in present
    )
    rate = fps / trials
    theory = ref.false_positive_rate(bpk)
    # binomial noise plus the small excess of 32-bit double hashing
    assert rate <= theory * 1.5 + 4 * (theory / trials) ** 0.5 + 1e-4, (rate, theory)
    if not NOJIT:
        assert rate >= theory * 0.5, (rate, theory)


def test_header_is_self_describing():
    buf, offs = _run([b"a", b"b", b"c"])
    filt = bloom_build(buf, offs, 10)
    assert filt[0] == 1 and filt[1] == 7
    assert int.from_bytes(filt[4:8].tobytes(), "little") == 3
    assert int.from_bytes(filt[8:16].tobytes(), "little") == 64
    assert xxh64(b"a") >= 0


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f[:10],
        lambda f: b"\x02" + f[1:],
        lambda f: f[:1] + b"\x00" + f[2:],
        lambda f: f[:1] + b"\x1f" + f[2:],
        lambda f: f[:-1],
        lambda f: f[:8] + (63).to_bytes(8, "little") + f[16:],
    ],
)
def test_malformed_filter_is_corruption(mutate):
    buf, offs = _run([b"a"])
    raw = bloom_build(buf, offs).tobytes()
    with pytest.raises(Corruption):
        bloom_may_contain(mutate(raw), b"a")


@pytest.mark.parametrize("bpk", [0, 0.5, 65, True, "10", None])
def test_rejects_bad_bits_per_key(bpk):
    buf, offs = _run([b"a"])
    with pytest.raises(InvalidArgument):
        bloom_build(buf, offs, bpk)


def test_rejects_offsets_outside_buffer():
    buf, offs = _run([b"a"])
    with pytest.raises(InvalidArgument):
        bloom_build(buf, np.array([8], dtype=np.int64))
    with pytest.raises(InvalidArgument):
        bloom_build(buf, np.array([3], dtype=np.int64))


@hsettings(60)
@given(
    st.lists(st.tuples(keys_st.filter(bool).map(lambda ks: ks[0]), st.integers(0, 50)), max_size=80),
    st.sampled_from([None, 0, 20]),
    st.sampled_from([1, 10, 16.5]),
)
def test_flush_path_hashes_once(recs, snapshot, bpk):
    """dedupe_sorted(key_hashes=True) returns the kept offsets unchanged and
    the XXH64 of each kept key; bloom_build_from_hashes over them is byte-equal
    to bloom_build over the kept records (the filter the reference builds)."""
    buf, offs = encode_run([(k, s, 1, b"v") for k, s in recs])
    ordered = sort_records(buf, offs)
    kept, hashes = dedupe_sorted(buf, ordered, snapshot, key_hashes=True)
    assert kept.tolist() == dedupe_sorted(buf, ordered, snapshot).tolist()
    assert hashes.dtype == np.uint64 and hashes.shape == kept.shape
    keys = [bytes(buf[o + 16 : o + 16 + int.from_bytes(buf[o : o + 4].tobytes(), "little")]) for o in kept.tolist()]
    assert hashes.tolist() == [xxh64(k) for k in keys]
    filt = bloom_build_from_hashes(hashes, bpk)
    assert filt.tobytes() == bloom_build(buf, kept, bpk).tobytes() == ref.build(keys, bpk)


def test_build_from_hashes_rejects_bad_input():
    with pytest.raises(InvalidArgument):
        bloom_build_from_hashes(np.zeros(3, dtype=np.int64))
    with pytest.raises(InvalidArgument):
        bloom_build_from_hashes([1, 2])
    with pytest.raises(InvalidArgument):
        bloom_build_from_hashes(np.zeros(3, dtype=np.uint64), 0)
    assert bloom_build_from_hashes(np.zeros(0, dtype=np.uint64)).tobytes() == ref.build([], 10)
