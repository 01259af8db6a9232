"""Store views of a read-only reader: the store it is allowed to see.

* :class:`ReadOnlyStore` forwards reads and refuses every write with
  Internal: a reader that tried to write would be a bug, and this makes the
  "a reader never writes" guarantee structural instead of a convention.
* :class:`PinnedStore` (a ReadOnlyStore) also hides every manifest above one
  id, so a read path that follows "the latest manifest"
  (:class:`shaledb.read.Reader`) stays on a checkpoint's manifest forever.

Thread safety: immutable after construction; share freely.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from shaledb.errors import Internal, ObjectNotFound
from shaledb.format.keys import MANIFEST_PREFIX, parse_manifest_key
from shaledb.storage.wrappers import StoreWrapper

__all__ = ["PinnedStore", "ReadOnlyStore"]


class ReadOnlyStore(StoreWrapper):
    """``inner`` for reading; every write raises Internal (nothing reaches ``inner``)."""

    def _refuse(self, op: str, key: str):
        raise Internal(f"a read-only ShaleDB reader tried to {op} {key!r}: readers never write to the store")

    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None):
        self._refuse("put", key)

    def put_if_absent(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None):
        self._refuse("create", key)

    def put_if_match(self, key: str, data, etag: str, metadata=None, *, put_id: str | None = None):
        self._refuse("replace", key)

    def delete(self, key: str) -> None:
        self._refuse("delete", key)

    def close(self) -> None:  # the inner store belongs to whoever opened it
        pass


class PinnedStore(ReadOnlyStore):
    """A read-only view in which manifests above ``manifest_id`` do not exist.

    A checkpoint reader's view (fixed), or a following reader's manifest
    ceiling (``raise_to``: the manifest its WAL tail follows, so the read
    path never runs ahead of the tail).  REQUIRES: manifest ``manifest_id``
    exists (a live checkpoint pins it, or it is recent: GC keeps a manifest
    at least ``MIN_MANIFEST_AGE`` after a newer one appears)."""

    def __init__(self, inner, manifest_id: int):
        super().__init__(inner)
        self.manifest_id = manifest_id

    def raise_to(self, manifest_id: int) -> None:
        """Let manifests up to ``manifest_id`` be seen (never lowers)."""
        if manifest_id > self.manifest_id:
            self.manifest_id = manifest_id

    def _hidden(self, key: str) -> bool:
        i = parse_manifest_key(key)
        return i is not None and i > self.manifest_id

    def get(self, key: str) -> bytes:
        if self._hidden(key):
            raise ObjectNotFound(key)
        return self.inner.get(key)

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        if self._hidden(key):
            raise ObjectNotFound(key)
        return self.inner.get_range(key, start, end)

    def head(self, key: str):
        if self._hidden(key):
            raise ObjectNotFound(key)
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[Any]:
        for meta in self.inner.list(prefix):
            if meta.key.startswith(MANIFEST_PREFIX) and self._hidden(meta.key):
                continue
            yield meta
