"""A damaged SST is a Corruption error naming the object, never wrong data."""

from __future__ import annotations

import numpy as np
import pytest
from formats_testlib import golden_records, ids, run_arrays
from reference.block import read_run

from shaledb.errors import Corruption
from shaledb.sst.format import TRAILER_SIZE, decode_index, decode_index_arrays, encode_index
from shaledb.sst.reader import SstReader
from shaledb.sst.writer import build_ssts
from shaledb.storage import MemoryStore

NAME = "compacted/damaged.sst"


def _sst(compression=None):
    recs = golden_records(40)
    ((_, data, _),) = build_ssts(*run_arrays(recs), target_bytes=1 << 30, block_size=256, min_bloom_keys=1,
                                 compression=compression, new_id=ids())
    return recs, data


def _read_everything(store, size=None):
    r = SstReader(store, NAME, size=size)
    out = []
    for buf, offs in r.iter_range():
        out += read_run(buf, offs)
    gets = [r.get(k) for k in (b"user/00003/\x00", b"user/00010/\x01\x01")]
    return out, gets


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_every_corrupted_byte_raises(compression):
    recs, data = _sst(compression)
    store = MemoryStore()
    regions = set()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x41
        store.put(NAME, bytes(bad))
        with pytest.raises(Corruption) as exc:
            _read_everything(store, size=len(data))
        assert NAME in str(exc.value)
        regions.add(str(exc.value).split(":")[1].strip().split(" ")[0])
    # the damage was seen in every region
    assert {"block", "bloom", "index", "footer", "trailer"} <= regions, regions


def test_block_corruption_message_names_the_block():
    recs, data = _sst()
    bad = bytearray(data)
    bad[300] ^= 1  # inside the second 256-byte block
    store = MemoryStore()
    store.put(NAME, bytes(bad))
    r = SstReader(store, NAME)
    with pytest.raises(Corruption, match=rf"{NAME}: block 1"):
        list(r.iter_range())


@pytest.mark.parametrize("known_size", [False, True])
def test_truncated_objects_raise(known_size):
    recs, data = _sst()
    store = MemoryStore()
    for n in list(range(0, 80)) + list(range(80, len(data), 13)) + [len(data) - 1]:
        store.put(NAME, data[:n])
        with pytest.raises(Corruption, match=NAME):
            _read_everything(store, size=len(data) if known_size else None)


def test_extended_object_raises():
    recs, data = _sst()
    store = MemoryStore()
    store.put(NAME, data + b"\x00" * 8)
    with pytest.raises(Corruption, match="trailer"):
        SstReader(store, NAME)
    store.put(NAME, b"x" * TRAILER_SIZE)
    with pytest.raises(Corruption, match="magic"):
        SstReader(store, NAME)


def test_index_block_checks_offsets_and_key_order():
    """An index block whose checksum holds but whose content is wrong (a bug,
    not bit rot) is a Corruption naming it: keys out of order, bad offsets."""
    keys = [b"a", b"ab", b"b", b"c"]
    koffs = np.cumsum([0] + [len(k) for k in keys]).astype(np.int64)
    boffs = np.array([0, 10, 20, 30, 40], dtype=np.int64)
    good = encode_index(boffs, np.frombuffer(b"".join(keys), dtype=np.uint8), koffs)
    offs, kb, ko = decode_index_arrays(good, NAME, 4, 40)
    assert offs.tolist() == boffs.tolist() and ko.tolist() == koffs.tolist() and kb.tobytes() == b"".join(keys)
    assert decode_index(good, NAME, 4, 40)[1] == keys
    swapped = [b"a", b"b", b"ab", b"c"]
    bad = encode_index(boffs, np.frombuffer(b"".join(swapped), dtype=np.uint8), koffs)
    with pytest.raises(Corruption, match=rf"{NAME}: index block: index keys out of order"):
        decode_index_arrays(bad, NAME, 4, 40)
    equal = [b"a", b"b", b"b", b"c"]  # a key may continue into the next block
    assert decode_index(encode_index(boffs, np.frombuffer(b"".join(equal), dtype=np.uint8),
                                     np.cumsum([0, 1, 1, 1, 1]).astype(np.int64)), NAME, 4, 40)[1] == equal
    with pytest.raises(Corruption, match="bad block or key offsets"):
        decode_index_arrays(encode_index(boffs[::-1].copy(), np.frombuffer(b"".join(keys), dtype=np.uint8), koffs),
                            NAME, 4, 40)
