"""Block encode/decode/seek kernels against the plain-Python reference."""

from __future__ import annotations

import bisect
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernels_testlib import NOJIT, hsettings
from reference.block import decode_block_ref, encode_blocks_ref, make_run, read_run, sort_key

from shaledb.errors import Corruption, InvalidArgument
from shaledb.kernels.block import (
    block_checksum_ok,
    block_get,
    decode_block,
    decode_block_range,
    decode_blocks_range,
    encode_blocks,
    gather_records,
    index_separators,
    scan_records,
    seek_block,
    seq_range,
)

pytestmark = pytest.mark.nojit

MAX_SEQ = (1 << 56) - 1

_prefixes = st.sampled_from([b"", b"\x00", b"\xff", b"user/", b"p" * 300, b"\x00" * 40, b"\xff" * 40])
_keys = st.builds(lambda p, s: p + s, _prefixes, st.binary(min_size=1, max_size=24))
_seqs = st.one_of(st.integers(0, 1000), st.just(MAX_SEQ), st.integers(0, MAX_SEQ))
_values = st.one_of(st.binary(max_size=40), st.binary(min_size=0, max_size=300 if NOJIT else 3000))
RUN_SIZE = 25 if NOJIT else 120


@st.composite
def runs(draw, max_size=RUN_SIZE):
    """Sorted records, possibly several versions of a key (distinct trailers)."""
    raw = draw(
        st.lists(st.tuples(_keys, _seqs, st.sampled_from([0, 1]), _values), max_size=max_size)
    )
    seen = set()
    recs = []
    for key, seq, kind, value in raw:
        if (key, seq) in seen:
            continue
        seen.add((key, seq))
        recs.append((key, seq, kind, b"" if kind == 0 else value))
    recs.sort(key=sort_key)
    return recs


def _encode(recs, block_size, interval):
    buf, offs = make_run(recs)
    return encode_blocks(np.frombuffer(buf, np.uint8), np.array(offs, dtype=np.int64), block_size, interval)


@hsettings(120)
@given(runs(), st.sampled_from([1, 16]), st.sampled_from([1024, 4096, 65536]))
def test_encode_matches_reference_byte_for_byte(recs, interval, block_size):
    enc = _encode(recs, block_size, interval)
    blocks, spans = encode_blocks_ref(recs, block_size, interval)
    assert enc.num_blocks == len(blocks)
    for i, expect in enumerate(blocks):
        assert enc.block(i).tobytes() == expect, i
        assert (int(enc.first_idx[i]), int(enc.last_idx[i])) == spans[i]
    assert enc.data.tobytes() == b"".join(blocks)
    # decode round trip, block by block
    out = []
    for i in range(enc.num_blocks):
        blk = enc.block(i)
        assert block_checksum_ok(blk)
        assert len(blk) <= block_size or spans[i][0] == spans[i][1]
        b, o = decode_block(blk)
        assert read_run(b, o) == decode_block_ref(blk)
        out += read_run(b, o)
    assert out == recs


@hsettings(80)
@given(runs(), st.sampled_from([1, 16]), st.sampled_from([1024, 4096]), st.data())
def test_seek_and_get(recs, interval, block_size, data):
    enc = _encode(recs, block_size, interval)
    probes = [r[0] for r in recs[:5]] + [data.draw(_keys) for _ in range(2 if NOJIT else 5)]
    probes += [r[0] + b"\x00" for r in recs[:3]] + [r[0][:-1] for r in recs[:3] if len(r[0]) > 1]
    for i in range(enc.num_blocks):
        blk = enc.block(i)
        in_block = recs[enc.first_idx[i] : enc.last_idx[i] + 1]
        keys = [r[0] for r in in_block]
        for probe in probes:
            b, o = seek_block(blk, probe)
            assert read_run(b, o) == in_block[bisect.bisect_left(keys, probe) :]
            hit = next((r for r in in_block if r[0] == probe), None)
            got = block_get(blk, probe)
            if hit is None:
                assert got is None
            else:
                assert got == (hit[2], hit[1], hit[3] if hit[2] == 1 else None)
            hi = probe + b"\x01"
            b, o = decode_block_range(blk, probe, hi)
            assert read_run(b, o) == [r for r in in_block if probe <= r[0] < hi]
            b, o = decode_block_range(blk, None, probe)
            assert read_run(b, o) == [r for r in in_block if r[0] < probe]


def test_huge_entries_get_a_block_each():
    recs = [(b"k%03d" % i + b"x" * 5000, MAX_SEQ - i, 1, bytes([i]) * 70000) for i in range(4)]
    enc = _encode(recs, 1024, 16)
    assert enc.num_blocks == 4
    assert list(enc.first_idx) == list(enc.last_idx) == [0, 1, 2, 3]
    for i in range(4):
        b, o = decode_block(enc.block(i))
        assert read_run(b, o) == [recs[i]]
        assert block_get(enc.block(i), recs[i][0]) == (1, recs[i][1], recs[i][3])


