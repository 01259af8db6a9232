"""A local disk cache of ranged reads: :class:`DiskCacheStore`.

Wraps a (remote) store and keeps the parts of immutable objects it read in
files under one directory, so a repeated read costs a file read instead of a
request.  Only keys under ``cacheable`` prefixes are cached (ShaleDB passes
the SST prefix: SST objects never change once written); every other key
(manifests, WAL objects, fences) goes straight to the inner store, always.

Parts: an object is cut into aligned parts of ``part_bytes``; a
``get_range`` reads the parts it covers from disk and fetches the missing
ones (consecutive missing parts in one ranged GET), then writes them.  A
short part is the object's last.  Part file layout (little-endian)::

    +0   8 bytes  magic  b"SHDBPART"
    +8   u64      payload length
    +16  u64      xxh64 (seed 0) of the payload
    +24  payload

A part file whose size, magic, length or checksum is wrong (truncated by a
crash, damaged on disk) is deleted and fetched again: it is never returned
as data.  Files are written to a temporary name and renamed into place, so
several processes may share a directory: a reader sees a whole part or
none.  ``directory/<sha256 of store url + key>/<part index>``.

Size bound: the cache evicts least recently used parts (modification time,
touched on every hit) down to 90 % of ``capacity_bytes`` whenever its
estimate of the directory's bytes exceeds ``capacity_bytes``; the estimate
is recounted from the directory every ``capacity_bytes / 8`` bytes written,
so processes sharing a directory overshoot by at most that much each.
``delete`` through this store drops the key's parts.  Thread-safe.
docs/reads.md ("S3 disk cache").
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import uuid
from typing import Iterable

import xxhash

from shaledb.errors import InvalidArgument
from shaledb.storage.base import check_range
from shaledb.storage.wrappers import StoreWrapper

__all__ = ["DEFAULT_PART_BYTES", "DiskCacheStore", "PART_HEADER", "PART_MAGIC"]

PART_MAGIC = b"SHDBPART"
PART_HEADER = struct.Struct("<8sQQ")
#: Size of one cached part (the unit of fetching and eviction).
DEFAULT_PART_BYTES = 256 * 1024
_TMP = ".tmp-"


class DiskCacheStore(StoreWrapper):
    """``inner`` with ranged reads of ``cacheable`` keys cached on local disk."""

    def __init__(self, inner, directory: str, capacity_bytes: int, *, cacheable: Iterable[str] = ("",),
                 part_bytes: int = DEFAULT_PART_BYTES):
        super().__init__(inner)
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes < 1:
            raise InvalidArgument(f"cache capacity must be an int >= 1 byte, got {capacity_bytes!r}")
        if isinstance(part_bytes, bool) or not isinstance(part_bytes, int) or part_bytes < 1:
            raise InvalidArgument(f"cache part size must be an int >= 1, got {part_bytes!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        self.capacity_bytes = capacity_bytes
        self.part_bytes = part_bytes
        self.cacheable = tuple(cacheable)
        self._url = inner.spec()[0]
        self._lock = threading.Lock()
        self._recount_every = max(1, capacity_bytes // 8)
        self._written = 0  # bytes written since the last count
        self._estimate = self._count()
        #: hits, misses (parts), refetched (bad part files), evicted (parts)
        self.stats = {"hits": 0, "misses": 0, "refetched": 0, "evicted": 0}

    # -- reads

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        if end is None or not key.startswith(self.cacheable):
            return self.inner.get_range(key, start, end)
        start, end = check_range(start, end)
        if start == end:
            return self.inner.get_range(key, start, end)
        pb = self.part_bytes
        p0, p1 = start // pb, (end - 1) // pb
        folder = self._folder(key)
        parts: list = []
        p = p0
        while p <= p1:
            data = self._read_part(folder, p)
            if data is not None:
                parts.append(data)
                if len(data) < pb:  # the object's last part
                    break
                p += 1
                continue
            q = p + 1  # fetch every consecutive missing part in one GET
            while q <= p1 and not os.path.exists(os.path.join(folder, str(q))):
                q += 1
            blob = memoryview(self.inner.get_range(key, p * pb, q * pb))
            self.stats["misses"] += q - p
            last = False
            for i in range(p, q):
                piece = blob[(i - p) * pb : (i - p + 1) * pb]  # a view: no copy
                self._write_part(folder, i, piece)
                parts.append(piece)
                if len(piece) < pb:
                    last = True
                    break
            if last:
                break
            p = q
        joined = b"".join(parts) if len(parts) != 1 else parts[0]
        off = start - p0 * pb
        return bytes(joined[off : off + (end - start)])

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        if key.startswith(self.cacheable):
            folder = self._folder(key)
            for name in _listdir(folder):
                _unlink(os.path.join(folder, name))
            try:
                os.rmdir(folder)
            except OSError:
                pass

    # -- part files

    def _folder(self, key: str) -> str:
        h = hashlib.sha256(f"{self._url}\x00{key}".encode()).hexdigest()
        return os.path.join(self.directory, h[:2], h)

    def _read_part(self, folder: str, i: int):
        path = os.path.join(folder, str(i))
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError:
            return None
        ok = False
        if len(raw) >= PART_HEADER.size:
            magic, n, digest = PART_HEADER.unpack_from(raw)
            payload = memoryview(raw)[PART_HEADER.size :]
            ok = magic == PART_MAGIC and n == len(payload) and xxhash.xxh64_intdigest(payload) == digest
        if not ok:  # truncated or damaged: drop it, fetch again
            _unlink(path)
            self.stats["refetched"] += 1
            return None
        self.stats["hits"] += 1
        try:
            os.utime(path)  # recently used
        except OSError:
            pass
        return payload

    def _write_part(self, folder: str, i: int, piece: bytes) -> None:
        header = PART_HEADER.pack(PART_MAGIC, len(piece), xxhash.xxh64_intdigest(piece))
        tmp = os.path.join(folder, f"{_TMP}{i}-{uuid.uuid4().hex}")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(header)
                f.write(piece)
            os.replace(tmp, os.path.join(folder, str(i)))
        except OSError:  # a full or read-only disk only costs the cache
            _unlink(tmp)
            return
        n = len(header) + len(piece)
        with self._lock:
            self._estimate += n
            self._written += n
            due = self._estimate > self.capacity_bytes or self._written >= self._recount_every
        if due:
            self._evict()

    # -- size bound

    def _files(self):
        """(mtime, size, path) of every part file (and stale temporaries)."""
        out = []
        for top in _listdir(self.directory):
            d1 = os.path.join(self.directory, top)
            for obj in _listdir(d1):
                d2 = os.path.join(d1, obj)
                try:
                    entries = list(os.scandir(d2))
                except OSError:
                    continue
                for e in entries:
                    try:
                        st = e.stat()
                    except OSError:
                        continue
                    out.append((st.st_mtime, st.st_size, e.path))
        return out

    def _count(self) -> int:
        return sum(size for _m, size, _p in self._files())

    def _evict(self) -> None:
        with self._lock:
            self._written = 0
        files = self._files()
        total = sum(size for _m, size, _p in files)
        if total > self.capacity_bytes:
            target = self.capacity_bytes * 9 // 10
            files.sort()
            for _mtime, size, path in files:
                if total <= target:
                    break
                if _unlink(path):
                    total -= size
                    self.stats["evicted"] += 1
        with self._lock:
            self._estimate = total

    def cached_bytes(self) -> int:
        """Bytes of part files in the directory now (all processes')."""
        return self._count()


def _listdir(path: str) -> list:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False
