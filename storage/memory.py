"""An in-process object store for tests.

:class:`MemoryStore` keeps objects in a dict under one lock, so every
operation, including both conditional writes, is atomic with respect to every
other.  Etags are random per write.  Nothing survives the process:
``memory://name`` names a store inside the current process only (opening the
same name twice in one process gives the same store; another process opening
it gets a different, empty one).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Iterator, Mapping

from shaledb.errors import InvalidArgument, ObjectNotFound, PreconditionFailed
from shaledb.storage.base import (
    PUT_ID_KEY,
    ObjectMeta,
    ObjectStore,
    PutResult,
    check_data,
    check_key,
    check_metadata,
    check_prefix,
    check_range,
)

__all__ = ["MemoryStore", "drop_memory_store", "memory_store"]

_registry: dict[str, "MemoryStore"] = {}
_registry_lock = threading.Lock()


def memory_store(name: str) -> "MemoryStore":
    """The process-wide MemoryStore called ``name`` (created on first use)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"memory store name must be a non-empty str, got {name!r}")
    with _registry_lock:
        store = _registry.get(name)
        if store is None:
            store = _registry[name] = MemoryStore(name=name)
        return store


def drop_memory_store(name: str) -> None:
    """Forget the named store so the next ``memory://name`` starts empty."""
    with _registry_lock:
        _registry.pop(name, None)


class _Obj:
    __slots__ = ("data", "etag", "mtime", "metadata")

    def __init__(self, data: bytes, metadata: dict[str, str]):
        self.data = data
        self.etag = uuid.uuid4().hex
        self.mtime = time.time()
        self.metadata = metadata


class MemoryStore(ObjectStore):
    """Objects in a dict; thread-safe; conditional writes atomic under a lock.

    A MemoryStore made directly (not through ``memory://name``) is anonymous:
    ``spec()`` raises InvalidArgument because nothing can reopen it.
    """

    def __init__(self, *, name: str | None = None):
        self.name = name
        self._objs: dict[str, _Obj] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r})"

    def __reduce__(self):
        raise TypeError(f"{self!r} lives in one process and cannot be pickled; use a file:// or s3:// store")

    def spec(self) -> tuple[str, dict[str, Any]]:
        if self.name is None:
            raise InvalidArgument("an anonymous MemoryStore cannot be reopened; use open_store('memory://name')")
        return f"memory://{self.name}", {}

    def _missing(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {key!r} not found in {self!r}")

    def get(self, key: str) -> bytes:
        check_key(key)
        with self._lock:
            obj = self._objs.get(key)
        if obj is None:
            raise self._missing(key)
        return obj.data

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        check_key(key)
        start, end = check_range(start, end)
        with self._lock:
            obj = self._objs.get(key)
        if obj is None:
            raise self._missing(key)
        return obj.data[start:end]

    def head(self, key: str) -> ObjectMeta:
        check_key(key)
        with self._lock:
            obj = self._objs.get(key)
        if obj is None:
            raise self._missing(key)
        return ObjectMeta(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata))

    def _new(self, key, data, metadata, put_id) -> _Obj:
        check_key(key)
        view = check_data(data)
        meta = check_metadata(metadata, put_id)
        return _Obj(view.tobytes(), meta)

    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None) -> PutResult:
        obj = self._new(key, data, metadata, put_id)
        with self._lock:
            self._objs[key] = obj
        return PutResult(obj.etag, obj.metadata[PUT_ID_KEY])

    def put_if_absent(
        self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        obj = self._new(key, data, metadata, put_id)
        with self._lock:
            if key in self._objs:
                raise PreconditionFailed(f"object {key!r} already exists in {self!r}")
            self._objs[key] = obj
        return PutResult(obj.etag, obj.metadata[PUT_ID_KEY])

    def put_if_match(
        self, key: str, data, etag: str, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        obj = self._new(key, data, metadata, put_id)
        if not isinstance(etag, str) or not etag:
            raise InvalidArgument(f"etag must be a non-empty str, got {etag!r}")
        with self._lock:
            cur = self._objs.get(key)
            if cur is None:
                raise PreconditionFailed(f"object {key!r} does not exist in {self!r} (expected etag {etag})")
            if cur.etag != etag:
                raise PreconditionFailed(f"object {key!r} has etag {cur.etag}, expected {etag}")
            self._objs[key] = obj
        return PutResult(obj.etag, obj.metadata[PUT_ID_KEY])

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objs.pop(key, None)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        check_prefix(prefix)
        with self._lock:
            items = [(k, o) for k, o in self._objs.items() if k.startswith(prefix)]
        items.sort(key=lambda item: item[0])
        return iter([ObjectMeta(k, len(o.data), o.etag, o.mtime, None) for k, o in items])
