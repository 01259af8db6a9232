"""WAL object codec: round trips, fences, golden bytes, corruption, truncation."""

from __future__ import annotations

import numpy as np
import pytest
from formats_testlib import run_arrays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference.block import make_run, read_run

from shaledb.errors import Corruption, InvalidArgument
from shaledb.format.keys import wal_key
from shaledb.storage import MemoryStore
from shaledb.format.wal import HEADER_SIZE, TRAILER_SIZE, decode_wal, encode_wal, is_fence, wal_info

MAX_SEQ = (1 << 56) - 1
NAME = wal_key(7)


def _batches():
    """Three batches in seq order (one seq per batch), keys unsorted."""
    recs = []
    for b, seq in enumerate((5, 6, MAX_SEQ)):
        for i in range(4 + b):
            kind = 0 if (i + b) % 3 == 0 else 1
            recs.append((b"k%d-%d" % (3 - b, i) + b"\xff" * b, seq, kind, b"" if kind == 0 else b"v" * (i * 7)))
    return recs


def test_round_trip_through_a_store():
    recs = _batches()
    data = encode_wal(*run_arrays(recs))
    store = MemoryStore()
    store.put(NAME, data)
    buf, offs = decode_wal(store.get(NAME), NAME)
    assert read_run(buf, offs) == recs
    info = wal_info(data, NAME)
    assert (info.count, info.min_seq, info.max_seq) == (len(recs), 5, MAX_SEQ)


def test_records_scattered_in_an_arena_are_gathered_in_offs_order():
    recs = _batches()
    buf, offs = make_run(recs)
    arena = np.frombuffer(b"\xaa" * 64 + buf + b"\xbb" * 8, np.uint8)
    order = np.array(offs[::-1], np.int64) + 64
    buf2, offs2 = decode_wal(encode_wal(arena, order), NAME)
    assert read_run(buf2, offs2) == recs[::-1]


def test_golden_bytes(golden):
    data = encode_wal(*run_arrays(_batches()))
    expected = golden("wal_v1_three_batches.wal", data)
    assert read_run(*decode_wal(expected, NAME)) == _batches()


def test_fence_and_empty_objects():
    assert is_fence(b"") and not is_fence(b"\x00")
    buf, offs = decode_wal(b"", NAME)
    assert len(offs) == 0
    empty = encode_wal(np.zeros(0, np.uint8), np.zeros(0, np.int64))
    assert len(empty) == HEADER_SIZE + TRAILER_SIZE and not is_fence(empty)
    assert len(decode_wal(empty, NAME)[1]) == 0


def test_bad_input_is_invalid_argument():
    buf, offs = run_arrays(_batches())
    with pytest.raises(InvalidArgument):
        encode_wal(buf, np.array([len(buf) - 4], np.int64))


def test_every_corrupted_byte_raises():
    data = encode_wal(*run_arrays(_batches()))
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x10
        with pytest.raises(Corruption, match=NAME):
            decode_wal(bytes(bad), NAME)


def test_truncated_or_extended_objects_raise():
    data = encode_wal(*run_arrays(_batches()))
    for n in range(1, len(data)):
        with pytest.raises(Corruption, match=NAME):
            decode_wal(data[:n], NAME)
    with pytest.raises(Corruption, match=NAME):
        decode_wal(data + b"\x00" * 8, NAME)


def test_consistent_checksums_over_bad_records_raise():
    """A body that is not records, sealed with correct checksums: still Corruption."""
    import struct

    import xxhash

    from shaledb.format.wal import MAGIC

    header = struct.pack("<8sHHI", MAGIC, 1, 0, 0)
    for body in (b"\x00" * 16, b"\x05\x00\x00\x00\xff\xff\xff\x7f" + b"\x00" * 8, b"\x01\x00\x00\x00" + b"\x00" * 4 + b"\x07" + b"\x00" * 15):
        tail = struct.pack("<QQQQQ", len(body), 1, 0, 0, xxhash.xxh64_intdigest(body))
        data = header + body + tail + struct.pack("<Q", xxhash.xxh64_intdigest(header + tail))
        with pytest.raises(Corruption, match=NAME):
            decode_wal(data, NAME)


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.integers(0, MAX_SEQ), st.sampled_from([0, 1]),
                          st.binary(max_size=300)), max_size=60))
def test_property_round_trip(recs):
    recs = [(k, s, kind, v if kind else b"") for k, s, kind, v in recs]
    buf, offs = decode_wal(encode_wal(*run_arrays(recs)), NAME)
    assert read_run(buf, offs) == recs
