"""The local-directory object store, ShaleDB's embedded default.

Key ``a/b/c`` is the file ``<root>/a/b/c``, so the directory looks like the
bucket would.  Because a path cannot be both a file and a directory, a store
cannot hold both ``a`` and ``a/b``; such a write raises InvalidArgument.

Object file format
------------------
Each object file starts with a small header so that the etag and metadata are
published atomically with the bytes (they live in the same inode)::

    +----------+-------------+------------------------+------------------+
    | magic 8B | hlen u32 LE | header: hlen bytes     | payload          |
    | ShaleOb1 |             | UTF-8 JSON             | (object bytes)   |
    +----------+-------------+------------------------+------------------+

The header JSON is ``{"etag": "<32 hex>", "metadata": {name: value}}``.  The
etag is 128 random bits drawn for every write, so it changes on every write,
in every process, even when the bytes are the same.  ``size`` is the payload
length; ``last_modified`` is the file's mtime.

Writes
------
Every write goes to a temporary file ``.shaledb-tmp-<random>`` in the target
directory, is fsynced (unless ``fsync=False``), then published:

* ``put``: ``os.replace`` (atomic rename over the old file);
* ``put_if_absent``: ``os.link`` of the temp file to the final name, which
  fails with EEXIST if the name exists (atomic in the kernel, so correct
  across processes), then the temp name is removed;
* ``put_if_match``: under the store lock, read the current etag, compare,
  ``os.replace``.

After publishing, the directory is fsynced so the new name survives a power
loss (and every newly created parent directory is fsynced into its parent).
A reader opens one inode and reads only it, so it sees the old object or the
new one, never a mix, and never a partly written file: temp files are never
at a key's name and are never listed.

Cross-process atomicity: ``put``, ``put_if_match`` and ``delete`` hold an
exclusive ``fcntl.flock`` on ``<root>/.shaledb-lock`` for the instant of their
check-and-rename (not while writing or fsyncing data), so a compare-and-swap
cannot interleave with another process's replace or delete.  ``put_if_absent``
needs no lock: ``link`` only succeeds while the name is absent.  flock works
between processes on one machine and between threads (each operation opens
its own lock descriptor); it is not meant for network file systems.

Listing reads only names and headers, and a file whose header is missing or
damaged (a foreign file, or byte damage) is still listed, with its whole
file size and the etag :data:`DAMAGED_ETAG`; only reading it (``get``,
``get_range``, ``head``) raises Corruption.  So damage to one object never
hides the others (an old manifest does not block finding the latest one).

A crashed writer can leave ``.shaledb-tmp-*`` files behind; they are
invisible to every operation and :meth:`LocalStore.remove_temp_files` deletes
old ones.  Empty directories left by ``delete`` are kept (harmless, invisible
to ``list``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap as _mmap
import os
import stat
import time
import uuid
from typing import Any, Iterator, Mapping

from shaledb.errors import Corruption, InvalidArgument, ObjectNotFound, PreconditionFailed, StorageError
from shaledb.storage.base import (
    PUT_ID_KEY,
    RESERVED_SEGMENT_PREFIX,
    ObjectMeta,
    ObjectStore,
    PutResult,
    check_data,
    check_key,
    check_metadata,
    check_prefix,
    check_range,
)

__all__ = ["DAMAGED_ETAG", "LocalStore", "MAGIC"]

MAGIC = b"ShaleOb1"
#: The etag ``list`` gives a file whose header is missing or damaged (a
#: foreign file, or byte damage); no write ever produces it.
DAMAGED_ETAG = "damaged"
_PREFIX_LEN = len(MAGIC) + 4
_FIRST_READ = 4096
_TMP_PREFIX = RESERVED_SEGMENT_PREFIX + "tmp-"
_LOCK_NAME = RESERVED_SEGMENT_PREFIX + "lock"
_WRITE_CHUNK = 16 << 20


def _encode_header(etag: str, metadata: dict[str, str]) -> bytes:
    body = json.dumps({"etag": etag, "metadata": metadata}, separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + len(body).to_bytes(4, "little") + body


class _Header:
    __slots__ = ("length", "etag", "metadata")

    def __init__(self, length: int, etag: str, metadata: dict[str, str]):
        self.length = length
        self.etag = etag
        self.metadata = metadata


def _read_header(fd: int, path: str) -> _Header:
    head = os.pread(fd, _FIRST_READ, 0)
    if len(head) < _PREFIX_LEN or head[: len(MAGIC)] != MAGIC:
        raise Corruption(f"{path} is not a ShaleDB local object (bad magic)")
    hlen = int.from_bytes(head[len(MAGIC) : _PREFIX_LEN], "little")
    total = _PREFIX_LEN + hlen
    if total > len(head):
        head = os.pread(fd, total, 0)
        if len(head) < total:
            raise Corruption(f"{path}: object header truncated")
    try:
        doc = json.loads(head[_PREFIX_LEN:total])
        return _Header(total, doc["etag"], doc["metadata"])
    except (ValueError, KeyError, TypeError):
        raise Corruption(f"{path}: object header does not parse") from None


def _write_all(fd: int, view: memoryview) -> None:
    pos, n = 0, len(view)
    while pos < n:
        pos += os.write(fd, view[pos : pos + _WRITE_CHUNK])


def _read_exact(fd: int, offset: int, n: int, path: str) -> bytes:
    if n == 0:
        return b""
    data = os.pread(fd, n, offset)
    if len(data) == n:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        chunk = os.pread(fd, n - got, offset + got)
        if not chunk:
            raise Corruption(f"{path}: object shorter than its size")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Lock:
    """Exclusive flock on the store's lock file (threads and processes)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing the last descriptor releases the flock


