"""Read SST objects (format: shaledb.sst.format, docs/format/sst.md).

``SstReader(store, key, size=...)`` opens an SST with one ranged GET of its
last ``TAIL_BYTES`` (trailer, footer, and usually the index and bloom block
too; whatever is missing costs one more ranged GET), then keeps the index
and bloom filter in memory.

* Stores that map objects (``store.mmap``, the local directory store):
  an uncompressed SST's data region is read through the mapping (zero
  copy; the page cache is the cache).  A block is verified (checksum,
  restart array) the first time a read touches it, and a per-block flag
  (``mapped()[1]``) remembers it, so a verified block is never hashed again.
* Other stores (S3), or compressed SSTs: a block comes from the optional
  block cache; a miss is one ranged GET of that one block, verified and
  decompressed, then cached.
* ``get(key, max_seq=None)``: key range, bloom filter, binary search of the
  index, one block, seek inside it.  ``find(key, karr)`` is ``get`` for a
  caller that already checked the key range and the bloom filter.
  ``meta_row()`` describes the SST to the plan kernels of
  shaledb.kernels.point (the read path's one-call point reads).
* ``iter_range(start, end)``: record runs ``(buf, offs)`` in key order, one
  per group of consecutive blocks of up to ``read_ahead_bytes`` (one ranged
  GET each, or a slice of the mapping).

``global_seq`` (bulk-ingested SSTs): when nonzero, every record of the SST
reads as having that seq, in ``get``/``find`` results and in the record runs
``iter_range`` yields (so merges of compactions see it too).

Every checksum is verified before bytes are used; a mismatch, or an object
shorter than its footer says, raises ``shaledb.Corruption`` naming the object
and the block.  So does a missing object once its size is known (given by
the manifest that lists it, or found by ``head``): an SST that is referenced
but gone is damage to the database, not a lookup miss.  Thread safety:
threads may share a reader (after construction it only changes by filling
lazily built arrays, the verified flags and the thread-safe block cache;
a race verifies a block twice, harmlessly).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import numpy as np

from shaledb.format.enums import CompressionCodec
from shaledb.errors import Corruption, InvalidArgument, ObjectNotFound
from shaledb.sst.format import (
    TRAILER_SIZE,
    SstInfo,
    decode_bloom,
    decode_footer,
    decode_index_arrays,
    index_key_list,
    decode_stored_block,
    decompress_blocks,
    decode_trailer,
)

__all__ = ["SstReader"]


def _block_find(block, karr):
    """``kernels.read.block_find``, imported on first use (numba loads lazily)."""
    global _block_find
    from shaledb.kernels.read import block_find

    _block_find = block_find
    return block_find(block, karr)

def _plan_get(*args):
    global _plan_get
    from shaledb.kernels.point import plan_get

    _plan_get = plan_get
    return plan_get(*args)


def _override_seq(buf, offs, seq):
    global _override_seq
    from shaledb.kernels.read import override_seq

    _override_seq = override_seq
    return override_seq(buf, offs, seq)


TAIL_BYTES = 64 * 1024
READ_AHEAD_BYTES = 256 * 1024
#: Bytes of consecutive blocks a scan of a mapped SST decodes per step: no
#: I/O to bound, so larger than a ranged GET (fewer Python steps a scan;
#: 1 MiB measured ~30 % faster than 256 KiB on 4 KiB values, docs/reads.md).
MAPPED_GROUP_BYTES = 1 << 20


class _Pinned(tuple):
    """(data, block offsets, index keys, index key offsets, bloom) of a
    pinned SST; ``nbytes`` for the block cache's accounting."""

    __slots__ = ()

    def __new__(cls, *parts):
        return tuple.__new__(cls, parts)

    @property
    def nbytes(self) -> int:
        return sum(int(p.nbytes) for p in self)


