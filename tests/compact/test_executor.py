"""The merge executor against a plain model: L0 SSTs built with the real
SST writer, merged, read back through SstReader."""

from __future__ import annotations

import random

import pytest
from compact_testlib import expected, manifest_of, newest_per_key, read_ssts, write_ssts

from shaledb.compact.executor import MergeParams, execute, split_ranges
from shaledb.compact.scheduler import CompactionJob
from shaledb.errors import InvalidArgument
from shaledb.storage import LocalStore, MemoryStore


def generations(seed, n_gens=6, n_ops=300, keyspace=200, p_delete=0.2):
    """Random puts/deletes cut into generations (oldest first), each
    deduped to its newest version per key as an L0 build does."""
    rng = random.Random(seed)
    seq = 0
    gens = []
    for _ in range(n_gens):
        recs = []
        for _ in range(n_ops):
            seq += 1
            key = b"k%05d" % rng.randrange(keyspace)
            if rng.random() < p_delete:
                recs.append((key, seq, 0, b""))
            else:
                recs.append((key, seq, 1, b"v%d-" % seq * rng.randrange(1, 6)))
        gens.append(newest_per_key(recs))
    return gens


def l0_setup(store, gens, **kw):
    """Each generation as L0 SSTs; returns (manifest, job over all of L0, all records)."""
    l0 = [write_ssts(store, g, **kw) for g in reversed(gens)]  # newest first
    m = manifest_of(l0=l0)
    job = CompactionJob(l0=tuple(s.sst_id for s in m.l0), runs=(), dest_run_id=0, bottom=False)
    return m, job, [r for g in gens for r in g]


def check_run(store, res, want):
    got = read_ssts(store, res.run.ssts) if res.run else []
    assert got == want
    if res.run:
        ssts = res.run.ssts
        assert all(a.last_key < b.first_key for a, b in zip(ssts, ssts[1:]))
        assert res.bytes_out == sum(s.size for s in ssts)
        assert set(res.new_ssts) == {s.sst_id for s in ssts}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bottom", [False, True])
def test_merge_keeps_newest_version(seed, bottom):
    store = MemoryStore()
    m, job, recs = l0_setup(store, generations(seed))
    job = CompactionJob(job.l0, job.runs, 0, bottom)
    res = execute(store, m, job, MergeParams(sst_target_bytes=2048, block_size=256, read_ahead_bytes=700))
    check_run(store, res, expected(recs, bottom=bottom))
    assert len(res.run.ssts) > 1  # output cut at sst_target_bytes
    assert res.bytes_in == sum(s.size for s in m.l0)


@pytest.mark.parametrize("retain_seq", [0, 500, 1200])
@pytest.mark.parametrize("bottom", [False, True])
def test_versions_above_retain_seq_are_kept(retain_seq, bottom):
    store = MemoryStore()
    m, job, recs = l0_setup(store, generations(7, keyspace=50))
    job = CompactionJob(job.l0, job.runs, 0, bottom)
    res = execute(store, m, job, MergeParams(retain_seq=retain_seq, sst_target_bytes=4096, block_size=256))
    want = expected(recs, retain_seq=retain_seq, bottom=bottom)
    check_run(store, res, want)
    # some key really has several versions, so the rule was exercised
    keys = [r[0] for r in want]
    assert retain_seq >= 1200 or len(set(keys)) < len(keys)


def test_tombstones_survive_unless_bottom():
    store = MemoryStore()
    old = [(b"a", 1, 1, b"x"), (b"b", 2, 1, b"y")]
    new = [(b"a", 3, 0, b""), (b"c", 4, 0, b"")]
    m, job, recs = l0_setup(store, [old, new])
    res = execute(store, m, job)
    assert read_ssts(store, res.run.ssts) == [(b"a", 3, 0, b""), (b"b", 2, 1, b"y"), (b"c", 4, 0, b"")]
    res = execute(store, m, CompactionJob(job.l0, (), 0, bottom=True))
    assert read_ssts(store, res.run.ssts) == [(b"b", 2, 1, b"y")]


def test_everything_deleted_at_the_bottom_gives_no_run():
    store = MemoryStore()
    m, job, _ = l0_setup(store, [[(b"a", 1, 1, b"x")], [(b"a", 2, 0, b"")]])
    res = execute(store, m, CompactionJob(job.l0, (), 0, bottom=True))
    assert res.run is None and res.new_ssts == () and res.bytes_out == 0


def test_merge_of_runs_and_l0_respects_recency():
    """A run merge where a key's versions are spread over chunks and SSTs of
    several sources (one record per block, tiny read-ahead)."""
    store = MemoryStore()
    gens = generations(11, n_gens=5, keyspace=40)
    older = [r for g in gens[:3] for r in g]
    run_refs = write_ssts(store, expected(older, retain_seq=0), target_bytes=600, block_size=64)
    l0 = [write_ssts(store, g, block_size=64) for g in reversed(gens[3:])]
    m = manifest_of(l0=l0, runs=[(3, run_refs)])
    job = CompactionJob(tuple(s.sst_id for s in m.l0), (3,), dest_run_id=4, bottom=True)
    res = execute(store, m, job, MergeParams(retain_seq=0, read_ahead_bytes=64, sst_target_bytes=1000))
    check_run(store, res, expected([r for g in gens for r in g], retain_seq=0, bottom=True))
    assert res.run.run_id == 4


