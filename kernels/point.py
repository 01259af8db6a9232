"""Point reads over a whole read plan in one kernel call (``plan_get``) or
over a batch of keys (``plan_get_many``).

A plan is a list of *tables* (SSTs whose index and bloom are in memory) and
of *sources* that group them: ``srcs[s]:srcs[s+1]`` are the tables of source
``s`` in key order (an L0 SST is a source of one table, a sorted run a
source of many).  Sources are listed in read precedence (L0 newest first,
then sorted runs); the highest seq wins whatever the source, and an equal
seq goes to the earlier source.

Each table is one row of ``meta`` (int64, ``META_COLS`` columns, names
``M_*``): the *addresses* and lengths of its arrays, so that one call takes
five arguments however many tables there are (numba's per-argument dispatch
cost is what a point read pays most):

    M_DATA, M_DLEN    data region (uint8); address 0 = not in memory
    M_VER             verified flags (uint8, one per block, 0 = unchecked)
    M_BOFFS, M_NB     block offsets (int64, nb + 1) into the data region
    M_IKEYS, M_IKLEN  index keys, back to back (uint8)
    M_IPRE, M_LCP     per index key, the 8 bytes after the table's common
                      prefix (``M_LCP`` bytes: the first and last key's) as a
                      big-endian uint64, zero padded (``index_prefixes``):
                      the index search compares these, full keys on a tie
    M_IOFFS           index key bounds (int64, nb + 1) into M_IKEYS
    M_BLOOM, M_BLEN   bloom filter (uint8); length 0 = none
    M_FK, M_FKLEN     first key;  M_LK, M_LKLEN   last key
    M_GSEQ            nonzero: every record reads with this seq
    M_MAXSEQ          the table's largest (effective) seq

A block is verified (checksum and restart array, ``check_block``) the first
time a read touches it and its flag set, so corruption found through a
mapping is reported (error code, table, block) and a verified block is never
hashed again.  A table not in memory (address 0) stops the walk: the caller
reads that block itself and calls again from the next source.

REQUIRES: every address in ``meta`` stays valid for the call (the caller
keeps the arrays alive: see shaledb.read.reader); the index, offsets and
bloom were validated when the SST was opened.  Thread-safe as far as the
verified flags go (two threads may verify one block twice, harmlessly).
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba.core import config

from shaledb.kernels._jit import inline_kernel, kernel
from shaledb.format.record import KIND_MASK, MAX_KEY_BYTES, MAX_KIND
from shaledb.kernels.block import BLOCK_TAIL, E_ENTRY, E_KEYLEN, E_KIND, E_RESTARTS, _common_prefix, check_block
from shaledb.kernels.bloom import bloom_prefetch, bloom_probe_hash
from shaledb.kernels.hashing import xxh64_range
from shaledb.kernels.mem import load_u32, load_u64, memcpy, prefetch, unowned

__all__ = [
    "DIRECT_VALUE_BYTES",
    "E_SCRATCH",
    "SORTED_COPY_MIN",
    "G_COLS",
    "G_KIND",
    "G_NEED",
    "G_NEXT",
    "G_SEQ",
    "G_TABLE",
    "G_VLEN",
    "G_VPOS",
    "META_COLS",
    "M_BLEN",
    "M_BLOOM",
    "M_BOFFS",
    "M_DATA",
    "M_DLEN",
    "M_FK",
    "M_FKLEN",
    "M_GSEQ",
    "M_IKEYS",
    "M_IKLEN",
    "M_IOFFS",
    "M_IPRE",
    "M_LCP",
    "M_LK",
    "M_LKLEN",
    "M_MAXSEQ",
    "M_NB",
    "M_VER",
    "block_seek",
    "gather_values",
    "gather_walked",
    "index_prefixes",
    "keys_in_order",
    "plan_get",
    "plan_get_many",
    "row_value",
    "sort_keys",
]

(M_DATA, M_DLEN, M_VER, M_BOFFS, M_NB, M_IKEYS, M_IOFFS, M_BLOOM, M_BLEN,
 M_FK, M_FKLEN, M_LK, M_LKLEN, M_GSEQ, M_MAXSEQ, M_IKLEN, M_IPRE, M_LCP) = range(18)
META_COLS = 18

_OK = 0

if config.DISABLE_JIT:  # plain Python: views through ctypes
    def _view_u8(addr, n):
        if n == 0:
            return np.empty(0, dtype=np.uint8)
        return np.ctypeslib.as_array((ctypes.c_uint8 * int(n)).from_address(int(addr)))

    def _view_i64(addr, n):
        if n == 0:
            return np.empty(0, dtype=np.int64)
        return np.ctypeslib.as_array((ctypes.c_int64 * int(n)).from_address(int(addr)))

    def _view_u64(addr, n):
        if n == 0:
            return np.empty(0, dtype=np.uint64)
        return np.ctypeslib.as_array((ctypes.c_uint64 * int(n)).from_address(int(addr)))

else:
    from llvmlite import ir
    from numba import carray, types
    from numba.extending import intrinsic

    @intrinsic
    def _u8_ptr(typingctx, addr):
        """int64 address -> uint8 pointer."""
        if not isinstance(addr, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

        return types.CPointer(types.uint8)(types.int64), codegen

    @intrinsic
    def _i64_ptr(typingctx, addr):
        """int64 address -> int64 pointer."""
        if not isinstance(addr, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], ir.IntType(64).as_pointer())

        return types.CPointer(types.int64)(types.int64), codegen

    @intrinsic
    def _u64_ptr(typingctx, addr):
        """int64 address -> uint64 pointer."""
        if not isinstance(addr, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], ir.IntType(64).as_pointer())

        return types.CPointer(types.uint64)(types.int64), codegen

    @inline_kernel
    def _view_u64(addr, n):
        return carray(_u64_ptr(addr), (n,))

    @inline_kernel
    def _view_u8(addr, n):
        return carray(_u8_ptr(addr), (n,))

    @inline_kernel
    def _view_i64(addr, n):
        return carray(_i64_ptr(addr), (n,))


@inline_kernel
def _cmp(a, key):
    """-1, 0, 1: bytes ``a`` against ``key``."""
    n = min(a.shape[0], key.shape[0])
    for j in range(n):
        x = a[j]
        y = key[j]
        if x != y:
            return -1 if x < y else 1
    if a.shape[0] == key.shape[0]:
        return 0
    return -1 if a.shape[0] < key.shape[0] else 1


@inline_kernel
def _table_of(meta, a, b, key):
    """The last table in [a, b) whose first key <= key, or -1."""
    lo = a
    hi = b
    while lo < hi:
        mid = (lo + hi) // 2
        if _cmp(_view_u8(meta[mid, M_FK], meta[mid, M_FKLEN]), key) <= 0:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1 if lo > a else -1


@inline_kernel
def _prefix(a, lcp):
    """Big-endian u64 of ``a[lcp:lcp+8]``, zero padded."""
    x = np.uint64(0)
    for j in range(8):
        x <<= np.uint64(8)
        if lcp + j < a.shape[0]:
            x |= np.uint64(a[lcp + j])
    return x


@kernel
def index_prefixes(ikeys, ioffs, lcp, out):
    """``out[i]`` = the prefix (see M_IPRE) of index key i."""
    for i in range(out.shape[0]):
        out[i] = _prefix(ikeys[ioffs[i] : ioffs[i + 1]], lcp)


@inline_kernel
def _first_ge(ikeys, ioffs, ipre, lcp, nb, key):
    """The first block whose index key is >= key (nb if none).
    REQUIRES: key starts with the table's common prefix (lcp bytes)."""
    kp = _prefix(key, lcp)
    lo = 0
    hi = nb
    while lo < hi:
        mid = (lo + hi) // 2
        p = ipre[mid]
        if p < kp:
            c = -1
        elif p > kp:
            c = 1
        else:
            c = _cmp(ikeys[ioffs[mid] : ioffs[mid + 1]], key)
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


