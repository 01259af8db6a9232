"""The object-store contract every ShaleDB backend implements.

An :class:`ObjectStore` is a flat map from keys to immutable byte strings with
a little metadata, plus two conditional writes that everything above it
(WAL fencing, manifest compare-and-swap) is built on:

* ``put_if_absent(key, data)`` creates the object only if no object has that
  key; otherwise it raises :class:`PreconditionFailed` and changes nothing.
* ``put_if_match(key, data, etag)`` replaces the object only if its current
  etag is ``etag``; otherwise (including when the object does not exist) it
  raises :class:`PreconditionFailed` and changes nothing.

Keys are ``/``-separated strings such as ``wal/00000000000000000001.sst``.
They may not be empty, start with ``/``, contain an empty, ``.`` or ``..``
segment, contain control characters, exceed 1024 UTF-8 bytes (255 per
segment), or have a segment starting with ``.shaledb-`` (reserved for the
local store's temporary and lock files).  A bad key raises
:class:`InvalidArgument` before anything is sent.

Put-ids and ambiguous writes
----------------------------
Every write carries a *put-id*, a unique string stored in the object's
metadata under :data:`PUT_ID_KEY` (the store makes one up when the caller
passes none).  When a conditional write times out, the caller cannot tell
whether it landed; if a retry then fails its precondition, the object that is
there may be the caller's own.  :func:`put_if_absent_idempotent` and
:func:`put_if_match_idempotent` settle that by comparing put-ids in
:func:`settle_conditional_put`, the one implementation of the rule (the
:class:`~shaledb.storage.wrappers.RetryingStore` and the manifest's
``create_only`` use it too).  See ``docs/storage.md``.

Threading: stores are safe to share between threads unless a class says
otherwise.
"""

from __future__ import annotations

import abc
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from shaledb.errors import InvalidArgument, ObjectNotFound, PreconditionFailed

__all__ = [
    "PUT_ID_KEY",
    "ObjectMeta",
    "ObjectStore",
    "PutResult",
    "check_data",
    "check_key",
    "check_metadata",
    "check_prefix",
    "check_range",
    "new_put_id",
    "put_if_absent_idempotent",
    "put_if_match_idempotent",
    "settle_conditional_put",
]

#: Metadata entry holding the put-id of the write that produced an object.
PUT_ID_KEY = "shaledb-put-id"

#: Key segments starting with this are reserved for store-internal files.
RESERVED_SEGMENT_PREFIX = ".shaledb-"

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
MAX_METADATA_BYTES = 2048  # S3 allows 2 KiB of user metadata in total

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_META_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_META_VALUE_RE = re.compile(r"^[\x20-\x7e]*$")


@dataclass(frozen=True)
class ObjectMeta:
    """What a store knows about one object.

    ``size`` is the payload length in bytes; ``etag`` is an opaque string that
    changes on every write of the key (pass it to ``put_if_match``);
    ``last_modified`` is POSIX seconds (float, UTC).  ``metadata`` is the
    user metadata (including :data:`PUT_ID_KEY`) from ``head()``; entries
    yielded by ``list()`` carry ``metadata=None`` on every backend, because
    S3 listings do not return it.
    """

    key: str
    size: int
    etag: str
    last_modified: float
    metadata: Mapping[str, str] | None = field(default=None, hash=False)

    @property
    def put_id(self) -> str | None:
        """The put-id of the write that produced this object, if known."""
        if self.metadata is None:
            return None
        return self.metadata.get(PUT_ID_KEY)


@dataclass(frozen=True)
class PutResult:
    """Outcome of a successful write: the new etag and the put-id it carried."""

    etag: str
    put_id: str | None = None


def new_put_id() -> str:
    """A fresh put-id (128 random bits, hex)."""
    return uuid.uuid4().hex


