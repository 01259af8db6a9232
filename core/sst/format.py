"""SST object framing: a pure codec, no I/O.

An SST (``compacted/<ulid>.sst``) is data blocks, an optional bloom block, an
index block, a footer and a fixed 32-byte trailer, each region checksummed
(XXH64, seed 0); integers are little-endian.  The grammar, field by field, is
docs/format/sst.md.

Invariants: the regions are contiguous (``data_end <= bloom_offset``,
``bloom_offset + bloom_len == index_offset``, ``index_offset + index_len ==
footer_offset``, ``footer_offset + footer_len == size - 32``); index key ``i``
is ``>=`` every key of block ``i`` and ``<`` every key of block ``i + 1``.
Every decoder checks its checksum before using a byte (Corruption otherwise).
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass

import numpy as np
import xxhash

from shaledb.format.enums import CompressionCodec, SstFormatVersion
from shaledb.errors import Corruption, InvalidArgument

__all__ = [
    "MAGIC",
    "TRAILER_SIZE",
    "Footer",
    "SstInfo",
    "Trailer",
    "decode_bloom",
    "decode_footer",
    "decode_index",
    "decode_index_arrays",
    "decode_stored_block",
    "decode_trailer",
    "encode_bloom",
    "encode_footer",
    "encode_index",
    "encode_stored_block",
    "encode_trailer",
    "index_key_list",
]

MAGIC = b"ShaleSST"
TRAILER_SIZE = 32
_TRAILER = struct.Struct("<QIHH8s")  # 24 bytes, then the checksum
_FOOTER_FIXED = struct.Struct("<IIIB3xQQQQQQQQ26sH")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
ZSTD_LEVEL = 3


def _h(data) -> int:
    return xxhash.xxh64_intdigest(data)


@dataclass(frozen=True)
class SstInfo:
    """What the manifest records about an SST."""

    sst_id: str
    size: int
    first_key: bytes
    last_key: bytes
    num_entries: int
    min_seq: int
    max_seq: int


@dataclass(frozen=True)
class Trailer:
    footer_offset: int
    footer_len: int
    format_version: int = int(SstFormatVersion.V1)


@dataclass(frozen=True)
class Footer:
    sst_id: str
    num_blocks: int
    num_entries: int
    min_seq: int
    max_seq: int
    first_key: bytes
    last_key: bytes
    data_end: int
    bloom_offset: int
    bloom_len: int
    index_offset: int
    index_len: int
    block_size: int
    restart_interval: int
    compression: int = int(CompressionCodec.NONE)


# ------------------------------------------------------------------ trailer


def encode_trailer(t: Trailer) -> bytes:
    head = _TRAILER.pack(t.footer_offset, t.footer_len, t.format_version, 0, MAGIC)
    return head + _U64.pack(_h(head))


def decode_trailer(data: bytes, name: str, size: int) -> Trailer:
    """The trailer from the last 32 bytes of an object of ``size`` bytes."""
    if size < TRAILER_SIZE or len(data) != TRAILER_SIZE:
        raise Corruption(f"{name}: truncated SST ({size} bytes, no room for the trailer)")
    head = bytes(data[:24])
    footer_offset, footer_len, version, reserved, magic = _TRAILER.unpack(head)
    if magic != MAGIC:
        raise Corruption(f"{name}: trailer: bad magic (not a ShaleDB SST, or truncated)")
    if _U64.unpack_from(data, 24)[0] != _h(head):
        raise Corruption(f"{name}: trailer: checksum mismatch")
    if version not in SstFormatVersion.__members__.values():
        raise Corruption(f"{name}: trailer: unknown SST format version {version}")
    if reserved != 0 or footer_offset + footer_len != size - TRAILER_SIZE:
        raise Corruption(f"{name}: trailer: footer location does not match the object size {size}")
    return Trailer(footer_offset, footer_len, version)


# ------------------------------------------------------------------- footer


def encode_footer(f: Footer) -> bytes:
    sid = f.sst_id.encode("ascii")
    if len(sid) != 26:
        raise InvalidArgument(f"SST id must be a 26-character ULID, got {f.sst_id!r}")
    body = (
        _FOOTER_FIXED.pack(
            f.num_blocks, f.restart_interval, f.block_size, f.compression,
            f.num_entries, f.min_seq, f.max_seq, f.data_end, f.bloom_offset, f.bloom_len,
            f.index_offset, f.index_len, sid, 0,
        )
        + _U32.pack(len(f.first_key)) + f.first_key
        + _U32.pack(len(f.last_key)) + f.last_key
    )
    return body + _U64.pack(_h(body))


def decode_footer(data: bytes, name: str, footer_offset: int) -> Footer:
    data = bytes(data)
    what = f"{name}: footer"
    if len(data) < _FOOTER_FIXED.size + 16:
        raise Corruption(f"{what}: truncated")
    if _U64.unpack_from(data, len(data) - 8)[0] != _h(data[:-8]):
        raise Corruption(f"{what}: checksum mismatch")
    try:
        (nb, ri, bs, comp, ne, mn, mx, data_end, b_off, b_len, i_off, i_len, sid, reserved) = _FOOTER_FIXED.unpack_from(data)
        p = _FOOTER_FIXED.size
        (fk_len,) = _U32.unpack_from(data, p)
        first = data[p + 4 : p + 4 + fk_len]
        p += 4 + fk_len
        (lk_len,) = _U32.unpack_from(data, p)
        last = data[p + 4 : p + 4 + lk_len]
        p += 4 + lk_len
    except struct.error:
        raise Corruption(f"{what}: does not parse") from None
    if p != len(data) - 8 or len(first) != fk_len or len(last) != lk_len:
        raise Corruption(f"{what}: bad key lengths")
    try:
        sst_id = sid.decode("ascii")
        CompressionCodec(comp)
    except (UnicodeDecodeError, ValueError):
        raise Corruption(f"{what}: bad SST id or compression codec") from None
    ok = (
        reserved == 0
        and nb >= 1 and ne >= nb and mn <= mx and first <= last and fk_len >= 1
        and data_end <= b_off and b_off + b_len == i_off and i_off + i_len == footer_offset
        and ri >= 1
    )
    if not ok:
        raise Corruption(f"{what}: inconsistent fields")
    return Footer(sst_id, nb, ne, mn, mx, first, last, data_end, b_off, b_len, i_off, i_len, bs, ri, comp)


# -------------------------------------------------------------------- index


def encode_index(block_offsets: np.ndarray, key_bytes: np.ndarray, key_offsets: np.ndarray) -> bytes:
    n = len(block_offsets) - 1
    body = b"".join(
        (
            _U32.pack(n),
            np.asarray(block_offsets, dtype="<u8").tobytes(),
            np.asarray(key_offsets, dtype="<u4").tobytes(),
            np.asarray(key_bytes, dtype=np.uint8).tobytes(),
        )
    )
    return body + _U64.pack(_h(body))


def decode_index_arrays(data: bytes, name: str, num_blocks: int, data_end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(block_offsets int64[n+1], index keys back to back uint8, their bounds
    int64[n+1]) after checking them (the keys' order by one kernel pass: no
    Python object per key)."""
    from shaledb.kernels.block import first_descent

    what = f"{name}: index block"
    data = bytes(data)
    n = num_blocks
    fixed = 4 + 8 * (n + 1) + 4 * (n + 1)
    if len(data) < fixed + 8:
        raise Corruption(f"{what}: truncated")
    if _U64.unpack_from(data, len(data) - 8)[0] != _h(memoryview(data)[:-8]):
        raise Corruption(f"{what}: checksum mismatch")
    if _U32.unpack_from(data)[0] != n:
        raise Corruption(f"{what}: block count differs from the footer")
    offs = np.frombuffer(data, dtype="<u8", count=n + 1, offset=4).astype(np.int64)
    koffs = np.frombuffer(data, dtype="<u4", count=n + 1, offset=4 + 8 * (n + 1)).astype(np.int64)
    keys_len = len(data) - 8 - fixed
    if (
        offs[0] != 0 or offs[-1] != data_end or np.any(np.diff(offs) <= 0)
        or koffs[0] != 0 or koffs[-1] != keys_len or np.any(np.diff(koffs) < 1)
    ):
        raise Corruption(f"{what}: bad block or key offsets")
    kb = np.frombuffer(data, dtype=np.uint8, count=keys_len, offset=fixed)
    if first_descent(kb, koffs) >= 0:
        raise Corruption(f"{what}: index keys out of order")
    return offs, kb, koffs


