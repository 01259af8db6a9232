"""The size-tiered scheduler: L0 threshold, run windows within the size
ratio, at most max_sources, consecutive sources, trivial moves, full."""

from __future__ import annotations

import pytest

from shaledb.compact.scheduler import CompactionJob, Scheduler, SizeTieredScheduler
from shaledb.errors import InvalidArgument
from shaledb.format.keys import new_sst_id
from shaledb.manifest.model import Manifest, SortedRun, SstRef

_seq = iter(range(1, 1 << 30))


def ref(first: bytes, last: bytes, size: int = 100) -> SstRef:
    s = next(_seq)
    return SstRef(new_sst_id(), first, last, size, s, s, 1)


def overlapping(n):
    return tuple(ref(b"a", b"z") for _ in range(n))


def manifest(l0=(), run_sizes=(), disjoint_runs=False):
    runs = []
    for i, size in enumerate(run_sizes):
        rid = len(run_sizes) - i + 10  # highest first
        k = b"%03d" % i if disjoint_runs else b"a"
        runs.append(SortedRun(rid, (ref(k, k + b"z" if not disjoint_runs else k, size),)))
    refs = list(l0) + [s for r in runs for s in r.ssts]
    return Manifest(l0=tuple(l0), sorted_runs=tuple(runs), last_l0_seq=max((r.max_seq for r in refs), default=0),
                    next_wal_id=2)


def test_protocol():
    assert isinstance(SizeTieredScheduler(), Scheduler)
    with pytest.raises(InvalidArgument):
        SizeTieredScheduler(min_runs=1)
    with pytest.raises(InvalidArgument):
        CompactionJob((), (), 0, False)


def test_l0_below_threshold_does_nothing():
    assert SizeTieredScheduler().plan(manifest(l0=overlapping(3))) == []


def test_l0_at_threshold_makes_a_new_top_run():
    l0 = overlapping(4)
    m = manifest(l0=l0, run_sizes=[100])
    (job,) = SizeTieredScheduler().plan(m)
    assert job.l0 == tuple(s.sst_id for s in l0) and job.runs == ()
    assert job.dest_run_id == m.sorted_runs[0].run_id + 1
    assert not job.bottom and not job.trivial_move
    (job,) = SizeTieredScheduler().plan(manifest(l0=l0))
    assert job.bottom and job.dest_run_id == 0


def test_l0_job_takes_the_oldest_max_sources():
    l0 = overlapping(11)
    (job,) = SizeTieredScheduler().plan(manifest(l0=l0))
    assert job.l0 == tuple(s.sst_id for s in l0[-8:])


def test_disjoint_l0_is_a_trivial_move():
    l0 = tuple(ref(b"%02d" % i, b"%02d~" % i) for i in range(4))
    (job,) = SizeTieredScheduler().plan(manifest(l0=l0))
    assert job.trivial_move


@pytest.mark.parametrize(
    "sizes, want",
    [
        ([100, 100, 100], None),  # fewer than min_runs
        ([100, 200, 300, 400], (0, 4)),  # 400 <= 4 * 100
        ([100, 200, 300, 500], None),  # 500 > 4 * 100
        ([5000, 100, 200, 300, 400, 9000], (1, 5)),  # the window sits between big runs
        ([100] * 10, (0, 8)),  # at most max_sources
        ([10, 1000, 1000, 1000, 1000], (1, 5)),
    ],
)
def test_run_windows(sizes, want):
    m = manifest(run_sizes=sizes)
    jobs = SizeTieredScheduler().plan(m)
    if want is None:
        assert jobs == []
        return
    (job,) = jobs
    window = m.sorted_runs[want[0] : want[1]]
    assert job.runs == tuple(r.run_id for r in window)  # consecutive, newest first
    assert job.dest_run_id == window[0].run_id
    assert job.bottom == (want[1] == len(sizes))
    assert not job.trivial_move


def test_l0_and_run_jobs_are_disjoint():
    m = manifest(l0=overlapping(5), run_sizes=[100] * 4)
    l0_job, run_job = SizeTieredScheduler().plan(m)
    assert l0_job.runs == () and run_job.l0 == ()
    assert l0_job.dest_run_id not in run_job.runs


def test_full_merges_everything():
    m = manifest(l0=overlapping(2), run_sizes=[100, 100000])
    (job,) = SizeTieredScheduler().plan(m, full=True)
    assert job.num_sources == 4 and job.bottom and job.dest_run_id == m.sorted_runs[0].run_id + 1
    m = manifest(run_sizes=[100, 100000])
    (job,) = SizeTieredScheduler().plan(m, full=True)
    assert job.runs == tuple(r.run_id for r in m.sorted_runs) and job.dest_run_id == m.sorted_runs[0].run_id
    assert SizeTieredScheduler().plan(manifest(run_sizes=[100]), full=True) == []
    (job,) = SizeTieredScheduler().plan(manifest(run_sizes=[1, 1, 1], disjoint_runs=True), full=True)
    assert job.trivial_move
