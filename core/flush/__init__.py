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

import importlib

__all__ = [
    "ControlAddress",
    "ControlClient",
    "ControlServer",
    "Flusher",
    "FlusherConfig",
    "FlusherHooks",
    "FlusherProcess",
    "Request",
    "read_wal_runs",
    "run_flusher_process",
]

_WHERE = {
    "ControlAddress": "control",
    "ControlClient": "control",
    "ControlServer": "control",
    "Flusher": "flusher",
    "FlusherConfig": "process",
    "FlusherHooks": "hooks",
    "FlusherProcess": "process",
    "Request": "requests",
    "read_wal_runs": "recovery",
    "run_flusher_process": "process",
}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'shaledb.flush' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"shaledb.flush.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
