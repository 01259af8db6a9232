"""Plain-Python record runs and the reference sort: slow, obviously correct.

A record is the tuple ``(key: bytes, seq: int, kind: int, value: bytes)``;
``encode_run`` lays records out as ``shaledb.format.record`` describes and
``decode_run`` reads them back.
"""

from __future__ import annotations

import struct

import numpy as np

from shaledb.format.record import RECORD_HEADER, pack_trailer, record_size


def encode_run(records, *, gap: int = 0):
    """``(buf uint8, offs int64)`` holding ``records`` in order (``gap`` spare bytes between)."""
    parts = []
    offs = []
    pos = 0
    for key, seq, kind, value in records:
        size = record_size(len(key), len(value))
        rec = bytearray(size)
        struct.pack_into("<IIQ", rec, 0, len(key), len(value), pack_trailer(seq, kind))
        rec[RECORD_HEADER : RECORD_HEADER + len(key)] = key
        rec[RECORD_HEADER + len(key) : RECORD_HEADER + len(key) + len(value)] = value
        offs.append(pos)
        parts.append(bytes(rec) + bytes(gap))
        pos += size + gap
    buf = np.frombuffer(bytearray(b"".join(parts)), dtype=np.uint8)
    return buf, np.array(offs, dtype=np.int64)


def decode_record(buf, off: int):
    raw = bytes(buf[off : off + RECORD_HEADER])
    klen, vlen, trailer = struct.unpack("<IIQ", raw)
    start = off + RECORD_HEADER
    key = bytes(buf[start : start + klen])
    value = bytes(buf[start + klen : start + klen + vlen])
    return key, trailer >> 8, trailer & 0xFF, value


def decode_run(buf, offs):
    return [decode_record(buf, int(o)) for o in offs]


def sort_key(rec):
    key, seq, kind, _ = rec
    return (key, -pack_trailer(seq, kind))


def sort_offsets(buf, offs):
    """Offsets ordered by (key asc, trailer desc); equal records keep input order."""
    offs = [int(o) for o in offs]
    return sorted(offs, key=lambda o: sort_key(decode_record(buf, o)))
