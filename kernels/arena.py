"""Arena kernels: the append-only shared-memory memtable (docs/format/arena.md).

An arena is one fixed-size, 8-byte aligned uint8 buffer: a 128-byte header
(``H_*`` u64 words), an open-addressing hash index (slots point at the newest
record of their key) and a log of records in the ``shaledb.format.record``
layout, addressed by absolute offsets, so ``(arena, offs)`` is a record run.

Invariants: an append is whole-batch-or-nothing (room for every record and
the index at most 3/4 full); records are written, then ``committed`` is
published, then the index is re-pointed, with fences between, so an index
slot only ever points at a committed record and a reader never sees half a
record; a lookup that finds a slot past the ``committed`` it read re-reads
``committed`` rather than skip it.  ``incarnation`` grows at every format.

Public wrappers (validate and allocate; kernels ``_*`` are private, and
``lookup_record`` is its unchecked public name, and ``record_offsets`` the
unchecked form of ``arena_record_offsets``, for callers that validated once):
  arena_init(arena, index_slots=None, generation=0) -> None
  arena_append(arena, keys, key_offs, values, value_offs, kinds, base_seq) -> n
  arena_append_counted(arena, keys, key_offs, values, value_offs, kinds,
                       counter) -> (n, base_seq)
  arena_lookup(arena, key) -> (found, kind, seq, value_start, value_len)
  arena_record_offsets(arena, start=0, end=None) -> int64 offs
  arena_committed(arena) -> int; arena_header(arena) -> dict
  default_index_slots(capacity) -> int; index_slots_for(n_records) -> int
  max_batch_bytes(arena) -> int

REQUIRES: one appender per arena at a time (the pool lock).  Errors: bad
arguments raise :class:`~shaledb.InvalidArgument` (a wrong type also is a
TypeError); an exhausted sequence counter raises :class:`~shaledb.Unavailable`.
"""

from __future__ import annotations

import sys

import numpy as np

from shaledb.kernels._jit import kernel  # first: it settles numba's cache directory

from numba import types  # noqa: E402,I001
from numba.core import cgutils, config  # noqa: E402
from numba.extending import intrinsic  # noqa: E402
from shaledb.errors import InvalidArgument, Unavailable  # noqa: E402
from shaledb.format.record import (  # noqa: E402
    KIND_BITS,
    KIND_MASK,
    MAX_KEY_BYTES,
    MAX_KIND,
    MAX_SEQ,
    RECORD_ALIGN,
    RECORD_HEADER,
)

if config.DISABLE_JIT:  # numpy scalars warn on the wrap-around the hash relies on
    import xxhash

    def _xxh64(buf, start, length, seed):
        return np.uint64(xxhash.xxh64_intdigest(bytes(buf[start : start + length]), int(seed)))

else:
    from shaledb.kernels.hashing import xxh64_range as _xxh64

if config.DISABLE_JIT:

    def _prefetch(buf, pos):
        pass

else:
    from shaledb.kernels.mem import prefetch as _prefetch

_PAD = RECORD_ALIGN - 1  # records are padded to RECORD_ALIGN
_AHEAD = 8  # index slots prefetched ahead while inserting a batch
#: bytes ahead of the record being read that ``_walk_offsets`` prefetches:
#: a record's successor sits at an address known only once its header is
#: read, so without it the walk waits for memory at every record, and the
#: hardware prefetcher stops at page boundaries (a 64 MiB arena of 370k
#: records: 50 ms for the two walks count + fill, 10 ms for one walk with
#: this prefetch)
_WALK_AHEAD = 4096

if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("ShaleDB arenas require a little-endian machine")

__all__ = [
    "ARENA_MAGIC",
    "ARENA_VERSION",
    "HEADER_BYTES",
    "H_CAPACITY",
    "H_COMMITTED",
    "H_GENERATION",
    "H_INCARNATION",
    "H_INDEX_OFF",
    "H_INDEX_SLOTS",
    "H_INDEX_USED",
    "H_LOG_OFF",
    "H_MAGIC",
    "H_MAX_SEQ",
    "H_MIN_SEQ",
    "H_RECORD_COUNT",
    "H_STATE",
    "H_VERSION",
    "H_WRITER_ID",
    "arena_append",
    "arena_append_counted",
    "arena_committed",
    "arena_header",
    "arena_init",
    "arena_log_start",
    "arena_lookup",
    "arena_record_offsets",
    "record_offsets",
    "default_index_slots",
    "index_slots_for",
    "lookup_record",
    "max_batch_bytes",
]


