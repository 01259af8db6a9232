"""Read SST objects (format: shaledb.sst.format, docs/format/sst.md).

``SstReader(store, key, size=...)`` opens an SST with one ranged GET of its
last ``TAIL_BYTES`` (trailer, footer, and usually the index and bloom block
too; whatever is missing costs one more ranged GET), then keeps the index
and bloom filter in memory.

* ``get(key, max_seq=None)``: bloom filter -> binary search of the index ->
  one block (through the optional block cache; on a miss the aligned group
  of ``GET_GROUP_BLOCKS`` blocks around it is fetched in one ranged GET and
  cached) -> seek inside the block.  ``find(key, karr)`` is ``get`` for a
  caller that already checked the key range and the bloom filter.
* ``iter_range(start, end)``: record runs ``(buf, offs)`` in key order, one
  per block, fetching up to ``read_ahead_bytes`` of consecutive blocks per
  ranged GET.

``global_seq`` (bulk-ingested SSTs): when nonzero, every record of the SST
reads as having that seq, in ``get``/``find`` results and in the record runs
``iter_range`` yields (so merges of compactions see it too).

Every checksum is verified before bytes are used; a mismatch, or an object
shorter than its footer says, raises ``shaledb.Corruption`` naming the object
and the block.  So does a missing object once its size is known (given by
the manifest that lists it, or found by ``head``): an SST that is referenced
but gone is damage to the database, not a lookup miss.  Thread safety: after construction a reader is immutable
apart from the (thread-safe) block cache, so threads may share it.
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
    decode_index,
    decode_stored_block,
    decode_trailer,
)

__all__ = ["SstReader"]


def _block_find(block, karr):
    """``kernels.read.block_find``, imported on first use (numba loads lazily)."""
    global _block_find
    from shaledb.kernels.read import block_find

    _block_find = block_find
    return block_find(block, karr)

def _override_seq(buf, offs, seq):
    global _override_seq
    from shaledb.kernels.read import override_seq

    _override_seq = override_seq
    return override_seq(buf, offs, seq)


TAIL_BYTES = 64 * 1024
READ_AHEAD_BYTES = 256 * 1024
#: blocks fetched together when a point read misses the block cache
GET_GROUP_BLOCKS = 16


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
                 read_ahead_bytes: int = READ_AHEAD_BYTES, global_seq: int = 0):
        if isinstance(global_seq, bool) or not isinstance(global_seq, (int, np.integer)) or not 0 <= global_seq < 1 << 56:
            raise InvalidArgument(f"global_seq must be an int in [0, 2**56), got {global_seq!r}")
        #: when nonzero, every record of the SST reads as having this seq
        self.global_seq = int(global_seq)
        self.store = store
        self.key = key
        self.block_cache = block_cache
        self.read_ahead_bytes = max(1, int(read_ahead_bytes))
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
        self._offsets, self._keys = decode_index(
            region(f.index_offset, f.index_offset + f.index_len, "index"), key, f.num_blocks, f.data_end
        )
        if self._keys[-1] != f.last_key:
            raise Corruption(f"{key}: index block: last index key is not the footer's last key")
        self._bloom = None
        if f.bloom_len:
            self._bloom = decode_bloom(region(f.bloom_offset, f.bloom_offset + f.bloom_len, "bloom"), key)
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
        cache = self.block_cache
        ck = (self.key, i)
        if cache is not None:
            hit = cache.get(ck)
            if hit is not None:
                return hit
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        raw = self._raw_block(i, self._fetch(start, end, f"block {i}"))
        if cache is not None and fill_cache:
            cache.put(ck, raw)
        return raw

    def pin(self):
        """The whole data region in memory for ``kernels.read.pinned_get``:
        ``(data, block offsets, index keys, index key offsets, bloom)``,
        fetched with one ranged GET and every block validated once.  None
        for a compressed SST.  Shared through the block cache (key
        ``(object key, "all")``) when there is one."""
        if self.footer.compression != CompressionCodec.NONE or self.footer.num_blocks < 1:
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
        data = np.frombuffer(self._fetch(0, end, f"blocks 0..{len(boffs) - 2}"), dtype=np.uint8)
        err, bad = check_blocks(data, boffs)
        if err:
            from shaledb.kernels.block import raise_corruption

            raise_corruption(int(err), f"{self.key}: block {int(bad)}")
        klens = np.fromiter(map(len, self._keys), dtype=np.int64, count=len(self._keys))
        ioffs = np.zeros(len(self._keys) + 1, dtype=np.int64)
        np.cumsum(klens, out=ioffs[1:])
        ikeys = np.frombuffer(b"".join(self._keys), dtype=np.uint8)
        bloom = self._bloom if self._bloom is not None else np.empty(0, dtype=np.uint8)
        pinned = _Pinned(data, boffs, ikeys, ioffs, np.ascontiguousarray(bloom, dtype=np.uint8))
        if cache is not None:
            cache.put(ck, pinned)
        return pinned

    def _read_around(self, i: int) -> np.ndarray:
        """Block ``i`` for a point read that missed the cache: fetch the
        aligned group of ``GET_GROUP_BLOCKS`` blocks around it with one ranged
        GET (about as cheap as one block), verify and cache every block not
        cached yet, return block ``i``."""
        cache = self.block_cache
        g0 = i - i % GET_GROUP_BLOCKS
        g1 = min(self.footer.num_blocks, g0 + GET_GROUP_BLOCKS)
        offsets = self._offsets
        start = int(offsets[g0])
        data = memoryview(self._fetch(start, int(offsets[g1]), f"blocks {g0}..{g1 - 1}"))
        out = None
        for b in range(g0, g1):
            ck = (self.key, b)
            if b != i and ck in cache:
                continue
            raw = self._raw_block(b, data[int(offsets[b]) - start : int(offsets[b + 1]) - start])
            cache.put(ck, raw)
            if b == i:
                out = raw
        return out

    def _block_groups(self, first: int, last: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(first block, raw bytes, block starts)`` covering blocks first..last-1
        in order: a cached block alone, else runs of consecutive blocks fetched
        with one ranged GET of up to ``read_ahead_bytes``."""
        cache = self.block_cache
        i = first
        while i < last:
            if cache is not None:
                hit = cache.get((self.key, i))
                if hit is not None:
                    yield i, hit, np.array([0, hit.shape[0]], dtype=np.int64)
                    i += 1
                    continue
            j = i + 1
            start = int(self._offsets[i])
            while (
                j < last
                and int(self._offsets[j + 1]) - start <= self.read_ahead_bytes
                and (cache is None or (self.key, j) not in cache)
            ):
                j += 1
            data = self._fetch(start, int(self._offsets[j]), f"blocks {i}..{j - 1}")
            if self.footer.compression == CompressionCodec.NONE:
                yield i, np.frombuffer(data, dtype=np.uint8), self._offsets[i : j + 1] - start
            else:
                mv = memoryview(data)
                raws = [
                    decode_stored_block(
                        mv[int(self._offsets[b]) - start : int(self._offsets[b + 1]) - start],
                        self.footer.compression, f"{self.key}: block {b}",
                    )
                    for b in range(i, j)
                ]
                starts = np.zeros(len(raws) + 1, dtype=np.int64)
                np.cumsum([r.shape[0] for r in raws], out=starts[1:])
                yield i, np.concatenate(raws), starts
            i = j

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
        keys = self._keys
        i = bisect.bisect_left(keys, key)
        if i >= len(keys):
            return None
        cache = self.block_cache
        block = None
        if cache is not None:
            block = cache.get((self.key, i))
            if block is None:
                block = self._read_around(i)
        else:
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
            buf, offs = decode_blocks_range(raw, starts, lo, end, what=f"{self.key}: block", first_block=i)
            if len(offs):
                if self.global_seq:
                    _override_seq(buf, offs, self.global_seq)
                yield buf, offs

    @property
    def bloom(self):
        """The SST's bloom filter (a uint8 array), or None when it has none."""
        return self._bloom

    def block_bounds(self) -> tuple[list[bytes], np.ndarray]:
        """(index keys, block offsets with ``num_blocks + 1`` entries): index
        key ``i`` is >= every key of block ``i`` and < every key of block
        ``i + 1`` (where a key range can be cut, and at what byte)."""
        return list(self._keys), self._offsets.copy()