class LocalStore(ObjectStore):
    """Objects as files under ``root`` (an absolute directory path, created if missing).

    ``fsync=False`` skips every fsync: atomicity and cross-process
    correctness are unchanged, but a power loss may lose recent writes.
    """

    def __init__(self, root: str, *, fsync: bool = True):
        if not isinstance(root, str) or not os.path.isabs(root):
            raise InvalidArgument(f"LocalStore root must be an absolute path, got {root!r}")
        self.root = os.path.normpath(root)
        self.fsync = bool(fsync)
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create local store directory {self.root}: {e.strerror}") from None
        if not os.path.isdir(self.root):
            raise InvalidArgument(f"local store root {self.root} is not a directory")
        self._lock_path = os.path.join(self.root, _LOCK_NAME)

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r}, fsync={self.fsync})"

    def __reduce__(self):
        return (_reopen_local, (self.root, self.fsync))

    def spec(self) -> tuple[str, dict[str, Any]]:
        return f"file://{self.root}", {"fsync": self.fsync}

    # -- paths -------------------------------------------------------------

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def _missing(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {key!r} not found in {self.root}")

    def _open_object(self, key: str) -> tuple[int, str]:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(key) from None
        except OSError as e:
            raise StorageError(f"cannot open {path}: {e.strerror}") from None
        if not _is_regular(fd):
            os.close(fd)
            raise self._missing(key)
        return fd, path

    def _ensure_parent(self, key: str) -> str:
        segs = key.split("/")[:-1]
        parent = os.path.join(self.root, *segs)
        if os.path.isdir(parent):
            return parent
        path = self.root
        for seg in segs:
            nxt = os.path.join(path, seg)
            try:
                os.mkdir(nxt, 0o755)
            except FileExistsError:
                if not os.path.isdir(nxt):
                    raise InvalidArgument(
                        f"key {key!r} needs directory {nxt}, but an object occupies that name "
                        "(a local store cannot hold both 'a' and 'a/b')"
                    ) from None
            except NotADirectoryError:
                raise InvalidArgument(f"key {key!r} conflicts with an existing object in {self.root}") from None
            else:
                if self.fsync:
                    _fsync_dir(path)
            path = nxt
        return parent

    def _write_temp(self, key: str, data, metadata, put_id) -> tuple[str, str, str, PutResult]:
        """Write header+payload to a fresh temp file; return (tmp, final, dir, result)."""
        path = self._path(key)
        view = check_data(data)
        meta = check_metadata(metadata, put_id)
        etag = uuid.uuid4().hex
        header = _encode_header(etag, meta)
        parent = self._ensure_parent(key)
        tmp = os.path.join(parent, _TMP_PREFIX + uuid.uuid4().hex)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StorageError(f"cannot create temp file in {parent}: {e.strerror}") from None
        try:
            try:
                _write_all(fd, memoryview(header))
                _write_all(fd, view)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            _unlink_quietly(tmp)
            raise StorageError(f"writing {path} failed: {e.strerror}") from None
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return tmp, path, parent, PutResult(etag, meta[PUT_ID_KEY])

    def _conflict_if_dir(self, key: str, path: str) -> None:
        if os.path.isdir(path):
            raise InvalidArgument(
                f"key {key!r} names a directory in {self.root} (other keys start with {key + '/'!r})"
            )

    # -- reads -------------------------------------------------------------

    def get(self, key: str) -> bytes:
        fd, path = self._open_object(key)
        try:
            hdr = _read_header(fd, path)
            size = os.fstat(fd).st_size - hdr.length
            return _read_exact(fd, hdr.length, size, path)
        finally:
            os.close(fd)

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        start, end = check_range(start, end)
        fd, path = self._open_object(key)
        try:
            hdr = _read_header(fd, path)
            size = os.fstat(fd).st_size - hdr.length
            stop = size if end is None else min(end, size)
            if start >= stop:
                return b""
            return _read_exact(fd, hdr.length + start, stop - start, path)
        finally:
            os.close(fd)

    def mmap(self, key: str) -> memoryview:
        """The object's bytes as a read-only memoryview of a shared mapping of
        its file (the page cache is the cache; no copy).  The mapping stays
        valid after the object is deleted or replaced: it is of the file that
        was current when called, which is never modified in place (writes
        publish a new inode).  ObjectNotFound if absent."""
        fd, path = self._open_object(key)
        try:
            hdr = _read_header(fd, path)
            size = os.fstat(fd).st_size
            if size <= hdr.length:
                return memoryview(b"")
            try:
                mm = _mmap.mmap(fd, size, access=_mmap.ACCESS_READ)
            except OSError as e:
                raise StorageError(f"cannot map {path}: {e.strerror}") from None
            return memoryview(mm)[hdr.length :]
        finally:
            os.close(fd)

    def head(self, key: str) -> ObjectMeta:
        fd, path = self._open_object(key)
        try:
            hdr = _read_header(fd, path)
            st = os.fstat(fd)
            return ObjectMeta(key, st.st_size - hdr.length, hdr.etag, st.st_mtime, dict(hdr.metadata))
        finally:
            os.close(fd)

    def _current_etag(self, path: str) -> str | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            if not _is_regular(fd):
                return None
            return _read_header(fd, path).etag
        finally:
            os.close(fd)

    # -- writes ------------------------------------------------------------

    def _publish_replace(self, key: str, tmp: str, path: str) -> None:
        try:
            os.replace(tmp, path)
        except IsADirectoryError:
            _unlink_quietly(tmp)
            self._conflict_if_dir(key, path)
            raise
        except OSError as e:
            _unlink_quietly(tmp)
            raise StorageError(f"publishing {path} failed: {e.strerror}") from None

    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None) -> PutResult:
        tmp, path, parent, result = self._write_temp(key, data, metadata, put_id)
        with _Lock(self._lock_path):
            self._publish_replace(key, tmp, path)
        if self.fsync:
            _fsync_dir(parent)
        return result

    def put_if_absent(
        self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        tmp, path, parent, result = self._write_temp(key, data, metadata, put_id)
        try:
            os.link(tmp, path)
        except FileExistsError:
            self._conflict_if_dir(key, path)
            raise PreconditionFailed(f"object {key!r} already exists in {self.root}") from None
        except OSError as e:
            raise StorageError(f"publishing {path} failed: {e.strerror}") from None
        finally:
            _unlink_quietly(tmp)
        if self.fsync:
            _fsync_dir(parent)
        return result

    def put_if_match(
        self, key: str, data, etag: str, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        if not isinstance(etag, str) or not etag:
            raise InvalidArgument(f"etag must be a non-empty str, got {etag!r}")
        tmp, path, parent, result = self._write_temp(key, data, metadata, put_id)
        try:
            with _Lock(self._lock_path):
                current = self._current_etag(path)
                if current is None:
                    raise PreconditionFailed(f"object {key!r} does not exist in {self.root} (expected etag {etag})")
                if current != etag:
                    raise PreconditionFailed(f"object {key!r} has etag {current}, expected {etag}")
                self._publish_replace(key, tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        if self.fsync:
            _fsync_dir(parent)
        return result

    def delete(self, key: str) -> None:
        path = self._path(key)
        with _Lock(self._lock_path):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return
            except OSError as e:
                if e.errno == errno.EPERM and os.path.isdir(path):
                    return
                raise StorageError(f"deleting {path} failed: {e.strerror}") from None
        if self.fsync:
            _fsync_dir(os.path.dirname(path))

    # -- listing -----------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        check_prefix(prefix)
        dirpart, _, namepart = prefix.rpartition("/")
        base = self.root
        if dirpart:
            segs = dirpart.split("/")
            if any(s in ("", ".", "..") or s.startswith(RESERVED_SEGMENT_PREFIX) for s in segs):
                return iter(())
            base = os.path.join(self.root, *segs)
            dirpart += "/"
        keys: list[str] = []
        stack = [(base, dirpart, namepart)]
        while stack:
            path, keyprefix, name_filter = stack.pop()
            try:
                it = os.scandir(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with it:
                for entry in it:
                    name = entry.name
                    if name.startswith(RESERVED_SEGMENT_PREFIX) or not name.startswith(name_filter):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, keyprefix + name + "/", ""))
                    elif entry.is_file(follow_symlinks=False):
                        keys.append(keyprefix + name)
        keys.sort()
        return self._metas(keys)

    def _metas(self, keys: list[str]) -> Iterator[ObjectMeta]:
        for key in keys:
            path = os.path.join(self.root, *key.split("/"))
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                continue  # deleted since the directory scan
            try:
                st = os.fstat(fd)
                try:
                    hdr = _read_header(fd, path)
                except Corruption:
                    hdr = None
            finally:
                os.close(fd)
            if hdr is None:  # foreign or damaged: listed as is; reading it raises Corruption
                yield ObjectMeta(key, st.st_size, DAMAGED_ETAG, st.st_mtime, None)
            else:
                yield ObjectMeta(key, st.st_size - hdr.length, hdr.etag, st.st_mtime, None)

    # -- maintenance -------------------------------------------------------

    def remove_temp_files(self, older_than: float = 3600.0) -> int:
        """Delete temp files left by crashed writers, older than ``older_than`` seconds.

        Returns how many were removed.  Safe while other processes write: a
        temp file being written right now is younger than the threshold.
        """
        cutoff = time.time() - older_than
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    path = os.path.join(dirpath, name)
                    try:
                        if os.stat(path).st_mtime < cutoff:
                            os.unlink(path)
                            removed += 1
                    except FileNotFoundError:
                        pass
        return removed


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _reopen_local(root: str, fsync: bool) -> LocalStore:
    return LocalStore(root, fsync=fsync)
