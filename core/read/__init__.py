"""The read path of a writer's Db: arenas, then L0 newest first, then sorted
runs.  See docs/architecture.md."""

from shaledb.read.reader import Reader, get_many, merge_visible, newest

__all__ = ["Reader", "get_many", "merge_visible", "newest"]
