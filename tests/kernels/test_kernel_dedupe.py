"""dedupe_sorted against the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernels_testlib import hsettings
from reference.dedupe import dedupe_offsets
from reference.sort import decode_run, encode_run, sort_offsets

from shaledb.errors import InvalidArgument
from shaledb.kernels.dedupe import dedupe_sorted
from shaledb.format.record import MAX_SEQ

pytestmark = pytest.mark.nojit

key_st = st.one_of(
    st.binary(min_size=1, max_size=6),
    st.sampled_from([b"\x00", b"\xff", b"\x00\x00", b"k" * 100, b"k" * 101]),
)
seq_st = st.one_of(st.integers(0, 30), st.just(MAX_SEQ), st.just(MAX_SEQ - 1))
records_st = st.lists(key_st, min_size=1, max_size=6).flatmap(
    lambda pool: st.lists(st.tuples(st.sampled_from(pool), seq_st, st.integers(0, 1), st.binary(max_size=4)), max_size=80)
)
snap_st = st.one_of(st.none(), st.integers(0, 32), st.just(MAX_SEQ), st.just(0))


@hsettings(150)
@given(records_st, snap_st)
def test_dedupe_matches_reference(records, snapshot):
    buf, offs = encode_run(records)
    ordered = np.array(sort_offsets(buf, offs), dtype=np.int64)
    got = dedupe_sorted(buf, ordered, snapshot)
    assert got.tolist() == dedupe_offsets(buf, ordered, snapshot)


def test_keeps_tombstones_and_newest():
    recs = [(b"a", 5, 0, b""), (b"a", 3, 1, b"old"), (b"b", 2, 1, b"x"), (b"b", 1, 0, b"")]
    buf, offs = encode_run(recs)
    assert decode_run(buf, dedupe_sorted(buf, offs)) == [recs[0], recs[2]]


def test_snapshot_keeps_newer_versions_and_the_visible_one():
    recs = [(b"a", 9, 1, b"9"), (b"a", 7, 1, b"7"), (b"a", 4, 0, b""), (b"a", 2, 1, b"2"), (b"b", 3, 1, b"3")]
    buf, offs = encode_run(recs)
    assert decode_run(buf, dedupe_sorted(buf, offs, 5)) == [recs[0], recs[1], recs[2], recs[4]]
    assert decode_run(buf, dedupe_sorted(buf, offs, 100)) == [recs[0], recs[4]]
    assert decode_run(buf, dedupe_sorted(buf, offs, 0)) == [recs[0], recs[1], recs[2], recs[3], recs[4]]


def test_empty():
    buf, offs = encode_run([])
    assert dedupe_sorted(buf, offs).shape == (0,)


@pytest.mark.parametrize("snap", [-1, MAX_SEQ + 1, 1.5, True, "3"])
def test_rejects_bad_snapshot(snap):
    buf, offs = encode_run([(b"a", 1, 1, b"")])
    with pytest.raises(InvalidArgument):
        dedupe_sorted(buf, offs, snap)


@pytest.mark.parametrize("bad", [[0, 1], [0, 10**6], [-8], [0, 24, 40]])
def test_rejects_records_outside_buffer(bad):
    buf, _ = encode_run([(b"a", 1, 1, b""), (b"a", 0, 1, b"")])
    with pytest.raises(InvalidArgument):
        dedupe_sorted(buf, np.array(bad, dtype=np.int64))
