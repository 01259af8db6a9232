"""Persisted enum values are frozen: this test fails when one changes."""

from shaledb.format.enums import ValueKind

PINNED = {
    ValueKind: {"DELETE": 0, "PUT": 1},
}


def test_persisted_enums_are_pinned():
    for enum, members in PINNED.items():
        assert {m.name: int(m) for m in enum} == members, enum.__name__


# --- manifest enums (docs/format/manifest.md) -------------------------------
from shaledb.format import enums as manifest_enums  # noqa: E402

MANIFEST_PINNED = {
    "ManifestFormat": {"V1": 1, "V2": 2},
    "ManifestField": {
        "WRITER_EPOCH": 1,
        "COMPACTOR_EPOCH": 2,
        "NEXT_WAL_ID": 3,
        "REPLAY_AFTER_WAL_ID": 4,
        "LAST_L0_SEQ": 5,
        "L0_SST": 6,
        "SORTED_RUN": 7,
        "CHECKPOINT": 8,
        "WRITER_SST_WATERMARK": 9,
        "COMPACTOR_SST_WATERMARK": 10,
    },
    "ManifestSstField": {
        "SST_ID": 1,
        "FIRST_KEY": 2,
        "LAST_KEY": 3,
        "SIZE": 4,
        "MIN_SEQ": 5,
        "MAX_SEQ": 6,
        "NUM_ENTRIES": 7,
        "GLOBAL_SEQ": 8,
    },
    "ManifestRunField": {"RUN_ID": 1, "SST": 2},
    "ManifestCheckpointField": {"ID": 1, "MANIFEST_ID": 2, "EXPIRES_AT_MS": 3, "NAME": 4},
    "ManifestWatermarkField": {"EPOCH": 1, "SST_ID": 2},
}


def test_manifest_enums_are_pinned():
    for name, members in MANIFEST_PINNED.items():
        enum = getattr(manifest_enums, name)
        assert {m.name: int(m) for m in enum} == members, name


def test_arena_pool_enums_are_pinned():
    from shaledb.format.enums import ArenaState, PoolStatus

    assert {m.name: int(m) for m in ArenaState} == {
        "FREE": 0, "ACTIVE": 1, "FULL": 2, "SEALED": 3, "FLUSHING": 4,
    }
    assert {m.name: int(m) for m in PoolStatus} == {"OPEN": 0, "CLOSED": 1, "FENCED": 2, "FAILED": 3}


def test_sst_and_wal_enums_are_pinned():
    from shaledb.format.enums import CompressionCodec, SstFormatVersion, WalFormatVersion

    assert {m.name: int(m) for m in CompressionCodec} == {"NONE": 0, "ZSTD": 1}
    assert {m.name: int(m) for m in SstFormatVersion} == {"V1": 1}
    assert {m.name: int(m) for m in WalFormatVersion} == {"V1": 1}
