"""``SstWriter``: build the SSTs of one bulk-load partition anywhere (docs/bulk.md).

Any process (no open database needed) adds key/value batches; the writer
packs them into records (``shaledb.kernels.pack``), and once ``memory_bytes``
of records are buffered sorts them (``kernels.sort``) and spills the sorted
run to a temporary local file.  ``finish()`` merges the runs (``kernels.merge``
over memory-mapped spill files), drops duplicate keys, encodes SSTs of about
``sst_target_bytes`` with bloom filters (``shaledb.sst.writer.build_ssts``)
and uploads each under the database's ``compacted/`` prefix with the load's
deterministic ids (``shaledb.bulk.ids``).  It returns picklable
:class:`~shaledb.bulk.descriptor.SstDescriptor` s; nothing is visible until
``db.ingest`` lists them.

Duplicate keys within a partition: the last one added wins (records carry
their input position as seq until the ingest overrides it), or with
``on_duplicate="error"`` ``finish`` raises InvalidArgument naming the key.

Thread safety: one thread per writer.
"""

from __future__ import annotations

import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xxhash

from shaledb.bulk.descriptor import SstDescriptor
from shaledb.bulk.ids import bulk_sst_id, check_load_id, new_load_id
from shaledb.errors import InvalidArgument
from shaledb.format.keys import sst_key
from shaledb.format.record import HEADER, RECORD_ALIGN
from shaledb.sst.format import TRAILER_SIZE, decode_trailer

__all__ = ["SstWriter"]

#: Threads that encode and upload slices in ``finish``.
_THREADS = 3


