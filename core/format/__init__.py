"""Byte formats that every layer shares: the record layout (``record``), bucket
object names (``keys``), persisted enums (``enums``) and the WAL object codec
(``wal``).  Pure code, no I/O.  See docs/format/.

The surface below is loaded lazily (module ``__getattr__``) so that
``import shaledb`` stays cheap; record constants are used as
``shaledb.format.record.X``.
"""

from __future__ import annotations

from shaledb.lazy import lazy_surface

_SUBMODULES = ("enums", "keys", "record", "wal")
_NAMES = {
    **dict.fromkeys(
        (
            "COMPACTED_PREFIX",
            "MANIFEST_PREFIX",
            "WAL_PREFIX",
            "manifest_key",
            "new_sst_id",
            "parse_manifest_key",
            "parse_sst_key",
            "parse_wal_key",
            "sst_key",
            "wal_key",
        ),
        "keys",
    ),
    **dict.fromkeys(
        (
            "ArenaState",
            "CompressionCodec",
            "ManifestFormat",
            "PoolStatus",
            "SstFormatVersion",
            "ValueKind",
            "WalFormatVersion",
        ),
        "enums",
    ),
    **dict.fromkeys(("WalInfo", "decode_wal", "encode_wal", "encode_wal_view", "is_fence", "wal_info"), "wal"),
    **dict.fromkeys(("encode_record", "record_size"), "record"),
}

__all__, __getattr__, __dir__ = lazy_surface(__name__, _NAMES, _SUBMODULES)
