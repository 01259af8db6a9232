"""Batch scans (``Db.scan_arrays``, ``Db.scan_arrow``, the tuple scan built on
them) against a dict model: the merge and kernel alone (shaledb.read.scan),
then whole databases with arenas, L0 SSTs and sorted runs, tombstones and
overwrites, on memory, local and S3 stores."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import shaledb
from shaledb.read import scan as S

from engine_util import memory_url, open_db, s3_opts, s3_url


# -- the merge and the kernel ----------------------------------------------


def _run(entries):
    """A record run (buf, offs) of (key, seq, kind, value) in record order."""
    from shaledb.format.record import encode_record

    entries = sorted(entries, key=lambda e: (e[0], -e[1]))
    parts, offs, pos = [], [], 0
    for key, seq, kind, value in entries:
        rec = encode_record(key, value if kind == 1 else b"", seq, kind)
        offs.append(pos)
        parts.append(rec)
        pos += len(rec)
    return np.frombuffer(b"".join(parts), dtype=np.uint8), np.array(offs, dtype=np.int64)


def _cut_anywhere(entries, pieces, rng):
    """One source cut into runs at arbitrary record positions: the versions
    of one key may straddle runs (as they may across SST blocks)."""
    entries = sorted(entries, key=lambda e: (e[0], -e[1]))
    cuts = sorted(rng.sample(range(1, len(entries)), min(pieces, len(entries) - 1))) if len(entries) > 1 else []
    out, lo = [], 0
    for c in cuts + [len(entries)]:
        out.append(_run(entries[lo:c]))
        lo = c
    return out


def _model(sources_entries, max_seq):
    best = {}
    for entries in sources_entries:
        for key, seq, kind, value in entries:
            if seq <= max_seq and (key not in best or seq > best[key][0]):
                best[key] = (seq, kind, value)
    return [(k, v[2]) for k, v in sorted(best.items()) if v[1] == 1]


def _random_sources(rng, nsources, most, keys, put_share, value_of):
    """``nsources`` lists of up to ``most`` random (key, seq, kind, value)
    entries over ``keys`` distinct keys, seqs rising across all of them;
    returns (the lists, the last seq)."""
    seq = 0
    sources_entries = []
    for _ in range(nsources):
        entries = []
        for _ in range(rng.randrange(0, most)):
            seq += 1
            kind = 1 if rng.random() < put_share else 0
            entries.append((b"k%03d" % rng.randrange(keys), seq, kind, value_of(seq)))
        sources_entries.append(entries)
    return sources_entries, seq


def _flatten(batches):
    out = []
    for kd, ko, vd, vo in batches:
        assert ko.dtype == np.int64 and vo.dtype == np.int64 and kd.dtype == np.uint8 and vd.dtype == np.uint8
        assert ko[0] == 0 and vo[0] == 0 and ko[-1] == len(kd) and vo[-1] == len(vd)
        for i in range(len(ko) - 1):
            out.append((kd[ko[i] : ko[i + 1]].tobytes(), vd[vo[i] : vo[i + 1]].tobytes()))
    return out


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 5), st.integers(1, 9), st.booleans())
def test_batches_match_model(seed, nsources, batch_records, snapshot):
    rng = random.Random(seed)
    sources_entries, seq = _random_sources(rng, nsources, 40, 30, 0.75, lambda s: b"v%d" % s * rng.randrange(0, 3))
    max_seq = rng.randrange(0, seq + 1) if snapshot else seq
    sources = [_cut_anywhere(e, rng.randrange(0, 6), rng) for e in sources_entries]
    got = list(S.batches(S.merged_runs(sources), max_seq, batch_records))
    assert all(1 <= len(b[1]) - 1 <= batch_records for b, _ in got)
    assert all(len(b[1]) - 1 == batch_records for b, _ in got[:-1])
    assert _flatten(b for b, _ in got) == _model(sources_entries, max_seq)


def test_batches_grow_for_big_values():
    big = [(b"a", 1, 1, b"x" * 300_000), (b"b", 2, 1, b"y" * 5), (b"c", 3, 1, b"z" * 200_000)]
    got = _flatten(b for b, _ in S.batches(S.merged_runs([[_run(big)]]), 3, 2))
    assert got == [(k, v) for k, _s, _kind, v in big]


def _pair_bytes(batch) -> int:
    return int(batch[1][-1]) + int(batch[3][-1])


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 3), st.integers(1, 9), st.integers(1, 400), st.booleans())
def test_batches_bounded_by_bytes(seed, nsources, batch_records, batch_bytes, reuse):
    """A batch holds at most ``batch_bytes`` of keys and values unless it is
    one pair; it ends early only when its next pair would not fit; with
    ``reuse`` (the tuple scan) every batch is still right when read before
    the next one is made."""
    rng = random.Random(seed)
    sources_entries, seq = _random_sources(rng, nsources, 30, 25, 0.8,
                                           lambda s: bytes([s % 251]) * rng.choice([0, 3, 40, 300]))
    sources = [_cut_anywhere(e, rng.randrange(0, 4), rng) for e in sources_entries]
    got, flat = [], []
    for batch, _done in S.batches(S.merged_runs(sources), seq, batch_records, batch_bytes, reuse=reuse):
        part = _flatten([batch])  # read now: with reuse the next batch overwrites it
        got.append((len(part), sum(len(k) + len(v) for k, v in part), part[0]))
        flat.extend(part)
    assert flat == _model(sources_entries, seq)
    for n, size, _first in got:
        assert 1 <= n <= batch_records
        assert size <= batch_bytes or n == 1
    for (n, size, _first), (_n2, _size2, (k2, v2)) in zip(got, got[1:]):
        assert n == batch_records or size + len(k2) + len(v2) > batch_bytes


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 3), st.integers(1, 9), st.sampled_from([40, 200, 1 << 20]))
def test_direct_pairs_match_model(seed, nsources, batch_records, direct_bytes):
    """The tuple scan's path for large values: runs whose records average
    ``direct_bytes`` or more come as lists of pairs, the others as batches,
    in key order, the same pairs as the model (versions, tombstones,
    snapshot) and at most ``batch_records`` a list."""
    rng = random.Random(seed)
    sources_entries, seq = _random_sources(rng, nsources, 30, 25, 0.8,
                                           lambda s: bytes([s % 251]) * rng.choice([0, 3, 40, 300]))
    max_seq = rng.randrange(0, seq + 1)
    sources = [_cut_anywhere(e, rng.randrange(0, 4), rng) for e in sources_entries]
    flat, kinds = [], set()
    for item, _done in S.batches(S.merged_runs(sources), max_seq, batch_records, 1 << 20, reuse=True,
                                 direct_bytes=direct_bytes):
        kinds.add(type(item))
        if isinstance(item, list):
            assert 1 <= len(item) <= batch_records
            flat.extend(item)
        else:
            flat.extend(_flatten([item]))
    assert flat == _model(sources_entries, max_seq)
    if direct_bytes == 1 << 20:
        assert list not in kinds  # no run averages 1 MiB a record


def test_direct_pairs_go_by_the_records_not_the_buffer():
    """A run of small records that is a slice of a large buffer (a key held
    back across runs is one) keeps the batch path."""
    buf, offs = _run([(b"a", 1, 1, b"x"), (b"b", 2, 1, b"y")])
    padded = np.concatenate([buf, np.zeros(1 << 20, dtype=np.uint8)])
    got = [item for item, _ in S.batches(iter([(padded, offs)]), 9, 10, 1 << 20, direct_bytes=64 << 10)]
    assert len(got) == 1 and not isinstance(got[0], list)
    assert _flatten(got) == [(b"a", b"x"), (b"b", b"y")]
    big = _run([(b"a", 1, 1, b"x" * (100 << 10)), (b"b", 2, 1, b"y")])  # averages over 50 KiB
    got = [item for item, _ in S.batches(iter([big]), 9, 10, 1 << 20, direct_bytes=48 << 10)]
    assert got == [[(b"a", b"x" * (100 << 10)), (b"b", b"y")]]


def test_scan_pairs_of_large_values_come_straight_from_the_runs(tmp_path, monkeypatch):
    """``db.scan()`` over values of 100-300 KiB takes the direct path (no
    batch is filled) and returns every pair; a range scan too."""
    rng = np.random.default_rng(11)
    model = {b"k%03d" % i: rng.bytes(int(rng.integers(100 << 10, 300 << 10))) for i in range(40)}
    calls = []
    real = S._direct_pairs
    monkeypatch.setattr(S, "_direct_pairs", lambda *a: calls.append(1) or real(*a))
    with open_db(f"file://{tmp_path}/db", compactor=False) as db:
        db.put_many(list(model), list(model.values()))
        db.flush(memtable=True)
        db.delete(b"k007")
        del model[b"k007"]
        assert list(db.scan()) == sorted(model.items())
        assert list(db.scan(b"k010", b"k020")) == [(k, model[k]) for k in sorted(model) if b"k010" <= k < b"k020"]
    assert calls


def test_batch_bytes_cap_large_values():
    """Pairs of 1 MiB with a 2.5 MiB cap: two a batch, a 3 MiB pair alone,
    and the buffers never grow past what one batch needs."""
    big = [(b"k%02d" % i, i + 1, 1, bytes([i]) * ((3 << 20) if i == 3 else (1 << 20))) for i in range(7)]
    got = [b for b, _ in S.batches(S.merged_runs([[_run(big)]]), 100, 1000, 5 << 19)]
    assert [len(b[1]) - 1 for b in got] == [2, 1, 1, 2, 1]
    assert _flatten(got) == [(k, v) for k, _s, _kind, v in big]
    assert max(_pair_bytes(b) for b in got) == (3 << 20) + 3


def test_offsets_grow_up_to_batch_records(monkeypatch):
    monkeypatch.setattr(S, "_FIRST_RECORDS", 2)
    recs = [(b"k%03d" % i, i + 1, 1, b"v%d" % i) for i in range(50)]
    got = list(S.batches(S.merged_runs([[_run(recs)]]), 100, 20))
    assert [len(b[1]) - 1 for b, _ in got] == [20, 20, 10]
    assert _flatten(b for b, _ in got) == [(k, v) for k, _s, _kind, v in recs]
    got = list(S.batches(S.merged_runs([[_run(recs)]]), 100, 1 << 31))  # nothing allocated for 2^31 pairs
    assert [len(b[1]) - 1 for b, _ in got] == [50]


def test_merged_runs_nothing():
    assert list(S.batches(S.merged_runs([]), 10, 5)) == []
    assert list(S.batches(S.merged_runs([iter([]), iter([])]), 10, 5)) == []
    only_tombstones = [_run([(b"a", 1, 0, b""), (b"b", 2, 0, b"")])]
    assert list(S.batches(S.merged_runs([only_tombstones]), 10, 5)) == []


# -- whole databases -------------------------------------------------------


def _scan_arrays(db, start=None, end=None, batch_records=65536):
    return dict(_flatten(db.scan_arrays(start, end, batch_records=batch_records)))


def _expect(model, start=None, end=None):
    return {k: v for k, v in sorted(model.items()) if (start is None or k >= start) and (end is None or k < end)}


def _apply(db, model, ops):
    for op, a, b in ops:
        key = b"key-%04d" % a
        if op == "put":
            model[key] = b"val-%d-" % b + b"x" * (b % 50)
            db.put(key, model[key], await_durable=False)
        elif op == "del":
            model.pop(key, None)
            db.delete(key, await_durable=False)
        elif op == "many":
            keys = [b"key-%04d" % ((a + 7 * j) % 400) for j in range(1 + b % 40)]
            vals = [b"m%d-%d" % (b, j) for j in range(len(keys))]
            db.put_many(keys, vals, await_durable=False)
            model.update(zip(keys, vals))
        elif op == "flush":
            db.flush(memtable=True)
        elif op == "compact":
            db.flush(memtable=True)
            db.compact(full=bool(b % 2))


_OPS = st.lists(
    st.tuples(st.sampled_from(["put", "put", "put", "del", "many", "flush", "compact"]),
              st.integers(0, 399), st.integers(0, 1000)),
    max_size=40,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS, st.integers(1, 50), st.integers(0, 420), st.integers(0, 420))
def test_db_scan_arrays_matches_model(ops, batch_records, a, b):
    model: dict = {}
    with open_db(memory_url(), compactor=False) as db:
        _apply(db, model, ops)
        start, end = b"key-%04d" % min(a, b), b"key-%04d" % max(a, b)
        assert _scan_arrays(db, batch_records=batch_records) == model
        assert list(_scan_arrays(db, start, end, batch_records)) == list(_expect(model, start, end))
        assert list(db.scan(start, end)) == list(_expect(model, start, end).items())


def _seeded_ops(seed, n):
    rng = random.Random(seed)
    kinds = ["put"] * 6 + ["del"] * 2 + ["many"] * 2
    ops = []
    for i in range(n):
        ops.append((rng.choice(kinds), rng.randrange(400), rng.randrange(1000)))
        if i % 60 == 59:
            ops.append(("flush", 0, 0))
        if i % 150 == 149:
            ops.append(("compact", 0, rng.randrange(2)))
    return ops


def _layers(db, model, seed, n):
    """Sorted runs, then an L0 SST and arena records over them."""
    _apply(db, model, _seeded_ops(seed, n) + [("compact", 0, 1)])
    _apply(db, model, _seeded_ops(seed + 1, 30) + [("flush", 0, 0)] + _seeded_ops(seed + 2, 30))


def _check_tree(db, model):
    """Every layer present, and the batch scans agree with the model."""
    m = db._reader.manifest()
    assert m is not None and m.l0 and m.sorted_runs, "want arenas, L0 and sorted runs at once"
    for br in (1, 7, 65536):
        got = _scan_arrays(db, batch_records=br)
        assert got == model and list(got) == sorted(model)
    assert list(_scan_arrays(db, b"key-0100", b"key-0200", 13)) == list(_expect(model, b"key-0100", b"key-0200"))
    assert dict(db.scan()) == model


@pytest.mark.parametrize("seed", [1])
def test_local_db_all_layers(tmp_path, seed):
    model: dict = {}
    with open_db(tmp_path / "db", compactor=False) as db:
        _layers(db, model, seed, 400)
        _check_tree(db, model)
    with open_db(tmp_path / "db", compactor=False) as db:  # reopened: everything in SSTs
        assert _scan_arrays(db) == model


def test_s3_db_all_layers(moto_server, s3_bucket):
    model: dict = {}
    with open_db(s3_url(s3_bucket), compactor=False, **s3_opts(moto_server)) as db:
        _layers(db, model, 7, 300)
        _check_tree(db, model)


def test_scan_arrays_is_one_snapshot():
    """Writes after the call (arenas and L0 both) are not seen, even those
    that reach an L0 before the scan reads the SSTs."""
    with open_db(memory_url(), compactor=False) as db:
        db.put_many([b"a%03d" % i for i in range(300)], [b"old"] * 300)
        db.flush(memtable=True)
        db.put(b"b", b"old")
        it = db.scan_arrays(batch_records=16)
        pairs = db.scan()
        db.put_many([b"a%03d" % i for i in range(0, 300, 2)], [b"new"] * 150)
        db.delete(b"b")
        db.put(b"c", b"new")
        db.flush(memtable=True)
        db.put(b"a000", b"newer")
        got = dict(_flatten(it))
        assert got == dict([(b"a%03d" % i, b"old") for i in range(300)] + [(b"b", b"old")])
        assert dict(pairs) == got
        assert _scan_arrays(db)[b"a000"] == b"newer"


def test_empty_ranges_and_empty_db(tmp_path):
    with open_db(memory_url(), compactor=False) as db:
        assert list(db.scan_arrays()) == []
        db.put(b"k", b"v")
        assert list(db.scan_arrays(b"z")) == []
        assert list(db.scan_arrays(b"a", b"a")) == []
        assert list(db.scan_arrays(b"m", b"a")) == []
        assert _scan_arrays(db, b"k", b"k\x00") == {b"k": b"v"}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None, 1 << 40])
def test_bad_batch_records(bad):
    with open_db(memory_url(), compactor=False) as db:
        with pytest.raises(shaledb.InvalidArgument):
            db.scan_arrays(batch_records=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None, (1 << 40) + 1])
def test_bad_batch_bytes(bad):
    with open_db(memory_url(), compactor=False) as db:
        with pytest.raises(shaledb.InvalidArgument, match="batch_bytes"):
            db.scan_arrays(batch_bytes=bad)


def test_scans_of_values_larger_than_a_batch(tmp_path):
    """Values of 5 MiB (larger than the tuple scan's batch) among small ones,
    in an arena, an L0 SST and a sorted run: ``scan`` and ``scan_arrays``
    with a small ``batch_bytes`` return every pair whole."""
    rng = np.random.default_rng(7)
    model = {}
    with open_db(f"file://{tmp_path}/db", compactor=False) as db:
        for layer in range(3):
            for i in range(6):
                k = b"k%02d" % rng.integers(0, 12)
                v = rng.bytes(5 << 20) if i % 2 else rng.bytes(int(rng.integers(0, 100)))
                db.put(k, v)
                model[k] = v
            if layer == 0:
                db.flush(memtable=True)
                db.compact(full=True)
            elif layer == 1:
                db.flush(memtable=True)
        want = sorted(model.items())
        assert list(db.scan()) == want
        batches = list(db.scan_arrays(batch_bytes=6 << 20))
        assert _flatten(batches) == want
        assert all(_pair_bytes(b) <= 6 << 20 or len(b[1]) == 2 for b in batches)


@pytest.mark.parametrize("bad", [1, 2.0, "a", object()])
def test_bad_bounds(bad):
    with open_db(memory_url(), compactor=False) as db:
        with pytest.raises(shaledb.InvalidArgument):
            db.scan_arrays(bad)
        with pytest.raises(shaledb.InvalidArgument):
            db.scan_arrays(None, bad)


def test_scan_arrays_after_close_raises():
    db = open_db(memory_url(), compactor=False)
    db.close()
    with pytest.raises(shaledb.Closed):
        db.scan_arrays()


# -- Arrow -----------------------------------------------------------------


def test_engine_does_not_import_pyarrow(tmp_path):
    code = (
        "import sys, shaledb\n"
        f"db = shaledb.open({str(tmp_path / 'db')!r}, compactor=False)\n"
        "db.put_many([b'a', b'b'], [b'1', b'2'])\n"
        "db.flush(memtable=True)\n"
        "assert [len(b[1]) for b in db.scan_arrays()] == [3]\n"
        "assert list(db.scan()) == [(b'a', b'1'), (b'b', b'2')]\n"
        "assert db.get(b'a') == b'1'\n"
        "db.close()\n"
        "assert 'pyarrow' not in sys.modules, 'the engine imported pyarrow'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_scan_arrow_matches_model():
    pa = pytest.importorskip("pyarrow")
    with open_db(memory_url(), compactor=False) as db:
        model = {b"k%04d" % i: b"v" * (i % 7) for i in range(1000)}
        db.put_many(list(model), list(model.values()))
        db.delete(b"k0005")
        del model[b"k0005"]
        t = db.scan_arrow(batch_records=300)
        assert t.schema == pa.schema([("key", pa.large_binary()), ("value", pa.large_binary())])
        assert t.column("key").num_chunks == 4
        assert dict(zip(t.column("key").to_pylist(), t.column("value").to_pylist())) == model
        t2 = db.scan_arrow(b"k0100", b"k0110")
        assert t2.column("key").to_pylist() == [b"k%04d" % i for i in range(100, 110)]
        assert db.scan_arrow(b"z").num_rows == 0


def test_scan_arrow_buffers_are_not_copied():
    pa = pytest.importorskip("pyarrow")
    from shaledb.read.arrow import table_from_batches

    kd = np.frombuffer(b"abcd", dtype=np.uint8)
    ko = np.array([0, 1, 4], dtype=np.int64)
    vd = np.frombuffer(b"xyz", dtype=np.uint8)
    vo = np.array([0, 2, 3], dtype=np.int64)
    t = table_from_batches([(kd, ko, vd, vo)])
    keys = t.column("key").chunk(0)
    assert keys.to_pylist() == [b"a", b"bcd"] and t.column("value").to_pylist() == [b"xy", b"z"]
    assert keys.buffers()[2].address == kd.ctypes.data
    assert keys.buffers()[1].address == ko.ctypes.data


@pytest.mark.parametrize("kind", ["binary", "large_binary", "string", "large_string"])
def test_put_many_takes_arrow_arrays(kind):
    pa = pytest.importorskip("pyarrow")
    typ = getattr(pa, kind)()
    keys = [b"k%03d" % i for i in range(200)]
    vals = [b"v%d" % i for i in range(200)]
    conv = (lambda x: x.decode()) if "string" in kind else (lambda x: x)
    with open_db(memory_url(), compactor=False) as db:
        ka = pa.array([conv(k) for k in keys], type=typ)
        va = pa.array([conv(v) for v in vals], type=typ)
        db.put_many(ka.slice(10), va.slice(10))  # a sliced array: nonzero offset
        db.put_many(pa.chunked_array([ka.slice(0, 5), ka.slice(5, 5)]), va.slice(0, 10))
        assert dict(db.scan()) == dict(zip(keys, vals))
        with pytest.raises(shaledb.InvalidArgument):
            db.put_many(pa.array([b"a", None]), pa.array([b"1", b"2"]))
        with pytest.raises(shaledb.InvalidArgument):
            db.put_many(pa.array([1, 2]), pa.array([b"1", b"2"]))
