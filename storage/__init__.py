"""ShaleDB object stores: one contract, several backends, composable wrappers.

``open_store(url, **options)`` opens a backend from a URL; see
``docs/storage.md`` for the contract every backend keeps.  boto3 is imported
only when an S3 store is opened.
"""

from __future__ import annotations

from shaledb.errors import ObjectNotFound, PreconditionFailed, StorageError, Unavailable
from shaledb.storage.base import (
    ObjectMeta,
    ObjectStore,
    PutResult,
    put_if_absent_idempotent,
    put_if_match_idempotent,
)
from shaledb.storage.local import LocalStore
from shaledb.storage.memory import MemoryStore
from shaledb.storage.s3 import S3Store
from shaledb.storage.urls import open_store
from shaledb.storage.wrappers import FaultyStore, InstrumentedStore, RetryingStore

__all__ = [
    "FaultyStore",
    "InstrumentedStore",
    "LocalStore",
    "MemoryStore",
    "ObjectMeta",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "PutResult",
    "RetryingStore",
    "S3Store",
    "StorageError",
    "Unavailable",
    "open_store",
    "put_if_absent_idempotent",
    "put_if_match_idempotent",
]
