"""kernels.pack.pack_records against format.record.encode_record (the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from shaledb.errors import InvalidArgument
from shaledb.format.record import KIND_PUT, encode_record
from shaledb.kernels.pack import pack_records


def _cols(items):
    offs = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in items], out=offs[1:])
    return np.frombuffer(b"".join(items), np.uint8), offs


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=70)), max_size=40),
       st.integers(0, 1 << 40))
def test_matches_the_reference(pairs, first_seq):
    keys = [k for k, _ in pairs]
    values = [v for _, v in pairs]
    buf, offs = pack_records(*_cols(keys), *_cols(values), first_seq)
    want = [encode_record(k, v, first_seq + i, KIND_PUT) for i, (k, v) in enumerate(pairs)]
    assert buf.tobytes() == b"".join(want)
    assert offs.tolist() == np.cumsum([0] + [len(r) for r in want])[:-1].tolist()


def test_refuses_bad_input():
    with pytest.raises(InvalidArgument):
        pack_records(*_cols([b""]), *_cols([b"v"]), 1)
    with pytest.raises(InvalidArgument):
        pack_records(*_cols([b"a", b"b"]), *_cols([b"v"]), 1)
    with pytest.raises(InvalidArgument):
        pack_records(*_cols([b"a"]), *_cols([b"v"]), 1 << 56)
