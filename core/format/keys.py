"""Bucket key layout (see docs/format/bucket.md).

A store passed to ShaleDB is already rooted at the database (``s3://bucket/db``
or a directory), so every key here is relative to that root::

    manifest/<20-digit id>.manifest   full manifest snapshots, ids from 1
    wal/<20-digit id>.sst             WAL objects and zero-byte fences, ids from 1
    compacted/<ulid>.sst              L0 and sorted-run SSTs

Ids are zero-padded to 20 digits so that listing order equals numeric order.
"""

from __future__ import annotations

import os
import re
import threading
import time

from shaledb.errors import InvalidArgument

__all__ = [
    "COMPACTED_PREFIX",
    "MANIFEST_PREFIX",
    "WAL_PREFIX",
    "manifest_key",
    "new_sst_id",
    "parse_manifest_key",
    "parse_sst_key",
    "parse_wal_key",
    "sst_key",
    "wal_key",
]

MANIFEST_PREFIX = "manifest/"
WAL_PREFIX = "wal/"
COMPACTED_PREFIX = "compacted/"

_MAX_ID = 10**20 - 1
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MANIFEST_RE = re.compile(r"^manifest/(\d{20})\.manifest$")
_WAL_RE = re.compile(r"^wal/(\d{20})\.sst$")
_SST_RE = re.compile(r"^compacted/([0-9A-HJKMNP-TV-Z]{26})\.sst$")


def _check_id(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= _MAX_ID:
        raise InvalidArgument(f"object id must be an int in 1..{_MAX_ID}, got {n!r}")
    return n


def manifest_key(manifest_id: int) -> str:
    return f"{MANIFEST_PREFIX}{_check_id(manifest_id):020d}.manifest"


def wal_key(wal_id: int) -> str:
    return f"{WAL_PREFIX}{_check_id(wal_id):020d}.sst"


def sst_key(sst_id: str) -> str:
    if not _SST_RE.match(f"{COMPACTED_PREFIX}{sst_id}.sst"):
        raise InvalidArgument(f"not an SST id (26-character ULID): {sst_id!r}")
    return f"{COMPACTED_PREFIX}{sst_id}.sst"


def parse_manifest_key(key: str) -> int | None:
    """The id of a manifest key, or None when ``key`` is not one."""
    m = _MANIFEST_RE.match(key)
    return int(m.group(1)) if m else None


def parse_wal_key(key: str) -> int | None:
    """The id of a WAL key, or None when ``key`` is not one."""
    m = _WAL_RE.match(key)
    return int(m.group(1)) if m else None


def parse_sst_key(key: str) -> str | None:
    """The ULID of an SST key, or None when ``key`` is not one."""
    m = _SST_RE.match(key)
    return m.group(1) if m else None


_ulid_lock = threading.Lock()
_last_ulid = 0


def new_sst_id(now_ms: int | None = None, rand: bytes | None = None) -> str:
    """A new ULID: 48-bit millisecond time then 80 random bits, Crockford base32.

    ``now_ms`` and ``rand`` (10 bytes) may be injected for reproducible tests.
    Without injected parts the ids are strictly increasing within a process
    (even within one millisecond or when the wall clock steps back): GC's
    SST watermark rule relies on it (docs/gc.md).
    """
    injected = now_ms is not None or rand is not None
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    if rand is None:
        rand = os.urandom(10)
    if len(rand) != 10 or not 0 <= now_ms < 1 << 48:
        raise InvalidArgument("ULID needs a 48-bit time and 10 random bytes")
    value = (now_ms << 80) | int.from_bytes(rand, "big")
    if not injected:
        global _last_ulid
        with _ulid_lock:
            value = max(value, _last_ulid + 1)
            _last_ulid = value
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))
