"""Batch scans: ``Db.scan_arrays`` / ``Db.scan_arrow`` and the fast tuple scan.

A batch scan merges the same sources as ``Reader.scan`` (arenas, L0, sorted
runs: ``Reader._sources``) and turns each merged record run into packed numpy
arrays with one kernel call (``shaledb.kernels.batch.visible_into``); no
Python runs per record.  A batch is ``(keys_data, keys_offsets, values_data,
values_offsets)``: uint8 data and int64 offsets (n + 1 entries, from 0), pair
``i`` being ``keys_data[keys_offsets[i]:keys_offsets[i+1]]`` and likewise for
the value.

Snapshot: the scan reads the sequence counter under the pool lock *before*
it copies the arenas and reads the manifest, and shows, for every key, its
newest version with ``seq <=`` that number.  Every seq up to it is committed
(appends reserve seqs and commit in one hold of the lock), either in the
arena copies or, if its arena was flushed meanwhile, in an L0 the manifest
read afterwards lists; writes after it are filtered out wherever they are
found.  So all batches, including a scan that resumes on a newer manifest
after an SST it needed was compacted away and collected, show one
sequence number.  docs/reads.md has the long story.

Merging (:func:`merged_runs`): each source's runs are first re-cut so that
no key's versions straddle two runs (:func:`_whole_keys`); then each step
takes, from every source, the records up to the smallest last key among the
sources' current runs, and merges them (shaledb.kernels.merge.merge_runs) if
more than one source contributes.  Each step's run therefore holds every
version of each of its keys, and the kernel picks the newest visible one.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from shaledb.errors import Corruption, InvalidArgument
from shaledb.format.record import HEADER, RECORD_HEADER
from shaledb.storage.wrappers import call_deadline
from shaledb.read.reader import packed_bytes

__all__ = [
    "Batch",
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_RECORDS",
    "batches",
    "check_batch_bytes",
    "check_batch_records",
    "merged_runs",
    "scan_arrays",
    "scan_pairs",
    "snapshot_seq",
]

#: ``batch_records`` default of ``Db.scan_arrays``.
DEFAULT_BATCH_RECORDS = 65536
#: ``batch_bytes`` default of ``Db.scan_arrays`` (key + value bytes a batch
#: may hold; one larger pair is a batch of its own).
DEFAULT_BATCH_BYTES = 64 << 20
#: Pairs per batch of the tuple scan's fast path (``scan_pairs``).
PAIRS_BATCH = 16384
#: Key + value bytes per batch of the tuple scan: small enough that its
#: reused buffers stay in cache between a batch's fill and its ``bytes``.
PAIRS_BATCH_BYTES = 4 << 20
#: Runs whose records average this many bytes give the tuple scan their
#: pairs straight from the run (a Python step per pair, one copy fewer):
#: above it the copy costs more than the step.
PAIRS_DIRECT_BYTES = 64 * 1024
#: Pairs first allocated for (offsets grow by doubling up to batch_records).
_FIRST_RECORDS = 65536
#: Key/value bytes first allocated per batch (grown by doubling, then sized
#: from the previous batch).
_FIRST_BYTES = 1 << 16

#: ``(keys_data, keys_offsets, values_data, values_offsets)``
Batch = tuple


def snapshot_seq(mem) -> int:
    """The largest seq handed out so far, read under the pool lock: every
    seq up to it is committed in an arena or an L0 (see module docstring)."""
    with mem.lock:
        return mem.next_seq() - 1


def _check_count(name: str, value, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= value <= most:
        raise InvalidArgument(f"{name} must be in 1..{most}, got {value}")
    return int(value)


def check_batch_bytes(batch_bytes) -> int:
    return _check_count("batch_bytes", batch_bytes, 1 << 40)


def check_batch_records(batch_records) -> int:
    return _check_count("batch_records", batch_records, 1 << 31)


# -- merging ---------------------------------------------------------------


def _key_of(buf, off: int) -> bytes:
    klen = HEADER.unpack_from(buf, off)[0]
    return buf[off + RECORD_HEADER : off + RECORD_HEADER + klen].tobytes()


def _gather(parts):
    """``parts`` (record runs) copied back to back into one buffer:
    ``(buf, offs, bounds)`` with run ``j`` at ``offs[bounds[j]:bounds[j+1]]``."""
    from shaledb.kernels.block import gather_parts

    bounds = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(o) for _, o in parts], out=bounds[1:])
    try:
        cat, coffs = gather_parts(parts)
    except InvalidArgument as exc:  # a damaged record (runs come from checked blocks: not expected)
        raise Corruption(f"a record run of a scan: {exc}") from exc
    return cat, coffs, bounds


def _whole_keys(runs) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The runs of one source (record order, each after the previous one),
    re-cut so that every version of a key is in one run: a run's last key
    is held back and joined with the versions of that key at the head of
    the next run (a small copy, only when a key straddles two runs)."""
    from shaledb.kernels import read as K

    carry = None  # [(buf, offs), ...] of one key, held back
    ckey = None  # that key as a uint8 array
    for buf, offs in runs:
        n = len(offs)
        if not n:
            continue
        offs = np.asarray(offs, dtype=np.int64)
        if carry is not None:
            cut = int(K.upper_bound(buf, offs, 0, n, ckey))
            if cut:
                carry.append((buf, offs[:cut]))
            if cut == n:
                continue
            yield _join(carry)
            carry = None
            offs = offs[cut:]
            n -= cut
        last = np.frombuffer(_key_of(buf, int(offs[-1])), dtype=np.uint8)
        t = int(K.lower_bound(buf, offs, 0, n, last))
        if t:
            yield buf, offs[:t]
        carry = [(buf, offs[t:])]
        ckey = last
    if carry is not None:
        yield _join(carry)


