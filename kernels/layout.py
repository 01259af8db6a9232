"""The in-memory record layout shared by every kernel (docs/format/record.md).

Arenas, sort, dedupe, block encode/decode, bloom and merge all see records in
one layout, inside a uint8 buffer, addressed by the int64 offset of the record
start.  All integers are little-endian; a record starts 8-byte aligned::

    +0   u32  key_len      1 .. MAX_KEY_LEN
    +4   u32  value_len    0 for tombstones
    +8   u64  trailer      (seq << 8) | kind      kind: shaledb.format.enums.ValueKind
    +16  key bytes, then value bytes, then zero padding to a multiple of 8

Ordering of records is (key ascending bytewise, trailer descending), so the
newest version of a key comes first.  Sequence numbers are 56-bit.
"""

from __future__ import annotations

RECORD_HEADER = 16
RECORD_ALIGN = 8
KEY_LEN_OFF = 0
VALUE_LEN_OFF = 4
TRAILER_OFF = 8

MAX_KEY_LEN = 64 * 1024
MAX_SEQ = (1 << 56) - 1

KIND_DELETE = 0  # == ValueKind.DELETE
KIND_PUT = 1  # == ValueKind.PUT


def record_size(key_len: int, value_len: int) -> int:
    """Bytes a record occupies, padding included."""
    n = RECORD_HEADER + key_len + value_len
    return (n + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)


def pack_trailer(seq: int, kind: int) -> int:
    return (seq << 8) | kind
