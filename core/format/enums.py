"""Every enum whose values reach disk, object storage or shared memory.

These numbers are persistent: never change one, never reuse a retired one.
``tests/test_enums.py`` pins them.  Add new members (or new enums) at the end.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ValueKind"]


class ValueKind(IntEnum):
    """Kind of a record: the low byte of its trailer (see docs/format/record.md)."""

    DELETE = 0  # tombstone: hides older versions of the key
    PUT = 1


# --- manifest (docs/format/manifest.md) -------------------------------------


class ManifestFormat(IntEnum):
    """Format version in the manifest header (u16 after the magic)."""

    V1 = 1  # TLV body, xxh64 trailer; the first ShaleDB manifest format
    #: V1 plus SSTs with a GLOBAL_SEQ (bulk ingest): a build that cannot apply
    #: the override must refuse the manifest, not read or carry it blindly
    V2 = 2


class ManifestField(IntEnum):
    """Tags of the top-level manifest fields."""

    WRITER_EPOCH = 1
    COMPACTOR_EPOCH = 2
    NEXT_WAL_ID = 3
    REPLAY_AFTER_WAL_ID = 4
    LAST_L0_SEQ = 5
    L0_SST = 6  # repeated, newest first; payload is a ManifestSstField message
    SORTED_RUN = 7  # repeated, highest run id first; ManifestRunField message
    CHECKPOINT = 8  # repeated; ManifestCheckpointField message
    WRITER_SST_WATERMARK = 9  # optional; ManifestWatermarkField message (docs/gc.md)
    COMPACTOR_SST_WATERMARK = 10  # optional; ManifestWatermarkField message


class ManifestSstField(IntEnum):
    """Tags inside one SST reference (an L0 entry or a sorted-run member)."""

    SST_ID = 1  # 16-byte ULID
    FIRST_KEY = 2
    LAST_KEY = 3
    SIZE = 4
    MIN_SEQ = 5
    MAX_SEQ = 6
    NUM_ENTRIES = 7
    GLOBAL_SEQ = 8  # optional; nonzero: every record reads as this seq (bulk ingest)


class ManifestRunField(IntEnum):
    """Tags inside one sorted run."""

    RUN_ID = 1
    SST = 2  # repeated, key order; ManifestSstField message


class ManifestCheckpointField(IntEnum):
    """Tags inside one checkpoint."""

    ID = 1  # 16-byte ULID
    MANIFEST_ID = 2
    EXPIRES_AT_MS = 3  # 0 = never
    NAME = 4  # UTF-8, may be empty


class ManifestWatermarkField(IntEnum):
    """Tags inside one SST low watermark (writer's or compactor's)."""

    EPOCH = 1  # the writer/compactor epoch that set it
    SST_ID = 2  # 16-byte ULID: every SST that epoch may still publish is >= it


__all__ += [
    "ManifestCheckpointField",
    "ManifestField",
    "ManifestFormat",
    "ManifestRunField",
    "ManifestSstField",
    "ManifestWatermarkField",
]


class ArenaState(IntEnum):
    """State of one arena in the pool's control segment (shared memory)."""

    FREE = 0  # in the pool, empty
    ACTIVE = 1  # owned by one writer, appended to, current generation
    FULL = 2  # current generation, no longer appended to (its writer moved on)
    SEALED = 3  # its generation is sealed; waiting for the flusher
    FLUSHING = 4  # the flusher is turning its generation into L0


class PoolStatus(IntEnum):
    """Status word of the arena pool's control segment (shared memory)."""

    OPEN = 0
    CLOSED = 1  # the Db closed: writers raise Closed
    FENCED = 2  # a newer writer owns the database: writers raise Fenced
    FAILED = 3  # the flusher died or failed: writers raise Unavailable


__all__ += ["ArenaState", "PoolStatus"]


class CompressionCodec(IntEnum):
    """Compression of an SST's data blocks, recorded once per SST in its footer."""

    NONE = 0
    ZSTD = 1  # zstandard frames (level 3), one per block


class SstFormatVersion(IntEnum):
    """Version of the SST object format (docs/format/sst.md), in the trailer."""

    V1 = 1  # blocks of kernels/block.py, xxh64 checksums, footer + 32-byte trailer


class WalFormatVersion(IntEnum):
    """Version of the WAL object format (docs/format/wal.md), in the header."""

    V1 = 1  # records in the record layout, one xxh64 over the body


__all__ += ["CompressionCodec", "SstFormatVersion", "WalFormatVersion"]
