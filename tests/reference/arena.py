"""Plain-Python model of the arena format (kernels/arena.py, docs/format/arena.md).

Slow and obviously correct: struct for the fields, a dict walk for the index.
Produces the same bytes as the kernels, so tests compare whole arenas.
"""

from __future__ import annotations

import struct

import xxhash

HEADER_BYTES = 128
MAGIC = int.from_bytes(b"SHLARENA", "little")
MAX_SEQ = (1 << 56) - 1
RECORD_HEADER = 16

FIELDS = (
    "magic version state generation committed record_count index_off index_slots "
    "log_off capacity incarnation min_seq max_seq index_used writer_id reserved"
).split()


def _get(buf: bytearray, name: str) -> int:
    return struct.unpack_from("<Q", buf, 8 * FIELDS.index(name))[0]


def _set(buf: bytearray, name: str, value: int) -> None:
    struct.pack_into("<Q", buf, 8 * FIELDS.index(name), value)


def ref_init(size: int, slots: int, generation: int = 0, incarnation: int = 1) -> bytearray:
    buf = bytearray(size)
    log_off = HEADER_BYTES + 8 * slots
    values = dict(
        magic=MAGIC, version=1, generation=generation, committed=log_off, index_off=HEADER_BYTES,
        index_slots=slots, log_off=log_off, capacity=size // 8 * 8, incarnation=incarnation,
        min_seq=MAX_SEQ + 1,
    )
    for k, v in values.items():
        _set(buf, k, v)
    return buf


def _record_size(klen: int, vlen: int) -> int:
    return (RECORD_HEADER + klen + vlen + 7) // 8 * 8


def _read_record(buf, off):
    klen, vlen, trailer = struct.unpack_from("<IIQ", buf, off)
    key = bytes(buf[off + 16 : off + 16 + klen])
    value = bytes(buf[off + 16 + klen : off + 16 + klen + vlen])
    return key, value, trailer >> 8, trailer & 0xFF


def _slot_of(buf, key: bytes):
    """(slot index, slot value) where key lives or would be inserted."""
    slots = _get(buf, "index_slots")
    h = xxhash.xxh64_intdigest(key)
    i = h & (slots - 1)
    while True:
        s = struct.unpack_from("<Q", buf, HEADER_BYTES + 8 * i)[0]
        if s == 0:
            return i, 0
        off = ((s & 0xFFFFFFFF) - 1) * 8
        if s >> 32 == h >> 32 and _read_record(buf, off)[0] == key:
            return i, s
        i = (i + 1) & (slots - 1)


def ref_append(buf: bytearray, records, base_seq: int) -> int:
    """records: list of (key, value, kind).  Whole batch or nothing."""
    if not records:
        return 0
    committed = _get(buf, "committed")
    need = sum(_record_size(len(k), len(v)) for k, v, _ in records)
    if committed + need > _get(buf, "capacity"):
        return 0
    if (_get(buf, "index_used") + len(records)) * 4 > _get(buf, "index_slots") * 3:
        return 0
    pos = committed
    offsets = []
    for i, (k, v, kind) in enumerate(records):
        size = _record_size(len(k), len(v))
        body = struct.pack("<IIQ", len(k), len(v), ((base_seq + i) << 8) | kind) + k + v
        buf[pos : pos + size] = body + bytes(size - len(body))
        offsets.append(pos)
        pos += size
    last = base_seq + len(records) - 1
    _set(buf, "min_seq", min(_get(buf, "min_seq"), base_seq))
    _set(buf, "max_seq", max(_get(buf, "max_seq"), last))
    _set(buf, "record_count", _get(buf, "record_count") + len(records))
    _set(buf, "committed", pos)
    used = _get(buf, "index_used")
    for (k, _, _), off in zip(records, offsets):
        i, old = _slot_of(buf, k)
        used += old == 0
        value = (xxhash.xxh64_intdigest(k) >> 32) << 32 | (off // 8 + 1)
        struct.pack_into("<Q", buf, HEADER_BYTES + 8 * i, value)
    _set(buf, "index_used", used)
    return len(records)


def ref_record_offsets(buf, start: int = 0, end: int | None = None) -> list[int]:
    pos = max(start, _get(buf, "log_off"))
    end = _get(buf, "committed") if end is None else min(end, _get(buf, "committed"))
    out = []
    while pos < end:
        klen, vlen = struct.unpack_from("<II", buf, pos)
        out.append(pos)
        pos += _record_size(klen, vlen)
    return out


def ref_lookup(buf, key: bytes):
    """Newest version by a linear scan of the log (not via the index)."""
    best = None
    for off in ref_record_offsets(buf):
        k, v, seq, kind = _read_record(buf, off)
        if k == key and (best is None or seq > best[2]):
            best = (True, kind, seq, off + 16 + len(k), len(v))
    return best or (False, 0, 0, 0, 0)
