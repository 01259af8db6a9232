"""Checkpoints: pins on one manifest that GC and compaction honour
(docs/readers.md).  ``create``/``list``/``delete``/``refresh`` take a url
(tools that hold no writer); the ``*_in`` forms take the engine's store.

Loaded lazily: importing this package loads nothing heavy.
"""

from __future__ import annotations

from shaledb.lazy import lazy_surface

_NAMES = dict.fromkeys(
    (
        "Checkpoint",
        "create",
        "create_in",
        "delete",
        "delete_in",
        "find_live",
        "lifetime_ms",
        "list",
        "list_in",
        "open_root",
        "refresh",
        "refresh_in",
    ),
    "api",
)

__all__, __getattr__, __dir__ = lazy_surface(__name__, _NAMES, ("api",))
