"""The compactor (docs/compaction.md): scheduler, streaming merge executor,
the compactor process (``python -m shaledb.compact URL``) and the service a
Db runs (``service``: compaction and GC on intervals and on request)."""

from shaledb.compact.compactor import CHECKPOINTS, CompactionReport, Compactor, checkpoint_retain_seq, run
from shaledb.compact.executor import JobResult, MergeParams, execute
from shaledb.compact.requests import CompactorRequest
from shaledb.compact.scheduler import CompactionJob, Scheduler, SizeTieredScheduler
from shaledb.compact.service import CompactorConfig, CompactorProcess, CompactorService

__all__ = [
    "CHECKPOINTS",
    "CompactionJob",
    "CompactionReport",
    "Compactor",
    "CompactorConfig",
    "CompactorProcess",
    "CompactorRequest",
    "CompactorService",
    "JobResult",
    "MergeParams",
    "Scheduler",
    "SizeTieredScheduler",
    "checkpoint_retain_seq",
    "execute",
    "run",
]
