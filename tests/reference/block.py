"""Plain-Python reference for kernels/block.py: slow, obviously correct.

Records are tuples ``(key: bytes, seq: int, kind: int, value: bytes)``.
``encode_blocks_ref`` must produce the kernel's bytes exactly.
"""

from __future__ import annotations

import struct

import xxhash

HEADER = 16
ALIGN = 8


def make_run(records):
    """Build a record run ``(buf: bytes, offs: list[int])`` in the record layout."""
    out = bytearray()
    offs = []
    for key, seq, kind, value in records:
        offs.append(len(out))
        out += struct.pack("<IIQ", len(key), len(value), (seq << 8) | kind)
        out += key + value
        out += b"\x00" * (-len(out) % ALIGN)
    return bytes(out), offs


def read_run(buf, offs):
    """The records of a run as tuples."""
    buf = bytes(buf)
    res = []
    for r in offs:
        r = int(r)
        klen, vlen, trailer = struct.unpack_from("<IIQ", buf, r)
        key = buf[r + HEADER : r + HEADER + klen]
        value = buf[r + HEADER + klen : r + HEADER + klen + vlen]
        res.append((key, trailer >> 8, trailer & 0xFF, value))
    return res


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _finish(entries: bytes, restarts: list[int]) -> bytes:
    body = entries + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return body + struct.pack("<Q", xxhash.xxh64_intdigest(body))


def encode_blocks_ref(records, block_size=4096, restart_interval=16):
    """Returns (list of block bytes, list of (first_idx, last_idx))."""
    blocks, spans = [], []
    cur = bytearray()
    restarts: list[int] = []
    count = 0
    first = 0
    prev_key = b""
    for i, (key, seq, kind, value) in enumerate(records):
        for attempt in range(2):
            restart = count % restart_interval == 0
            shared = 0
            if not restart:
                while shared < min(len(key), len(prev_key)) and key[shared] == prev_key[shared]:
                    shared += 1
            entry = (
                varint(shared)
                + varint(len(key) - shared)
                + varint(len(value))
                + struct.pack("<Q", (seq << 8) | kind)
                + key[shared:]
                + value
            )
            size_after = len(cur) + len(entry) + 4 * (len(restarts) + restart) + 12
            if count > 0 and size_after > block_size:
                blocks.append(_finish(bytes(cur), restarts))
                spans.append((first, i - 1))
                cur, restarts, count = bytearray(), [], 0
                continue
            break
        if count == 0:
            first = i
        if restart:
            restarts.append(len(cur))
        cur += entry
        count += 1
        prev_key = key
    if count:
        blocks.append(_finish(bytes(cur), restarts))
        spans.append((first, len(records) - 1))
    return blocks, spans


def _get_varint(b: bytes, p: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        c = b[p]
        p += 1
        v |= (c & 0x7F) << shift
        if c < 128:
            return v, p
        shift += 7


def decode_block_ref(block: bytes):
    """Every entry of a (well-formed) block as record tuples."""
    block = bytes(block)
    body, (checksum,) = block[:-8], struct.unpack("<Q", block[-8:])
    assert xxhash.xxh64_intdigest(body) == checksum
    (nr,) = struct.unpack("<I", body[-4:])
    data_end = len(body) - 4 - 4 * nr
    res = []
    p = 0
    key = b""
    while p < data_end:
        shared, p = _get_varint(block, p)
        unshared, p = _get_varint(block, p)
        vlen, p = _get_varint(block, p)
        (trailer,) = struct.unpack_from("<Q", block, p)
        p += 8
        key = key[:shared] + block[p : p + unshared]
        p += unshared
        value = block[p : p + vlen]
        p += vlen
        res.append((key, trailer >> 8, trailer & 0xFF, value))
    return res


def sort_key(rec):
    """Record order: key ascending, then trailer descending."""
    key, seq, kind, _ = rec
    return (key, -((seq << 8) | kind))
