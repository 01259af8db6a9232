"""Helpers shared by the format tests (not a test module)."""

from __future__ import annotations

import pathlib

import numpy as np
from reference.block import make_run, sort_key

from shaledb.format.keys import new_sst_id

GOLDEN_DIR = pathlib.Path(__file__).resolve().parent.parent / "golden"


def run_arrays(records):
    """Sorted record tuples -> (buf uint8, offs int64)."""
    buf, offs = make_run(records)
    return np.frombuffer(buf, dtype=np.uint8), np.array(offs, dtype=np.int64)


def ids(start: int = 1):
    """A deterministic SST id factory."""
    counter = iter(range(start, 1 << 40))

    def make() -> str:
        n = next(counter)
        return new_sst_id(now_ms=1_700_000_000_000 + n, rand=n.to_bytes(10, "big"))

    return make


def golden_records(n: int = 300):
    """A fixed run: shared prefixes, tombstones, several versions of some keys."""
    recs = []
    for i in range(n):
        key = b"user/%05d/" % (i // 3) + bytes([i % 3]) * (1 + i % 5)
        if i % 11 == 0:
            recs.append((key, 1_000 + i, 0, b""))
        else:
            recs.append((key, 1_000 + i, 1, (b"value-%d-" % i) * (1 + i % 4)))
        if i % 17 == 0:
            recs.append((key, 10 + i, 1, b"old"))
    recs.append((b"\xff" * 20, (1 << 56) - 1, 1, b"max"))
    recs.sort(key=sort_key)
    return recs


def model_get(records, key, max_seq=None):
    for k, seq, kind, value in records:
        if k == key and (max_seq is None or seq <= max_seq):
            return kind, seq, (value if kind == 1 else None)
    return None
