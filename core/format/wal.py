"""WAL object codec: a pure codec, no I/O (docs/format/wal.md).

A WAL object (``wal/<20-digit id>.sst``) holds whole write batches in the
order they were appended (sequence order).  All integers little-endian::

    +---------------------------+  0
    | header (16 bytes)         |  magic "ShaleWAL", version:u16, flags:u16 (0), reserved:u32 (0)
    +---------------------------+  16
    | body (body_len bytes)     |  records in the record layout (shaledb.format.record),
    |                           |  back to back, each padded to 8 bytes
    +---------------------------+  16 + body_len
    | trailer (48 bytes)        |  body_len:u64 count:u64 min_seq:u64 max_seq:u64
    |                           |  body_xxh64:u64 xxh64:u64
    +---------------------------+

``body_xxh64`` is XXH64 (seed 0) of the body; the last ``xxh64`` covers the
header and the first 40 trailer bytes.  ``version`` is a
``shaledb.format.enums.WalFormatVersion``.  ``count``/``min_seq``/``max_seq`` describe
the records (0/0 seqs when there are none) and are checked on decode.

A zero-byte object is a fence (written by a new writer at open); it holds no
records.

* ``encode_wal(buf, offs) -> bytes``: records ``offs`` of ``buf`` in that order;
  ``encode_wal_view`` the same bytes as a view, built with one copy.
* ``decode_wal(data, name) -> (buf, offs)``: a read-only view of the body and
  the record offsets; raises ``shaledb.Corruption`` naming ``name``.
* ``is_fence(data) -> bool``; ``wal_info(data, name) -> WalInfo``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import xxhash

from shaledb.format.enums import WalFormatVersion
from shaledb.errors import Corruption, InvalidArgument

__all__ = ["HEADER_SIZE", "MAGIC", "TRAILER_SIZE", "WalInfo", "decode_wal", "encode_wal", "encode_wal_view", "is_fence", "wal_info"]

MAGIC = b"ShaleWAL"
_HEADER = struct.Struct("<8sHHI")
_TRAILER = struct.Struct("<QQQQQ")
HEADER_SIZE = _HEADER.size  # 16
TRAILER_SIZE = _TRAILER.size + 8  # 48
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class WalInfo:
    count: int
    min_seq: int
    max_seq: int
    body_len: int
    format_version: int


def is_fence(data) -> bool:
    """True for a zero-byte WAL object (a fence)."""
    return len(data) == 0


def encode_wal(buf, offs) -> bytes:
    """A WAL object holding the records ``offs`` of ``buf`` (in that order).

    REQUIRES: the records are whole batches in sequence order (not checked).
    Raises InvalidArgument for a record outside ``buf`` or a bad key length/kind.
    """
    return encode_wal_view(buf, offs).tobytes()


def encode_wal_view(buf, offs) -> memoryview:
    """:func:`encode_wal` as a read-only view of one freshly built buffer: the
    records are copied once, straight into place after the header, and both
    checksums are computed over that buffer (no further copies).  The same
    bytes as ``encode_wal``."""
    from shaledb.kernels.block import as_offs, gather, gather_bound
    from shaledb.kernels.mem import as_u8

    b = as_u8(buf, "buf")
    o = as_offs(offs)
    bound = int(gather_bound(b, o))
    if bound < 0:
        raise InvalidArgument("encode_wal: a record lies outside buf")
    count = int(o.shape[0])
    out = np.empty(HEADER_SIZE + bound + TRAILER_SIZE, dtype=np.uint8)
    err, used, min_seq, max_seq = gather(b, o, out[HEADER_SIZE : HEADER_SIZE + bound], 0, np.empty(count, dtype=np.int64), 0)
    if int(err) != 0:
        from shaledb.kernels.block import gather_records

        gather_records(b, o)  # raises the precise InvalidArgument
        raise InvalidArgument(f"encode_wal: invalid records (error {int(err)})")  # pragma: no cover
    used = int(used)
    if count == 0:
        min_seq = max_seq = 0
    mv = memoryview(out)
    header = _HEADER.pack(MAGIC, int(WalFormatVersion.V1), 0, 0)
    mv[:HEADER_SIZE] = header
    end = HEADER_SIZE + used
    tail = _TRAILER.pack(used, count, int(min_seq), int(max_seq), xxhash.xxh64_intdigest(mv[HEADER_SIZE:end]))
    mv[end : end + len(tail)] = tail
    _U64.pack_into(mv, end + len(tail), xxhash.xxh64_intdigest(header + tail))
    return mv[: end + TRAILER_SIZE].toreadonly()


def wal_info(data, name: str) -> WalInfo:
    """Header and trailer fields after checking their checksum (not the body's)."""
    mv = memoryview(data)
    n = len(mv)
    if n < HEADER_SIZE + TRAILER_SIZE:
        raise Corruption(f"{name}: WAL object of {n} bytes is truncated (no header and trailer)")
    magic, version, flags, reserved = _HEADER.unpack_from(mv, 0)
    if magic != MAGIC:
        raise Corruption(f"{name}: not a ShaleDB WAL object (bad magic)")
    tail = bytes(mv[n - TRAILER_SIZE : n - 8])
    if _U64.unpack_from(mv, n - 8)[0] != xxhash.xxh64_intdigest(bytes(mv[:HEADER_SIZE]) + tail):
        raise Corruption(f"{name}: WAL header/trailer checksum mismatch")
    if version not in WalFormatVersion.__members__.values() or flags or reserved:
        raise Corruption(f"{name}: unknown WAL format version {version} or flags {flags}")
    body_len, count, min_seq, max_seq, _ = _TRAILER.unpack(tail)
    if body_len != n - HEADER_SIZE - TRAILER_SIZE:
        raise Corruption(f"{name}: WAL body length {body_len} does not match the object size {n} (truncated?)")
    return WalInfo(count, min_seq, max_seq, body_len, version)


def decode_wal(data, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The records of a WAL object as ``(buf, offs)`` (``buf`` a read-only view).

    A fence (zero bytes) gives an empty run.  Corruption names ``name``.
    """
    from shaledb.kernels.block import scan_records

    if is_fence(data):
        return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)
    info = wal_info(data, name)
    mv = memoryview(data)
    body = mv[HEADER_SIZE : HEADER_SIZE + info.body_len]
    body_hash = _U64.unpack_from(mv, len(mv) - 16)[0]
    if xxhash.xxh64_intdigest(body) != body_hash:
        raise Corruption(f"{name}: WAL body checksum mismatch")
    buf = np.frombuffer(body, dtype=np.uint8)
    offs, min_seq, max_seq = scan_records(buf, what=f"{name}: WAL body")
    if (offs.shape[0], min_seq, max_seq) != (info.count, info.min_seq, info.max_seq):
        raise Corruption(f"{name}: WAL trailer (count/min/max seq) disagrees with the records")
    return buf, offs
