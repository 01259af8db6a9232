"""SstWriter: input forms, spilling and merging, duplicate keys, deterministic
names and descriptors (docs/bulk.md), checked against a dict."""

from __future__ import annotations

import pickle
import random
import uuid

import numpy as np
import pytest

from shaledb.bulk import SstDescriptor, SstWriter, bulk_sst_id, lease_end_ms, new_load_id
from shaledb.errors import InvalidArgument
from shaledb.format.record import unpack_header
from shaledb.manifest.store import ManifestStore
from shaledb.sst.reader import SstReader
from shaledb.storage.memory import memory_store


@pytest.fixture
def store():
    s = memory_store("bulk-" + uuid.uuid4().hex[:12])
    ManifestStore.open_writer(s)  # a database exists there
    return s


def _read(store, descs) -> dict:
    """Every record of the SSTs, in order; checks that keys rise strictly."""
    out = {}
    last = None
    for d in descs:
        r = SstReader(store, d.key, size=d.size)
        assert (r.footer.first_key, r.footer.last_key, r.footer.num_entries) == (d.first_key, d.last_key, d.num_entries)
        for buf, offs in r.iter_range():
            for off in offs:
                klen, vlen, _seq, _kind = unpack_header(buf, int(off))
                k = bytes(buf[off + 16 : off + 16 + klen])
                assert last is None or k > last
                last = k
                out[k] = bytes(buf[off + 16 + klen : off + 16 + klen + vlen])
    return out


def test_random_batches_with_spills_equal_a_dict(store):
    rng = random.Random(7)
    model = {}
    with SstWriter(store, memory_bytes=1 << 16, sst_target_bytes=8 << 10) as w:
        for _ in range(12):
            keys = [rng.randbytes(rng.randint(1, 12)) for _ in range(rng.randint(0, 900))]
            values = [rng.randbytes(rng.randint(0, 40)) for _ in keys]
            w.add(keys, values)
            model.update(zip(keys, values))  # the last by input order wins
        descs = w.finish()
        assert w.stats["spills"] >= 2
    assert len(descs) > 2
    assert _read(store, descs) == model
    assert all(a.last_key < b.first_key for a, b in zip(descs, descs[1:]))


def test_input_forms(store):
    pa = pytest.importorskip("pyarrow")
    w = SstWriter(store)
    w.add([b"a", b"b"], [b"1", b"2"])
    kd = np.frombuffer(b"ccdd", np.uint8)
    w.add((kd, np.array([0, 2, 4])), [b"3", b"4"])
    w.add(np.array([b"e1", b"f1"], dtype="S2"), np.frombuffer(b"5566", np.uint8).reshape(2, 2))
    w.add(pa.array([b"g", b"h"], pa.binary()), pa.chunked_array([pa.array(["7"]), pa.array(["8"])]))
    w.add(pa.array(["z", "i", "j"], pa.large_string())[1:], pa.array([b"x", b"9", b"10"], pa.large_binary())[1:])
    w.put(b"k", b"11")
    with pytest.raises(InvalidArgument, match="values"):
        w.add([b"l"], [b"1", b"2"])
    with pytest.raises(InvalidArgument):
        w.add([b"m"], [None])
    with pytest.raises(InvalidArgument, match="nulls"):
        w.add(pa.array([b"n", None]), [b"1", b"2"])
    with pytest.raises(InvalidArgument):
        w.add([b""], [b"empty key"])
    descs = w.finish()
    assert _read(store, descs) == {b"a": b"1", b"b": b"2", b"cc": b"3", b"dd": b"4", b"e1": b"55", b"f1": b"66",
                                   b"g": b"7", b"h": b"8", b"i": b"9", b"j": b"10", b"k": b"11"}
    with pytest.raises(InvalidArgument, match="finished"):
        w.add([b"x"], [b"y"])


def test_duplicates_last_wins_or_error(store):
    with SstWriter(store, memory_bytes=1 << 16) as w:
        for i in range(3):  # the same keys in three batches, some spilled
            w.add([b"k%05d" % j for j in range(2000)], [b"v%d" % i] * 2000)
        descs = w.finish()
        assert w.stats["duplicates"] == 4000
    assert set(_read(store, descs).values()) == {b"v2"}
    w = SstWriter(store, on_duplicate="error")
    w.add([b"a", b"b", b"a"], [b"1", b"2", b"3"])
    with pytest.raises(InvalidArgument, match="duplicate key b'a'"):
        w.finish()


def test_names_are_deterministic_and_descriptors_picklable(store):
    load = new_load_id(lease=3600)
    assert lease_end_ms(load) > 0
    keys = [b"k%06d" % i for i in range(5000)]

    def build(attempt):
        with SstWriter(store, load_id=load, partition=3, attempt=attempt, sst_target_bytes=16 << 10) as w:
            w.add(keys[::-1], keys[::-1])
            return w.finish()

    a, b, c = build(0), build(0), build(1)
    assert a == b  # a retried task writes the same objects with the same bytes
    names = {bulk_sst_id(load, 3, 0, (i << 16) + j) for i in range(len(a)) for j in range(2)}  # SST j of slice i
    assert {d.sst_id for d in a} <= names
    assert not {d.sst_id for d in a} & {d.sst_id for d in c}
    assert pickle.loads(pickle.dumps(a)) == a and isinstance(a[0], SstDescriptor)
    assert a[0].sst_id[:10] == load[:10]  # the load's lease end is the ids' time part
    with pytest.raises(InvalidArgument, match="load_id"):
        SstWriter(store, load_id="my-load")
    with pytest.raises(InvalidArgument, match="partition"):
        SstWriter(store, partition=-1)


def test_refuses_a_location_without_a_database():
    with pytest.raises(InvalidArgument, match="no ShaleDB database"):
        SstWriter(memory_store("bulk-empty-" + uuid.uuid4().hex[:8]))


def test_empty_partition_has_no_ssts(store):
    with SstWriter(store) as w:
        w.add([], [])
        assert w.finish() == []
