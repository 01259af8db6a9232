"""``open_store(url, **options)``: pick and open a backend from a URL.

========================  ==========================================
``/abs/path``             :class:`LocalStore` rooted at that directory
``file:///abs/path``      the same
``memory://name``         the process-wide :class:`MemoryStore` ``name``
``s3://bucket[/prefix]``  :class:`S3Store` (boto3; see its options)
========================  ==========================================

Options are passed to the backend's constructor (``fsync`` for local;
``endpoint_url``, ``region_name``, timeouts ... for S3).  A relative path, an
unknown scheme, or an option the backend does not take raises
InvalidArgument.  ``store.spec()`` returns ``(url, options)`` that reopen the
same store in another process (except ``memory://``, which is process-local).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from shaledb.errors import InvalidArgument
from shaledb.storage.base import ObjectStore

__all__ = ["open_store"]


def open_store(url: str, **options: Any) -> ObjectStore:
    """Open the object store that ``url`` names (see the module docstring)."""
    if not isinstance(url, str) or not url:
        raise InvalidArgument(f"store url must be a non-empty str, got {url!r}")
    if url.startswith("/"):
        return _local(url, options)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidArgument(
            f"store url {url!r} is neither an absolute path nor scheme://...; "
            "use /abs/path, file:///abs/path, memory://name or s3://bucket/prefix"
        )
    scheme = scheme.lower()
    if scheme == "file":
        if not rest.startswith("/"):
            raise InvalidArgument(f"file:// url must hold an absolute path (file:///abs/path), got {url!r}")
        return _local(urllib.parse.unquote(rest), options)
    if scheme == "memory":
        if options:
            raise InvalidArgument(f"memory:// stores take no options, got {sorted(options)}")
        from shaledb.storage.memory import memory_store

        if not rest or "/" in rest:
            raise InvalidArgument(f"memory url must be memory://name, got {url!r}")
        return memory_store(rest)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise InvalidArgument(f"s3 url must be s3://bucket[/prefix], got {url!r}")
        from shaledb.storage.s3 import S3Store

        return S3Store(bucket, prefix, **options)
    raise InvalidArgument(f"unknown store url scheme {scheme!r} in {url!r}; known: file, memory, s3")


def _local(path: str, options: dict[str, Any]) -> ObjectStore:
    from shaledb.storage.local import LocalStore

    unknown = set(options) - {"fsync"}
    if unknown:
        raise InvalidArgument(f"LocalStore does not take options {sorted(unknown)}")
    if not os.path.isabs(path):
        raise InvalidArgument(f"local store path must be absolute, got {path!r}")
    return LocalStore(path, **options)
