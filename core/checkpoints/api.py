"""Checkpoints: named pins on one manifest (docs/readers.md).

A checkpoint lives in the manifest (``shaledb.manifest.model.Checkpoint``):
GC keeps the manifest it pins and every object that manifest references, and
the compactor keeps every version that manifest can see, until the
checkpoint is deleted or expires (an expired one is removed by the next GC
pass).  The functions here take a store (the engine's) or, in the
``*_at(url)`` form behind ``shaledb.checkpoints.create(url)`` etc., a url:
tools that hold no writer.  Every change is a reader-role manifest update
(``ManifestStore`` in its reader role): it merges with the writer's and the
compactor's updates by compare-and-swap and never fences either of them.

Thread safety: the functions keep no state.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import os
from dataclasses import dataclass

from shaledb.errors import InvalidArgument

__all__ = [
    "Checkpoint",
    "create",
    "create_in",
    "delete",
    "delete_in",
    "find_live",
    "list",
    "list_in",
    "lifetime_ms",
    "open_root",
    "refresh",
    "refresh_in",
]

_UTC = _dt.timezone.utc


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as users see it.

    ``id``: its ULID string; ``manifest_id``: the manifest it pins;
    ``created_at`` / ``expires_at``: UTC datetimes (``expires_at`` None: never
    expires; ``created_at`` is the time part of the ULID); ``name``: free text.
    """

    id: str
    manifest_id: int
    created_at: _dt.datetime
    expires_at: _dt.datetime | None
    name: str

    @classmethod
    def from_model(cls, c) -> "Checkpoint":
        from shaledb.manifest.model import ulid_to_bytes

        created_ms = int.from_bytes(ulid_to_bytes(c.id)[:6], "big")
        expires = None if c.expires_at_ms == 0 else _dt.datetime.fromtimestamp(c.expires_at_ms / 1000, _UTC)
        return cls(c.id, c.manifest_id, _dt.datetime.fromtimestamp(created_ms / 1000, _UTC), expires, c.name)


def lifetime_ms(lifetime) -> int | None:
    """``lifetime`` (seconds as a number, or a ``datetime.timedelta``; None:
    forever) in milliseconds; InvalidArgument unless positive."""
    if lifetime is None:
        return None
    if isinstance(lifetime, _dt.timedelta):
        lifetime = lifetime.total_seconds()
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not lifetime > 0:
        raise InvalidArgument(f"checkpoint lifetime must be None or a positive number of seconds, got {lifetime!r}")
    return max(1, int(lifetime * 1000))


def _check_id(checkpoint_id) -> str:
    from shaledb.manifest.model import Checkpoint as Model

    if not isinstance(checkpoint_id, str):
        raise InvalidArgument(f"a checkpoint id is a ULID string, got {type(checkpoint_id).__name__}")
    try:
        Model(id=checkpoint_id, manifest_id=1)
    except InvalidArgument:
        raise InvalidArgument(f"not a checkpoint id (a 26-character ULID): {checkpoint_id!r}") from None
    return checkpoint_id


def _manifests(store):
    """A reader-role manifest handle on ``store`` (loaded); InvalidArgument when no database is there."""
    from shaledb.manifest.store import ManifestStore

    ms = ManifestStore(store)
    if not ms.exists():
        raise InvalidArgument(f"no ShaleDB database at {_where(store)} (no manifest)")
    return ms


def _where(store) -> str:
    try:
        return store.spec()[0]
    except Exception:  # noqa: BLE001 - a message helper must not fail
        return repr(store)


def find_live(manifest, checkpoint_id: str, now_ms: int, where: str):
    """The model checkpoint ``checkpoint_id`` of ``manifest``; InvalidArgument
    when it is unknown or expired (naming which)."""
    _check_id(checkpoint_id)
    for c in manifest.checkpoints:
        if c.id == checkpoint_id:
            if c.expired(now_ms):
                at = _dt.datetime.fromtimestamp(c.expires_at_ms / 1000, _UTC).isoformat()
                raise InvalidArgument(f"checkpoint {checkpoint_id} of {where} expired at {at}")
            return c
    raise InvalidArgument(f"no checkpoint {checkpoint_id} in the database at {where}")


# -- on a store (the engine's)


