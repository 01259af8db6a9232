"""The clone descriptor: a pure codec, no I/O (docs/format/clone.md).

A database made by ``shaledb.clone`` reads the SSTs it shares with its
source from the source's root.  Which ones, and where, is written once, at
``clone/source.json`` in the clone's root, before anything else of the clone
(so a retried clone finds it)::

    {"format": 1,
     "source": "<url of the source root>",
     "checkpoint": "<ULID of the source checkpoint that keeps the SSTs alive>",
     "manifest_id": <the source manifest the checkpoint pins>,
     "ssts": ["<ULID>", ...],            # every SST of that manifest, sorted
     "copy_wal": true | false}           # whether the source's WAL tail is copied

UTF-8 JSON, one object; unknown keys are ignored (a later revision may add
some); a missing or mistyped known key, or another format number, is
Corruption naming the object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shaledb.errors import Corruption

__all__ = ["CLONE_DESCRIPTOR_KEY", "CloneDescriptor", "decode_clone_descriptor", "encode_clone_descriptor"]

CLONE_DESCRIPTOR_KEY = "clone/source.json"
_FORMAT = 1


@dataclass(frozen=True)
class CloneDescriptor:
    """Where a clone's shared SSTs live (see the module docstring)."""

    source: str
    checkpoint: str
    manifest_id: int
    ssts: tuple[str, ...]
    copy_wal: bool


def encode_clone_descriptor(d: CloneDescriptor) -> bytes:
    doc = {
        "format": _FORMAT,
        "source": d.source,
        "checkpoint": d.checkpoint,
        "manifest_id": d.manifest_id,
        "ssts": sorted(d.ssts),
        "copy_wal": d.copy_wal,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode_clone_descriptor(data: bytes, name: str = CLONE_DESCRIPTOR_KEY) -> CloneDescriptor:
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Corruption(f"{name}: not a ShaleDB clone descriptor (not UTF-8 JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise Corruption(f"{name}: unknown clone descriptor format {doc.get('format') if isinstance(doc, dict) else doc!r}")
    types = {"source": str, "checkpoint": str, "manifest_id": int, "ssts": list, "copy_wal": bool}
    for k, t in types.items():
        if not isinstance(doc.get(k), t) or (t is int and isinstance(doc[k], bool)):
            raise Corruption(f"{name}: clone descriptor field {k!r} is missing or not a {t.__name__}")
    if not all(isinstance(s, str) for s in doc["ssts"]):
        raise Corruption(f"{name}: clone descriptor field 'ssts' must list SST ids")
    return CloneDescriptor(doc["source"], doc["checkpoint"], doc["manifest_id"], tuple(doc["ssts"]), doc["copy_wal"])