def index_key_list(kb: np.ndarray, koffs: np.ndarray) -> list[bytes]:
    """The index keys of :func:`decode_index_arrays` as a list of bytes."""
    raw = kb.tobytes()
    bounds = koffs.tolist()  # Python ints: slicing with numpy scalars costs ~10x more
    return [raw[a:b] for a, b in zip(bounds, bounds[1:])]


def decode_index(data: bytes, name: str, num_blocks: int, data_end: int) -> tuple[np.ndarray, list[bytes]]:
    """(block_offsets int64[n+1], index keys) after checking them."""
    offs, kb, koffs = decode_index_arrays(data, name, num_blocks, data_end)
    return offs, index_key_list(kb, koffs)


# -------------------------------------------------------------------- bloom


def encode_bloom(filt: np.ndarray) -> bytes:
    body = np.asarray(filt, dtype=np.uint8).tobytes()
    return body + _U64.pack(_h(body))


def decode_bloom(data: bytes, name: str) -> np.ndarray:
    from shaledb.kernels.bloom import check_filter

    what = f"{name}: bloom block"
    if len(data) < 8 + 16:
        raise Corruption(f"{what}: truncated")
    mv = memoryview(data)
    if _U64.unpack_from(data, len(data) - 8)[0] != _h(mv[:-8]):
        raise Corruption(f"{what}: checksum mismatch")
    try:
        return check_filter(np.frombuffer(mv[:-8], dtype=np.uint8))
    except Corruption as exc:
        raise Corruption(f"{what}: {exc}") from None