def _join(parts):
    if len(parts) == 1:
        return parts[0]
    cat, coffs, _bounds = _gather(parts)
    return cat, coffs


def merged_runs(sources) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Record runs in key order, every version of each key of a run inside
    it (record order: key ascending, newest first), from ``sources``: each
    an iterator of runs ``(buf, offs)`` in key order.  Earlier sources win
    ties (equal key and seq come first).  Lazy: one step reads about one
    run of each source."""
    from shaledb.kernels import read as K

    its = [_whole_keys(s) for s in sources]
    cur: list = [None] * len(its)  # (buf, offs, pos)
    while True:
        live = []
        for i, it in enumerate(its):
            c = cur[i]
            if c is None or c[2] >= len(c[1]):
                nxt = next(it, None)
                c = None if nxt is None else (nxt[0], nxt[1], 0)
                cur[i] = c
            if c is not None:
                live.append(i)
        if not live:
            return
        if len(live) == 1:
            i = live[0]
            buf, offs, pos = cur[i]
            cur[i] = None
            yield buf, offs[pos:]
            continue
        bound = min(_key_of(cur[i][0], int(cur[i][1][-1])) for i in live)
        bkey = np.frombuffer(bound, dtype=np.uint8)
        parts = []
        for i in live:
            buf, offs, pos = cur[i]
            cut = int(K.upper_bound(buf, offs, pos, len(offs), bkey))
            if cut > pos:
                parts.append((buf, offs[pos:cut]))
                cur[i] = (buf, offs, cut)
        if len(parts) == 1:
            yield parts[0]
            continue
        from shaledb.kernels.merge import merge_runs

        cat, coffs, bounds = _gather(parts)
        yield cat, merge_runs(cat, bounds, coffs)


# -- batches ----------------------------------------------------------------


def _visible_into(*args):
    global _visible_into
    from shaledb.kernels.batch import visible_into

    _visible_into = visible_into
    return visible_into(*args)


class _Out:
    """The batch being filled: key/value data grown by doubling."""

    __slots__ = ("kd", "ko", "vd", "vo", "n", "kpos", "vpos")

    def __init__(self, records: int, kbytes: int, vbytes: int):
        self.kd = np.empty(kbytes, dtype=np.uint8)
        self.vd = np.empty(vbytes, dtype=np.uint8)
        self.ko = np.empty(records + 1, dtype=np.int64)
        self.vo = np.empty(records + 1, dtype=np.int64)
        self.ko[0] = 0
        self.vo[0] = 0
        self.n = self.kpos = self.vpos = 0

    def need(self, buf, offs, i: int) -> tuple[int, int]:
        """The largest key and value length among the versions of the key
        group at ``offs[i]`` (room for its pair, whichever version shows)."""
        key = _key_of(buf, int(offs[i]))
        klen = vlen = 0
        j = i
        while j < len(offs) and _key_of(buf, int(offs[j])) == key:
            k, v = HEADER.unpack_from(buf, int(offs[j]))[:2]
            klen, vlen = max(klen, k), max(vlen, v)
            j += 1
        return klen, vlen

    def grow(self, klen: int, vlen: int, limit: int) -> None:
        """Room for one more pair of these lengths: each column at least
        doubled, but not past ``limit`` bytes unless the pair needs it."""
        self.kd = _grown(self.kd, self.kpos, self.kpos + klen, limit)
        self.vd = _grown(self.vd, self.vpos, self.vpos + vlen, limit)

    def reset(self) -> None:
        """Empty again, keeping the buffers (their batch was consumed)."""
        self.n = self.kpos = self.vpos = 0

    def grow_records(self, records: int) -> None:
        n = self.n
        for name in ("ko", "vo"):
            a = getattr(self, name)
            b = np.empty(records + 1, dtype=np.int64)
            b[: n + 1] = a[: n + 1]
            setattr(self, name, b)

    def batch(self) -> Batch:
        n = self.n
        return self.kd[: self.kpos], self.ko[: n + 1], self.vd[: self.vpos], self.vo[: n + 1]


def _grown(a: np.ndarray, used: int, need: int, limit: int) -> np.ndarray:
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, min(2 * a.shape[0], limit)), dtype=np.uint8)
    b[:used] = a[:used]
    return b


def batches(runs, max_seq: int, batch_records: int, batch_bytes: int = DEFAULT_BATCH_BYTES,
            *, reuse: bool = False, direct_bytes: int = 0) -> Iterator[tuple[Batch, bool]]:
    """``(batch, run_done)`` from merged record runs: at most
    ``batch_records`` pairs each, newest version per key with ``seq <=
    max_seq``, tombstones dropped; the last batch may be short, an empty
    scan yields nothing.  A batch also ends before its key and value bytes
    would pass ``batch_bytes`` (a pair larger than that is a batch of its
    own), so large values do not make a batch of gigabytes.  ``run_done``:
    the batch ends at the end of a run (every key up to the run's last one
    is settled).  With ``reuse`` the next batch is written into the same
    buffers: the caller must be done with a batch before asking for the
    next one.  With ``direct_bytes``, a run whose records average that
    many bytes or more is handed out as lists of ``(key, value)`` bytes
    made from the run itself (one copy of each value instead of two), in
    place of batches: the tuple scan of large values."""
    from shaledb.kernels.batch import FULL, GROW

    seq = np.uint64(max_seq)
    kbytes = vbytes = min(_FIRST_BYTES, batch_bytes)
    first = min(batch_records, _FIRST_RECORDS)  # offsets grow too: a huge batch_records costs nothing up front
    out = _Out(first, kbytes, vbytes)
    for buf, offs in runs:
        if direct_bytes and _averages(buf, offs, direct_bytes):
            if out.n:  # what the batch holds comes first
                yield out.batch(), False
                out = _next_out(out, reuse, batch_records)
            yield from _direct_pairs(buf, offs, seq, batch_records)
            continue
        i = 0
        while True:
            cap = min(batch_records, out.ko.shape[0] - 1)
            st, i, n, kp, vp = _visible_into(
                buf, offs, i, seq, cap, batch_bytes, out.kd, out.ko, out.vd, out.vo, out.n, out.kpos, out.vpos
            )
            out.n, out.kpos, out.vpos = int(n), int(kp), int(vp)
            i = int(i)
            if st == GROW:  # the pair fits batch_bytes (or is the batch's first): room for it
                out.grow(*out.need(buf, offs, i), batch_bytes)
                continue
            if st == FULL:
                if out.n == cap < batch_records:  # only the offsets are full
                    out.grow_records(min(batch_records, 2 * cap))
                    continue
                yield out.batch(), False
                out = _next_out(out, reuse, batch_records)
                continue
            break
    if out.n:
        yield out.batch(), True


def _averages(buf, offs, nbytes: int) -> bool:
    """Whether the records of the run average ``nbytes`` or more (the
    buffer's size first: a run may be a few records of a larger buffer)."""
    need = nbytes * len(offs)
    if not need or buf.shape[0] < need:
        return False
    from shaledb.kernels.read import run_bytes

    return int(run_bytes(buf, offs)) >= need


def _direct_pairs(buf, offs, seq, batch_records: int) -> Iterator[tuple[list, bool]]:
    """``(pairs, run_done)`` of one run: lists of at most ``batch_records``
    ``(key, value)`` bytes, each copied once from the run."""
    from shaledb.kernels.batch import visible_picks

    picks = np.empty(min(len(offs), batch_records), dtype=np.int64)
    mv = memoryview(buf)
    i = 0
    while i < len(offs):
        i, n = visible_picks(buf, offs, i, seq, batch_records, picks)
        i = int(i)
        pairs = []
        for p in picks[: int(n)].tolist():
            klen, vlen = HEADER.unpack_from(buf, p)[:2]
            a = p + RECORD_HEADER
            pairs.append((bytes(mv[a : a + klen]), bytes(mv[a + klen : a + klen + vlen])))
        if pairs:
            yield pairs, i >= len(offs)


def _next_out(out: _Out, reuse: bool, batch_records: int) -> _Out:
    """The buffers of the batch after ``out`` (just handed out): the same
    ones emptied with ``reuse``, else new ones sized from ``out``'s fill."""
    if reuse:
        out.reset()
        return out
    kbytes, vbytes = max(out.kpos, 1), max(out.vpos, 1)
    return _Out(min(batch_records, out.ko.shape[0] - 1), kbytes + kbytes // 8, vbytes + vbytes // 8)


def scan_arrays(reader, start, end, batch_records: int, max_seq: int,
                batch_bytes: int = DEFAULT_BATCH_BYTES, *, reuse: bool = False,
                direct_bytes: int = 0) -> Iterator[Batch]:
    """The batches of ``reader``'s view of [start, end) at ``max_seq``
    (:func:`batches` for ``batch_records``, ``batch_bytes``, ``reuse`` and
    ``direct_bytes``: with it, some items are lists of pairs).

    The call (manifest, L0 opens) has one ``request_timeout`` deadline, and
    so does each merge step (the store reads it needs).  When a step meets
    a missing SST while a newer manifest exists (compacted and collected),
    the scan resumes after the last key of the last finished step on the
    latest manifest, at the same ``max_seq``.
    REQUIRES: start/end checked (bytes or None), batch_records and
    batch_bytes >= 1.
    """
    timeout = reader.options.request_timeout
    with call_deadline(timeout):
        sources = reader._sources(start, end)
    return _resuming(reader, sources, start, end, (batch_records, batch_bytes, reuse, direct_bytes), max_seq, timeout)


def _resuming(reader, sources, start, end, shape, max_seq, timeout):
    from shaledb.read.reader import MISSING_SST_RETRIES

    attempt = 0
    while True:
        runs = merged_runs(sources)

        def stepped(runs=runs):
            while True:
                with call_deadline(timeout):
                    r = next(runs, None)
                if r is None:
                    return
                yield r

        try:
            for batch, _done in batches(stepped(), max_seq, shape[0], shape[1], reuse=shape[2], direct_bytes=shape[3]):
                # a resumed scan starts just after the last key handed out
                # (the batch being filled is lost with the generator)
                if isinstance(batch, list):  # pairs (direct_bytes)
                    start = batch[-1][0] + b"\x00"
                else:
                    kd, ko = batch[0], batch[1]
                    n = len(ko) - 1
                    start = kd[int(ko[n - 1]) : int(ko[n])].tobytes() + b"\x00"
                yield batch
                attempt = 0
            return
        except Corruption:
            with call_deadline(timeout):
                if attempt >= MISSING_SST_RETRIES or not reader._advance_to_latest():
                    raise
                attempt += 1
                sources = reader._sources(start, end)


def scan_pairs(reader, start, end, max_seq: int) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` pairs of the same view as :func:`scan_arrays`, built
    from its batches (one ``bytes`` object per batch, sliced).  The batches
    are small (``PAIRS_BATCH_BYTES``) and share their buffers: each is made
    into ``bytes`` before the next is filled."""
    return itertools.chain.from_iterable(
        map(_pairs, scan_arrays(reader, start, end, PAIRS_BATCH, max_seq, PAIRS_BATCH_BYTES, reuse=True,
                                direct_bytes=PAIRS_DIRECT_BYTES))
    )


def _pairs(batch: Batch):
    if isinstance(batch, list):  # already pairs
        return batch
    kd, ko, vd, vo = batch
    return zip(packed_bytes(kd, ko), packed_bytes(vd, vo))


