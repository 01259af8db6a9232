"""Recovery at open: read the WAL objects written after the last L0 flush.

Runs in the flusher, after fencing (``ManifestStore.create_or_open_writer``):
every WAL object with ``replay_after_wal_id < id < fence id`` is decoded and
records already in L0 (``seq <= last_l0_seq``) are dropped; the flusher writes
the rest to L0 in one manifest update.  A missing id in that range is
Corruption.  See docs/architecture.md ("Recovery").
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import Corruption, ObjectNotFound
from shaledb.format.keys import wal_key
from shaledb.format.record import KIND_BITS, TRAILER_OFF

__all__ = ["read_wal_runs"]


def read_wal_runs(store, first_id: int, end_id: int, skip_upto_seq: int):
    """Decode WAL objects ``first_id <= id < end_id``; keep records with seq > skip_upto_seq.

    Returns (runs, objects_read, max_seq).  Zero-byte objects are fences of
    earlier writers and are skipped.  A missing id in the range means the WAL
    was truncated under us: Corruption.
    """
    from shaledb.format.wal import decode_wal

    runs = []
    objects = 0
    max_seq = 0
    for wal_id in range(first_id, end_id):
        key = wal_key(wal_id)
        try:
            data = store.get(key)
        except ObjectNotFound:
            raise Corruption(f"WAL object {key} is missing: the WAL between ids {first_id} and {end_id - 1} has a hole") from None
        if len(data) == 0:
            continue
        objects += 1
        buf, offs = decode_wal(data, key)
        if len(offs) == 0:
            continue
        seqs = _trailers(buf, offs) >> np.uint64(KIND_BITS)
        keep = seqs > np.uint64(skip_upto_seq)
        if not keep.any():
            continue
        max_seq = max(max_seq, int(seqs[keep].max()))
        runs.append((buf, np.ascontiguousarray(offs[keep])))
    return runs, objects, max_seq


def _trailers(buf: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """The u64 trailer of every record (little-endian, at ``TRAILER_OFF``)."""
    idx = offs.astype(np.int64)[:, None] + np.arange(TRAILER_OFF, TRAILER_OFF + 8, dtype=np.int64)[None, :]
    raw = np.ascontiguousarray(buf[idx])
    return raw.view("<u8").reshape(-1).astype(np.uint64)