def test_trivial_move_references_inputs():
    store = MemoryStore()
    a = write_ssts(store, [(b"a%d" % i, i + 1, 1, b"x") for i in range(10)])
    b = write_ssts(store, [(b"b%d" % i, i + 20, 1, b"y") for i in range(10)])
    m = manifest_of(l0=[b, a])
    job = CompactionJob(tuple(s.sst_id for s in m.l0), (), 0, bottom=True, trivial_move=True)
    res = execute(store, m, job)
    assert res.run.ssts == tuple(a + b) and res.new_ssts == () and res.bytes_out == 0


def test_split_ranges_cut_at_sst_boundaries():
    store = MemoryStore()
    refs = write_ssts(store, [(b"k%04d" % i, i + 1, 1, b"v" * 50) for i in range(400)], target_bytes=2048)
    ranges = split_ranges([refs], 3)
    assert len(ranges) == 3 and ranges[0][0] is None and ranges[-1][1] is None
    firsts = {r.first_key for r in refs}
    assert all(a == b for (_, a), (b, _) in zip(ranges, ranges[1:]))
    assert all(end in firsts for _, end in ranges[:-1])
    assert split_ranges([refs], 1) == [(None, None)]


def test_bad_workers():
    store = MemoryStore()
    m, job, _ = l0_setup(store, [[(b"a", 1, 1, b"x")]])
    with pytest.raises(InvalidArgument):
        execute(store, m, job, workers=0)


def test_two_workers_give_the_same_run_as_one(tmp_path):
    """Subcompactions in a spawn pool: the same records, the same key order."""
    store = LocalStore(str(tmp_path / "db"), fsync=False)
    gens = generations(3, n_gens=4, n_ops=800, keyspace=600)
    m, job, recs = l0_setup(store, gens)
    params = MergeParams(sst_target_bytes=4096, block_size=512)
    one = execute(store, m, job, params, workers=1)
    two = execute(store, m, job, params, workers=2, min_subcompaction_bytes=1)
    want = expected(recs)
    check_run(store, one, want)
    check_run(store, two, want)
    assert one.subcompactions == 1 and two.subcompactions == 2
    assert not set(one.new_ssts) & set(two.new_ssts)


class _RangeRecorder:
    """A store proxy recording the length of every ranged GET."""

    def __init__(self, inner):
        self.inner = inner
        self.gets = []

    def get_range(self, key, start, end):
        self.gets.append(end - start)
        return self.inner.get_range(key, start, end)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_merge_streams_in_read_ahead_chunks():
    """A run much larger than the read-ahead is merged without ever being
    fetched whole: every data GET is at most one read-ahead (or one block)."""
    from shaledb.sst.reader import TAIL_BYTES

    store = MemoryStore()
    big = [(b"k%06d" % i, i + 1, 1, b"x" * 200) for i in range(3000)]
    run_refs = write_ssts(store, big, target_bytes=400_000, block_size=4096)
    newer = write_ssts(store, [(b"k%06d" % i, 10_000 + i, 1, b"y") for i in range(0, 3000, 7)])
    m = manifest_of(l0=[newer], runs=[(0, run_refs)])
    assert max(r.size for r in run_refs) > 2 * TAIL_BYTES
    rec = _RangeRecorder(store)
    job = CompactionJob(tuple(s.sst_id for s in m.l0), (0,), 1, bottom=True)
    res = execute(rec, m, job, MergeParams(read_ahead_bytes=16 << 10, sst_target_bytes=64 << 10))
    assert max(rec.gets) <= TAIL_BYTES < min(r.size for r in run_refs[:-1])  # never a whole SST
    big_gets = [g for g in rec.gets if g > (16 << 10) + 4096]  # only the SST tails (footer, index)
    assert len(big_gets) <= 2 * (len(run_refs) + 1)
    assert sum(rec.gets) > sum(r.size for r in run_refs) // 2
    check_run(store, res, expected(big + [(b"k%06d" % i, 10_000 + i, 1, b"y") for i in range(0, 3000, 7)], bottom=True))


def test_split_ranges_balance_overlapping_ssts():
    """L0 SSTs that each span the whole key space: cutting at SST first keys
    cannot balance them; the block index of each SST can."""
    store = MemoryStore()
    keys = [b"k%04d" % i for i in range(1000)]
    sources = [write_ssts(store, [(k, g * 1000 + i + 1, 1, b"v" * 60) for i, k in enumerate(keys)],
                          target_bytes=1 << 20) for g in range(4)]
    assert all(len(s) == 1 for s in sources)
    by_first = split_ranges(sources, 2)
    assert len(by_first) == 1 or sum(1 for k in keys if by_first[0][1] is not None and k < by_first[0][1]) < 50
    ranges = split_ranges(sources, 2, store)
    assert len(ranges) == 2 and ranges[0][0] is None and ranges[1][1] is None and ranges[0][1] == ranges[1][0]
    left = sum(1 for k in keys if k < ranges[0][1])
    assert 400 <= left <= 600
    four = split_ranges(sources, 4, store)
    assert len(four) == 4
    sizes = [sum(1 for k in keys if (a is None or k >= a) and (b is None or k < b)) for a, b in four]
    assert sum(sizes) == 1000 and min(sizes) >= 150