# ------------------------------------------------------------- data blocks


_dctx = threading.local()


def _zstd():
    try:
        import zstandard
    except ImportError:  # pragma: no cover - the zstd extra
        raise InvalidArgument("zstd compression needs the 'zstandard' package (pip install shaledb[zstd])") from None
    return zstandard


def compressor(codec: int):
    """A callable raw block -> stored block for ``codec`` (None for NONE)."""
    if codec == CompressionCodec.NONE:
        return None
    if codec == CompressionCodec.ZSTD:
        cctx = _zstd_cctx()

        def compress(raw) -> bytes:
            return _framed(len(raw), cctx.compress(raw))

        return compress
    raise InvalidArgument(f"unknown compression codec {codec!r}")


#: Threads ``compress_blocks`` gives zstd (frames are independent: the
#: bytes do not depend on it).
ZSTD_THREADS = min(4, os.cpu_count() or 1)


def _zstd_cctx():
    """The compressor of stored blocks: one frame per block, level ZSTD_LEVEL."""
    return _zstd().ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, write_checksum=False)


def _zstd_dctx():
    """This thread's decompressor (a context is not thread-safe, and making
    one costs about 6 block decodes)."""
    dctx = getattr(_dctx, "d", None)
    if dctx is None:
        dctx = _dctx.d = _zstd().ZstdDecompressor()
    return dctx


def _framed(raw_len: int, frame) -> bytes:
    """A stored zstd block: ``raw_len:u32 frame xxh64:u64``."""
    body = _U32.pack(raw_len) + frame
    return body + _U64.pack(_h(body))


def _segments(first: np.ndarray, lengths: np.ndarray) -> bytes:
    """``zstandard.BufferWithSegments``' segment table: (offset, length) u64 pairs."""
    segs = np.empty((first.shape[0], 2), dtype=np.uint64)
    segs[:, 0] = first
    segs[:, 1] = lengths
    return segs.tobytes()


def compress_blocks(data, starts, codec: int) -> list[bytes] | None:
    """The stored form of every block ``data[starts[i]:starts[i+1]]``, byte
    for byte what ``compressor(codec)`` makes of each, in one call: zstd
    compresses the blocks in C on up to ``ZSTD_THREADS`` threads (one call
    for the SST, not a Python call and a copy per block); then each frame
    gets its length prefix and checksum.  None for NONE."""
    if codec == CompressionCodec.NONE:
        return None
    if codec != CompressionCodec.ZSTD:
        raise InvalidArgument(f"unknown compression codec {codec!r}")
    n = len(starts) - 1
    if n <= 0:
        return []
    starts = np.asarray(starts, dtype=np.int64)
    lens = np.diff(starts)
    blocks = _zstd().BufferWithSegments(np.ascontiguousarray(data), _segments(starts[:-1], lens))
    frames = _zstd_cctx().multi_compress_to_buffer(blocks, threads=ZSTD_THREADS)
    return [_framed(raw_len, frames[i].tobytes()) for i, raw_len in enumerate(lens.tolist())]


