"""An LRU cache of decoded SST blocks, bounded by bytes.

Keys are ``(object key, block number)``; values are raw (verified,
decompressed) block bytes as read-only uint8 arrays, or any object with a
``nbytes`` attribute or ``len()``.

Thread safety: every method may be called from several threads at once (one
lock for updates, no I/O under it; ``get`` takes no lock).  The hit/miss
counters are approximate under concurrent gets.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from shaledb.errors import InvalidArgument

__all__ = ["BlockCache"]


def _size(value) -> int:
    n = getattr(value, "nbytes", None)
    return int(n) if n is not None else len(value)


class BlockCache:
    """LRU by bytes.  A value larger than the whole capacity is not cached."""

    def __init__(self, capacity_bytes: int):
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes < 0:
            raise InvalidArgument(f"capacity_bytes must be an int >= 0, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable):
        """The cached value or None; a hit makes the entry most recent.

        Lock-free: ``dict.get`` and ``move_to_end`` are each atomic under the
        GIL, and an entry evicted between the two is still a valid hit."""
        items = self._items
        item = items.get(key)
        if item is None:
            self.misses += 1
            return None
        try:
            items.move_to_end(key)
        except KeyError:  # evicted meanwhile by another thread
            pass
        self.hits += 1
        return item[0]

    def put(self, key: Hashable, value) -> None:
        """Insert or replace ``key``, evicting least recent entries to fit."""
        size = _size(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.capacity_bytes:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.capacity_bytes:
                _, (_, sz) = self._items.popitem(last=False)
                self._bytes -= sz

    def discard(self, key: Hashable) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items
