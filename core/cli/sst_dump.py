"""``dump_sst``: the structure and records of one SST, like RocksDB's sst_dump.

The framing (trailer, footer, index, bloom) is decoded from the object's
bytes with the pure codecs of ``shaledb.sst.format``; the records come from
an :class:`~shaledb.sst.reader.SstReader`, which checks every block.
"""

from __future__ import annotations

from shaledb.cli.common import render_bytes
from shaledb.format.enums import CompressionCodec, ValueKind
from shaledb.format.record import unpack_header, RECORD_HEADER
from shaledb.sst.format import TRAILER_SIZE, decode_bloom, decode_footer, decode_index, decode_trailer
from shaledb.sst.reader import SstReader

__all__ = ["dump_sst"]


def dump_sst(store, key: str, *, encoding: str = "utf8", limit: int | None = None, values: bool = True) -> dict:
    """Trailer, footer, blocks, index keys, bloom and records of the SST at
    ``key`` as plain data; at most ``limit`` records (None: all).
    Corruption names the object and the region."""
    data = store.get(key)
    size = len(data)
    tr = decode_trailer(data[-TRAILER_SIZE:] if size >= TRAILER_SIZE else b"", key, size)
    f = decode_footer(data[tr.footer_offset : tr.footer_offset + tr.footer_len], key, tr.footer_offset)
    offsets, ikeys = decode_index(data[f.index_offset : f.index_offset + f.index_len], key, f.num_blocks, f.data_end)
    bloom = None
    if f.bloom_len:
        filt = decode_bloom(data[f.bloom_offset : f.bloom_offset + f.bloom_len], key)
        bloom = {"offset": f.bloom_offset, "bytes": f.bloom_len, "filter_bytes": int(filt.nbytes),
                 "bits_per_key": round(filt.nbytes * 8 / max(1, f.num_entries), 2)}
    blocks = [
        {"block": i, "offset": int(offsets[i]), "bytes": int(offsets[i + 1] - offsets[i]),
         "index_key": render_bytes(ikeys[i], encoding)}
        for i in range(f.num_blocks)
    ]
    records = []
    reader = SstReader(store, key, size=size)
    for buf, offs in reader.iter_range():
        for off in offs:
            if limit is not None and len(records) >= limit:
                break
            off = int(off)
            klen, vlen, seq, kind = unpack_header(buf, off)
            k = bytes(buf[off + RECORD_HEADER : off + RECORD_HEADER + klen])
            rec = {"key": render_bytes(k, encoding), "seq": seq, "kind": _kind(kind)}
            if values and kind == ValueKind.PUT:
                v = bytes(buf[off + RECORD_HEADER + klen : off + RECORD_HEADER + klen + vlen])
                rec["value"] = render_bytes(v, encoding)
            records.append(rec)
        if limit is not None and len(records) >= limit:
            break
    return {
        "object": key,
        "size": size,
        "format_version": tr.format_version,
        "sst_id": f.sst_id,
        "num_entries": f.num_entries,
        "min_seq": f.min_seq,
        "max_seq": f.max_seq,
        "first_key": render_bytes(f.first_key, encoding),
        "last_key": render_bytes(f.last_key, encoding),
        "compression": _codec(f.compression),
        "block_size": f.block_size,
        "restart_interval": f.restart_interval,
        "data_bytes": f.data_end,
        "index": {"offset": f.index_offset, "bytes": f.index_len},
        "bloom": bloom,
        "blocks": blocks,
        "records": records,
    }


def _kind(kind: int) -> str:
    try:
        return ValueKind(kind).name.lower()
    except ValueError:
        return str(kind)


def _codec(c: int) -> str:
    try:
        return CompressionCodec(c).name.lower()
    except ValueError:
        return str(c)
