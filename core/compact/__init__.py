"""The compactor (docs/compaction.md): scheduler, streaming merge executor
and the compactor process (``python -m shaledb.compact URL``)."""

from shaledb.compact.compactor import CompactionReport, Compactor, run
from shaledb.compact.executor import JobResult, MergeParams, execute
from shaledb.compact.scheduler import CompactionJob, Scheduler, SizeTieredScheduler

__all__ = [
    "CompactionJob",
    "CompactionReport",
    "Compactor",
    "JobResult",
    "MergeParams",
    "Scheduler",
    "SizeTieredScheduler",
    "execute",
    "run",
]
