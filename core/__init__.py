"""ShaleDB: an embedded key-value storage engine whose durable home is object storage.

The engine (``shaledb.open``) is imported lazily so that ``import shaledb.storage``
stays light and never compiles kernels.
"""

from __future__ import annotations

from shaledb.errors import (
    Closed,
    Conflict,
    Corruption,
    Fenced,
    Internal,
    InvalidArgument,
    ObjectNotFound,
    PreconditionFailed,
    ShaleDBError,
    StorageError,
    Unavailable,
)

__version__ = "0.1.0.dev0"

# Silent unless the application configures logging (docs/operations.md, "Logging").
import logging as _logging

_logging.getLogger("shaledb").addHandler(_logging.NullHandler())

# Engine names, imported on first use (PEP 562) so ``import shaledb`` stays
# light: no numpy/numba/boto3 until a database is opened.
_LAZY = {
    "open": ("shaledb.db", "open"),
    "Db": ("shaledb.db", "Db"),
    "Options": ("shaledb.options", "Options"),
    "WriteBatch": ("shaledb.memtable.writer", "WriteBatch"),
    "Writer": ("shaledb.memtable.writer", "Writer"),
    "DbReader": ("shaledb.readonly.reader", "DbReader"),
    "open_reader": ("shaledb.readonly.reader", "open_reader"),
    "Snapshot": ("shaledb.readonly.snapshot", "Snapshot"),
    "checkpoints": ("shaledb.checkpoints", None),
    "clone": ("shaledb.clones.clone", "clone"),
}


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'shaledb' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(target[0])
    value = module if target[1] is None else getattr(module, target[1])
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "Closed",
    "Conflict",
    "Corruption",
    "Db",
    "DbReader",
    "Fenced",
    "Internal",
    "InvalidArgument",
    "ObjectNotFound",
    "Options",
    "PreconditionFailed",
    "ShaleDBError",
    "Snapshot",
    "StorageError",
    "Unavailable",
    "WriteBatch",
    "Writer",
    "__version__",
    "checkpoints",
    "clone",
    "open",
    "open_reader",
]
