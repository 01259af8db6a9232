"""The flusher (``python -m shaledb.flush``): the only writer to the object
store for one open Db.  WAL uploads, L0 builds and manifest updates
(``flusher``), recovery at open (``recovery``), the process around it
(``process``), its requests (``requests``; the channel is
``shaledb.ipc``) and its
writer-side client (``hooks``).  See docs/architecture.md.

Names are re-exported lazily, so importing a submodule (or this package)
loads nothing else.
"""

from __future__ import annotations

from shaledb.lazy import lazy_surface

_WHERE = {
    "Flusher": "flusher",
    "FlusherConfig": "process",
    "FlusherHooks": "hooks",
    "FlusherProcess": "process",
    "Request": "requests",
    "read_wal_runs": "recovery",
    "run_flusher_process": "process",
}

__all__, __getattr__, __dir__ = lazy_surface(__name__, _WHERE)