class SstReader:
    """A reader of one SST object.

    With ``size=None`` the size comes from ``head`` (ObjectNotFound if the
    object does not exist); after that, and whenever ``size`` is given (the
    manifest lists the SST), a missing object raises Corruption naming it.
    """

    def __init__(self, store, key: str, *, block_cache=None, size: int | None = None,
                 read_ahead_bytes: int = READ_AHEAD_BYTES, global_seq: int = 0,
                 bounded_read_ahead: bool = False):
        if isinstance(global_seq, bool) or not isinstance(global_seq, (int, np.integer)) or not 0 <= global_seq < 1 << 56:
            raise InvalidArgument(f"global_seq must be an int in [0, 2**56), got {global_seq!r}")
        #: when nonzero, every record of the SST reads as having this seq
        self.global_seq = int(global_seq)
        self.store = store
        self.key = key
        self.block_cache = block_cache
        self.read_ahead_bytes = max(1, int(read_ahead_bytes))
        #: True: a scan's ranged GETs are at most ``read_ahead_bytes`` each with
        #: one in flight (the compactor's memory bound: sources x read-ahead);
        #: False: shaledb.sst.prefetch's larger GETs and deeper read-ahead
        self.bounded_read_ahead = bool(bounded_read_ahead)
        if size is None:
            size = store.head(key).size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise InvalidArgument(f"size must be an int >= 0, got {size!r}")
        self.size = int(size)
        tail_start = max(0, self.size - TAIL_BYTES)
        tail = self._fetch(tail_start, self.size, "trailer")
        trailer = decode_trailer(tail[-TRAILER_SIZE:] if len(tail) >= TRAILER_SIZE else b"", key, self.size)

        def region(start: int, end: int, what: str) -> bytes:
            if start >= tail_start:
                return tail[start - tail_start : end - tail_start]
            return self._fetch(start, end, what)

        f = decode_footer(
            region(trailer.footer_offset, trailer.footer_offset + trailer.footer_len, "footer"),
            key, trailer.footer_offset,
        )
        self.footer = f
        meta_start = f.bloom_offset if f.bloom_len else f.index_offset
        if meta_start < tail_start:  # one GET for bloom + index
            tail = self._fetch(meta_start, self.size, "index")
            tail_start = meta_start
        self._offsets, self._ikeys, self._ioffs = decode_index_arrays(
            region(f.index_offset, f.index_offset + f.index_len, "index"), key, f.num_blocks, f.data_end
        )
        self._key_list = None  # the index keys as bytes, built on first use (bisect)
        if self._ikeys[self._ioffs[-2] :].tobytes() != f.last_key:
            raise Corruption(f"{key}: index block: last index key is not the footer's last key")
        self._bloom = None
        if f.bloom_len:
            self._bloom = decode_bloom(region(f.bloom_offset, f.bloom_offset + f.bloom_len, "bloom"), key)
        self._arrays = None  # (ikeys, ioffs, boffs, first key, last key), built on first use
        self._data = None  # the mapped data region (read-only uint8), once mapped
        self._mapped = None  # None: not tried yet; False: the store cannot map
        self._stored = None  # compressed SST: its mapped data region (stored blocks); False: not mapped
        self._verified = None  # one flag per block of the mapped data: checksum checked
        self._meta1 = None  # (meta row, sources) of this SST alone, for find()
        lo, hi = (f.min_seq, f.max_seq) if not self.global_seq else (self.global_seq, self.global_seq)
        self.info = SstInfo(f.sst_id, self.size, f.first_key, f.last_key, f.num_entries, lo, hi)

    # ------------------------------------------------------------- fetching

    @property
    def num_blocks(self) -> int:
        return self.footer.num_blocks

    def _fetch(self, start: int, end: int, what: str) -> bytes:
        try:
            data = self.store.get_range(self.key, start, end)
        except ObjectNotFound:
            raise Corruption(
                f"{self.key}: {what}: the SST object is missing from the store "
                f"(it is referenced with size {self.size})"
            ) from None
        if len(data) != end - start:
            raise Corruption(
                f"{self.key}: {what}: truncated object (wanted bytes {start}..{end}, got {len(data)})"
            )
        return data

    def _raw_block(self, i: int, stored) -> np.ndarray:
        """Verified raw block ``i`` from its stored bytes."""
        from shaledb.kernels.block import check_block, raise_corruption

        what = f"{self.key}: block {i}"
        raw = decode_stored_block(stored, self.footer.compression, what)
        # checksum and restart array, once: cached blocks are used without re-checking
        err = int(check_block(raw)[0])
        if err != 0:
            raise_corruption(err, what)
        raw.flags.writeable = False
        return raw

    def _block(self, i: int, *, fill_cache: bool = True) -> np.ndarray:
        if self._mapped is None:
            self.mapped()
        if self._mapped:  # a view of the mapping, verified on first touch
            start, end = int(self._offsets[i]), int(self._offsets[i + 1])
            block = self._data[start:end]
            if not self._verified[i]:
                from shaledb.kernels.block import check_block, raise_corruption

                err = int(check_block(block)[0])
                if err != 0:
                    raise_corruption(err, f"{self.key}: block {i}")
                self._verified[i] = 1
            return block
        cache = self.block_cache
        ck = (self.key, i)
        if cache is not None:
            hit = cache.get(ck)
            if hit is not None:
                return hit
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        stored = self._stored_map()
        raw = self._raw_block(i, stored[start:end] if stored is not None else self._fetch(start, end, f"block {i}"))
        if cache is not None and fill_cache:
            cache.put(ck, raw)
        return raw

    def arrays(self):
        """``(ikeys, ioffs, boffs, first_key, last_key, ipre, lcp)``: index
        keys back to back with their bounds, block offsets (int64,
        ``num_blocks + 1``), first and last key (uint8), the index search
        prefixes and their common prefix length (shaledb.kernels.point,
        M_IPRE).  Built once."""
        a = self._arrays
        if a is None:
            ikeys, ioffs = self._ikeys, self._ioffs
            boffs = np.ascontiguousarray(self._offsets, dtype=np.int64)
            first, last = self.footer.first_key, self.footer.last_key
            fk = np.frombuffer(first, dtype=np.uint8)
            lk = np.frombuffer(last, dtype=np.uint8)
            lcp = 0
            while lcp < min(len(first), len(last)) and first[lcp] == last[lcp]:
                lcp += 1
            from shaledb.kernels.point import index_prefixes

            ipre = np.empty(len(ioffs) - 1, dtype=np.uint64)
            index_prefixes(ikeys, ioffs, lcp, ipre)
            a = self._arrays = (ikeys, ioffs, boffs, fk, lk, ipre, lcp)
        return a

    def mapped(self):
        """``(data, verified)`` when the store maps objects (``store.mmap``)
        and the SST is uncompressed: the data region as a read-only uint8
        view of the mapping (no copy; the page cache is the cache) and the
        per-block flags of blocks already verified (the read kernels check a
        block the first time they touch it).  None otherwise."""
        if self._mapped is None:
            self._mapped = False
            if self.footer.compression == CompressionCodec.NONE:
                data = self._map_data()
                if data is not None:
                    self._data = data
                    self._verified = np.zeros(self.footer.num_blocks, dtype=np.uint8)
                    self._mapped = True
        return (self._data, self._verified) if self._mapped else None

    def _stored_map(self):
        """A compressed SST's data region as a read-only view of the store's
        mapping, or None (the store cannot map, or the SST is uncompressed:
        :meth:`mapped`).  Its blocks are read from there instead of one
        ranged GET each (on a local directory, an open, two preads and a
        close per block: about 60 us, against 12 us to decompress it)."""
        if self._stored is None:
            self._stored = False
            if self.footer.compression != CompressionCodec.NONE:
                data = self._map_data()
                if data is not None:
                    self._stored = data
        return None if self._stored is False else self._stored

    def _map_data(self):
        """The data region (blocks) of the store's mapping of this SST, or
        None when the store does not map objects or the SST has no blocks."""
        fn = getattr(self.store, "mmap", None)
        if fn is None or self.footer.num_blocks == 0:
            return None
        try:
            view = fn(self.key)
        except ObjectNotFound:
            raise Corruption(
                f"{self.key}: the SST object is missing from the store (it is referenced with size {self.size})"
            ) from None
        if view is None:
            return None
        if len(view) != self.size:
            raise Corruption(f"{self.key}: the object has {len(view)} bytes, expected {self.size}")
        return np.frombuffer(view, dtype=np.uint8)[: int(self._offsets[-1])]

    def meta_row(self, data=None, verified=None, max_seq: int | None = None, boffs=None) -> np.ndarray:
        """This SST's row of a point-read plan (``shaledb.kernels.point``
        ``meta``): addresses of its arrays, with ``data``/``verified`` (the
        data region in memory and its flags) or without (address 0: the
        caller reads blocks with :meth:`read_block`).  ``boffs``: the block
        offsets within ``data`` when they are not the stored ones (a pinned
        compressed SST: its blocks decompressed, :meth:`pin`).  REQUIRES:
        the caller keeps this reader, and ``data``/``verified``/``boffs``,
        alive while the row is used."""
        from shaledb.kernels import point as P

        ikeys, ioffs, stored_boffs, fk, lk, ipre, lcp = self.arrays()
        if boffs is None:
            boffs = stored_boffs
        row = np.zeros(P.META_COLS, dtype=np.int64)
        if data is not None:
            row[P.M_DATA] = data.ctypes.data
            row[P.M_DLEN] = data.shape[0]
            row[P.M_VER] = verified.ctypes.data
        row[P.M_BOFFS] = boffs.ctypes.data
        row[P.M_NB] = self.footer.num_blocks
        row[P.M_IKEYS] = ikeys.ctypes.data
        row[P.M_IKLEN] = ikeys.shape[0]
        row[P.M_IOFFS] = ioffs.ctypes.data
        row[P.M_IPRE] = ipre.ctypes.data
        row[P.M_LCP] = lcp
        bloom = self._bloom
        if bloom is not None and bloom.shape[0]:
            row[P.M_BLOOM] = bloom.ctypes.data
            row[P.M_BLEN] = bloom.shape[0]
        row[P.M_FK] = fk.ctypes.data
        row[P.M_FKLEN] = fk.shape[0]
        row[P.M_LK] = lk.ctypes.data
        row[P.M_LKLEN] = lk.shape[0]
        row[P.M_GSEQ] = self.global_seq
        row[P.M_MAXSEQ] = self.info.max_seq if max_seq is None else max_seq
        return row

    def read_block(self, i: int) -> np.ndarray:
        """Verified raw block ``i`` (through the block cache, when there is
        one; a miss is one ranged GET of that block)."""
        return self._block(i)

    def pin(self):
        """The whole data region in memory for the point kernels:
        ``(data, block offsets, index keys, index key offsets, bloom)``,
        fetched with one ranged GET (or taken from the store's mapping) and
        every block validated once.  A compressed SST is pinned decompressed:
        ``data`` holds its raw blocks back to back and the block offsets are
        theirs, not the stored ones.  Shared through the block cache (key
        ``(object key, "all")``) when there is one."""
        if self.footer.num_blocks < 1:
            return None
        cache = self.block_cache
        ck = (self.key, "all")
        if cache is not None:
            hit = cache.get(ck)
            if hit is not None:
                return hit
        from shaledb.kernels.read import check_blocks

        boffs = np.ascontiguousarray(self._offsets, dtype=np.int64)
        end = int(boffs[-1])
        stored = self._stored_map()
        if stored is not None:
            data = stored[:end]
        else:
            data = np.frombuffer(self._fetch(0, end, f"blocks 0..{len(boffs) - 2}"), dtype=np.uint8)
        if self.footer.compression != CompressionCodec.NONE:
            data, boffs = decompress_blocks(data, boffs, self.footer.compression, lambda b: f"{self.key}: block {b}")
        err, bad = check_blocks(data, boffs)
        if err:
            from shaledb.kernels.block import raise_corruption

            raise_corruption(int(err), f"{self.key}: block {int(bad)}")
        ikeys, ioffs = self._ikeys, self._ioffs
        bloom = self._bloom if self._bloom is not None else np.empty(0, dtype=np.uint8)
        pinned = _Pinned(data, boffs, ikeys, ioffs, np.ascontiguousarray(bloom, dtype=np.uint8))
        if cache is not None:
            cache.put(ck, pinned)
        return pinned

    def _block_groups(self, first: int, last: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(first block, raw bytes, block starts)`` covering blocks first..last-1
        in order: runs of consecutive blocks of up to ``read_ahead_bytes``
        (``MAPPED_GROUP_BYTES`` or more from a mapping), a slice of the
        mapping, or one ranged GET each with several in flight
        (shaledb.sst.prefetch; the block cache is not consulted)."""
        if self._mapped is None:
            self.mapped()
        if self._mapped:  # straight from the mapping (decoding checks every block)
            for i, j in self._mapped_groups(first, last):
                start = int(self._offsets[i])
                yield i, self._data[start : int(self._offsets[j])], self._offsets[i : j + 1] - start
            return
        stored = self._stored_map()
        if stored is not None:  # a compressed SST on a local directory: stored blocks from the mapping
            for i, j in self._mapped_groups(first, last):
                start = int(self._offsets[i])
                yield (i, *self._decompressed(stored[start : int(self._offsets[j])], i, j))
            return
        from shaledb.sst.prefetch import fetch_groups  # several ranged GETs in flight (S3)

        def fetch(i: int, j: int) -> bytes:
            return self._fetch(int(self._offsets[i]), int(self._offsets[j]), f"blocks {i}..{j - 1}")

        bound = {"get_bytes": self.read_ahead_bytes, "max_in_flight": self.read_ahead_bytes} if self.bounded_read_ahead else {}
        for i, j, data in fetch_groups(fetch, self._offsets, first, last, group_bytes=self.read_ahead_bytes, **bound):
            if self.footer.compression == CompressionCodec.NONE:
                yield i, np.frombuffer(data, dtype=np.uint8), self._offsets[i : j + 1] - int(self._offsets[i])
            else:
                yield (i, *self._decompressed(data, i, j))

    def _mapped_groups(self, first: int, last: int) -> Iterator[tuple[int, int]]:
        """Runs ``(i, j)`` of blocks first..last-1 read from a mapping: the
        most blocks from ``i`` that end within ``max(read_ahead_bytes,
        MAPPED_GROUP_BYTES)`` of its start (at least one)."""
        offsets = self._offsets
        group = max(self.read_ahead_bytes, MAPPED_GROUP_BYTES)
        i = first
        while i < last:
            j = int(np.searchsorted(offsets, int(offsets[i]) + group, side="right")) - 1
            j = min(max(j, i + 1), last)
            yield i, j
            i = j

    def _decompressed(self, data, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """``(raw bytes, block starts)`` of the stored blocks i..j-1 in
        ``data`` (which starts at block i), decompressed back to back."""
        return decompress_blocks(data, self._offsets[i : j + 1] - int(self._offsets[i]), self.footer.compression,
                                 lambda b: f"{self.key}: block {i + b}")

    # -------------------------------------------------------------- reading

    def may_contain(self, key: bytes) -> bool:
        """False only if the SST certainly holds no version of ``key``."""
        if key < self.footer.first_key or key > self.footer.last_key:
            return False
        if self._bloom is not None:
            from shaledb.kernels.bloom import bloom_probe

            # the filter was validated at open: probe it directly
            return bool(bloom_probe(self._bloom, np.frombuffer(key, dtype=np.uint8), 0, len(key)))
        return True

    def find(self, key: bytes, karr: np.ndarray):
        """:meth:`get` without the key range and bloom checks (the caller made
        them): ``karr`` is ``key`` as a uint8 array."""
        if self._mapped is None:
            self.mapped()
        if self._mapped:
            return self._mapped_find(karr)
        keys = self._keys
        i = bisect.bisect_left(keys, key)
        if i >= len(keys):
            return None
        block = self._block(i)
        err, found, trailer, vp, vlen = _block_find(block, karr)
        if err:
            from shaledb.kernels.block import raise_corruption

            raise_corruption(int(err), f"{self.key}: block {i}")
        if not found:
            return None
        trailer = int(trailer)
        seq = self.global_seq or trailer >> 8
        if trailer & 0xFF == 0:
            return 0, seq, None
        return 1, seq, block[vp : vp + vlen].tobytes()

    def _mapped_find(self, karr):
        m = self._meta1
        if m is None:
            data, verified = self.mapped()
            m = self._meta1 = (self.meta_row(data, verified, max_seq=1 << 62)[None, :].copy(),
                               np.array([0, 1], dtype=np.int64))
        err, t, trailer, vp, vlen, _nt, nb, _s = _plan_get(karr, 0, -1, m[0], m[1])
        if err:
            from shaledb.kernels.block import raise_corruption

            raise_corruption(int(err), f"{self.key}: block {int(nb)}")
        if t < 0:
            return None
        trailer = int(trailer)
        if trailer & 0xFF == 0:
            return 0, trailer >> 8, None
        return 1, trailer >> 8, self._data[vp : vp + vlen].tobytes()

    def get(self, key: bytes, max_seq: int | None = None):
        """``(kind, seq, value | None)`` of the newest version of ``key`` (with
        ``seq <= max_seq`` when given), or None.  A tombstone has value None."""
        from shaledb.kernels.block import decode_block_range

        key = bytes(key)
        if not key or not self.may_contain(key):
            return None
        if max_seq is None or self.global_seq:
            if max_seq is not None and self.global_seq > max_seq:
                return None
            return self.find(key, np.frombuffer(key, dtype=np.uint8))
        i = bisect.bisect_left(self._keys, key)
        if i >= len(self._keys):
            return None
        hi = key + b"\x00"
        while i < len(self._keys):
            buf, offs = decode_block_range(self._block(i), key, hi, what=f"{self.key}: block {i}")
            for r in offs:
                r = int(r)
                trailer = int.from_bytes(buf[r + 8 : r + 16].tobytes(), "little")
                if trailer >> 8 <= max_seq:
                    kind = trailer & 0xFF
                    if kind == 0:
                        return kind, trailer >> 8, None
                    klen = int.from_bytes(buf[r : r + 4].tobytes(), "little")
                    vlen = int.from_bytes(buf[r + 4 : r + 8].tobytes(), "little")
                    return kind, trailer >> 8, buf[r + 16 + klen : r + 16 + klen + vlen].tobytes()
            if self._keys[i] != key:  # the key does not continue into the next block
                return None
            i += 1
        return None

    def iter_range(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Record runs ``(buf, offs)`` with ``start <= key < end`` in key order
        (one run per ranged GET or cached block, empty runs skipped).  Blocks are not added to the
        block cache (scans would flush it), but cached blocks are used."""
        from shaledb.kernels.block import decode_blocks_range

        if start is not None:
            start = bytes(start)
        if end is not None:
            end = bytes(end)
            if end <= self.footer.first_key or (start is not None and end <= start):
                return
        if start is not None and start > self.footer.last_key:
            return
        first = 0 if start is None else bisect.bisect_left(self._keys, start)
        last = len(self._keys)
        if end is not None:
            # block i can hold keys < end only if index key i-1 < end
            last = min(last, bisect.bisect_left(self._keys, end) + 1)
        for i, raw, starts in self._block_groups(first, last):
            lo = start if i == first else None
            # a mapped SST's blocks are verified once, whether a get or a scan touches them first
            ver = self._verified[i : i + len(starts) - 1] if self._mapped else None
            buf, offs = decode_blocks_range(raw, starts, lo, end, what=f"{self.key}: block", first_block=i,
                                            verified=ver)
            if len(offs):
                if self.global_seq:
                    _override_seq(buf, offs, self.global_seq)
                yield buf, offs

    @property
    def _keys(self) -> list[bytes]:
        """The index keys as a list of bytes (for bisect), built on first use:
        a get through the point kernels never needs it."""
        keys = self._key_list
        if keys is None:
            keys = self._key_list = index_key_list(self._ikeys, self._ioffs)
        return keys

    @property
    def bloom(self):
        """The SST's bloom filter (a uint8 array), or None when it has none."""
        return self._bloom

    def block_bounds(self) -> tuple[list[bytes], np.ndarray]:
        """(index keys, block offsets with ``num_blocks + 1`` entries): index
        key ``i`` is >= every key of block ``i`` and < every key of block
        ``i + 1`` (where a key range can be cut, and at what byte)."""
        return list(self._keys), self._offsets.copy()
