"""Load ids and the deterministic SST ids of a bulk load (docs/bulk.md).

A load id is a ULID whose time part is the load's *lease end*: creation time
plus ``lease`` seconds.  Every SST of the load is named
``compacted/<ulid>.sst`` with that same time part and 80 bits of
BLAKE2b(load id, partition, attempt, n), so a retried task writes the same
names (and, from the same input, the same bytes), and GC's rules
(docs/gc.md) keep an uningested upload until the lease ends plus
``gc_min_age``: its ULID time is in the future and above every SST
watermark until then.  After that, leftovers of a failed load are ordinary
garbage.

Thread safety: pure functions.
"""

from __future__ import annotations

import hashlib
import os
import time

from shaledb.errors import InvalidArgument
from shaledb.format.keys import new_sst_id
from shaledb.manifest.model import ulid_to_bytes

__all__ = ["DEFAULT_LEASE", "bulk_sst_id", "check_load_id", "lease_end_ms", "new_load_id"]

#: How long an uningested upload is safe from GC (seconds): a day.
DEFAULT_LEASE = 24 * 3600.0

_CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def new_load_id(lease: float = DEFAULT_LEASE, *, now_ms: int | None = None) -> str:
    """A fresh load id whose uploads GC leaves alone for ``lease`` seconds."""
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 <= lease <= 3650 * 86400:
        raise InvalidArgument(f"lease must be seconds in 0 .. 10 years, got {lease!r}")
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else int(now_ms)
    return new_sst_id(now_ms=now_ms + int(lease * 1000), rand=os.urandom(10))


def check_load_id(load_id: object) -> str:
    """``load_id`` if it is a ULID string (from :func:`new_load_id`), else InvalidArgument."""
    if not (isinstance(load_id, str) and len(load_id) == 26 and set(load_id) <= _CROCKFORD and load_id[0] <= "7"):
        raise InvalidArgument(f"load_id must be a ULID from shaledb.bulk.new_load_id(), got {load_id!r}")
    return load_id


def lease_end_ms(load_id: str) -> int:
    """The lease end (ms since the epoch) a load id carries."""
    return int.from_bytes(ulid_to_bytes(check_load_id(load_id))[:6], "big")


def _check_small(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 32:
        raise InvalidArgument(f"{name} must be an int in 0 .. 2**32-1, got {v!r}")
    return v


def bulk_sst_id(load_id: str, partition: int, attempt: int, n: int) -> str:
    """The id of SST ``n`` of (load, partition, attempt): deterministic."""
    parts = (check_load_id(load_id), _check_small("partition", partition), _check_small("attempt", attempt),
             _check_small("n", n))
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=10).digest()
    return new_sst_id(now_ms=lease_end_ms(load_id), rand=digest)
