"""Read-only access to a database: readers in any process or machine
(``open_reader`` -> ``DbReader``), snapshots of an open Db (``Snapshot``),
their WAL tail and store views.  Nothing here writes to the store except a
snapshot's checkpoint (a reader-role manifest update made by the writer's
process).  See docs/readers.md.

Loaded lazily: importing this package loads nothing heavy.
"""

from __future__ import annotations

from shaledb.lazy import lazy_surface

_NAMES = {
    "DbReader": "reader",
    "FixedMem": "reader",
    "open_reader": "reader",
    "Snapshot": "snapshot",
    "PinnedStore": "views",
    "ReadOnlyStore": "views",
    "TailState": "wal_tail",
    "WalTail": "wal_tail",
}

__all__, __getattr__, __dir__ = lazy_surface(__name__, _NAMES, ("reader", "snapshot", "views", "wal_tail"))
