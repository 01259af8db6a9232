"""A store with some keys read from another store (a clone's shared SSTs).

``OverlayStore(inner, keys, opener)``: reads (``get``, ``get_range``,
``head``) of a key in ``keys`` go to the store ``opener()`` returns, opened
on first use; everything else goes to ``inner``.  ``list`` shows ``inner``
only.  A write or delete of a key in ``keys`` raises InvalidArgument: those
objects belong to the other store, and nothing that writes through this one
may change or remove them.

Thread safety: the other store is opened once under a lock; after that the
wrapper is immutable.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from shaledb.errors import InvalidArgument
from shaledb.storage.wrappers import StoreWrapper

__all__ = ["OverlayStore"]


class OverlayStore(StoreWrapper):
    """``inner``, except that reads of ``keys`` go to ``opener()``."""

    def __init__(self, inner, keys: Iterable[str], opener: Callable[[], object]):
        super().__init__(inner)
        self.keys = frozenset(keys)
        self._opener = opener
        self._other = None
        self._lock = threading.Lock()

    def _src(self):
        other = self._other
        if other is None:
            with self._lock:
                if self._other is None:
                    self._other = self._opener()
                other = self._other
        return other

    def _refuse(self, key: str):
        raise InvalidArgument(f"{key!r} belongs to another store (a clone's source); it is never written or deleted here")

    def get(self, key: str) -> bytes:
        return self._src().get(key) if key in self.keys else self.inner.get(key)

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        return self._src().get_range(key, start, end) if key in self.keys else self.inner.get_range(key, start, end)

    def head(self, key: str):
        return self._src().head(key) if key in self.keys else self.inner.head(key)

    def mmap(self, key: str):
        """A read-only view of the object from whichever store holds it, when
        that store maps objects (a local directory); None otherwise."""
        fn = getattr(self._src() if key in self.keys else self.inner, "mmap", None)
        return None if fn is None else fn(key)

    def put(self, key, data, metadata=None, *, put_id=None):
        if key in self.keys:
            self._refuse(key)
        return self.inner.put(key, data, metadata, put_id=put_id)

    def put_if_absent(self, key, data, metadata=None, *, put_id=None):
        if key in self.keys:
            self._refuse(key)
        return self.inner.put_if_absent(key, data, metadata, put_id=put_id)

    def put_if_match(self, key, data, etag, metadata=None, *, put_id=None):
        if key in self.keys:
            self._refuse(key)
        return self.inner.put_if_match(key, data, etag, metadata, put_id=put_id)

    def delete(self, key: str) -> None:
        if key in self.keys:
            self._refuse(key)
        self.inner.delete(key)

    def close(self) -> None:
        other, self._other = self._other, None
        if other is not None:
            other.close()
        self.inner.close()
