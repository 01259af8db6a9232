"""Shared-memory memtables: segments (``shm``), the arena pool every writer
process appends into (``arena_pool``) and the writer handles (``writer``).

Other packages use only the names in ``__all__``.  They are re-exported
lazily, so ``import shaledb.memtable`` loads neither numba nor the pool.
See docs/format/arena.md.
"""

from __future__ import annotations

from shaledb.lazy import lazy_surface

_HOME = {
    "NO_ARENA": "arena_pool",
    "NO_MEMORY": "arena_pool",
    "ArenaPool": "arena_pool",
    "SealedGeneration": "arena_pool",
    "WriteBatch": "writer",
    "Writer": "writer",
    "WriterHooks": "writer",
    "check_bound": "writer",
    "check_key": "writer",
    "check_value": "writer",
}

__all__, __getattr__, __dir__ = lazy_surface(__name__, _HOME)
