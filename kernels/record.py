"""Record accessors every kernel shares (layout: shaledb.format.record).

A record run is ``(buf: uint8[:], offs: int64[:])``: records inside ``buf``,
``offs`` the byte offsets of their starts (docs/format/record.md).  Records
order by (key ascending bytewise, trailer descending).

Jitted accessors (no bounds checks; REQUIRES: the record was checked with
``record_ok`` or lies in a run that ``check_run`` validated): ``key_len``,
``value_len``, ``trailer``, ``compare_keys[_from]``, ``compare_records[_from]``,
``compare_key`` (a record's key against a key array), ``same_key``.
Validation: ``record_ok`` / ``first_bad_record`` (kernels) and the wrappers'
``check_run`` / ``as_offsets`` / ``raise_bad_record``.
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.format.record import MAX_KEY_BYTES, RECORD_ALIGN, RECORD_HEADER, TRAILER_OFF, VALUE_LEN_OFF
from shaledb.kernels._jit import kernel
from shaledb.kernels.mem import as_u8, load_u32, load_u64, readonly

__all__ = [
    "as_offsets",
    "check_run",
    "compare_key",
    "compare_keys",
    "compare_keys_from",
    "compare_records",
    "compare_records_from",
    "first_bad_record",
    "key_len",
    "raise_bad_record",
    "record_ok",
    "same_key",
    "trailer",
    "value_len",
]


@kernel
def key_len(buf, off):
    return np.int64(load_u32(buf, off))


@kernel
def value_len(buf, off):
    return np.int64(load_u32(buf, off + VALUE_LEN_OFF))


@kernel
def trailer(buf, off):
    return load_u64(buf, off + TRAILER_OFF)


@kernel
def compare_keys_from(buf, a, b, depth):
    """Compare the keys of the records at ``a`` and ``b`` from byte ``depth`` on.

    Returns -1, 0 or 1.  REQUIRES: both keys are at least ``depth`` bytes long.
    """
    la = key_len(buf, a)
    lb = key_len(buf, b)
    n = la if la < lb else lb
    pa = a + RECORD_HEADER
    pb = b + RECORD_HEADER
    i = depth
    while i + 8 <= n and load_u64(buf, pa + i) == load_u64(buf, pb + i):
        i += 8
    while i < n:
        ca = buf[pa + i]
        cb = buf[pb + i]
        if ca != cb:
            return -1 if ca < cb else 1
        i += 1
    if la == lb:
        return 0
    return -1 if la < lb else 1


@kernel
def compare_keys(buf, a, b):
    return compare_keys_from(buf, a, b, 0)


@kernel
def compare_records_from(buf, a, b, depth):
    """Order of the records at ``a`` and ``b``: key asc, then trailer desc (-1, 0, 1)."""
    c = compare_keys_from(buf, a, b, depth)
    if c != 0:
        return c
    ta = trailer(buf, a)
    tb = trailer(buf, b)
    if ta == tb:
        return 0
    return -1 if ta > tb else 1


@kernel
def compare_records(buf, a, b):
    return compare_records_from(buf, a, b, 0)


@kernel
def compare_key(buf, off, key):
    """Compare the key of the record at ``off`` with the key array ``key``: -1, 0, 1."""
    klen = key_len(buf, off)
    n = min(klen, key.shape[0])
    p = off + RECORD_HEADER
    for i in range(n):
        x = buf[p + i]
        y = key[i]
        if x != y:
            return -1 if x < y else 1
    if klen == key.shape[0]:
        return 0
    return -1 if klen < key.shape[0] else 1


@kernel
def same_key(buf, a, b):
    """True when the records at ``a`` and ``b`` have equal keys (lengths first, then 8 bytes at a time)."""
    n = key_len(buf, a)
    if n != key_len(buf, b):
        return False
    pa = a + RECORD_HEADER
    pb = b + RECORD_HEADER
    i = 0
    while i + 8 <= n:
        if load_u64(buf, pa + i) != load_u64(buf, pb + i):
            return False
        i += 8
    while i < n:
        if buf[pa + i] != buf[pb + i]:
            return False
        i += 1
    return True


@kernel
def record_ok(buf, off):
    """True when a record at ``off`` is aligned and lies wholly inside ``buf``."""
    size = buf.shape[0]
    if off < 0 or off % RECORD_ALIGN != 0 or off + RECORD_HEADER > size:
        return False
    klen = key_len(buf, off)
    return klen <= MAX_KEY_BYTES and off + RECORD_HEADER + klen + value_len(buf, off) <= size


@kernel
def first_bad_record(buf, offs):
    """Index of the first record that does not fit the layout, or -1."""
    for i in range(offs.shape[0]):
        if not record_ok(buf, offs[i]):
            return i
    return -1


def raise_bad_record(buf, offs, bad: int):
    """Raise InvalidArgument for record ``bad`` of a run (a kernel found it out of bounds)."""
    raise InvalidArgument(
        f"record {bad} at offset {int(offs[bad])} does not fit the record layout "
        f"in a buffer of {buf.shape[0]} bytes"
    )


def as_offsets(offs, name: str = "offs") -> np.ndarray:
    """``offs`` as a read-only contiguous 1-D int64 array (no copy when it already is one)."""
    if not isinstance(offs, np.ndarray):
        try:
            offs = np.asarray(offs, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgument(f"{name} must be int64 offsets: {exc}") from None
    if offs.ndim != 1 or (offs.dtype != np.int64 and not (offs.size == 0 or np.issubdtype(offs.dtype, np.integer))):
        raise InvalidArgument(f"{name} must be a 1-D integer array, got {offs.dtype}[{offs.ndim}d]")
    if offs.dtype != np.int64:
        offs = offs.astype(np.int64)
    return readonly(np.ascontiguousarray(offs))


def check_run(buf, offs, *, validate: bool = True):
    """Validate a record run; returns ``(buf, offs)`` as read-only contiguous uint8 / int64 arrays.

    Raises InvalidArgument when an offset is misaligned or a record does not
    fit in ``buf``: the kernels trust their inputs and do no bounds checks.
    """
    buf = as_u8(buf, "buf")
    offs = as_offsets(offs)
    if validate and offs.shape[0]:
        bad = int(first_bad_record(buf, offs))
        if bad >= 0:
            raise_bad_record(buf, offs, bad)
    return buf, offs
