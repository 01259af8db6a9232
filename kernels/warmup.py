"""Compile every kernel before it is needed: ``warmup()``.

Writer and flusher processes call ``warmup()`` at start so that no request
pays for compilation.  Each public wrapper is called on a tiny record run for
every argument-type combination that occurs in production: buffers and
offsets that are writable (arenas, kernel outputs) and read-only (``bytes``
from the object store, ``mmap``).  With ``cache=True`` the first process
compiles and writes the numba cache; later ones load it in about a second.

This module imports neither numpy nor numba at import time (the package
re-exports ``warmup`` eagerly).  ``kernels/block.py`` and ``kernels/arena.py`` are warmed too when present,
through their own ``_warmup()`` functions.
"""

from __future__ import annotations

import importlib
import time

__all__ = ["warmup"]

_OPTIONAL_MODULES = ("block", "arena", "read", "point", "getmany", "batch")


def _sample_run() -> tuple[bytes, list[int]]:
    """A few records (shaledb.format.record), duplicates and a tombstone included."""
    from shaledb.format.record import encode_record

    records = [(b"b", 3, 1, b"v3"), (b"a", 9, 1, b"x"), (b"b", 5, 0, b""), (b"a" * 20, 1, 1, b"y" * 9)]
    parts, offs, pos = [], [], 0
    for key, seq, kind, value in records:
        body = encode_record(key, value, seq, kind)
        offs.append(pos)
        parts.append(body)
        pos += len(body)
    return b"".join(parts), offs


def _variants(raw: bytes, offs: list[int]):
    """(buf, offs) in the four writable/read-only combinations."""
    import numpy as np

    bufs = [np.frombuffer(bytearray(raw), dtype=np.uint8), np.frombuffer(raw, dtype=np.uint8)]
    offsets = [np.array(offs, dtype=np.int64), np.frombuffer(np.array(offs, dtype=np.int64).tobytes(), dtype=np.int64)]
    return [(b, o) for b in bufs for o in offsets]


def _warm_own() -> None:
    import numpy as np

    from shaledb.kernels.bloom import bloom_build, bloom_may_contain, bloom_probe
    from shaledb.kernels.dedupe import dedupe_sorted
    from shaledb.kernels.hashing import xxh64
    from shaledb.kernels.merge import merge_runs
    from shaledb.kernels.sort import concat_runs, sort_records

    raw, offs = _sample_run()
    xxh64(raw)
    xxh64(bytearray(raw))
    for buf, o in _variants(raw, offs):
        ordered = sort_records(buf, o)
        if not o.flags.writeable:
            ordered = np.frombuffer(ordered.tobytes(), dtype=np.int64)
        dedupe_sorted(buf, ordered)
        dedupe_sorted(buf, ordered, 4)
        merge_runs(buf, [0, 2, len(offs)], ordered)
        filt = bloom_build(buf, o)
        for f in (filt, filt.tobytes()):
            bloom_may_contain(f, b"a")
            bloom_may_contain(f, np.frombuffer(bytearray(b"zz"), dtype=np.uint8))
        # readers probe with the jitted kernel directly (filter from bytes or built here)
        for f in (filt, np.frombuffer(filt.tobytes(), dtype=np.uint8)):
            for key in (np.frombuffer(b"a", dtype=np.uint8), np.frombuffer(bytearray(b"a"), dtype=np.uint8)):
                bloom_probe(f, key, 0, 1)
    concat_runs([_variants(raw, offs)[0], _variants(raw, offs)[3]])
    # more than 1024 keys: bloom_build hashes in buffer order (offsets sorted into a new array)
    from shaledb.format.record import encode_record

    many = [encode_record(b"k%05d" % i, b"", 1, 1) for i in range(1100)]
    big = b"".join(many)
    big_offs = np.cumsum([0] + [len(r) for r in many[:-1]]).astype(np.int64)
    for buf in (np.frombuffer(big, dtype=np.uint8), np.frombuffer(bytearray(big), dtype=np.uint8)):
        bloom_build(buf, big_offs)


def warmup(skip: tuple[str, ...] = ()) -> dict[str, float]:
    """Compile (or load from cache) every kernel; returns seconds spent per
    module.  ``skip``: kernel modules (e.g. ``("point",)``) left to another
    process warming them at the same time."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _warm_own()
    timings["hashing+bloom+sort+dedupe+merge"] = time.perf_counter() - t0
    for name in _OPTIONAL_MODULES:
        if name in skip:
            continue
        try:
            module = importlib.import_module(f"shaledb.kernels.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"shaledb.kernels.{name}":
                raise
            continue
        fn = getattr(module, "_warmup", None)
        if fn is not None:
            t0 = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t0
    return timings
