"""Shared-memory memtables: segments (``shm``), the arena pool every writer
process appends into (``arena_pool``) and the writer handles (``writer``).

Other packages use only the names in ``__all__``.  They are re-exported
lazily, so ``import shaledb.memtable`` loads neither numba nor the pool.
See docs/format/arena.md.
"""

from __future__ import annotations

import importlib

__all__ = [
    "NO_ARENA",
    "NO_MEMORY",
    "ArenaPool",
    "SealedGeneration",
    "WriteBatch",
    "Writer",
    "WriterHooks",
    "check_bound",
    "check_key",
    "check_value",
]

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


def __getattr__(name: str):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