def check_key(key: Any) -> str:
    """Return ``key`` if it is a valid object key, else raise InvalidArgument."""
    if not isinstance(key, str):
        raise InvalidArgument(f"object key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidArgument("object key must not be empty")
    if key.startswith("/"):
        raise InvalidArgument(f"object key must not start with '/': {key!r}")
    if _CONTROL_RE.search(key):
        raise InvalidArgument(f"object key must not contain control characters: {key!r}")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"object key is not valid unicode: {key!r}") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidArgument(f"object key longer than {MAX_KEY_BYTES} UTF-8 bytes: {key[:40]!r}...")
    for seg in key.split("/"):
        if seg in ("", ".", ".."):
            raise InvalidArgument(f"object key has an empty, '.' or '..' segment: {key!r}")
        if seg.startswith(RESERVED_SEGMENT_PREFIX):
            raise InvalidArgument(f"object key segment {seg!r} uses the reserved prefix {RESERVED_SEGMENT_PREFIX!r}")
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidArgument(f"object key segment longer than {MAX_SEGMENT_BYTES} bytes: {seg[:40]!r}...")
    return key


def check_prefix(prefix: Any) -> str:
    """Validate a ``list()`` prefix: any str not starting with ``/`` ('' lists all)."""
    if not isinstance(prefix, str):
        raise InvalidArgument(f"list prefix must be a str, got {type(prefix).__name__}")
    if prefix.startswith("/"):
        raise InvalidArgument(f"list prefix must not start with '/': {prefix!r}")
    if _CONTROL_RE.search(prefix):
        raise InvalidArgument(f"list prefix must not contain control characters: {prefix!r}")
    return prefix


