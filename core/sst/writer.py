"""Build SST objects from a sorted record run (format: shaledb.sst.format,
docs/format/sst.md).

Grammar of the object this module writes (all little-endian, checksums XXH64
seed 0; the details of every region are in ``shaledb.sst.format``)::

    sst     := data_block{n} [bloom] index footer trailer
    bloom   := filter_bytes xxh64:u64
    index   := n:u32 block_offset:u64{n+1} key_offset:u32{n+1} key_bytes xxh64:u64
    footer  := num_blocks:u32 restart_interval:u32 block_size:u32 compression:u8 0:u8{3}
               num_entries:u64 min_seq:u64 max_seq:u64 data_end:u64
               bloom_offset:u64 bloom_len:u64 index_offset:u64 index_len:u64
               sst_id:26 bytes 0:u16 first_key_len:u32 first_key last_key_len:u32 last_key
               xxh64:u64
    trailer := footer_offset:u64 footer_len:u32 format_version:u16 0:u16 "ShaleSST" xxh64:u64

A data block is a block of ``kernels/block.py`` (entries, restarts, xxh64),
stored as is or, with zstd, as ``raw_len:u32 zstd_frame xxh64:u64``.

``build_ssts`` encodes all blocks of the run in one kernel call, then cuts
the block sequence into SSTs of about ``target_bytes`` each (never between
two blocks that share a key, so all versions of a key live in one SST).

Thread safety: ``build_ssts`` is a pure function and may run concurrently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shaledb.format.enums import CompressionCodec, SstFormatVersion
from shaledb.errors import InvalidArgument
from shaledb.format.keys import new_sst_id
from shaledb.sst.format import (
    Footer,
    SstInfo,
    Trailer,
    compress_blocks,
    encode_bloom,
    encode_footer,
    encode_index,
    encode_trailer,
)

__all__ = ["SstInfo", "build_ssts"]


def _codec(compression) -> int:
    if compression is None:
        return int(CompressionCodec.NONE)
    if isinstance(compression, str):
        try:
            return int(CompressionCodec[compression.upper()])
        except KeyError:
            raise InvalidArgument(f"unknown compression {compression!r} (none, zstd)") from None
    try:
        return int(CompressionCodec(compression))
    except ValueError:
        raise InvalidArgument(f"unknown compression {compression!r}") from None


def _key(buf: np.ndarray, offs: np.ndarray, i: int) -> bytes:
    r = int(offs[i])
    klen = int.from_bytes(buf[r : r + 4].tobytes(), "little")
    return buf[r + 16 : r + 16 + klen].tobytes()


def build_ssts(
    buf,
    offs,
    *,
    target_bytes: int,
    block_size: int = 4096,
    bloom_bits_per_key: float = 10,
    min_bloom_keys: int = 1000,
    compression=None,
    restart_interval: int = 16,
    new_id: Callable[[], str] | None = None,
    key_hashes: np.ndarray | None = None,
) -> list[tuple[str, bytes, SstInfo]]:
    """Encode the record run ``(buf, offs)`` into SST objects.

    REQUIRES: ``offs`` sorted by (key asc, seq desc), no duplicate (key, seq)
    (InvalidArgument otherwise).  Returns ``[(sst_id, data, SstInfo), ...]`` in
    key order; empty input gives ``[]``.  ``compression``: None, ``"zstd"`` or
    a ``CompressionCodec``.  ``new_id`` makes SST ids (default: a new ULID);
    tests inject it for stable bytes.  ``key_hashes``: the XXH64 (seed 0) of
    each record's key, aligned with ``offs`` (``dedupe_sorted(...,
    key_hashes=True)`` computes them), so the bloom filters need no second hash.
    """
    from shaledb.kernels.block import encode_blocks, index_separators, seq_range
    from shaledb.kernels.bloom import bloom_build, bloom_build_from_hashes

    if isinstance(target_bytes, bool) or not isinstance(target_bytes, (int, np.integer)) or target_bytes < 1:
        raise InvalidArgument(f"target_bytes must be a positive int, got {target_bytes!r}")
    codec = _codec(compression)
    new_id = new_id or new_sst_id
    buf = np.ascontiguousarray(buf) if isinstance(buf, np.ndarray) else np.frombuffer(buf, dtype=np.uint8)
    offs = np.ascontiguousarray(offs, dtype=np.int64)
    if key_hashes is not None and len(key_hashes) != len(offs):
        raise InvalidArgument(f"key_hashes has {len(key_hashes)} entries for {len(offs)} records")
    enc = encode_blocks(buf, offs, block_size, restart_interval)
    nb = enc.num_blocks
    if nb == 0:
        return []

    stored = compress_blocks(enc.data, enc.block_starts, codec)  # None: stored as encoded
    if stored is None:
        sizes = np.diff(enc.block_starts)
    else:
        sizes = np.fromiter((len(s) for s in stored), dtype=np.int64, count=nb)

    # Cut into SSTs: close the current one before block b when it is
    # non-empty, adding b would pass target_bytes, and b starts a new key.
    cuts = [0]
    acc = 0
    for b in range(nb):
        sz = int(sizes[b])
        if acc > 0 and acc + sz > target_bytes:
            if _key(buf, offs, int(enc.last_idx[b - 1])) != _key(buf, offs, int(enc.first_idx[b])):
                cuts.append(b)
                acc = 0
        acc += sz
    cuts.append(nb)

    out = []
    for b0, b1 in zip(cuts[:-1], cuts[1:]):
        lo = int(enc.first_idx[b0])
        hi = int(enc.last_idx[b1 - 1]) + 1
        if stored is None:
            data = enc.data[enc.block_starts[b0] : enc.block_starts[b1]]
            block_offsets = enc.block_starts[b0 : b1 + 1] - enc.block_starts[b0]
        else:
            data = b"".join(stored[b0:b1])
            block_offsets = np.concatenate(([0], np.cumsum(sizes[b0:b1])))
        data_end = int(block_offsets[-1])
        parts = [data]
        pos = data_end
        bloom_len = 0
        if hi - lo >= min_bloom_keys:
            if key_hashes is None:
                filt = bloom_build(buf, offs[lo:hi], bloom_bits_per_key)
            else:
                filt = bloom_build_from_hashes(key_hashes[lo:hi], bloom_bits_per_key)
            bloom = encode_bloom(filt)
            parts.append(bloom)
            bloom_len = len(bloom)
        pos += bloom_len
        kb, ko = index_separators(buf, offs, enc, b0, b1)
        index = encode_index(block_offsets, kb, ko)
        parts.append(index)
        index_offset = pos
        pos += len(index)
        min_seq, max_seq = seq_range(buf, offs, lo, hi)
        sst_id = new_id()
        first_key = _key(buf, offs, lo)
        last_key = _key(buf, offs, hi - 1)
        footer = encode_footer(
            Footer(
                sst_id=sst_id,
                num_blocks=b1 - b0,
                num_entries=hi - lo,
                min_seq=min_seq,
                max_seq=max_seq,
                first_key=first_key,
                last_key=last_key,
                data_end=data_end,
                bloom_offset=data_end,
                bloom_len=bloom_len,
                index_offset=index_offset,
                index_len=len(index),
                block_size=int(block_size),
                restart_interval=int(restart_interval),
                compression=codec,
            )
        )
        parts.append(footer)
        parts.append(encode_trailer(Trailer(pos, len(footer), int(SstFormatVersion.V1))))
        pos += len(footer) + 32
        blob = b"".join(parts)
        assert len(blob) == pos
        out.append((sst_id, blob, SstInfo(sst_id, pos, first_key, last_key, hi - lo, min_seq, max_seq)))
    return out
