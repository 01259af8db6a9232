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

__all__ = [
    "Closed",
    "Conflict",
    "Corruption",
    "Fenced",
    "Internal",
    "InvalidArgument",
    "ObjectNotFound",
    "PreconditionFailed",
    "ShaleDBError",
    "StorageError",
    "Unavailable",
    "__version__",
]