def decompress_blocks(data, starts, codec: int, what) -> tuple[np.ndarray, np.ndarray]:
    """``(raw blocks back to back, their starts)`` of the compressed stored
    blocks ``data[starts[i]:starts[i+1]]``: every checksum checked in one
    kernel pass, every frame decompressed in one zstd call on up to
    ``ZSTD_THREADS`` threads (not a Python call per block).  The same
    Corruption as ``decode_stored_block`` would raise, naming
    ``what(i)`` for the first bad block ``i``."""
    from shaledb.kernels.block import stored_blocks_ok

    starts = np.asarray(starts, dtype=np.int64)
    n = starts.shape[0] - 1
    if codec != CompressionCodec.ZSTD or n <= 0:
        raws = [decode_stored_block(memoryview(data)[int(starts[i]) : int(starts[i + 1])], codec, what(i))
                for i in range(n)]
        return _joined(raws)
    data = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    bad = int(stored_blocks_ok(data, starts))
    if bad >= 0:
        decode_stored_block(data[starts[bad] : starts[bad + 1]], codec, what(bad))  # raises
        raise Corruption(f"{what(bad)}: checksum mismatch (compressed block)")  # pragma: no cover
    # each block's leading raw_len:u32, and its frame between that and the checksum
    raw_lens = np.ascontiguousarray(data[starts[:-1, None] + np.arange(4)]).view("<u4").ravel().astype(np.uint64)
    zstandard = _zstd()
    frames_in = zstandard.BufferWithSegments(np.ascontiguousarray(data),
                                             _segments(starts[:-1] + 4, np.diff(starts) - 12))
    try:
        frames = _zstd_dctx().multi_decompress_to_buffer(frames_in, decompressed_sizes=raw_lens.tobytes(),
                                                         threads=ZSTD_THREADS)
    except zstandard.ZstdError:  # find the block, and its message, one block at a time
        for i in range(n):
            decode_stored_block(data[starts[i] : starts[i + 1]], codec, what(i))
        raise  # pragma: no cover - some block failed above
    raws = [np.frombuffer(frames[i], dtype=np.uint8) for i in range(n)]
    for i, (r, want) in enumerate(zip(raws, raw_lens.tolist())):
        if r.shape[0] != want:
            raise Corruption(f"{what(i)}: decompressed length {r.shape[0]} != {want}")
    return _joined(raws)


def _joined(raws) -> tuple[np.ndarray, np.ndarray]:
    starts = np.zeros(len(raws) + 1, dtype=np.int64)
    np.cumsum([r.shape[0] for r in raws], out=starts[1:])
    return (np.concatenate(raws) if raws else np.empty(0, dtype=np.uint8)), starts


def encode_stored_block(raw, codec: int) -> bytes:
    c = compressor(codec)
    return bytes(raw) if c is None else c(bytes(raw))


def decode_stored_block(stored, codec: int, what: str) -> np.ndarray:
    """The raw block bytes (uint8 array) of a stored block; the raw block's own
    checksum is checked later by the block kernels.  Corruption names ``what``."""
    if codec == CompressionCodec.NONE:
        if isinstance(stored, np.ndarray):
            return stored
        return np.frombuffer(stored, dtype=np.uint8)
    if codec != CompressionCodec.ZSTD:
        raise Corruption(f"{what}: unknown compression codec {codec}")
    mv = memoryview(stored)
    if len(mv) < 4 + 8 or _U64.unpack_from(mv, len(mv) - 8)[0] != _h(mv[:-8]):
        raise Corruption(f"{what}: checksum mismatch (compressed block)")
    (raw_len,) = _U32.unpack_from(mv)
    zstandard = _zstd()
    try:
        raw = _zstd_dctx().decompress(mv[4:-8], max_output_size=raw_len)
    except zstandard.ZstdError as exc:
        raise Corruption(f"{what}: zstd frame does not decompress: {exc}") from None
    if len(raw) != raw_len:
        raise Corruption(f"{what}: decompressed length {len(raw)} != {raw_len}")
    return np.frombuffer(raw, dtype=np.uint8)