def test_empty_input_gives_no_blocks():
    enc = encode_blocks(np.zeros(0, np.uint8), np.zeros(0, np.int64))
    assert enc.num_blocks == 0 and enc.data.size == 0 and list(enc.block_starts) == [0]


def test_unsorted_or_out_of_bounds_input_is_rejected():
    buf, offs = make_run([(b"b", 1, 1, b""), (b"a", 1, 1, b"")])
    with pytest.raises(InvalidArgument):
        encode_blocks(np.frombuffer(buf, np.uint8), np.array(offs, np.int64))
    buf, offs = make_run([(b"a", 1, 1, b""), (b"a", 2, 1, b"")])  # same key, older first
    with pytest.raises(InvalidArgument):
        encode_blocks(np.frombuffer(buf, np.uint8), np.array(offs, np.int64))
    with pytest.raises(InvalidArgument):
        encode_blocks(np.frombuffer(buf, np.uint8), np.array([len(buf) - 8], np.int64))
    with pytest.raises(InvalidArgument):
        encode_blocks(np.frombuffer(buf, np.uint8), np.array(offs, np.int64), block_size=10)


def test_overlapping_records_still_fit_the_output():
    """Offsets whose records overlap in buf (headers 8 bytes apart, values
    running over each other) need far more output than len(buf): the wrapper
    must fall back to the exact bound, never write past its buffer."""
    n = 60
    buf = np.zeros(8 * n + 16 + 1 + 1000, np.uint8)
    for i in range(n):
        buf[8 * i : 8 * i + 4] = np.frombuffer((1).to_bytes(4, "little"), np.uint8)
        buf[8 * i + 4 : 8 * i + 8] = np.frombuffer((1000 - i).to_bytes(4, "little"), np.uint8)
    # record i: key b"\x01", trailer = header i+1 read as u64 (descending), value 1000-i bytes
    offs = np.arange(n - 2, dtype=np.int64) * 8
    assert sum(1000 - i for i in range(n - 2)) > buf.shape[0] + 40 * len(offs) + 64
    from shaledb.kernels.block import E_OUTPUT, _encode

    small = np.empty(buf.shape[0] + 40 * len(offs) + 64, np.uint8)
    scratch = [np.empty(len(offs) + 1, np.int64) for _ in range(3)]
    assert _encode(buf, offs, np.int64(4096), np.int64(16), small, *scratch)[0] == E_OUTPUT
    enc = encode_blocks(buf, offs, 4096, 16)
    out = []
    for i in range(enc.num_blocks):
        b, o = decode_block(enc.block(i))
        out += read_run(b, o)
    assert out == read_run(buf, offs)


def _sample_block():
    recs = sorted(((b"key%04d" % i, i + 1, i % 2, b"v" * (i % 2) * 5) for i in range(60)), key=sort_key)
    return _encode(recs, 4096, 4).block(0).tobytes(), recs


def test_every_corrupted_byte_is_detected():
    blk, _ = _sample_block()
    step = 1 if not NOJIT else 17
    for i in range(0, len(blk), step):
        bad = bytearray(blk)
        bad[i] ^= 0x5A
        assert not block_checksum_ok(bad)
        for fn in (decode_block, lambda b: seek_block(b, b"key0030"), lambda b: block_get(b, b"key0001")):
            with pytest.raises(Corruption):
                fn(bytes(bad))


def test_truncated_blocks_raise_corruption():
    blk, _ = _sample_block()
    for n in list(range(0, 40)) + [len(blk) - 9, len(blk) - 1]:
        with pytest.raises(Corruption):
            decode_block(blk[:n])


def _reseal(body: bytes) -> bytes:
    import xxhash

    return body + xxhash.xxh64_intdigest(body).to_bytes(8, "little")


def test_garbage_with_a_valid_checksum_never_crashes():
    """Random bytes (and mutated blocks) resealed with a correct checksum:
    decoding either succeeds or raises Corruption; it never reads out of bounds."""
    rng = random.Random(11)
    blk, _ = _sample_block()
    body = blk[:-8]
    candidates = []
    for _ in range(60 if not NOJIT else 6):
        b = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        candidates.append(_reseal(bytes(b)))
        candidates.append(_reseal(rng.randbytes(rng.randint(0, 200)) + (1).to_bytes(4, "little")))
        candidates.append(_reseal(rng.randbytes(40) + b"\x00\x00\x00\x00" + rng.randbytes(4)))
    for c in candidates:
        for fn in (decode_block, lambda b: seek_block(b, b"key0030"), lambda b: block_get(b, b"key0031")):
            try:
                fn(c)
            except Corruption:
                pass


