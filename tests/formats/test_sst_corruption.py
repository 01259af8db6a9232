"""A damaged SST is a Corruption error naming the object, never wrong data."""

from __future__ import annotations

import pytest
from formats_testlib import golden_records, ids, run_arrays
from reference.block import read_run

from shaledb.errors import Corruption
from shaledb.sst.format import TRAILER_SIZE
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