@inline_kernel
def _varint(block, p, end):
    """``(value, next position)`` of the varint at ``p`` (next < 0: truncated
    or over 32 bits).  One byte, the common case, takes one branch.  The
    block search's own copy of kernels.block._get_varint, inlined: the
    shared one, called, cost the 20k-key get_many about 10 %."""
    if p < end:
        b = np.int64(block[p])
        if b < 128:
            return b, p + 1
    v = np.int64(0)
    shift = 0
    for _ in range(5):
        if p >= end:
            return np.int64(0), np.int64(-1)
        b = np.int64(block[p])
        p += 1
        v |= (b & 0x7F) << shift
        if b < 128:
            if v >= np.int64(1) << 32:
                return np.int64(0), np.int64(-1)
            return v, p
        shift += 7
    return np.int64(0), np.int64(-1)


@inline_kernel
def block_seek(block, key):
    """The first entry of a verified block whose key is >= key: ``(error,
    found, trailer, value_pos, value_len)`` (as kernels.read.block_find),
    without rebuilding keys: ``m``, the common prefix of the previous
    entry's key and ``key``, decides most entries from their ``shared``
    count alone (shared > m: still smaller), and only the bytes after it
    are compared, in place.

    The restart search and the entry headers are parsed here, not through
    kernels.block's helpers: one loop with scalar state compiles to a
    third of the instructions (a seek in a cached block: 70-110 ns instead
    of 150-280 ns; figures in docs/architecture.md, "Reads").  Every length is checked
    as kernels.block checks it; a bad entry is an error code."""
    n = block.shape[0]
    nr = np.int64(load_u32(block, n - BLOCK_TAIL))
    data_end = n - BLOCK_TAIL - 4 * nr
    kl = key.shape[0]
    lo = 0  # the last restart whose key < key, or 0
    hi = nr - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        p = np.int64(load_u32(block, data_end + 4 * mid))
        sh, p = _varint(block, p, data_end)
        if p >= 0:
            un, p = _varint(block, p, data_end)
        if p >= 0:
            _vl, p = _varint(block, p, data_end)
        kp = p + 8
        if p < 0 or kp > data_end or un > data_end - kp or _vl > data_end - kp - un:
            return E_ENTRY, False, np.uint64(0), 0, 0
        if (load_u64(block, p) & np.uint64(KIND_MASK)) > np.uint64(MAX_KIND):
            return E_KIND, False, np.uint64(0), 0, 0
        if sh != 0 or un < 1 or un > MAX_KEY_BYTES:
            return E_KEYLEN, False, np.uint64(0), 0, 0
        lim = min(un, kl)
        j = 0
        while j < lim and block[kp + j] == key[j]:
            j += 1
        less = block[kp + j] < key[j] if j < lim else un < kl
        if less:
            lo = mid
        else:
            hi = mid - 1
    p = np.int64(load_u32(block, data_end + 4 * lo))
    next_ri = lo
    next_restart = p
    klen = 0
    m = 0  # common prefix of the previous key (< key) and key
    while p < data_end:
        is_restart = False
        if p == next_restart:
            is_restart = True
            next_ri += 1
            next_restart = np.int64(load_u32(block, data_end + 4 * next_ri)) if next_ri < nr else data_end
        elif p > next_restart:
            return E_RESTARTS, False, np.uint64(0), 0, 0
        shared, p = _varint(block, p, data_end)
        if p >= 0:
            unshared, p = _varint(block, p, data_end)
        if p >= 0:
            vlen, p = _varint(block, p, data_end)
        if p < 0 or p + 8 > data_end:
            return E_ENTRY, False, np.uint64(0), 0, 0
        t = load_u64(block, p)
        kp = p + 8
        if unshared > data_end - kp or vlen > data_end - kp - unshared:
            return E_ENTRY, False, np.uint64(0), 0, 0
        if (t & np.uint64(KIND_MASK)) > np.uint64(MAX_KIND):
            return E_KIND, False, np.uint64(0), 0, 0
        if (is_restart and shared != 0) or shared > klen:
            return E_KEYLEN, False, np.uint64(0), 0, 0
        newk = shared + unshared
        if newk < 1 or newk > MAX_KEY_BYTES:
            return E_KEYLEN, False, np.uint64(0), 0, 0
        vp = kp + unshared
        p = vp + vlen
        if p > next_restart:
            return E_ENTRY, False, np.uint64(0), 0, 0
        klen = newk
        if shared > m:  # equal to the previous key past m: smaller than key too
            continue
        m = shared
        lim = min(unshared, kl - m)
        j = 0
        while j < lim and block[kp + j] == key[m + j]:
            j += 1
        m += j
        if j < lim:
            if block[kp + j] > key[m]:
                return _OK, False, t, vp, vlen
            continue
        if newk == kl:
            return _OK, True, t, vp, vlen
        if newk > kl:  # key is a proper prefix of this entry's key
            return _OK, False, t, vp, vlen
    if p != data_end:
        return E_ENTRY, False, np.uint64(0), 0, 0
    return _OK, False, np.uint64(0), 0, 0