def test_separators_route_every_key_to_its_block():
    rng = random.Random(5)
    keys = sorted({rng.choice([b"", b"aa", b"ab\xff"]) + rng.randbytes(rng.randint(1, 6)) for _ in range(400)})
    recs = [(k, 7, 1, b"x" * rng.randint(0, 60)) for k in keys]
    buf, offs = make_run(recs)
    b = np.frombuffer(buf, np.uint8)
    o = np.array(offs, np.int64)
    enc = encode_blocks(b, o, 256, 16)
    assert enc.num_blocks > 5
    kb, ko = index_separators(b, o, enc, 0, enc.num_blocks)
    seps = [kb[ko[i] : ko[i + 1]].tobytes() for i in range(enc.num_blocks)]
    assert seps[-1] == keys[-1]
    for i in range(enc.num_blocks - 1):
        assert keys[enc.last_idx[i]] <= seps[i] < keys[enc.first_idx[i + 1]]
    for j, k in enumerate(keys):
        blk = bisect.bisect_left(seps, k)
        assert enc.first_idx[blk] <= j <= enc.last_idx[blk]


def test_seq_range_gather_and_scan_records():
    recs = [(b"z", 9, 1, b"v"), (b"a", 3, 0, b""), (b"m", MAX_SEQ, 1, b"x" * 13)]
    buf, offs = make_run(recs)
    padded = b"\xee" * 24 + buf
    b = np.frombuffer(padded, np.uint8)
    o = np.array(offs, np.int64) + 24
    assert seq_range(b, o) == (3, MAX_SEQ)
    body, boffs, mn, mx = gather_records(b, o[::-1].copy())
    assert (mn, mx) == (3, MAX_SEQ)
    assert read_run(body, boffs) == recs[::-1]
    soffs, smn, smx = scan_records(body)
    assert list(soffs) == list(boffs) and (smn, smx) == (3, MAX_SEQ)
    with pytest.raises(Corruption):
        scan_records(body[:-3])


@hsettings(60)
@given(runs(), st.sampled_from([1, 16]), st.sampled_from([1024, 4096]), st.data())
def test_multi_block_decode_matches_single_blocks(recs, interval, block_size, data):
    enc = _encode(recs, block_size, interval)
    if enc.num_blocks == 0:
        return
    b0 = data.draw(st.integers(0, enc.num_blocks - 1))
    b1 = data.draw(st.integers(b0 + 1, enc.num_blocks))
    chunk = enc.data[enc.block_starts[b0] : enc.block_starts[b1]]
    starts = enc.block_starts[b0 : b1 + 1] - enc.block_starts[b0]
    in_range = recs[enc.first_idx[b0] : enc.last_idx[b1 - 1] + 1]
    keys = sorted({r[0] for r in in_range} | {data.draw(_keys)})
    lo = data.draw(st.one_of(st.none(), st.sampled_from(keys)))
    hi = data.draw(st.one_of(st.none(), st.sampled_from(keys)))
    b, o = decode_blocks_range(chunk, starts, lo, hi)
    expect = [r for r in in_range if (lo is None or r[0] >= lo) and (hi is None or r[0] < hi)]
    assert read_run(b, o) == expect


def test_multi_block_decode_applies_start_past_a_first_block_below_it():
    """A start key above every key of the first block: the second block is
    sought too (found by hypothesis: the start applied to block 0 only, so
    block 1's records below it were returned)."""
    p = b"p" * 300
    recs = [(b"\x00", 2**56 - 1, 0, b""), (b"\x00", 0, 0, b""), (p + b"\x00", 2**56 - 1, 0, b""),
            (p + b"\x00", 0, 0, b""), (p + b"\x00\x00", 0, 0, b""), (p + b"\x00\x00\x00", 0, 0, b""),
            (b"q", 2**56 - 1, 0, b"")]
    enc = _encode(recs, 1024, 1)
    assert enc.num_blocks == 2 and enc.first_idx[1] == 5  # block 1 = [p + 3 zero bytes, q]
    b, o = decode_blocks_range(enc.data, enc.block_starts, b"q", None)
    assert read_run(b, o) == recs[6:]
    b, o = decode_blocks_range(enc.data, enc.block_starts, p + b"\x00\x00\x01", b"r")
    assert read_run(b, o) == recs[6:]
    b, o = decode_blocks_range(enc.data, enc.block_starts, b"zz", None)
    assert read_run(b, o) == []


def test_multi_block_decode_names_the_damaged_block():
    recs = sorted(((b"key%04d" % i, 9, 1, b"v" * 40) for i in range(200)), key=sort_key)
    enc = _encode(recs, 1024, 16)
    assert enc.num_blocks > 3
    bad = enc.data.copy()
    bad[enc.block_starts[2] + 5] ^= 1
    with pytest.raises(Corruption, match="obj: block 12"):
        decode_blocks_range(bad, enc.block_starts, what="obj: block", first_block=10)
    b, o = decode_blocks_range(bad, enc.block_starts, None, recs[3][0])  # stops before the damage
    assert read_run(b, o) == recs[:3]
