"""A per-SST sequence override (bulk ingest): ``SstReader(..., global_seq=S)``
makes every record read as having seq S, in point reads, scans and the read
path that merges it with other sources."""

from __future__ import annotations

import types

import numpy as np
import pytest
from formats_testlib import ids, run_arrays

from shaledb.errors import InvalidArgument
from shaledb.format.keys import sst_key
from shaledb.options import Options
from shaledb.read import reader as read_mod
from shaledb.sst.block_cache import BlockCache
from shaledb.sst.reader import SstReader
from shaledb.sst.writer import build_ssts
from shaledb.storage import MemoryStore

NAME = "compacted/gseq.sst"


def _records(n=60, seq=0, tag=b"v"):
    # written with seq 0 (a bulk-ingested file carries no seqs of its own)
    out = []
    for i in range(n):
        key = b"k%04d" % i
        out.append((key, seq, 0, b"") if i % 9 == 4 else (key, seq, 1, tag + b"%d" % i))
    return out


_IDS = ids()


def _build(recs):
    ((sid, data, _),) = build_ssts(*run_arrays(recs), target_bytes=1 << 30, block_size=128, min_bloom_keys=1, new_id=_IDS)
    return sid, data


@pytest.mark.parametrize("cache", [None, 1 << 20])
def test_every_record_reads_with_the_global_seq(cache):
    recs = _records()
    _, data = _build(recs)
    st = MemoryStore()
    st.put(NAME, data)
    r = SstReader(st, NAME, size=len(data), global_seq=777, block_cache=BlockCache(cache) if cache else None)
    assert r.info.min_seq == r.info.max_seq == 777
    for key, _seq, kind, value in recs:
        want = (kind, 777, value if kind else None)
        assert r.get(key) == want
        assert r.get(key, max_seq=777) == want
        assert r.get(key, max_seq=776) is None
        assert r.find(key, np.frombuffer(key, dtype=np.uint8)) == want
    got = []
    for buf, offs in r.iter_range(b"k0010", b"k0050"):
        for o in offs:
            o = int(o)
            klen, vlen, trailer = (int.from_bytes(buf[o + a : o + b].tobytes(), "little") for a, b in ((0, 4), (4, 8), (8, 16)))
            got.append((buf[o + 16 : o + 16 + klen].tobytes(), trailer >> 8, trailer & 0xFF))
    assert got == [(k, 777, kind) for k, _s, kind, _v in recs if b"k0010" <= k < b"k0050"]
    # zero means "no override": the records' own seqs
    plain = SstReader(st, NAME, size=len(data))
    assert plain.get(recs[0][0])[1] == 0


@pytest.mark.parametrize("bad", [-1, 1 << 56, 1.5, True])
def test_global_seq_is_checked(bad):
    _, data = _build(_records(5))
    st = MemoryStore()
    st.put(NAME, data)
    with pytest.raises(InvalidArgument):
        SstReader(st, NAME, size=len(data), global_seq=bad)


class _NoArenas:
    def lookup(self, key):
        return None

    def manifest_id(self):
        return 0

    def sorted_runs_snapshot(self):
        return []

    def unflushed_bytes(self):
        return 0


def _ref(sid, data, recs, global_seq):
    return types.SimpleNamespace(sst_id=sid, first_key=recs[0][0], last_key=recs[-1][0], size=len(data),
                                 min_seq=global_seq, max_seq=global_seq, num_entries=len(recs), global_seq=global_seq)


@pytest.mark.parametrize("cache", [64 << 20, 0], ids=["pinned", "block-by-block"])
@pytest.mark.parametrize("where", ["l0", "run"])
def test_read_path_orders_sources_by_global_seq(monkeypatch, where, cache):
    """An ingested SST (seqs 0 on disk, global_seq 50) sits under a newer L0
    SST (seq 60) and over an older one (seq 40): the read path and a scan
    pick the version with the highest effective seq."""
    st = MemoryStore()
    old, ing, new = _records(40, 40, b"old"), _records(40, 0, b"ing"), [(b"k%04d" % i, 60, 1, b"new") for i in range(0, 40, 5)]
    refs = {}
    for name, recs, gs in (("old", old, 0), ("ing", ing, 50), ("new", new, 0)):
        sid, data = _build(recs)
        st.put(sst_key(sid), data)
        refs[name] = _ref(sid, data, recs, gs or recs[0][1])
        refs[name].global_seq = gs
    if where == "l0":
        l0, runs = (refs["new"], refs["ing"], refs["old"]), ()
    else:
        l0 = (refs["new"],)
        runs = (types.SimpleNamespace(run_id=2, ssts=(refs["ing"],)), types.SimpleNamespace(run_id=1, ssts=(refs["old"],)))
    m = types.SimpleNamespace(l0=l0, sorted_runs=runs, all_ssts=lambda: list(l0) + [s for r in runs for s in r.ssts])
    monkeypatch.setattr(read_mod, "_read_latest_manifest", lambda *a, **k: (m, 1))
    rd = read_mod.Reader(st, Options(block_cache_bytes=cache), _NoArenas())
    want = {}
    for recs in (old, ing, new):  # in seq order: later wins
        for k, _s, kind, v in recs:
            want[k] = v if kind else None
    for k in sorted(want):
        assert rd.get(k) == want[k], k
    assert list(rd.scan(None, None)) == [(k, v) for k, v in sorted(want.items()) if v is not None]
    keys = sorted(want)
    kd = np.frombuffer(b"".join(keys), dtype=np.uint8)
    ko = np.array([0] + [len(k) for k in keys], dtype=np.int64).cumsum()
    vd, vo, found = rd.get_many(kd, ko)
    assert [vd[a:b].tobytes() if f else None for a, b, f in zip(vo, vo[1:], found)] == [want[k] for k in keys]