@kernel
def plan_get(key, s0, best_seq, meta, srcs):
    """Walk sources ``s0..`` for ``key``, skipping tables whose max seq is
    <= ``best_seq``.  Returns ``(error, table, trailer, value_pos,
    value_len, need_table, need_block, next_source)``: ``table`` >= 0 is the
    newest version found with seq > best_seq (the trailer carries its
    effective seq; the value is ``data[value_pos:value_pos+value_len]`` of
    that table); ``need_table`` >= 0 asks the caller to read block
    ``need_block`` of that table (not in memory) and call again from
    ``next_source``.  On an error, ``need_table``/``need_block`` name the
    bad block."""
    loc = np.empty(2 * (srcs.shape[0] - 1), dtype=np.int64)
    _locate_ahead(key, meta, srcs, loc)
    return _get_located(key, s0, best_seq, meta, srcs, loc)


@inline_kernel
def _seek_table(key, meta, t, bi):
    """``key`` in block ``bi`` of table ``t`` (in memory), verifying the
    block on first touch: ``(error, found, seq, trailer, value_pos,
    value_len)`` with the table's effective seq in ``seq`` and ``trailer``,
    ``value_pos`` from the start of the table's data."""
    nb = meta[t, M_NB]
    boffs = _view_i64(meta[t, M_BOFFS], nb + 1)
    b0 = boffs[bi]
    block = _view_u8(meta[t, M_DATA] + b0, boffs[bi + 1] - b0)
    ver = _view_u8(meta[t, M_VER], nb)
    if ver[bi] == 0:
        err, _de, _nr = check_block(block)
        if err != _OK:
            return err, False, np.int64(0), np.uint64(0), 0, 0
        ver[bi] = 1
    err, found, tr, vp, vlen = block_seek(block, key)
    if err != _OK or not found:
        return err, False, np.int64(0), np.uint64(0), 0, 0
    g = meta[t, M_GSEQ]
    seq = g if g != 0 else np.int64(tr >> np.uint64(8))
    return _OK, True, seq, (np.uint64(seq) << np.uint64(8)) | (tr & np.uint64(0xFF)), b0 + vp, vlen