def create_in(store, *, lifetime=None, name: str | None = None, manifest_id: int | None = None) -> Checkpoint:
    """Pin ``manifest_id`` (default: the latest manifest) of the database in ``store``."""
    ms_ = lifetime_ms(lifetime)
    if name is not None and not isinstance(name, str):
        raise InvalidArgument(f"checkpoint name must be a str or None, got {type(name).__name__}")
    ms = _manifests(store)
    if manifest_id is not None:
        if isinstance(manifest_id, bool) or not isinstance(manifest_id, int) or not 1 <= manifest_id <= ms.manifest_id:
            raise InvalidArgument(f"manifest_id must be an existing manifest id (1..{ms.manifest_id}), got {manifest_id!r}")
    cp = ms.add_checkpoint(manifest_id=manifest_id, lifetime_ms=ms_, name=name or "")
    return Checkpoint.from_model(cp)


def list_in(store) -> builtins.list[Checkpoint]:
    """The live (unexpired) checkpoints, in creation order."""
    ms = _manifests(store)
    now = ms.clock.now_ms()
    return [Checkpoint.from_model(c) for c in ms.current.checkpoints if not c.expired(now)]


def delete_in(store, checkpoint_id: str) -> None:
    """Remove a checkpoint; InvalidArgument if the database has no such checkpoint."""
    _check_id(checkpoint_id)
    ms = _manifests(store)
    if not any(c.id == checkpoint_id for c in ms.current.checkpoints):
        raise InvalidArgument(f"no checkpoint {checkpoint_id} in the database at {_where(store)}")
    ms.remove_checkpoint(checkpoint_id)


def refresh_in(store, checkpoint_id: str, lifetime) -> Checkpoint:
    """Make a live checkpoint expire ``lifetime`` from now (None: never);
    InvalidArgument if it is unknown or already expired."""
    ms_ = lifetime_ms(lifetime)
    ms = _manifests(store)
    find_live(ms.current, checkpoint_id, ms.clock.now_ms(), _where(store))
    cp = ms.refresh_checkpoint(checkpoint_id, lifetime_ms=ms_)
    if cp is None:  # it expired or was deleted meanwhile
        find_live(ms.refresh(), checkpoint_id, ms.clock.now_ms(), _where(store))
        raise InvalidArgument(f"checkpoint {checkpoint_id} could not be refreshed")  # pragma: no cover
    return Checkpoint.from_model(cp)


# -- by url (tools holding no writer)


def open_root(url, options=None, **overrides):
    """``(store, options)``: the engine's store of the database at ``url``
    (a path or url) for reading and reader-role updates; InvalidArgument when
    a local path does not exist (nothing is created)."""
    from shaledb.options import Options, wrap_store
    from shaledb.storage import open_store

    opts = Options.resolve(options, overrides)
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url:
        raise InvalidArgument(f"the database root must be a non-empty path or url, got {url!r}")
    if "://" not in url:
        url = os.path.abspath(url)
    local = url[len("file://"):] if url.startswith("file://") else url if "://" not in url else None
    if local is not None and not os.path.isdir(local):
        raise InvalidArgument(f"no ShaleDB database at {url} (no such directory)")
    return wrap_store(open_store(url, **dict(opts.store_options)), opts), opts


def _with_store(url, options, overrides, fn):
    store, _ = open_root(url, options, **overrides)
    try:
        return fn(store)
    finally:
        store.close()


def create(url, *, lifetime=None, name: str | None = None, options=None, **overrides) -> Checkpoint:
    """Pin the latest manifest of the database at ``url`` (``lifetime``: seconds
    or a timedelta, None: until deleted).  Flushes nothing: writes still in a
    writer's memtable or WAL tail are not in the checkpoint (use
    ``Db.create_checkpoint`` from the writer for that)."""
    return _with_store(url, options, overrides, lambda s: create_in(s, lifetime=lifetime, name=name))


def list(url, *, options=None, **overrides) -> builtins.list[Checkpoint]:  # noqa: A001 - the issue's name
    """The live checkpoints of the database at ``url``."""
    return _with_store(url, options, overrides, list_in)


def delete(url, checkpoint_id: str, *, options=None, **overrides) -> None:
    """Remove checkpoint ``checkpoint_id`` of the database at ``url``."""
    return _with_store(url, options, overrides, lambda s: delete_in(s, checkpoint_id))


def refresh(url, checkpoint_id: str, lifetime, *, options=None, **overrides) -> Checkpoint:
    """Make checkpoint ``checkpoint_id`` expire ``lifetime`` from now (None: never)."""
    return _with_store(url, options, overrides, lambda s: refresh_in(s, checkpoint_id, lifetime))
