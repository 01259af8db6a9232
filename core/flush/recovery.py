"""Opening a database for writing: fence older writers, then recover the WAL.

Runs inside the flusher (the only process that writes to the store).

1. Refuse a root that holds objects but no manifest (not a ShaleDB database;
   the manifest store checks).
2. Fence: ``ManifestStore.create_or_open_writer`` bumps ``writer_epoch`` with
   a compare-and-swap and writes the zero-byte WAL fence at the first free id
   ``F``.  From here on an older writer loses its next WAL create (it collides
   with the fence or with our objects) and its next manifest update (the epoch
   moved): it is fenced.
3. Replay: every WAL object with ``replay_after_wal_id < id < F`` is read,
   records with ``seq <= last_l0_seq`` are skipped (they are in L0 already),
   and the rest are written to L0 with their original sequence numbers, in
   one fenced manifest update that also moves ``replay_after_wal_id`` to
   ``F``.  The arenas therefore start empty, and the sequence counter starts
   at the manifest's ``last_l0_seq``.

Replaying into L0 rather than into arenas keeps the arenas free of records
whose sequence numbers are older than the counter, and makes recovery
idempotent: a crash during recovery leaves either the old manifest (replay
again) or the new one (nothing left to replay).
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import Corruption, ObjectNotFound
from shaledb.format.keys import wal_key

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
        trailers = _trailers(buf, offs)
        seqs = trailers >> np.uint64(8)
        keep = seqs > np.uint64(skip_upto_seq)
        if not keep.any():
            continue
        max_seq = max(max_seq, int(seqs[keep].max()))
        runs.append((buf, np.ascontiguousarray(offs[keep])))
    return runs, objects, max_seq


def _trailers(buf: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """The u64 trailer of every record (little-endian, at record offset + 8)."""
    idx = offs.astype(np.int64)[:, None] + np.arange(8, 16, dtype=np.int64)[None, :]
    raw = np.ascontiguousarray(buf[idx])
    return raw.view("<u8").reshape(-1).astype(np.uint64)