@kernel
def _batch_prefix(kdata, koffs):
    """The length of the prefix every key shares with key 0 (the digits the
    sort can skip: random keys of one key space often share several bytes)."""
    a = koffs[0]
    lcp = koffs[1] - a
    for i in range(1, koffs.shape[0] - 1):
        lcp = _common_prefix(kdata, a, lcp, kdata, koffs[i], koffs[i + 1] - koffs[i])
        if lcp == 0:
            break
    return lcp


def sort_keys(kdata, koffs):
    """The order of keys ``kdata[koffs[i]:koffs[i+1]]`` sorted bytewise (an
    int64 permutation; equal keys keep their input order).

    Each key's first 8 bytes after the prefix every key shares become a
    big-endian uint64 word; the words, their low bits replaced by the key's
    index, are sorted by numpy (a vectorised sort: about 14 ns a key at 1M
    keys, against 100 for a stable argsort), which orders the keys by the
    word's high bits.  Runs that tie on those bits are then ordered by
    ``_refine_ties``: most-significant digit first, 8 bytes a digit, each
    group of equal digits refined by the next 8 bytes; a group whose keys
    all end within the digit is ordered by length (equal padded digits: the
    shorter key is smaller, equal lengths: the same key)."""
    n = koffs.shape[0] - 1
    if n < 2:
        return np.arange(n, dtype=np.int64)
    lcp = _batch_prefix(kdata, koffs)
    words = np.empty(n, dtype=np.uint64)
    index_prefixes(kdata, koffs, lcp, words)  # (any packed keys: the same digit)
    b = np.uint64((n - 1).bit_length())
    packed = (words >> b) << b
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & ((np.uint64(1) << b) - np.uint64(1))).astype(np.int64)
    _refine_ties(kdata, koffs, order, packed >> b, lcp, words)
    return order


@kernel
def _refine_ties(kdata, koffs, order, top, d0, words):
    """Sort, by their whole keys from byte ``d0`` on, each run of
    ``order`` whose ``top`` values are equal (see sort_keys); ``words[i]``
    is key i's digit at ``d0`` (read once, not from the key again)."""
    n = order.shape[0]
    pre = np.empty(n, dtype=np.uint64)
    words_b = _view_u8(words.ctypes.data, words.size * 8)
    for x in range(n):  # the digits in sorted order (read at random: prefetched)
        if x + 16 < n:
            prefetch(words_b, 8 * order[x + 16])
        pre[x] = words[order[x]]
    stack = [(0, 0, 0)]
    stack.pop()
    a = 0
    while a < n:
        b = a + 1
        while b < n and top[b] == top[a]:
            b += 1
        if b - a > 1:
            _settle(koffs, order, pre, a, b, d0, stack)
        a = b
    while len(stack):
        lo, hi, d = stack.pop()
        for x in range(lo, hi):
            i = order[x]
            pre[x] = _prefix(kdata[koffs[i] : koffs[i + 1]], d)
        _settle(koffs, order, pre, lo, hi, d, stack)


@kernel
def _settle(koffs, order, pre, lo, hi, d, stack):
    """Order ``order[lo:hi]`` by their digits ``pre[lo:hi]`` (at byte
    ``d``); each run of equal digits is then ordered by key length when
    every key of it ends within the digit, else pushed on ``stack`` to be
    ordered by the next digit."""
    if hi - lo <= _SMALL_GROUP:
        _insertion_sort(pre, order, lo, hi)
    else:
        _sort_by(pre, order, lo, hi)
    a = lo
    while a < hi:
        b = a + 1
        while b < hi and pre[b] == pre[a]:
            b += 1
        if b - a > 1:
            longest = 0
            for x in range(a, b):
                longest = max(longest, koffs[order[x] + 1] - koffs[order[x]])
            if longest <= d + 8:  # every key ends in this digit: by length
                for x in range(a, b):
                    pre[x] = koffs[order[x] + 1] - koffs[order[x]]
                if b - a <= _SMALL_GROUP:
                    _insertion_sort(pre, order, a, b)
                else:
                    _sort_by(pre, order, a, b)
            else:
                stack.append((a, b, d + 8))
        a = b


