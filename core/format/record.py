"""The record format: the one owner of the record layout (docs/format/record.md).

Arenas, WAL bodies, sort/dedupe/merge, bloom and block codecs all see a record
as one little-endian, 8-byte aligned byte string::

    +0   u32  key_len      1 .. MAX_KEY_BYTES
    +4   u32  value_len    0 .. MAX_VALUE_BYTES (0 for a tombstone)
    +8   u64  trailer      (seq << 8) | kind      kind: format.enums.ValueKind
    +16  key, value, zero padding to a multiple of 8

Records order by (key ascending bytewise, trailer descending): the newest
version of a key comes first.  Sequence numbers are 56-bit.

Python code and the numba kernels both import their constants from here (numba
reads module-level ints as compile-time constants).  Import-light on purpose:
no numpy or numba at import.  ``tests/test_record_format.py`` pins every value
to ``ValueKind`` and to the docs.
"""

from __future__ import annotations

import struct

from shaledb.format.enums import ValueKind

__all__ = [
    "HEADER",
    "HEADER_FORMAT",
    "KEY_LEN_OFF",
    "KIND_BITS",
    "KIND_DELETE",
    "KIND_MASK",
    "KIND_PUT",
    "MAX_KEY_BYTES",
    "MAX_KIND",
    "MAX_SEQ",
    "MAX_VALUE_BYTES",
    "RECORD_ALIGN",
    "RECORD_HEADER",
    "TRAILER_OFF",
    "VALUE_LEN_OFF",
    "encode_record",
    "pack_trailer",
    "record_size",
    "unpack_header",
    "unpack_trailer",
]

# ---- layout
HEADER_FORMAT = "<IIQ"  # key_len, value_len, trailer
HEADER = struct.Struct(HEADER_FORMAT)
RECORD_HEADER = HEADER.size  # 16
RECORD_ALIGN = 8
KEY_LEN_OFF = 0
VALUE_LEN_OFF = 4
TRAILER_OFF = 8

# ---- trailer: (seq << KIND_BITS) | kind
KIND_BITS = 8
KIND_MASK = (1 << KIND_BITS) - 1
MAX_SEQ = (1 << (64 - KIND_BITS)) - 1

# ---- value kinds, as plain ints for the kernels (the persisted enum is ValueKind)
KIND_DELETE = int(ValueKind.DELETE)
KIND_PUT = int(ValueKind.PUT)
MAX_KIND = max(int(k) for k in ValueKind)  # a larger kind byte is corruption

# ---- size limits of one record (every entry point checks them)
MAX_KEY_BYTES = 64 * 1024
MAX_VALUE_BYTES = 256 * 1024 * 1024


def record_size(key_len: int, value_len: int) -> int:
    """Bytes a record occupies in a run, padding included."""
    n = RECORD_HEADER + key_len + value_len
    return (n + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)


def pack_trailer(seq: int, kind: int) -> int:
    """The u64 trailer of a record.  REQUIRES: 0 <= seq <= MAX_SEQ, kind a ValueKind."""
    return (seq << KIND_BITS) | kind


def unpack_trailer(trailer: int) -> tuple[int, int]:
    """``(seq, kind)`` of a trailer."""
    return trailer >> KIND_BITS, trailer & KIND_MASK


def unpack_header(buf, off: int = 0) -> tuple[int, int, int, int]:
    """``(key_len, value_len, seq, kind)`` of the record at ``buf[off:]``."""
    klen, vlen, trailer = HEADER.unpack_from(buf, off)
    return klen, vlen, trailer >> KIND_BITS, trailer & KIND_MASK


def encode_record(key: bytes, value: bytes, seq: int, kind: int) -> bytes:
    """One record, padded to RECORD_ALIGN (tests and warm-up runs build records with it)."""
    body = HEADER.pack(len(key), len(value), pack_trailer(seq, kind)) + key + value
    return body + bytes(-len(body) % RECORD_ALIGN)
