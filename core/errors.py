"""ShaleDB's one error tree.

Every error the engine raises derives from :class:`ShaleDBError`.  Internal
causes fold into a few public kinds, each telling the caller what to do::

    ShaleDBError
    ├── InvalidArgument      bad input; nothing was written (also a ValueError)
    ├── Closed               the Db or handle was closed; open a new one
    ├── Fenced               a newer writer (or compactor) owns the database;
    │                        this handle is finished, nothing it writes from now
    │                        on becomes visible
    ├── Unavailable          the object store or the flusher did not answer in
    │                        time; retrying may succeed
    ├── Conflict             a concurrent update won a race the caller may retry
    ├── Corruption           stored bytes failed a checksum or do not parse; the
    │                        message names the object
    ├── Internal             a bug in ShaleDB; please report it
    └── StorageError         raised by ``shaledb.storage`` stores
        ├── ObjectNotFound   the key does not exist (also a KeyError)
        └── PreconditionFailed
                             a conditional write lost: the key exists
                             (put_if_absent) or its etag changed (put_if_match)

Storage backends translate their native exceptions (botocore, OSError) into
this tree at the ``shaledb.storage`` edge; nothing else crosses into the
engine.  ``Unavailable`` is shared by both layers: a store raises it for a
retryable failure (timeouts, throttling, 5xx).
"""

from __future__ import annotations

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
]


class ShaleDBError(Exception):
    """Root of every error ShaleDB raises."""


class InvalidArgument(ShaleDBError, ValueError):
    """The caller passed something ShaleDB cannot accept; nothing was written."""


class Closed(ShaleDBError):
    """The database or handle has been closed."""


class Fenced(ShaleDBError):
    """A newer writer or compactor epoch owns the database."""


class Unavailable(ShaleDBError):
    """A dependency (object store, flusher process) failed in a retryable way."""


class Conflict(ShaleDBError):
    """A concurrent update won; the operation may be retried."""


class Corruption(ShaleDBError):
    """Stored bytes are damaged or not a ShaleDB format; names the object."""


class Internal(ShaleDBError):
    """An invariant of ShaleDB itself was broken (a bug)."""


class StorageError(ShaleDBError):
    """An object-store operation failed."""


class ObjectNotFound(StorageError, KeyError):
    """The object does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep messages plain
        return Exception.__str__(self)


class PreconditionFailed(StorageError):
    """A conditional write lost its condition."""