class _InvalidType(InvalidArgument, TypeError):
    """An argument of the wrong type: an InvalidArgument that is also a
    TypeError, as the wrappers raised before."""

ARENA_MAGIC = int.from_bytes(b"SHLARENA", "little")
ARENA_VERSION = 1
HEADER_BYTES = 128

# header field indexes (u64 units)
H_MAGIC = 0
H_VERSION = 1
H_STATE = 2
H_GENERATION = 3
H_COMMITTED = 4
H_RECORD_COUNT = 5
H_INDEX_OFF = 6
H_INDEX_SLOTS = 7
H_LOG_OFF = 8
H_CAPACITY = 9
H_INCARNATION = 10
H_MIN_SEQ = 11
H_MAX_SEQ = 12
H_INDEX_USED = 13
H_WRITER_ID = 14

_MIN_SLOTS = 64
_MAX_ARENA = 32 << 30  # slot offsets are (off >> 3) + 1 in 32 bits


# ---------------------------------------------------------------- intrinsics
if config.DISABLE_JIT:  # plain-Python fallbacks so the kernels run as Python

    def _fence():
        pass

    def _memcpy(dst, doff, src, soff, n):
        dst[doff : doff + n] = src[soff : soff + n]

else:

    @intrinsic
    def _fence(typingctx):
        """A sequentially consistent fence: orders stores (and stops the compiler)."""

        def codegen(context, builder, signature, args):
            builder.fence("seq_cst")
            return context.get_dummy_value()

        return types.void(), codegen

    @intrinsic
    def _memcpy(typingctx, dst, doff, src, soff, n):
        """memcpy(dst + doff, src + soff, n) for uint8 arrays (no bounds check)."""

        def codegen(context, builder, signature, args):
            d = context.make_array(signature.args[0])(context, builder, args[0])
            s = context.make_array(signature.args[2])(context, builder, args[2])
            dptr = builder.gep(d.data, [args[1]])
            sptr = builder.gep(s.data, [args[3]])
            cgutils.raw_memcpy(builder, dptr, sptr, args[4], 1)
            return context.get_dummy_value()

        return types.void(dst, types.int64, src, types.int64, types.int64), codegen