def _column(x, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 data, int64 offsets)`` of one column of byte strings.

    Takes a list/tuple of bytes, a ``(data, offsets)`` numpy pair, a numpy
    fixed-width array (``S`` dtype, or 2-D uint8: one row per item) or a
    pyarrow binary/string array (pyarrow is never imported here).
    """
    if isinstance(x, tuple) and len(x) == 2 and all(isinstance(a, np.ndarray) for a in x):
        data, offs = x
        if data.dtype != np.uint8 or data.ndim != 1:
            raise InvalidArgument(f"{name}: the data of a (data, offsets) pair must be a 1-D uint8 array")
        offs = np.ascontiguousarray(offs, dtype=np.int64)
        if offs.ndim != 1 or len(offs) < 1 or np.any(np.diff(offs) < 0):
            raise InvalidArgument(f"{name}: offsets must be 1-D and non-decreasing")
        return data, offs
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "S":
            w = x.dtype.itemsize
            data = np.ascontiguousarray(x).view(np.uint8).reshape(-1)
        elif x.dtype == np.uint8 and x.ndim == 2:
            w = x.shape[1]
            data = np.ascontiguousarray(x).reshape(-1)
        else:
            raise InvalidArgument(f"{name}: a numpy array must be 'S' dtype or 2-D uint8, got {x.dtype}[{x.ndim}d]")
        return data, np.arange(0, (len(x) + 1) * w, w, dtype=np.int64)[: len(x) + 1]
    if type(x).__module__.split(".")[0] == "pyarrow":
        return _arrow_column(x, name)
    if isinstance(x, (list, tuple)):
        if not all(isinstance(v, (bytes, bytearray, memoryview)) for v in x):
            raise InvalidArgument(f"{name}: a list must hold bytes")
        offs = np.zeros(len(x) + 1, dtype=np.int64)
        if x:
            np.cumsum([len(v) for v in x], out=offs[1:])
        return np.frombuffer(b"".join(x), dtype=np.uint8), offs
    raise InvalidArgument(
        f"{name}: expected a list of bytes, a (data, offsets) numpy pair, a numpy array or a pyarrow binary array, "
        f"got {type(x).__name__}"
    )


def _arrow_column(x, name: str) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(x, "combine_chunks"):  # ChunkedArray
        x = x.combine_chunks()
    t = str(x.type)
    if t not in ("binary", "large_binary", "string", "large_string"):
        raise InvalidArgument(f"{name}: pyarrow arrays must be binary or string, got {t}")
    if x.null_count:
        raise InvalidArgument(f"{name}: {x.null_count} nulls (keys and values must be present)")
    _validity, obuf, dbuf = x.buffers()
    odt = np.int64 if t.startswith("large") else np.int32
    offs = np.frombuffer(obuf, dtype=odt)[x.offset : x.offset + len(x) + 1].astype(np.int64)
    data = np.frombuffer(dbuf, dtype=np.uint8) if dbuf is not None else np.zeros(0, np.uint8)
    return data, offs


class SstWriter:
    """Builds and uploads the SSTs of one partition of a bulk load.

    ``url``: the database root (a path or URL, ``store_options`` as for
    ``shaledb.storage.open_store``) or an object store rooted there.
    ``load_id`` (from :func:`shaledb.bulk.new_load_id`; a fresh one by
    default), ``partition`` and ``attempt`` name the SSTs deterministically.
    ``memory_bytes``: records buffered before a sorted run spills to
    ``tmp_dir``.  ``on_duplicate``: ``"last"`` (the last added wins) or
    ``"error"``.  Use :meth:`add` then :meth:`finish` (or :meth:`abort`).
    """

    def __init__(
        self,
        url,
        *,
        memory_bytes: int = 256 << 20,
        sst_target_bytes: int = 64 << 20,
        block_size: int = 4096,
        bloom_bits_per_key: float = 10,
        compression=None,
        load_id: str | None = None,
        partition: int = 0,
        attempt: int = 0,
        on_duplicate: str = "last",
        tmp_dir: str | None = None,
        store_options: dict | None = None,
    ):
        from shaledb.storage import open_store

        for nm, v, lo in (("memory_bytes", memory_bytes, 1 << 16), ("sst_target_bytes", sst_target_bytes, 1 << 12)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InvalidArgument(f"{nm} must be an int >= {lo}, got {v!r}")
        if on_duplicate not in ("last", "error"):
            raise InvalidArgument(f"on_duplicate must be 'last' or 'error', got {on_duplicate!r}")
        self.load_id = check_load_id(load_id) if load_id is not None else new_load_id()
        bulk_sst_id(self.load_id, partition, attempt, 0)  # validates partition and attempt
        self.partition = partition
        self.attempt = attempt
        self.memory_bytes = memory_bytes
        self.sst_target_bytes = sst_target_bytes
        self.block_size = block_size
        self.bloom_bits_per_key = bloom_bits_per_key
        self.compression = compression
        self.on_duplicate = on_duplicate
        self.tmp_dir = tmp_dir
        if isinstance(url, os.PathLike):
            url = os.fspath(url)
        self.store = open_store(url, **(store_options or {})) if isinstance(url, str) else url
        from shaledb.manifest.store import ManifestStore

        if not ManifestStore(self.store).exists():  # never fill a location that is not a database
            raise InvalidArgument(f"no ShaleDB database at {url!r}: open it once (shaledb.open) before a bulk load")
        self._buf: np.ndarray | None = None  # packed records of the current run, unsorted
        self._offs: list[np.ndarray] = []  # their offsets in _buf, batch by batch
        self._buffered = 0  # bytes of _buf in use
        self._count = 0  # records added: the next record's seq is count + 1
        self._spill = None  # (buf file, offs file, run bounds) once spilled
        self._done = False
        self.stats = {"records": 0, "spills": 0, "duplicates": 0, "ssts": 0, "bytes": 0}

    # ------------------------------------------------------------------ input

    def add(self, keys, values) -> None:
        """Add one batch: ``keys`` and ``values`` as lists of bytes, numpy
        ``(data, offsets)`` pairs, fixed-width numpy arrays or pyarrow
        binary arrays (the two may differ in form, not in length)."""
        from shaledb.kernels.pack import pack_records, packed_size

        self._check_live()
        kd, ko = _column(keys, "keys")
        vd, vo = _column(values, "values")
        if len(ko) != len(vo):
            raise InvalidArgument(f"{len(ko) - 1} keys but {len(vo) - 1} values")
        n = len(ko) - 1
        if n == 0:
            return
        need = packed_size(ko, vo)
        if self._buffered and self._buffered + need > self.memory_bytes:
            self._spill_runs()
        self._reserve(self._buffered + need)
        buf, offs = pack_records(kd, ko, vd, vo, self._count + 1, out=self._buf[self._buffered :])
        self._count += n
        self.stats["records"] += n
        self._offs.append(offs + self._buffered)
        self._buffered += len(buf)

    def put(self, key: bytes, value: bytes) -> None:
        """Add one pair (slow path; prefer :meth:`add` with batches)."""
        self.add([key], [value])

    def _reserve(self, nbytes: int) -> None:
        """Room for ``nbytes`` of records in ``_buf`` (one buffer, grown by
        doubling and reused across runs and writers of this process: fresh
        memory costs a page fault per page, reused memory nothing)."""
        if self._buf is not None and len(self._buf) >= nbytes:
            return
        cap = max(nbytes, 2 * len(self._buf) if self._buf is not None else 0)
        cap = (cap + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)
        new = _take_spare(cap)
        if self._buf is not None and self._buffered:
            new[: self._buffered] = self._buf[: self._buffered]
        self._buf = new

    # --------------------------------------------------------------- sorting

    def _sorted_buffer(self) -> tuple[np.ndarray, np.ndarray]:
        """The buffered run, sorted: ``(buf, offs)`` (``buf`` is ``_buf``;
        the caller is done with it before the next :meth:`add`)."""
        from shaledb.kernels.sort import sort_records

        offs = self._offs[0] if len(self._offs) == 1 else np.concatenate(self._offs)
        buf = self._buf[: self._buffered]
        self._offs = []
        self._buffered = 0
        return buf, sort_records(buf, offs)

    def _spill_runs(self) -> None:
        """Sort the buffered records and append them as one run to the spill files."""
        if not self._buffered:
            return
        buf, offs = self._sorted_buffer()
        if self._spill is None:
            fb = tempfile.TemporaryFile(dir=self.tmp_dir, prefix="shaledb-bulk-")
            fo = tempfile.TemporaryFile(dir=self.tmp_dir, prefix="shaledb-bulk-")
            self._spill = (fb, fo, [0])
        fb, fo, bounds = self._spill
        base = fb.seek(0, os.SEEK_END)
        fb.write(memoryview(buf))
        fb.write(bytes(-len(buf) % RECORD_ALIGN))
        (offs + base).astype(np.int64).tofile(fo)
        bounds.append(bounds[-1] + len(offs))
        self.stats["spills"] += 1

    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole partition as one sorted run ``(buf, offs)``."""
        from shaledb.kernels.merge import merge_runs

        if self._spill is None:
            if not self._buffered:
                return np.zeros(0, np.uint8), np.zeros(0, np.int64)
            return self._sorted_buffer()
        self._spill_runs()
        fb, fo, bounds = self._spill
        fb.flush()
        fo.flush()
        buf = np.memmap(fb, dtype=np.uint8, mode="r")
        offs = np.memmap(fo, dtype=np.int64, mode="r")
        if len(bounds) == 2:
            return buf, np.asarray(offs)
        return buf, merge_runs(buf, np.asarray(bounds, dtype=np.int64), offs)

    # ---------------------------------------------------------------- output

    def finish(self) -> list[SstDescriptor]:
        """Merge, deduplicate, encode and upload; the descriptors in key order.

        REQUIRES: not finished or aborted.  Removes the spill files.
        """
        from shaledb.kernels.dedupe import dedupe_sorted
        from shaledb.sst.writer import build_ssts

        self._check_live()
        self._done = True
        try:
            buf, offs = self._merged()
            n_in = len(offs)
            if n_in == 0:
                return []
            keep, hashes = dedupe_sorted(buf, offs, key_hashes=True)
            self.stats["duplicates"] = n_in - len(keep)
            if len(keep) < n_in and self.on_duplicate == "error":
                raise InvalidArgument(f"duplicate key {_first_duplicate(buf, offs)!r} in partition {self.partition} "
                                      f"of load {self.load_id} (on_duplicate='error')")
            # encode target-sized slices on a few threads (the kernels drop
            # the GIL; bounded memory: a few slices in flight), each uploaded
            # by the thread that built it.  SST n of slice i is named
            # (i << 16) + n: deterministic whatever the thread timing.
            per = max(1, int(self.sst_target_bytes // max(1, _mean_record_bytes(buf, keep))))
            starts = range(0, len(keep), per)
            out: list = []
            with ThreadPoolExecutor(_THREADS) as pool:
                futures = []
                for i, a in enumerate(starts):
                    futures.append(pool.submit(self._build_slice, build_ssts, buf, keep, hashes, i, a,
                                               min(len(keep), a + per)))
                    while len(futures) > _THREADS:
                        out.extend(futures.pop(0).result())
                for f in futures:
                    out.extend(f.result())
            self.stats["ssts"] = len(out)
            self.stats["bytes"] = sum(d.size for d in out)
            return out
        finally:
            self._cleanup()

    def _build_slice(self, build_ssts, buf, keep, hashes, i: int, a: int, b: int) -> list[SstDescriptor]:
        n = iter(range(1 << 16))
        ssts = build_ssts(
            buf, keep[a:b], key_hashes=hashes[a:b], target_bytes=2 * self.sst_target_bytes,
            block_size=self.block_size, bloom_bits_per_key=self.bloom_bits_per_key, compression=self.compression,
            new_id=lambda: bulk_sst_id(self.load_id, self.partition, self.attempt, (i << 16) + next(n)),
        )
        return [self._upload(sst_id, data, info) for sst_id, data, info in ssts]

    def _upload(self, sst_id: str, data: bytes, info) -> SstDescriptor:
        size = len(data)
        trailer = decode_trailer(data[-TRAILER_SIZE:], sst_id, size)
        tail_len = trailer.footer_len + TRAILER_SIZE
        self.store.put(sst_key(sst_id), data)
        return SstDescriptor(
            sst_id=sst_id,
            size=size,
            first_key=bytes(info.first_key),
            last_key=bytes(info.last_key),
            num_entries=int(info.num_entries),
            checksum=xxhash.xxh64_intdigest(data),
            tail_len=tail_len,
            tail_checksum=xxhash.xxh64_intdigest(data[size - tail_len :]),
            load_id=self.load_id,
            partition=self.partition,
            attempt=self.attempt,
        )

    def abort(self) -> None:
        """Drop everything buffered or spilled (uploads already made stay for GC)."""
        self._done = True
        self._cleanup()

    def _cleanup(self) -> None:
        self._offs = []
        self._buffered = 0
        if self._buf is not None:
            _give_spare(self._buf)
            self._buf = None
        if self._spill is not None:
            fb, fo, _ = self._spill
            self._spill = None
            fb.close()
            fo.close()

    def _check_live(self) -> None:
        if self._done:
            raise InvalidArgument("this SstWriter has finished (or was aborted)")

    def __enter__(self) -> "SstWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self._done:
            self.abort()


_spare_lock = threading.Lock()
_spare: list = []  # at most one record buffer, kept for the next writer of this process


def _take_spare(nbytes: int) -> np.ndarray:
    with _spare_lock:
        if _spare and len(_spare[0]) >= nbytes:
            return _spare.pop()
    return np.empty(nbytes, dtype=np.uint8)


def _give_spare(buf: np.ndarray) -> None:
    with _spare_lock:
        if not _spare or len(_spare[0]) < len(buf):
            _spare[:] = [buf]


def _mean_record_bytes(buf: np.ndarray, offs: np.ndarray) -> float:
    """Average record size of a run, from a sample of up to 1024 records."""
    idx = offs[:: max(1, len(offs) // 1024)]
    total = 0
    for off in idx[:1024]:
        klen, vlen, _ = HEADER.unpack_from(buf, int(off))
        total += 16 + klen + vlen
    return total / max(1, len(idx[:1024]))


def _first_duplicate(buf: np.ndarray, offs: np.ndarray) -> bytes:
    prev = None
    for off in offs:
        klen, _, _ = HEADER.unpack_from(buf, int(off))
        key = bytes(buf[int(off) + 16 : int(off) + 16 + klen])
        if key == prev:
            return key
        prev = key
    return b""
