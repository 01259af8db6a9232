"""``database_info``: the shape of one database, from its latest manifest and
a listing of its root.  The ``info`` command prints it; library code may
reuse it (it only reads).  The tree part is ``shaledb.status.tree_shape``,
the same code ``Db.status().tree`` uses.  ``manifest_dict`` renders a
manifest as plain data.
"""

from __future__ import annotations

import dataclasses
import time

from shaledb.cli.common import render_bytes
from shaledb.errors import InvalidArgument
from shaledb.format.keys import (
    COMPACTED_PREFIX,
    MANIFEST_PREFIX,
    WAL_PREFIX,
    parse_manifest_key,
    parse_sst_key,
    parse_wal_key,
)
from shaledb.manifest.model import Manifest, SstRef
from shaledb.manifest.store import ManifestStore
from shaledb.status import RunShape, tree_shape

__all__ = ["KINDS", "database_info", "kind_of", "load_latest", "manifest_dict"]

#: Object kinds of a database root, by key prefix.
KINDS = {"wal": WAL_PREFIX, "sst": COMPACTED_PREFIX, "manifest": MANIFEST_PREFIX}


def kind_of(key: str) -> str:
    """``wal``, ``sst``, ``manifest`` or ``other`` for an object key."""
    if parse_wal_key(key) is not None:
        return "wal"
    if parse_sst_key(key) is not None:
        return "sst"
    if parse_manifest_key(key) is not None:
        return "manifest"
    return "other"


def load_latest(store, what: str) -> ManifestStore:
    """A reader-role manifest handle on ``store``; InvalidArgument when no
    database is there (``what`` names it in the message)."""
    ms = ManifestStore(store)
    if not ms.exists():
        raise InvalidArgument(f"no ShaleDB database at {what} (no manifest)")
    return ms


def _run(r: RunShape, enc: str) -> dict:
    return {
        "count": r.ssts,
        "bytes": r.bytes,
        "entries": r.entries,
        "first_key": None if r.first_key is None else render_bytes(r.first_key, enc),
        "last_key": None if r.last_key is None else render_bytes(r.last_key, enc),
    }


def database_info(store, *, encoding: str = "utf8", now: float | None = None, what: str | None = None) -> dict:
    """Format version, epochs, manifest id, L0 and sorted runs (count, bytes,
    key range), WAL range, checkpoints and store totals, as plain data.

    Keys are rendered with ``encoding`` (see ``render_bytes``).  Raises
    InvalidArgument when ``store`` holds no database (``what`` names it).
    """
    now = time.time() if now is None else now
    ms = load_latest(store, what or repr(store))
    m = ms.current
    shape = tree_shape(m, ms.manifest_id)
    totals: dict[str, dict[str, int]] = {k: {"objects": 0, "bytes": 0} for k in (*KINDS, "other")}
    wal_ids = []
    for meta in store.list(""):
        k = kind_of(meta.key)
        totals[k]["objects"] += 1
        totals[k]["bytes"] += meta.size
        if k == "wal":
            wal_ids.append(parse_wal_key(meta.key))
    live = [i for i in wal_ids if i > m.replay_after_wal_id]
    return {
        "format_version": shape.format_version,
        "manifest_id": shape.manifest_id,
        "writer_epoch": shape.writer_epoch,
        "compactor_epoch": shape.compactor_epoch,
        "last_l0_seq": shape.last_l0_seq,
        "wal": {
            "replay_after_id": shape.wal.replay_after_id,
            "next_id": shape.wal.next_id,
            "objects_to_replay": len(live),
            "first_id": min(wal_ids) if wal_ids else None,
            "last_id": max(wal_ids) if wal_ids else None,
        },
        "l0": _run(shape.l0, encoding),
        "sorted_runs": [{"run_id": r.run_id, **_run(r, encoding)} for r in shape.sorted_runs],
        "compaction_backlog": shape.backlog.as_dict(),
        "checkpoints": [_checkpoint(c, now) for c in m.checkpoints],
        "store": {
            "objects": sum(t["objects"] for t in totals.values()),
            "bytes": sum(t["bytes"] for t in totals.values()),
            "by_kind": totals,
        },
    }


def _checkpoint(c, now: float) -> dict:
    return {
        "id": c.id,
        "manifest_id": c.manifest_id,
        "name": c.name,
        "expires_at_ms": c.expires_at_ms or None,
        "expired": c.expired(int(now * 1000)),
    }


def _sst_dict(s: SstRef, enc: str) -> dict:
    d = dataclasses.asdict(s)
    d["first_key"] = render_bytes(s.first_key, enc)
    d["last_key"] = render_bytes(s.last_key, enc)
    return d


def manifest_dict(m: Manifest, manifest_id: int, *, encoding: str = "utf8") -> dict:
    """Every field of ``m`` as plain data (keys rendered with ``encoding``)."""
    wm = lambda w: None if w is None else {"epoch": w.epoch, "sst_id": w.sst_id}  # noqa: E731
    return {
        "manifest_id": manifest_id,
        "format_version": int(m.format_version),
        "writer_epoch": m.writer_epoch,
        "compactor_epoch": m.compactor_epoch,
        "next_wal_id": m.next_wal_id,
        "replay_after_wal_id": m.replay_after_wal_id,
        "last_l0_seq": m.last_l0_seq,
        "writer_sst_watermark": wm(m.writer_sst_watermark),
        "compactor_sst_watermark": wm(m.compactor_sst_watermark),
        "l0": [_sst_dict(s, encoding) for s in m.l0],
        "sorted_runs": [{"run_id": r.run_id, "ssts": [_sst_dict(s, encoding) for s in r.ssts]} for r in m.sorted_runs],
        "checkpoints": [
            {"id": c.id, "manifest_id": c.manifest_id, "expires_at_ms": c.expires_at_ms, "name": c.name}
            for c in m.checkpoints
        ],
        "extensions": [{"tag": t, "payload_hex": p.hex()} for t, p in m.extensions],
    }