#: ``_refine_ties`` orders groups up to this size by insertion (no allocation)
_SMALL_GROUP = 16


@kernel
def _insertion_sort(vals, order, lo, hi):
    """Stable sort of ``vals[lo:hi]``, ``order[lo:hi]`` moved alike."""
    for x in range(lo + 1, hi):
        v = vals[x]
        o = order[x]
        y = x
        while y > lo and vals[y - 1] > v:
            vals[y] = vals[y - 1]
            order[y] = order[y - 1]
            y -= 1
        vals[y] = v
        order[y] = o


@kernel
def _sort_by(vals, order, lo, hi):
    """``_insertion_sort`` for a large range (a stable merge sort)."""
    idx = np.argsort(vals[lo:hi], kind="mergesort")
    order[lo:hi] = order[lo:hi][idx]
    vals[lo:hi] = vals[lo:hi][idx]


#: ``keys_in_order`` pays off from this many keys on: below it, the keys,
#: offsets and output rows of a batch stay in cache in any order (1M
#: records, one sorted run: 1M random keys 0.54 -> 0.18 us a key in
#: plan_get_many, 20k keys no faster)
SORTED_COPY_MIN = 65536


def keys_in_order(kdata, koffs, order):
    """The keys ``kdata[koffs[i]:koffs[i+1]]`` copied in ``order``: ``(data,
    offsets)``, key x of the copy being key ``order[x]``.  A batch walked in
    sorted order then reads its keys, offsets and output rows straight
    through instead of at random."""
    lens = np.diff(koffs)[order]
    offs = np.zeros(order.shape[0] + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    data = np.empty(int(offs[-1]), dtype=np.uint8)
    _copy_keys(kdata, koffs, order, data, offs)
    return data, offs


@kernel
def _copy_keys(kdata, koffs, order, data, offs):
    n = order.shape[0]
    for x in range(n):
        if x + 16 < n:
            prefetch(kdata, koffs[order[x + 16]])
        i = order[x]
        memcpy(data, offs[x], kdata, koffs[i], offs[x + 1] - offs[x])


#: ``plan_get_many`` locates the key this many places ahead and prefetches
#: what its search will read, so that those cache misses overlap the
#: current key's search
PREFETCH_AHEAD = 8
#: ``_locate_ahead``: the source's table does not hold the key
_L_NONE = -1
#: ``_locate_ahead``: probe the table's bloom, then search its index
_L_BLOOM = -2


@inline_kernel
def _prefetch_lines(block, a, b):
    for q in range(max(a, 0), min(b, block.shape[0]), 64):
        prefetch(block, q)


@inline_kernel
def _block_of(meta, t, key):
    """The block of table ``t`` whose index key is the first >= ``key``
    (the table's block count if none)."""
    nb = meta[t, M_NB]
    return _first_ge(_view_u8(meta[t, M_IKEYS], meta[t, M_IKLEN]), _view_i64(meta[t, M_IOFFS], nb + 1),
                     _view_u64(meta[t, M_IPRE], nb), meta[t, M_LCP], nb, key)


@inline_kernel
def _locate_ahead(key, meta, srcs, loc):
    """Where ``plan_get`` will look for ``key``, one row of ``loc`` per
    source: ``(table, block)``; block ``_L_NONE`` when the source's tables
    do not cover the key, ``_L_BLOOM`` when the table has a bloom to probe
    first (not the last source: a get there is the search the
    probe would save, about as cheap, and it finds most keys).  Prefetches the cache lines
    the search will read: the bloom's probe lines, or the data block's
    restart array, its first 512 bytes and the 512 bytes around its middle
    (where the restart search probes first and the entry walk starts).
    Measured on a 1M-record database (20k random keys): the block search
    went from about 580 to 390 ns a key."""
    ns = srcs.shape[0] - 1
    for s in range(ns):
        t = _table_of(meta, srcs[s], srcs[s + 1], key)
        loc[2 * s] = t
        loc[2 * s + 1] = _L_NONE
        if t < 0 or _cmp(_view_u8(meta[t, M_LK], meta[t, M_LKLEN]), key) < 0:
            continue
        if meta[t, M_BLEN] > 0 and s != ns - 1:
            bloom_prefetch(_view_u8(meta[t, M_BLOOM], meta[t, M_BLEN]), xxh64_range(key, 0, key.shape[0], np.uint64(0)))
            loc[2 * s + 1] = _L_BLOOM
            continue
        nb = meta[t, M_NB]
        bi = _block_of(meta, t, key)
        if bi >= nb:
            continue
        loc[2 * s + 1] = bi
        if meta[t, M_DATA] != 0:
            boffs = _view_i64(meta[t, M_BOFFS], nb + 1)
            block = _view_u8(meta[t, M_DATA] + boffs[bi], boffs[bi + 1] - boffs[bi])
            ln = block.shape[0]
            _prefetch_lines(block, ln - 128, ln)
            _prefetch_lines(block, 0, 512)
            _prefetch_lines(block, ln // 2 - 256, ln // 2 + 256)


@inline_kernel
def _get_located(key, s0, best_seq, meta, srcs, loc):
    """``plan_get`` from the tables and blocks ``_locate_ahead`` found
    (``loc``); sources before ``s0`` are skipped."""
    hashed = False
    h = np.uint64(0)
    bt = -1
    btr = np.uint64(0)
    bvp = np.int64(0)
    bvl = np.int64(0)
    ns = srcs.shape[0] - 1
    for s in range(s0, ns):
        t = loc[2 * s]
        bi = loc[2 * s + 1]
        if bi == _L_NONE or meta[t, M_MAXSEQ] <= best_seq:
            continue
        if bi == _L_BLOOM:
            if not hashed:
                h = xxh64_range(key, 0, key.shape[0], np.uint64(0))
                hashed = True
            if not bloom_probe_hash(_view_u8(meta[t, M_BLOOM], meta[t, M_BLEN]), h):
                continue
            bi = _block_of(meta, t, key)
            if bi >= meta[t, M_NB]:
                continue
        if meta[t, M_DATA] == 0:
            return _OK, bt, btr, bvp, bvl, t, bi, s + 1
        err, found, seq, tr, vp, vlen = _seek_table(key, meta, t, bi)
        if err != _OK:
            return err, -1, np.uint64(0), 0, 0, t, bi, s
        if found and seq > best_seq:
            best_seq = seq
            bt = t
            btr = tr
            bvp = vp
            bvl = vlen
    return _OK, bt, btr, bvp, bvl, -1, -1, ns


#: columns of ``plan_get_many``'s output rows
G_TABLE, G_SEQ, G_KIND, G_VPOS, G_VLEN, G_NEED, G_NEXT = range(7)
G_COLS = 7
#: ``plan_get_many`` (given this) leaves a value of at least this many
#: bytes where it is (in its table's data, mapped or in memory) instead of
#: copying it to ``scratch``: ``G_VPOS`` is then minus its address (see
#: ``row_value``), and the value is copied once, into the caller's result.
#: Measured on one sorted run, the same keys through both paths in one
#: process: 1000 x 1 MiB, numpy form 967 -> 234 ms, list 586 -> 385 ms;
#: 4000 x 64 KiB 118 -> 63 / 161 -> 117 ms; 20k x 4 KiB 56-60 -> 41-44 /
#: 91-97 -> 77-84 ms; 20k x 1 KiB 26-28 -> 17 ms (numpy; the list within
#: noise); 100 B values the same either way (copied: a short value is
#: read while its block is in cache).
DIRECT_VALUE_BYTES = 1024
#: ``plan_get_many``: ``scratch`` is full; grow it and call again from the returned position
E_SCRATCH = 1


@kernel
def plan_get_many(kaddr, koaddr, order, x0, best_seq, meta, srcs, out, scratch, used, direct_min):
    """``plan_get`` for keys ``kdata[koffs[i]:koffs[i+1]]``, with ``kdata``
    (uint8) at address ``kaddr`` and ``koffs`` (int64, one more than
    ``order``) at ``koaddr`` (addresses: one compiled variant whatever
    arrays the caller holds; REQUIRES: they stay alive for the call),
    visited in ``order[x0:]`` (sorted keys walk each table's index and blocks in order,
    so memory stays warm), each from source 0 with its own ``best_seq[i]``
    (-1: nothing newer known).  Row i of ``out`` (int64, ``G_COLS``
    columns: one cache line per key) gets plan_get's best (``G_TABLE`` -1
    if none, ``G_SEQ``, ``G_KIND``, ``G_VLEN``) and ``G_NEED`` = need_table
    * 2**32 + need_block (-1: none) with ``G_NEXT`` the source to resume
    from.  The value found is copied while its block is hot, to
    ``scratch[used:]`` (``G_VPOS``: its position there), unless it has
    ``direct_min`` bytes or more (the caller passes ``DIRECT_VALUE_BYTES``):
    then ``G_VPOS`` is minus its address in the table's data, which the
    caller keeps alive (``row_value``).  Returns ``(error,
    position, table, block, used)``: error 0 when done; ``E_SCRATCH`` when
    ``scratch`` is full (grow it, call again from ``position``); otherwise
    a kernel error in that table and block, for key ``order[position]``."""
    meta = unowned(meta)  # no atomic reference counts in the helpers (kernels.mem.unowned)
    srcs = unowned(srcs)
    n = order.shape[0]
    koffs = _view_i64(koaddr, n + 1)
    ring = PREFETCH_AHEAD + 1
    ns = srcs.shape[0] - 1
    locs = np.empty(ring * ns * 2, dtype=np.int64)  # _locate_ahead's rows, key x in x % ring
    # keys and ring rows are viewed through their addresses: a view without
    # an owner costs no reference counting (atomic increments were a
    # quarter of this kernel's time)
    kbase = kaddr
    lbase = locs.ctypes.data
    for x in range(x0, min(n, x0 + PREFETCH_AHEAD)):
        a = order[x]
        _locate_ahead(_view_u8(kbase + koffs[a], koffs[a + 1] - koffs[a]), meta, srcs,
                      _view_i64(lbase + 16 * ns * (x % ring), 2 * ns))
    for x in range(x0, n):
        if x + PREFETCH_AHEAD < n:
            a = order[x + PREFETCH_AHEAD]
            _locate_ahead(_view_u8(kbase + koffs[a], koffs[a + 1] - koffs[a]), meta, srcs,
                          _view_i64(lbase + 16 * ns * ((x + PREFETCH_AHEAD) % ring), 2 * ns))
        i = order[x]
        key = _view_u8(kbase + koffs[i], koffs[i + 1] - koffs[i])
        err, t, tr, vp, vlen, nt, nb, sn = _get_located(key, 0, best_seq[i], meta, srcs,
                                                        _view_i64(lbase + 16 * ns * (x % ring), 2 * ns))
        if err != _OK:
            return err, x, nt, nb, used
        kind = np.int64(tr & np.uint64(0xFF))
        if t >= 0 and kind != 0:
            if vlen >= direct_min:
                out[i, G_VPOS] = -(meta[t, M_DATA] + vp)  # left in place (row_value)
            else:
                if used + vlen > scratch.shape[0]:
                    return E_SCRATCH, x, -1, -1, used
                memcpy(scratch, used, _view_u8(meta[t, M_DATA] + vp, vlen), 0, vlen)
                out[i, G_VPOS] = used
                used += vlen
        out[i, G_TABLE] = t
        out[i, G_SEQ] = np.int64(tr >> np.uint64(8))
        out[i, G_KIND] = kind
        out[i, G_VLEN] = vlen
        out[i, G_NEED] = -1 if nt < 0 else (nt << 32) | nb
        out[i, G_NEXT] = sn
    return _OK, order.shape[0], -1, -1, used


def gather_walked(wout, order, scratch):
    """``gather_values`` for rows in walking order (``wout[x]`` is key
    ``order[x]``'s row, as ``plan_get_many`` leaves them over
    ``keys_in_order``): ``(vdata, voffs, found)`` in key order, without
    putting the rows back in key order first."""
    n = order.shape[0]
    voffs = np.empty(n + 1, dtype=np.int64)
    found = np.empty(n, dtype=np.bool_)
    total = _walked_offsets(wout, order, voffs, found)
    vdata = np.empty(total, dtype=np.uint8)
    _walked_values(wout, order, scratch, vdata, voffs)
    return vdata, voffs, found


@kernel
def _walked_offsets(wout, order, voffs, found):
    n = order.shape[0]
    voffs_b = _view_u8(voffs.ctypes.data, voffs.size * 8)
    voffs[0] = 0
    for x in range(n):
        if x + 16 < n:
            prefetch(voffs_b, 8 * order[x + 16])
        i = order[x]
        hit = wout[x, G_TABLE] >= 0 and wout[x, G_KIND] != 0
        found[i] = hit
        voffs[i + 1] = wout[x, G_VLEN] if hit else 0
    d = np.int64(0)
    for i in range(n):
        d += voffs[i + 1]
        voffs[i + 1] = d
    return d


@kernel
def _walked_values(wout, order, scratch, vdata, voffs):
    n = order.shape[0]
    voffs_b = _view_u8(voffs.ctypes.data, voffs.size * 8)
    for x in range(n):
        if x + 16 < n:
            prefetch(voffs_b, 8 * order[x + 16])
        if x + 8 < n:
            j = voffs[order[x + 8]]
            if j < vdata.shape[0]:
                prefetch(vdata, j)
        if wout[x, G_TABLE] >= 0 and wout[x, G_KIND] != 0:
            _copy_value(vdata, voffs[order[x]], scratch, wout[x, G_VPOS], wout[x, G_VLEN])


@kernel
def gather_values(out, order, scratch, vdata, voffs, found):
    """The values ``plan_get_many`` left in ``scratch``, in row order: key
    i's value is ``vdata[voffs[i]:voffs[i+1]]`` when ``found[i]`` (a table
    had it, as a put).  Returns the bytes used.  REQUIRES: vdata holds the
    sum of those lengths."""
    n = out.shape[0]
    d = np.int64(0)
    voffs[0] = 0
    for i in range(n):
        hit = out[i, G_TABLE] >= 0 and out[i, G_KIND] != 0
        found[i] = hit
        if hit:
            d += out[i, G_VLEN]
        voffs[i + 1] = d
    m = order.shape[0]
    # byte views of the row arrays, to prefetch their lines (rows are visited at random)
    out_b = _view_u8(out.ctypes.data, out.size * 8)
    voffs_b = _view_u8(voffs.ctypes.data, voffs.size * 8)
    found_b = _view_u8(found.ctypes.data, found.size)
    for x in range(m):  # scratch is in visiting order: read it straight through
        if x + 16 < m:
            j = order[x + 16]
            prefetch(found_b, j)
            prefetch(out_b, j * (8 * G_COLS))
            prefetch(voffs_b, j * 8)
        if x + 8 < m:
            j = order[x + 8]
            if voffs[j] < vdata.shape[0]:
                prefetch(vdata, voffs[j])
        i = order[x]
        if found[i]:
            _copy_value(vdata, voffs[i], scratch, out[i, G_VPOS], out[i, G_VLEN])
    return d


@inline_kernel
def _copy_value(vdata, at, scratch, vpos, vlen):
    """A found value into ``vdata[at:]``: from ``scratch[vpos:]``, or, for a
    value left in place (``vpos`` < 0), from its address ``-vpos``."""
    if vpos < 0:
        memcpy(vdata, at, _view_u8(-vpos, vlen), 0, vlen)
    else:
        memcpy(vdata, at, scratch, vpos, vlen)


def row_value(scratch: np.ndarray, vpos: int, vlen: int) -> bytes:
    """The value of a ``plan_get_many`` row as ``bytes`` (one copy): from
    ``scratch``, or from where it lies in its table's data (``vpos`` < 0:
    minus its address; the plan that holds that data must be alive)."""
    if vpos < 0:
        return ctypes.string_at(-vpos, vlen)
    return scratch[vpos : vpos + vlen].tobytes()



def _warmup() -> None:
    """Load (or compile) every kernel of this module with the argument types
    the read path passes: keys from ``bytes`` (read-only) or user arrays
    (writable), mapped (read-only) SST bytes, writable outputs."""
    from shaledb.format.record import encode_record
    from shaledb.kernels.block import encode_blocks

    raw = b"".join(encode_record(k, b"v", 5, 1) for k in (b"a", b"ab", b"b"))
    buf = np.frombuffer(raw, dtype=np.uint8)
    offs = np.array([0, 24, 48], dtype=np.int64)
    block = np.frombuffer(encode_blocks(buf, offs).block(0).tobytes(), dtype=np.uint8)
    ikeys = np.frombuffer(b"b", dtype=np.uint8)
    ioffs = np.array([0, 1], dtype=np.int64)
    ipre = np.empty(1, dtype=np.uint64)
    index_prefixes(ikeys, ioffs, 0, ipre)
    boffs = np.array([0, block.shape[0]], dtype=np.int64)
    verified = np.zeros(1, dtype=np.uint8)
    fk = np.frombuffer(b"a", dtype=np.uint8)
    meta = np.zeros((1, META_COLS), dtype=np.int64)
    for col, arr in ((M_DATA, block), (M_VER, verified), (M_BOFFS, boffs), (M_IKEYS, ikeys), (M_IOFFS, ioffs),
                     (M_IPRE, ipre), (M_FK, fk), (M_LK, ikeys)):
        meta[0, col] = arr.ctypes.data
    meta[0, M_DLEN] = block.shape[0]
    meta[0, M_NB] = 1
    meta[0, M_IKLEN] = meta[0, M_FKLEN] = meta[0, M_LKLEN] = 1
    meta[0, M_MAXSEQ] = 9
    srcs = np.array([0, 1], dtype=np.int64)
    key = np.frombuffer(b"ab", dtype=np.uint8)
    plan_get(key, 0, -1, meta, srcs)
    plan_get(key, np.int64(0), np.int64(-1), meta, srcs)
    block_seek(block, key)
    kd_ro = np.frombuffer(b"abb", dtype=np.uint8)
    for kd in (kd_ro, kd_ro.copy()):
        for ko in (np.array([0, 2, 3], dtype=np.int64), np.frombuffer(np.array([0, 2, 3], dtype=np.int64).tobytes(), dtype=np.int64)):
            order = sort_keys(kd, ko)
            out = np.empty((2, G_COLS), dtype=np.int64)
            scratch = np.empty(8, dtype=np.uint8)
            for x0 in (0, np.int64(0)):
                plan_get_many(kd.ctypes.data, ko.ctypes.data, order, x0, np.full(2, -1, dtype=np.int64), meta, srcs,
                              out, scratch, 0, DIRECT_VALUE_BYTES)
            keys_in_order(kd, ko, order)  # the large-batch path
            gather_walked(out, order, scratch)
    vdata = np.empty(int(out[:, G_VLEN].sum()), dtype=np.uint8)
    gather_values(out, order, scratch, vdata, np.empty(3, dtype=np.int64), np.empty(2, dtype=np.bool_))