# ------------------------------------------------------------------- kernels
@kernel
def _init(arena, slots, generation, incarnation):
    a64 = arena.view(np.uint64)
    a64[H_COMMITTED] = np.uint64(0)  # readers see an empty arena first
    _fence()
    log_off = HEADER_BYTES + 8 * slots
    for i in range(HEADER_BYTES // 8, log_off // 8):
        a64[i] = np.uint64(0)
    a64[H_MAGIC] = np.uint64(ARENA_MAGIC)
    a64[H_VERSION] = np.uint64(ARENA_VERSION)
    a64[H_STATE] = np.uint64(0)
    a64[H_GENERATION] = np.uint64(generation)
    a64[H_RECORD_COUNT] = np.uint64(0)
    a64[H_INDEX_OFF] = np.uint64(HEADER_BYTES)
    a64[H_INDEX_SLOTS] = np.uint64(slots)
    a64[H_LOG_OFF] = np.uint64(log_off)
    a64[H_CAPACITY] = np.uint64((arena.shape[0] // 8) * 8)
    a64[H_INCARNATION] = np.uint64(incarnation)
    a64[H_MIN_SEQ] = np.uint64(MAX_SEQ + 1)
    a64[H_MAX_SEQ] = np.uint64(0)
    a64[H_INDEX_USED] = np.uint64(0)
    a64[H_WRITER_ID] = np.uint64(0)
    a64[15] = np.uint64(0)
    _fence()
    a64[H_COMMITTED] = np.uint64(log_off)


@kernel
def _keys_equal(arena, a_start, key, k_start, length):
    for j in range(length):
        if arena[a_start + j] != key[k_start + j]:
            return False
    return True


@kernel
def _index_insert(arena, a64, rec_off, key_len, h):
    """Point the index at the record at ``rec_off`` (key hash ``h``); return 1
    if the key is new."""
    slots = np.int64(a64[H_INDEX_SLOTS])
    base = HEADER_BYTES // 8
    key_start = rec_off + RECORD_HEADER
    tag = h >> np.uint64(32)
    value = (tag << np.uint64(32)) | np.uint64((rec_off >> 3) + 1)
    i = np.int64(h & np.uint64(slots - 1))
    while True:
        s = a64[base + i]
        if s == np.uint64(0):
            a64[base + i] = value
            return 1
        if (s >> np.uint64(32)) == tag:
            other = (np.int64(s & np.uint64(0xFFFFFFFF)) - 1) << 3
            other_len = np.int64(a64[other >> 3] & np.uint64(0xFFFFFFFF))
            if other_len == key_len and _keys_equal(
                arena, other + RECORD_HEADER, arena, key_start, key_len
            ):
                a64[base + i] = value
                return 0
        i = (i + 1) & (slots - 1)


@kernel
def _append(arena, keys, key_offs, values, value_offs, kinds, base_seq, counter, use_counter):
    """Append a batch; return (n_appended, base_seq).  0 if the batch does not fit."""
    n = kinds.shape[0]
    a64 = arena.view(np.uint64)
    committed = np.int64(a64[H_COMMITTED])
    capacity = np.int64(a64[H_CAPACITY])
    slots = np.int64(a64[H_INDEX_SLOTS])
    used = np.int64(a64[H_INDEX_USED])
    if n == 0:
        return 0, base_seq
    # 1. fit check: whole batch or nothing
    need = np.int64(0)
    for i in range(n):
        kl = key_offs[i + 1] - key_offs[i]
        vl = value_offs[i + 1] - value_offs[i]
        need += (RECORD_HEADER + kl + vl + _PAD) & ~np.int64(_PAD)
    if committed + need > capacity or (used + n) * 4 > slots * 3:
        return 0, base_seq
    if use_counter:
        base_seq = counter[0]
        counter[0] = base_seq + np.uint64(n)  # seqs reserved before anything commits
    # 2. records
    pos = committed
    for i in range(n):
        ks = key_offs[i]
        kl = key_offs[i + 1] - ks
        vs = value_offs[i]
        vl = value_offs[i + 1] - vs
        seq = base_seq + np.uint64(i)
        a64[pos >> 3] = np.uint64(kl) | (np.uint64(vl) << np.uint64(32))
        a64[(pos >> 3) + 1] = (seq << np.uint64(KIND_BITS)) | np.uint64(kinds[i])
        p = pos + RECORD_HEADER
        _memcpy(arena, p, keys, ks, kl)
        p += kl
        _memcpy(arena, p, values, vs, vl)
        p += vl
        end = (p + _PAD) & ~np.int64(_PAD)
        for j in range(p, end):
            arena[j] = 0
        pos = end
    _fence()
    # 3. publish: counters, then committed
    last = base_seq + np.uint64(n - 1)
    if base_seq < a64[H_MIN_SEQ]:
        a64[H_MIN_SEQ] = base_seq
    if last > a64[H_MAX_SEQ]:
        a64[H_MAX_SEQ] = last
    a64[H_RECORD_COUNT] = a64[H_RECORD_COUNT] + np.uint64(n)
    _fence()
    a64[H_COMMITTED] = np.uint64(pos)
    _fence()
    # 4. index, newest wins.  Hashing first, then probing, lets the CPU
    # overlap the cache misses of consecutive probes (about 2x faster).
    hashes = np.empty(n, dtype=np.uint64)
    for i in range(n):
        hashes[i] = _xxh64(keys, key_offs[i], key_offs[i + 1] - key_offs[i], np.uint64(0))
    rec = committed
    new_keys = 0
    for i in range(n):
        if i + _AHEAD < n:  # the probe's first slot, a few keys ahead
            _prefetch(a64, HEADER_BYTES // 8 + np.int64(hashes[i + _AHEAD] & np.uint64(slots - 1)))
        kl = key_offs[i + 1] - key_offs[i]
        vl = value_offs[i + 1] - value_offs[i]
        new_keys += _index_insert(arena, a64, rec, kl, hashes[i])
        rec += (RECORD_HEADER + kl + vl + _PAD) & ~np.int64(_PAD)
    a64[H_INDEX_USED] = np.uint64(used + new_keys)
    return n, base_seq


@kernel
def _lookup(arena, key):
    """Return (record_off, kind, seq, value_start, value_len); record_off -1 if absent."""
    a64 = arena.view(np.uint64)
    committed = np.int64(a64[H_COMMITTED])
    _fence()
    slots = np.int64(a64[H_INDEX_SLOTS])
    log_off = np.int64(a64[H_LOG_OFF])
    nwords = arena.shape[0] // 8
    key_len = key.shape[0]
    if (
        slots < 1
        or (slots & (slots - 1)) != 0
        or HEADER_BYTES // 8 + slots > nwords
        or committed > arena.shape[0]
    ):
        return -1, 0, np.uint64(0), 0, 0
    base = HEADER_BYTES // 8
    h = _xxh64(key, 0, key_len, np.uint64(0))
    tag = h >> np.uint64(32)
    i = np.int64(h & np.uint64(slots - 1))
    for _ in range(slots):
        s = a64[base + i]
        if s == np.uint64(0):
            break
        if (s >> np.uint64(32)) == tag:
            off = (np.int64(s & np.uint64(0xFFFFFFFF)) - 1) << 3
            if off + RECORD_HEADER > committed and off >= log_off:
                # The slot is newer than the ``committed`` read above: an
                # append committed its record (and then wrote the slot) in
                # between.  Skipping it would hide every version of the key
                # in this arena (a caller would fall back to an older arena:
                # a lookup going back in time), so read ``committed`` again;
                # it covers the record now.  Still bounds-checked: a recycle
                # may be overlapping (the caller re-checks the incarnation).
                _fence()
                c2 = np.int64(a64[H_COMMITTED])
                if c2 <= arena.shape[0]:
                    committed = c2
            if off >= log_off and off + RECORD_HEADER <= committed:
                w = a64[off >> 3]
                kl = np.int64(w & np.uint64(0xFFFFFFFF))
                vl = np.int64(w >> np.uint64(32))
                end = off + RECORD_HEADER + kl + vl
                if kl == key_len and end <= committed:
                    if _keys_equal(arena, off + RECORD_HEADER, key, 0, key_len):
                        t = a64[(off >> 3) + 1]
                        kind = np.int64(t & np.uint64(KIND_MASK))
                        return off, kind, t >> np.uint64(KIND_BITS), off + RECORD_HEADER + kl, vl
        i = (i + 1) & (slots - 1)
    return -1, 0, np.uint64(0), 0, 0


@kernel
def _walk_offsets(arena, start, end, out):
    """One walk of ``[start, end)`` writing each whole record's offset into
    ``out`` (REQUIRES: ``(end - start) // RECORD_HEADER`` slots: a record
    moves the walk on by at least its header); returns how many."""
    a64 = arena.view(np.uint64)
    n = 0
    pos = start
    while pos + RECORD_HEADER <= end:
        _prefetch(arena, pos + _WALK_AHEAD)
        w = a64[pos >> 3]
        kl = np.int64(w & np.uint64(0xFFFFFFFF))
        vl = np.int64(w >> np.uint64(32))
        nxt = (pos + RECORD_HEADER + kl + vl + _PAD) & ~np.int64(_PAD)
        if nxt > end:
            break
        out[n] = pos
        n += 1
        pos = nxt
    return n


# The unchecked kernel for hot callers that validated once (the arena pool's
# lookup): lookup_record(arena, key) -> (record_off or -1, kind, seq,
# value_start, value_len).  REQUIRES: ``arena`` an initialised arena, ``key``
# a read-only 1-d uint8 array.
lookup_record = _lookup


# ------------------------------------------------------------------ wrappers
def _check_arena(arena) -> np.ndarray:
    if not isinstance(arena, np.ndarray) or arena.dtype != np.uint8 or arena.ndim != 1:
        raise _InvalidType("arena must be a 1-d uint8 numpy array")
    if not arena.flags.c_contiguous:
        raise InvalidArgument("arena must be contiguous")
    if arena.ctypes.data % 8:
        raise InvalidArgument("arena must be 8-byte aligned")
    return arena


def _hdr(arena: np.ndarray) -> np.ndarray:
    return arena[:HEADER_BYTES].view("<u8")


def default_index_slots(capacity: int) -> int:
    """Index slots for an arena of ``capacity`` bytes: a power of two >= capacity/64.

    The index then takes about 1/8 of the arena and holds up to 3/4 of its
    slots, enough for records of about 100 bytes to fill the log.
    """
    slots = _MIN_SLOTS
    while slots * 64 < capacity:
        slots *= 2
    return slots


def index_slots_for(n_records: int) -> int:
    """The fewest index slots (a power of two >= 64) that index ``n_records``
    new keys while staying at most 3/4 full."""
    slots = _MIN_SLOTS
    while 4 * int(n_records) > 3 * slots:
        slots *= 2
    return slots


def arena_init(arena: np.ndarray, index_slots: int | None = None, generation: int = 0) -> None:
    """Format ``arena`` empty (also used to recycle it); bumps the incarnation.

    REQUIRES: no writer appends to ``arena`` during the call.
    """
    _check_arena(arena)
    cap = (arena.shape[0] // 8) * 8
    if cap > _MAX_ARENA:
        raise InvalidArgument(f"arena larger than {_MAX_ARENA} bytes")
    slots = default_index_slots(cap) if index_slots is None else int(index_slots)
    if slots < 1 or slots & (slots - 1):
        raise InvalidArgument("index_slots must be a power of two")
    if HEADER_BYTES + 8 * slots + 64 > cap:
        raise InvalidArgument(f"arena of {cap} bytes too small for {slots} index slots")
    h = _hdr(arena) if arena.shape[0] >= HEADER_BYTES else None
    incarnation = 1
    if h is not None and int(h[H_MAGIC]) == ARENA_MAGIC:
        incarnation = (int(h[H_INCARNATION]) + 1) & 0xFFFFFFFFFFFFFFFF
    _init(arena, np.int64(slots), np.uint64(generation), np.uint64(incarnation))


def _check_batch(keys, key_offs, values, value_offs, kinds):
    for name, a, dt in (
        ("keys", keys, np.uint8),
        ("key_offs", key_offs, np.int64),
        ("values", values, np.uint8),
        ("value_offs", value_offs, np.int64),
        ("kinds", kinds, np.uint8),
    ):
        if not isinstance(a, np.ndarray) or a.dtype != dt or a.ndim != 1:
            raise _InvalidType(f"{name} must be a 1-d {np.dtype(dt).name} array")
        if not a.flags.c_contiguous:
            raise InvalidArgument(f"{name} must be contiguous")
    n = kinds.shape[0]
    if key_offs.shape[0] != n + 1 or value_offs.shape[0] != n + 1:
        raise InvalidArgument("key_offs and value_offs must have len(kinds) + 1 entries")
    if n == 0:
        return
    kl = np.diff(key_offs)
    vl = np.diff(value_offs)
    if key_offs[0] < 0 or key_offs[-1] > keys.shape[0] or kl.min() < 1:
        raise InvalidArgument("key offsets out of range or a key is empty")
    if kl.max() > MAX_KEY_BYTES:
        raise InvalidArgument(f"a key is longer than {MAX_KEY_BYTES} bytes")
    if value_offs[0] < 0 or value_offs[-1] > values.shape[0] or vl.min() < 0:
        raise InvalidArgument("value offsets out of range")
    if vl.max() > 0xFFFFFFFF:
        raise InvalidArgument("a value is longer than 2**32 - 1 bytes")
    if kinds.max() > MAX_KIND:
        raise InvalidArgument("kinds must be ValueKind values (0 delete, 1 put)")


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only view, so each kernel compiles one signature only."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _check_header(arena):
    h = _hdr(arena)
    if int(h[H_MAGIC]) != ARENA_MAGIC:
        raise InvalidArgument("not an initialised arena (bad magic)")
    return h


def arena_append(arena, keys, key_offs, values, value_offs, kinds, base_seq) -> int:
    """Append records ``i`` = key ``keys[key_offs[i]:key_offs[i+1]]``, value likewise,
    kind ``kinds[i]``, seq ``base_seq + i``.  Return ``len(kinds)``, or 0 when the
    batch does not fit (nothing is written then).

    REQUIRES: the caller is the only appender of ``arena`` (the pool lock).
    """
    _check_arena(arena)
    _check_header(arena)
    _check_batch(keys, key_offs, values, value_offs, kinds)
    base = int(base_seq)
    if base < 0 or base + kinds.shape[0] - 1 > MAX_SEQ:
        raise InvalidArgument("sequence numbers must fit in 56 bits")
    n, _ = _append(
        arena, _ro(keys), _ro(key_offs), _ro(values), _ro(value_offs), _ro(kinds),
        np.uint64(base), _NO_COUNTER, False,
    )
    return int(n)


_NO_COUNTER = np.zeros(1, dtype=np.uint64)


def arena_append_counted(arena, keys, key_offs, values, value_offs, kinds, counter):
    """Like :func:`arena_append`, but the base seq is taken from ``counter[0]``
    (a uint64 cell, e.g. in the pool's control segment), which is advanced by
    ``n`` *before* any record commits, only if the batch fits.  Return
    ``(n, base_seq)``; ``(0, counter[0])`` when it does not fit.

    The arguments must already be valid (the writer validates once); only
    cheap checks are made here.
    """
    if counter[0] + np.uint64(kinds.shape[0]) > np.uint64(MAX_SEQ + 1):
        raise Unavailable(
            "sequence numbers exhausted: this database has used all 2**56 - 1 of them; "
            "no write can be accepted"
        )
    n, base = _append(
        arena, _ro(keys), _ro(key_offs), _ro(values), _ro(value_offs), _ro(kinds),
        np.uint64(0), counter, True,
    )
    if n == 0:
        return 0, int(counter[0])
    return int(n), int(base)


def arena_lookup(arena: np.ndarray, key) -> tuple[bool, int, int, int, int]:
    """Newest committed version of ``key`` in ``arena``:
    ``(found, kind, seq, value_start, value_len)``; the value is
    ``arena[value_start:value_start + value_len]``.

    Safe against a concurrent appender.  If the arena may be recycled
    meanwhile, compare :func:`arena_header` ``["incarnation"]`` before and after.
    """
    if isinstance(key, (bytes, bytearray, memoryview)):
        key = np.frombuffer(bytes(key), dtype=np.uint8)
    key = _ro(key)
    if key.shape[0] < 1:
        return False, 0, 0, 0, 0
    off, kind, seq, vs, vl = _lookup(arena, key)
    if off < 0:
        return False, 0, 0, 0, 0
    return True, int(kind), int(seq), int(vs), int(vl)


def arena_committed(arena: np.ndarray) -> int:
    """Absolute offset one past the last committed record."""
    return int(_hdr(arena)[H_COMMITTED])


def arena_log_start(arena: np.ndarray) -> int:
    """Absolute offset of the first record (the end of the index)."""
    return int(_hdr(arena)[H_LOG_OFF])


def arena_record_offsets(arena: np.ndarray, start: int = 0, end: int | None = None) -> np.ndarray:
    """Offsets of the committed records in ``[start, end)`` (defaults: the log
    start, the committed offset at the time of the call).  ``start`` must be
    a record boundary (0, the log start, or an ``end`` used before).  The
    flusher calls this with ``start`` = where its previous WAL upload ended.
    """
    _check_arena(arena)
    h = _check_header(arena)
    committed = int(h[H_COMMITTED])
    log_off = int(h[H_LOG_OFF])
    start = max(int(start), log_off)
    end = committed if end is None else min(int(end), committed)
    if start % 8:
        raise InvalidArgument("start must be a record boundary")
    if end <= start:
        return np.empty(0, dtype=np.int64)
    return record_offsets(arena, start, end)


def record_offsets(buf: np.ndarray, start: int, end: int) -> np.ndarray:
    """Offsets of the whole records in ``buf[start:end]`` (one prefetching
    walk).  REQUIRES: ``start`` a record boundary, ``buf`` 8-byte aligned
    (an arena, or a copy of whole records), ``start <= end <= len(buf)``."""
    bound = (end - start) // RECORD_HEADER
    out = np.empty(bound, dtype=np.int64)
    n = _walk_offsets(buf, np.int64(start), np.int64(end), out)
    # a copy when the bound overshot by much (records are longer than a
    # header): the walk's larger array is freed
    return out[:n].copy() if n < bound // 2 else out[:n]


def arena_header(arena: np.ndarray) -> dict:
    """The header fields as a dict (for tests, tools and the pool)."""
    h = _hdr(arena)
    names = (
        "magic version state generation committed record_count index_off index_slots "
        "log_off capacity incarnation min_seq max_seq index_used writer_id"
    ).split()
    return {name: int(h[i]) for i, name in enumerate(names)}


def max_batch_bytes(arena: np.ndarray) -> int:
    """Record bytes (padding included) that fit into an empty arena of this geometry."""
    h = _hdr(arena)
    return int(h[H_CAPACITY]) - int(h[H_LOG_OFF])


def _warmup() -> None:
    """Compile every arena kernel for the argument types used in production
    (the wrappers pass read-only views, so one signature each)."""
    arena = np.zeros(1 << 14, dtype=np.uint8)
    arena_init(arena, 64)
    keys = np.frombuffer(b"k1k2", dtype=np.uint8)
    vals = np.frombuffer(b"v", dtype=np.uint8)
    ko = np.array([0, 2, 4], dtype=np.int64)
    vo = np.array([0, 1, 1], dtype=np.int64)
    kinds = np.array([1, 0], dtype=np.uint8)
    counter = np.ones(1, dtype=np.uint64)
    arena_append_counted(arena, keys, ko, vals, vo, kinds, counter)
    arena_append(arena, keys, ko, vals, vo, kinds, int(counter[0]))
    arena_lookup(arena, b"k1")
    arena_record_offsets(arena)
