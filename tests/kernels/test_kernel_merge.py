"""merge_runs against the reference (a stable sort of the concatenation)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernels_testlib import hsettings
from reference.merge import merge_offsets
from reference.sort import encode_run, sort_offsets

from shaledb.errors import InvalidArgument
from shaledb.format.record import MAX_SEQ
from shaledb.kernels.merge import merge_runs
from shaledb.kernels.sort import concat_runs

pytestmark = pytest.mark.nojit

key_st = st.one_of(
    st.binary(min_size=1, max_size=5),
    st.sampled_from([b"\x00", b"\xff", b"a", b"a\x00", b"p" * 64 + b"\x01", b"p" * 64]),
)
rec_st = st.tuples(key_st, st.one_of(st.integers(0, 9), st.just(MAX_SEQ)), st.integers(0, 1), st.binary(max_size=3))


@hsettings(120)
@given(st.lists(st.lists(rec_st, max_size=40), min_size=1, max_size=9))
def test_merge_matches_reference(runs):
    parts = []
    for r in runs:
        buf, offs = encode_run(r)
        parts.append((buf, np.array(sort_offsets(buf, offs), dtype=np.int64)))
    # concat_runs keeps each run's (sorted) order, so runs stay sorted in the joined buffer
    sizes = [len(o) for _, o in parts]
    buf, offs = concat_runs(parts)
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    got = merge_runs(buf, bounds, offs)
    assert got.tolist() == merge_offsets(buf, bounds.tolist(), offs)


def test_equal_records_come_from_lower_run_first():
    buf, offs = encode_run([(b"k", 1, 1, b"x"), (b"k", 1, 1, b"y"), (b"k", 1, 1, b"z")])
    got = merge_runs(buf, [0, 1, 2, 3], offs[::-1].copy())
    assert got.tolist() == offs[::-1].tolist()


def test_empty_runs_and_no_runs():
    buf, offs = encode_run([(b"a", 1, 1, b""), (b"b", 1, 1, b"")])
    assert merge_runs(buf, [0, 0, 2, 2], offs).tolist() == offs.tolist()
    assert merge_runs(buf, [0], np.empty(0, dtype=np.int64)).tolist() == []


@pytest.mark.parametrize("bounds", [[], [1, 2], [0, 1], [0, 2, 1, 2], [[0, 2]]])
def test_rejects_bad_bounds(bounds):
    buf, offs = encode_run([(b"a", 1, 1, b""), (b"b", 1, 1, b"")])
    with pytest.raises(InvalidArgument):
        merge_runs(buf, bounds, offs)


@pytest.mark.parametrize("bad", [[0, 1], [0, 10**6], [-8, 0], [0, 24, 40]])
def test_rejects_records_outside_buffer(bad):
    buf, _ = encode_run([(b"a", 1, 1, b""), (b"b", 0, 1, b"")])
    with pytest.raises(InvalidArgument):
        merge_runs(buf, [0, 1, len(bad)], np.array(bad, dtype=np.int64))
