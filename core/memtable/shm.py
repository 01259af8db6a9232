"""Named shared-memory segments for one open database.

A segment is a file in ``/dev/shm`` (or a private per-user fallback
directory) named ``shaledb-<dbtag>-<kind>-<n>``, created ``O_EXCL`` with mode
0600 and mapped with ``mmap``; it is never registered with Python's
``resource_tracker``, so only its owner unlinks it (:func:`cleanup_segments`).

Invariants: every process attached to a dbtag holds a shared ``flock`` on its
``live-0`` file; :func:`cleanup_stale` removes only dbtags whose live lock
nobody holds.  :meth:`Segment.create` reserves the pages up front (a full
``/dev/shm`` is an error at creation, never a SIGBUS later).  Names and
pre-faulting: docs/format/arena.md, "Segments".

Thread safety: a :class:`Segment` may be read and written by threads; open
and close it from one thread.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import tempfile

from shaledb.errors import Unavailable

__all__ = [
    "LiveLock",
    "Segment",
    "cleanup_segments",
    "cleanup_stale",
    "list_dbtags",
    "new_dbtag",
    "root_tag",
    "segment_name",
    "segment_path",
    "shm_dir",
]

PREFIX = "shaledb-"
_dir_cache: str | None = None


def shm_dir() -> str:
    """Directory holding the segments: ``/dev/shm``, or a private fallback."""
    global _dir_cache
    if _dir_cache is not None:
        return _dir_cache
    forced = os.environ.get("SHALEDB_SHM_DIR")
    candidates = [forced] if forced else ["/dev/shm"]
    for d in candidates:
        if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            _dir_cache = d
            return d
    fallback = os.path.join(tempfile.gettempdir(), f"shaledb-shm-{os.getuid()}")
    os.makedirs(fallback, mode=0o700, exist_ok=True)
    _dir_cache = fallback
    return fallback


def root_tag(root: str) -> str:
    """12 hex digits identifying a database root (its url or absolute path)."""
    return hashlib.blake2b(root.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def new_dbtag(root: str) -> str:
    """A fresh tag for one open of ``root``: ``<roottag>.<nonce>``."""
    return f"{root_tag(root)}.{os.urandom(4).hex()}"


def segment_name(dbtag: str, kind: str, n: int = 0) -> str:
    return f"{PREFIX}{dbtag}-{kind}-{n}"


def segment_path(name: str) -> str:
    """The file of segment ``name`` (it may not exist)."""
    return os.path.join(shm_dir(), name)


def _names(dbtag: str) -> list[str]:
    prefix = f"{PREFIX}{dbtag}-"
    try:
        return [n for n in os.listdir(shm_dir()) if n.startswith(prefix)]
    except FileNotFoundError:
        return []


def cleanup_segments(dbtag: str) -> list[str]:
    """Unlink every segment of ``dbtag``; return the names removed.  Mappings
    already open in live processes stay valid until they unmap."""
    removed = []
    for n in _names(dbtag):
        try:
            os.unlink(segment_path(n))
            removed.append(n)
        except FileNotFoundError:
            pass
    return removed


def list_dbtags(root: str) -> list[str]:
    """Every dbtag of ``root`` that has a segment in the shm directory."""
    prefix = f"{PREFIX}{root_tag(root)}."
    tags = set()
    try:
        names = os.listdir(shm_dir())
    except FileNotFoundError:
        return []
    for n in names:
        if n.startswith(prefix):
            tags.add(n[len(PREFIX) :].split("-", 1)[0])
    return sorted(tags)


def _is_live(dbtag: str) -> bool:
    try:
        fd = os.open(segment_path(segment_name(dbtag, "live")), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def cleanup_stale(root: str, keep: str | None = None) -> list[str]:
    """Remove the segments of every dead open of ``root`` (none of its
    processes holds the live lock).  ``keep``: a dbtag never removed."""
    removed = []
    for tag in list_dbtags(root):
        if tag != keep and not _is_live(tag):
            removed += cleanup_segments(tag)
    return removed


class LiveLock:
    """A shared flock on ``<dbtag>-live-0`` held while this process uses the
    database's segments.  ``create=True`` makes the file (the owner, first)."""

    def __init__(self, dbtag: str, create: bool = False):
        path = segment_path(segment_name(dbtag, "live"))
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        try:
            self._fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            raise Unavailable(f"the shared memory of database {dbtag} is gone") from None
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        if os.fstat(self._fd).st_nlink == 0:  # a cleaner raced us
            self.close()
            raise Unavailable(f"the shared memory of database {dbtag} is gone")

    def gone(self) -> bool:
        """True once the ``live-0`` file was unlinked: the database's segments
        were removed (closed, or cleaned up after its owner died)."""
        if self._fd < 0:
            return True
        return os.fstat(self._fd).st_nlink == 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # drops the flock
            self._fd = -1


class Segment:
    """One mapped segment.  ``.buf`` is the mmap; ``.array(dtype)`` a numpy view."""

    def __init__(self, name: str, mm: mmap.mmap, size: int):
        self.name = name
        self.size = size
        self.buf = mm

    @classmethod
    def create(cls, name: str, size: int, prefault: bool = True, replace: bool = False) -> "Segment":
        """Create and map a new segment of ``size`` bytes.

        ``replace=True``: a segment of that name left by a process that died
        while creating it is unlinked first and a fresh one made in its
        place (mappings of the old one, if any, stay valid and private).
        REQUIRES (replace): the caller holds the lock that serialises
        creation of ``name`` and knows no live process uses the old one.
        Without ``replace`` an existing name raises FileExistsError.
        """
        path = segment_path(name)
        if replace:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            try:
                os.ftruncate(fd, size)
                if prefault:
                    os.posix_fallocate(fd, 0, size)
            except OSError as e:
                os.unlink(path)
                raise Unavailable(f"cannot allocate {size} bytes of shared memory for {name}: {e}") from e
            flags = mmap.MAP_SHARED
            if prefault and hasattr(mmap, "MAP_POPULATE"):
                flags |= mmap.MAP_POPULATE
            mm = mmap.mmap(fd, size, flags=flags)
        finally:
            os.close(fd)
        return cls(name, mm, size)

    @classmethod
    def attach(cls, name: str) -> "Segment":
        """Map an existing segment.  FileNotFoundError if it does not exist."""
        fd = os.open(segment_path(name), os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        return cls(name, mm, size)

    @property
    def path(self) -> str:
        """The file backing this segment."""
        return segment_path(self.name)

    def array(self, dtype="u1"):
        import numpy as np

        return np.frombuffer(self.buf, dtype=dtype)

    def close(self) -> None:
        """Unmap.  If numpy views are still alive, the mapping is left to the GC."""
        try:
            self.buf.close()
        except BufferError:
            pass

    def unlink(self) -> None:
        try:
            os.unlink(segment_path(self.name))
        except FileNotFoundError:
            pass