def check_data(data: Any) -> memoryview:
    """Return a flat byte view of ``data`` (any C-contiguous bytes-like object)."""
    if isinstance(data, str):
        raise InvalidArgument("object data must be bytes-like, not str")
    try:
        view = memoryview(data)
    except TypeError:
        raise InvalidArgument(f"object data must be bytes-like, got {type(data).__name__}") from None
    if not view.c_contiguous:
        raise InvalidArgument("object data must be C-contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def check_metadata(metadata: Any, put_id: str | None) -> dict[str, str]:
    """Validate user metadata and return a copy with the put-id filled in.

    Names are lowercase ASCII letters, digits and ``-`` (S3 lowercases them);
    values are printable ASCII.  ``put_id`` (or a fresh one) is stored under
    :data:`PUT_ID_KEY`, overriding any entry the caller passed there.
    """
    out: dict[str, str] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise InvalidArgument(f"metadata must be a mapping, got {type(metadata).__name__}")
        for name, value in metadata.items():
            if not isinstance(name, str) or not _META_NAME_RE.match(name):
                raise InvalidArgument(f"metadata name must match [a-z0-9][a-z0-9-]*: {name!r}")
            if not isinstance(value, str) or not _META_VALUE_RE.match(value):
                raise InvalidArgument(f"metadata value for {name!r} must be a printable ASCII str")
            out[name] = value
    if put_id is None:
        put_id = new_put_id()
    elif not isinstance(put_id, str) or not put_id or not _META_VALUE_RE.match(put_id):
        raise InvalidArgument(f"put_id must be a non-empty printable ASCII str, got {put_id!r}")
    out[PUT_ID_KEY] = put_id
    if sum(len(k) + len(v) for k, v in out.items()) > MAX_METADATA_BYTES:
        raise InvalidArgument(f"metadata larger than {MAX_METADATA_BYTES} bytes")
    return out


def check_range(start: Any, end: Any) -> tuple[int, int | None]:
    """Validate a ``get_range`` request; ``end`` is exclusive, None = to the end."""
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise InvalidArgument(f"range start must be an int >= 0, got {start!r}")
    if end is not None:
        if not isinstance(end, int) or isinstance(end, bool) or end < start:
            raise InvalidArgument(f"range end must be None or an int >= start ({start}), got {end!r}")
    return start, end


class ObjectStore(abc.ABC):
    """Abstract object store (see the module docstring for the contract).

    Subclasses implement the abstract methods and validate their arguments
    with the ``check_*`` helpers of this module.  Wrappers derive from
    :class:`~shaledb.storage.wrappers.StoreWrapper` instead.
    """

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object.  Raises ObjectNotFound."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        """Bytes ``[start, end)`` of the object, like ``get(key)[start:end]``.

        ``end=None`` reads to the end.  A range reaching past the end of the
        object is cut short at the end; ``start >= size`` or ``start == end``
        gives ``b""``.  ``start < 0`` or ``end < start`` is InvalidArgument.
        A missing object raises ObjectNotFound even for an empty range.
        """

    @abc.abstractmethod
    def head(self, key: str) -> ObjectMeta:
        """Size, etag, modification time and metadata.  Raises ObjectNotFound."""

    @abc.abstractmethod
    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None) -> PutResult:
        """Create or replace the object atomically (readers see old or new, never a mix)."""

    @abc.abstractmethod
    def put_if_absent(
        self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        """Create the object; PreconditionFailed if the key already exists."""

    @abc.abstractmethod
    def put_if_match(
        self, key: str, data, etag: str, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        """Replace the object if its etag is ``etag``; else PreconditionFailed (also when missing)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        """Objects whose key starts with ``prefix`` (a plain string prefix), in key order.

        Key order is Unicode code point order, which equals UTF-8 byte order
        (S3's order).  Entries carry ``metadata=None``.
        """

    @abc.abstractmethod
    def spec(self) -> tuple[str, dict[str, Any]]:
        """``(url, options)`` such that ``open_store(url, **options)`` reopens this store.

        ``memory://`` urls name a store inside one process only.
        """

    def close(self) -> None:
        """Release clients and file handles.  Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def settle_conditional_put(store: ObjectStore, key: str, put_id: str, err: BaseException) -> PutResult:
    """Decide a conditional write of ``key`` tagged ``put_id`` that raised
    ``err``: a precondition failure that may be a retry meeting its own earlier
    attempt, or an error after which the write may or may not have landed.

    The one place that settles an ambiguous conditional write: reads the
    object's metadata once and returns its PutResult when it carries
    ``put_id`` (ours landed).  Otherwise raises PreconditionFailed when
    another writer's object is there; when nothing is there, raises ``err``
    (a PreconditionFailed ``err`` says the object is gone).  An error of the
    read itself propagates.  A write is never reported lost without seeing an
    object that is provably someone else's.
    """
    try:
        meta = store.head(key)
    except ObjectNotFound:
        if isinstance(err, PreconditionFailed):
            raise PreconditionFailed(f"{key!r}: precondition failed, and the object is gone") from err
        raise err from None
    if meta.put_id == put_id:
        return PutResult(etag=meta.etag, put_id=put_id)
    if isinstance(err, PreconditionFailed):
        raise err
    raise PreconditionFailed(f"{key!r} holds another writer's object") from err


def put_if_absent_idempotent(
    store: ObjectStore, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
) -> PutResult:
    """``put_if_absent`` that treats finding its own earlier write as success.

    Pass the same ``put_id`` to every retry of one logical write.  On
    PreconditionFailed the object is settled by :func:`settle_conditional_put`.
    """
    if put_id is None:
        put_id = new_put_id()
    try:
        return store.put_if_absent(key, data, metadata, put_id=put_id)
    except PreconditionFailed as e:
        return settle_conditional_put(store, key, put_id, e)


def put_if_match_idempotent(
    store: ObjectStore,
    key: str,
    data,
    etag: str,
    metadata: Mapping[str, str] | None = None,
    *,
    put_id: str | None = None,
) -> PutResult:
    """``put_if_match`` that treats finding its own earlier write as success.

    Same rule as :func:`put_if_absent_idempotent`.  If someone else replaced
    the object after our write landed, this reports PreconditionFailed even
    though our write was applied for a while.
    """
    if put_id is None:
        put_id = new_put_id()
    try:
        return store.put_if_match(key, data, etag, metadata, put_id=put_id)
    except PreconditionFailed as e:
        return settle_conditional_put(store, key, put_id, e)
