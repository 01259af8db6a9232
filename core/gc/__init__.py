"""Garbage collection of WAL objects, SSTs and manifests (docs/gc.md).

``collect(store, min_age=...)`` deletes what no live manifest needs; it
never fences anyone (it updates the manifest only as a reader, to drop
expired checkpoints).
"""

from shaledb.gc.collector import GcResult, collect

__all__ = ["GcResult", "collect"]
