"""Which compactions to run: the ``Scheduler`` protocol and the default
size-tiered policy (docs/compaction.md).

A scheduler is a pure function of one manifest: ``plan(manifest, full=False)``
returns :class:`CompactionJob` s whose sources are pairwise disjoint, so the
jobs of one plan may run one after another without re-planning.

Sources of a job are always *strictly consecutive in recency*.  Recency
order is L0 newest first, then sorted runs from the highest run id down
(``Manifest.sorted_runs`` order).  An L0 job takes the oldest L0 SSTs (the
compactor may only remove the tail of L0) and writes a new run above every
existing one; a run job replaces consecutive runs by one run with the
highest source run id, so read precedence never changes.

Thread safety: schedulers hold only their settings; safe to share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from shaledb.errors import InvalidArgument
from shaledb.manifest.model import Manifest, SstRef

__all__ = ["CompactionJob", "Scheduler", "SizeTieredScheduler", "job_ssts", "ssts_disjoint"]


@dataclass(frozen=True, slots=True)
class CompactionJob:
    """One compaction: merge ``l0`` (L0 SST ids, newest first) and ``runs``
    (run ids, highest first) into the sorted run ``dest_run_id``.

    * ``bottom``: no data older than the sources remains, so the output may
      drop tombstones;
    * ``trivial_move``: the source SSTs do not overlap in key range; the
      output run references them as they are (no rewrite).
    """

    l0: tuple[str, ...]
    runs: tuple[int, ...]
    dest_run_id: int
    bottom: bool
    trivial_move: bool = False

    def __post_init__(self) -> None:
        if not self.l0 and not self.runs:
            raise InvalidArgument("a compaction job needs at least one source")

    @property
    def num_sources(self) -> int:
        return len(self.l0) + len(self.runs)


@runtime_checkable
class Scheduler(Protocol):
    """A compaction policy.  ``plan`` must be pure; its jobs must keep the
    rules in the module docstring (apply_compaction refuses the others)."""

    def plan(self, manifest: Manifest, *, full: bool = False) -> list[CompactionJob]: ...


def job_ssts(manifest: Manifest, job: CompactionJob) -> list[list[SstRef]]:
    """The sources of ``job`` in recency order, each a key-ordered SST list.

    REQUIRES: every source is in ``manifest`` (InvalidArgument otherwise).
    """
    l0 = {s.sst_id: s for s in manifest.l0}
    runs = {r.run_id: r for r in manifest.sorted_runs}
    out: list[list[SstRef]] = []
    for sid in job.l0:
        if sid not in l0:
            raise InvalidArgument(f"compaction source L0 SST {sid} is not in the manifest")
        out.append([l0[sid]])
    for rid in job.runs:
        if rid not in runs:
            raise InvalidArgument(f"compaction source run {rid} is not in the manifest")
        out.append(list(runs[rid].ssts))
    return out


def ssts_disjoint(ssts: list[SstRef]) -> bool:
    """True when no two of ``ssts`` overlap in key range."""
    s = sorted(ssts, key=lambda r: r.first_key)
    return all(a.last_key < b.first_key for a, b in zip(s, s[1:]))


def _run_size(run) -> int:
    return sum(s.size for s in run.ssts)


class SizeTieredScheduler:
    """Size-tiered compaction (docs/compaction.md).

    * L0: when L0 holds at least ``l0_threshold`` SSTs, its oldest
      ``max_sources`` become one new sorted run.
    * Runs: the newest window of at least ``min_runs`` consecutive runs
      whose largest is at most ``size_ratio`` times the smallest (grown up
      to ``max_sources``) merges into one run.
    * ``full=True``: everything (all of L0 and every run) into one run,
      whatever ``max_sources`` says.
    A job whose source SSTs do not overlap is a trivial move.
    """

    def __init__(self, *, l0_threshold: int = 4, min_runs: int = 4, max_sources: int = 8, size_ratio: float = 4.0):
        if l0_threshold < 1 or min_runs < 2 or max_sources < 2 or size_ratio < 1:
            raise InvalidArgument(
                "SizeTieredScheduler needs l0_threshold >= 1, min_runs >= 2, max_sources >= 2, size_ratio >= 1"
            )
        self.l0_threshold = int(l0_threshold)
        self.min_runs = int(min_runs)
        self.max_sources = int(max_sources)
        self.size_ratio = float(size_ratio)

    def plan(self, manifest: Manifest, *, full: bool = False) -> list[CompactionJob]:
        m = manifest
        top = m.sorted_runs[0].run_id + 1 if m.sorted_runs else 0
        if full:
            if not m.l0 and len(m.sorted_runs) <= 1:
                return []
            job = CompactionJob(
                l0=tuple(s.sst_id for s in m.l0),
                runs=tuple(r.run_id for r in m.sorted_runs),
                dest_run_id=top if m.l0 else m.sorted_runs[0].run_id,
                bottom=True,
            )
            return [self._maybe_trivial(m, job)]
        jobs = []
        if len(m.l0) >= self.l0_threshold:
            take = m.l0[-self.max_sources :]
            jobs.append(
                self._maybe_trivial(
                    m,
                    CompactionJob(
                        l0=tuple(s.sst_id for s in take), runs=(), dest_run_id=top, bottom=not m.sorted_runs
                    ),
                )
            )
        window = self._run_window(m)
        if window:
            jobs.append(
                self._maybe_trivial(
                    m,
                    CompactionJob(
                        l0=(),
                        runs=tuple(r.run_id for r in window),
                        dest_run_id=window[0].run_id,
                        bottom=window[-1] is m.sorted_runs[-1],
                    ),
                )
            )
        return jobs

    def _run_window(self, m: Manifest):
        runs = m.sorted_runs
        sizes = [_run_size(r) for r in runs]
        for i in range(len(runs) - self.min_runs + 1):
            j = i + 1
            lo = hi = sizes[i]
            while j < len(runs) and j - i < self.max_sources:
                nlo, nhi = min(lo, sizes[j]), max(hi, sizes[j])
                if nhi > self.size_ratio * nlo:
                    break
                lo, hi = nlo, nhi
                j += 1
            if j - i >= self.min_runs:
                return runs[i:j]
        return None

    @staticmethod
    def _maybe_trivial(m: Manifest, job: CompactionJob) -> CompactionJob:
        ssts = [s for src in job_ssts(m, job) for s in src]
        if job.num_sources > 1 and ssts_disjoint(ssts):
            return CompactionJob(job.l0, job.runs, job.dest_run_id, job.bottom, trivial_move=True)
        return job
