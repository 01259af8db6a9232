"""Sorting record runs (the shared record accessors are in kernels/record.py).

A record run is ``(buf: uint8[:], offs: int64[:])``: records in the layout of
``shaledb.format.record`` (docs/format/record.md) inside ``buf``, ``offs`` the byte
offsets of their starts.  Records order by (key ascending bytewise, trailer
descending), so the newest version of a key comes first.

``sort_records`` is an MSD sort over 7-byte key chunks:

* a record's sort word for the chunk at byte ``depth`` holds the 7 key bytes
  ``key[depth:depth+7]`` big-endian (zero padded) in its high 56 bits and
  ``min(len(key) - depth, 8)`` in its low byte (0 past the end of the key).
  Comparing words compares keys correctly up to ``depth + 7``: a key that
  ends inside the chunk sorts before a longer key with the same bytes (it is
  its prefix), and equal words with a low byte < 8 mean equal keys;
* one sequential pass computes, per record, its trailer and the words of the
  first ``nw`` chunks: 3 (21 bytes), up to 5 (35 bytes) when a sample of the
  keys is that long (``_cached_words``), so that ties rarely need another
  read of a record, which costs a cache miss in key order.  The first level
  sorts packed keys ``(first 64 - b varying bits of the cached words) << b |
  input index`` (b = bits of the record count) with numpy's vectorised
  sort, which orders by key prefix and keeps ties in input order.  A
  varying bit is one that differs between some records: bits equal in all
  of them do not decide the order, so leaving them out keeps it while the
  64 bits hold more key (a shared prefix costs nothing, a decimal digit 4
  bits, a length byte all keys share nothing; ``_varying_runs``).  When a
  few values of the first word are most records' (a common head such as
  ``tenant/`` with shorter or other keys beside it, whose first words make
  every bit of the head vary), the first word is packed as a small
  order-keeping code instead and the bits go to the words after it
  (``_common_words``, ``_coded_key``).  The bits are planned from a sample
  of records and packed in the same pass, again if the full pass finds
  bits the sample missed;
* two records that tie are ordered right away from their cached words and
  trailers (``_pair_order``); a longer run of records that tie becomes a
  segment, with its cached words and trailers in dense arrays;
* a long segment (>= _PACK_MIN records, e.g. all keys under one shared
  prefix) skips the cached words all its records share and sorts packed
  keys again: the first bits of its cached words that vary within the
  segment, above the record's position (``_pack_segment``).  Each run that
  still ties splits the same way, its varying bits starting further; only
  its records' trailers and words are carried to their new places.  When fewer
  than two cached words remain, the segment jumps to its longest common
  prefix and caches its words there in one pass (``_fill_at_lcp``): shared
  prefixes cost one read of a record, not one level per 7 bytes;
* a shorter segment is ordered by its next cached word (insertion sort when
  short, a merge sort, or a stable LSD byte radix sort that skips bytes
  equal in every word), then each run of equal words becomes a segment one
  chunk deeper, or, keys being equal, is ordered by trailer descending.
  When a segment uses its last cached word, the next words of its tied
  records are read in one prefetched pass (``_refill_groups``);
* segments of at most ``_SMALL`` records are finished by an insertion sort
  that compares cached words, then key bytes, then trailers.

The wrapper allocates every array (numpy asks for transparent huge pages for
large arrays; arrays allocated inside a kernel fault in 4 KiB pages, which
cost more than the sort).  Every step is stable, so records that are fully
equal keep their input order.
"""

from __future__ import annotations

import threading

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.format.record import RECORD_ALIGN, RECORD_HEADER
from shaledb.kernels._jit import inline_kernel, kernel
from shaledb.kernels.mem import load_u64, load_u64_be, prefetch, unowned
from shaledb.kernels.record import (
    check_run,
    compare_keys_from,
    compare_records_from,
    key_len,
    raise_bad_record,
    record_ok,
    trailer,
)

__all__ = ["concat_runs", "keep_scratch", "sort_records"]

_SMALL = 24  # segments this short are finished by insertion sort
_AHEAD = 16  # records prefetched ahead when walking offsets in sorted (random) order
_RADIX_MIN = 64  # shorter runs are merge sorted, longer ones radix sorted
_MIN_WORDS = 3  # sort words cached per visit of a record (21 key bytes and more): fewer random reads
_MAX_WORDS = 5  # ... up to 35 key bytes, when sampled keys are that long
_LEN_SAMPLE = 256  # records whose key lengths choose the number of cached words
_LCP_SAMPLE = 32  # keys sampled to guess a tie segment's common prefix
_PACK_MIN = 192  # tie segments this long skip to their common prefix and sort packed keys
_TRAILER_DEPTH = -1
_MASK_SAMPLE = 4096  # records whose varying key bits plan the first level's packing
_COMMON_SHARE = 16  # a first word is common when 1/16 of the sample has it


# ---------------------------------------------------------------- sort kernels


@kernel
def _chunk_word(buf, off, depth):
    """Sort word of the key of the record at ``off`` for the chunk at ``depth`` (0 past its end)."""
    klen = key_len(buf, off)
    rem = klen - depth
    if rem <= 0:
        return np.uint64(0)
    p = off + RECORD_HEADER + depth
    if p + 8 <= buf.shape[0]:  # one big-endian load; bytes past the key masked off
        raw = load_u64_be(buf, p)
        if rem >= 7:
            return (raw & np.uint64(0xFFFFFFFFFFFFFF00)) | np.uint64(min(rem, 8))
        return (raw & ~((np.uint64(1) << np.uint64(64 - 8 * rem)) - np.uint64(1))) | np.uint64(rem)
    w = np.uint64(0)
    for j in range(7):
        w = w << np.uint64(8)
        if j < rem:
            w = w | np.uint64(buf[p + j])
    return (w << np.uint64(8)) | np.uint64(rem)


@kernel
def _count_digits(vals, lo, hi, counts, skip):
    """Histogram of every byte ``d >= skip`` of ``vals[lo:hi]`` into ``counts[d]``."""
    counts[:, :] = 0
    for i in range(lo, hi):
        v = vals[i]
        for d in range(skip, 8):
            counts[d, (v >> np.uint64(8 * d)) & np.uint64(0xFF)] += 1


@kernel
def _digit_starts(counts, d, lo, n):
    """Turn ``counts[d]`` into scatter positions from ``lo``; False (and
    ``counts[d]`` untouched) when all ``n`` values share byte ``d``: no pass needed."""
    for b in range(256):
        c = counts[d, b]
        if c == n:
            return False
        if c != 0:
            break
    pos = lo
    for b in range(256):
        c = counts[d, b]
        counts[d, b] = pos
        pos += c
    return True


@kernel
def _radix_sort(vals, idx, lo, hi, tv, ti, counts):
    """Stable sort of ``vals[lo:hi]`` ascending, permuting the payload ``idx[lo:hi]`` alike.

    ``tv``/``ti`` are scratch arrays as long as ``vals``; ``counts`` is int64[8, 256].
    Returns the number of scatter passes made (0: already in order).
    """
    _count_digits(vals, lo, hi, counts, 0)
    n = hi - lo
    src_v = vals
    src_i = idx
    dst_v = tv
    dst_i = ti
    passes = 0
    for d in range(8):
        if not _digit_starts(counts, d, lo, n):
            continue
        shift = np.uint64(8 * d)
        for i in range(lo, hi):
            v = src_v[i]
            b = (v >> shift) & np.uint64(0xFF)
            p = counts[d, b]
            counts[d, b] = p + 1
            dst_v[p] = v
            dst_i[p] = src_i[i]
        src_v, dst_v = dst_v, src_v
        src_i, dst_i = dst_i, src_i
        passes += 1
    if passes % 2 == 1:
        for i in range(lo, hi):
            vals[i] = src_v[i]
            idx[i] = src_i[i]
    return passes


@kernel
def _sort_pairs(vals, pidx, lo, hi, tv, ti, counts):
    """Stable sort of ``vals[lo:hi]`` ascending, permuting ``pidx[lo:hi]`` alike.

    Insertion sort when short, a merge sort (numba's stable argsort) up to
    _RADIX_MIN, the byte radix sort beyond.  Returns 0 if nothing moved.
    """
    m = hi - lo
    if m <= 32:
        moved = 0
        for a in range(lo + 1, hi):
            v = vals[a]
            q = pidx[a]
            b = a - 1
            while b >= lo and vals[b] > v:
                vals[b + 1] = vals[b]
                pidx[b + 1] = pidx[b]
                b -= 1
                moved = 1
            vals[b + 1] = v
            pidx[b + 1] = q
        return moved
    if m < _RADIX_MIN:
        order = np.argsort(vals[lo:hi], kind="mergesort")
        for i in range(m):
            tv[lo + i] = vals[lo + order[i]]
            ti[lo + i] = pidx[lo + order[i]]
        for i in range(lo, hi):
            vals[i] = tv[i]
            pidx[i] = ti[i]
        return 1
    return _radix_sort(vals, pidx, lo, hi, tv, ti, counts)


@kernel
def _segment_sort(vals, pidx, lo, hi, tv, ti, counts):
    """Stable sort of ``vals[lo:hi]``, ``pidx[lo:hi]`` set to the source positions.

    Returns 0 when the segment was already in order.
    """
    for i in range(lo, hi):
        pidx[i] = i
    return _sort_pairs(vals, pidx, lo, hi, tv, ti, counts)


@kernel
def _permute(a, pidx, lo, hi, tmp):
    """``a[lo:hi] = a[pidx[lo:hi]]`` (``pidx`` a permutation of ``lo..hi-1``)."""
    for i in range(lo, hi):
        tmp[i] = a[pidx[i]]
    for i in range(lo, hi):
        a[i] = tmp[i]


@kernel
def _permute_rows(a, pidx, lo, hi, tmp):
    """``a[lo:hi, :] = a[pidx[lo:hi], :]`` for a 2-D ``a`` (``tmp`` alike): one random read per row."""
    w = a.shape[1]
    for i in range(lo, hi):
        p = pidx[i]
        for k in range(w):
            tmp[i, k] = a[p, k]
    for i in range(lo, hi):
        for k in range(w):
            a[i, k] = tmp[i, k]


@kernel
def _insertion_sort(buf, ro, lo, hi, depth):
    """Stable insertion sort of the offsets ``ro[lo:hi]`` by record order, keys equal before ``depth``."""
    for i in range(lo + 1, hi):
        x = ro[i]
        j = i - 1
        while j >= lo and compare_records_from(buf, ro[j], x, depth) > 0:
            ro[j + 1] = ro[j]
            j -= 1
        ro[j + 1] = x


@kernel
def _fill_words(buf, ro, words, lo, hi, depth):
    """``words[i, k]`` = sort word of record ``ro[i]`` at ``depth + 7k``: one visit, all columns."""
    nw = words.shape[1]
    for i in range(lo, hi):
        prefetch(buf, ro[min(i + _AHEAD, hi - 1)] + RECORD_HEADER + depth)
        off = ro[i]
        for k in range(nw):
            words[i, k] = _chunk_word(buf, off, depth + 7 * k)


@kernel
def _varying_runs(vm, cols, kb, runs):
    """Plan the packing of a segment's key bits: the runs of set bits of the
    varying masks ``vm`` (bits that differ between some records, one mask per
    cached word, most significant first) until ``kb`` bits are taken;
    ``cols`` are the words' columns.  ``runs[r]`` = (column, shift, mask, width) of
    run ``r``; returns the number of runs and of bits.

    Bits equal in every record of a segment do not decide its order, so
    packing only the varying ones (in order) orders the records as their
    words do, with more key in the same bits: a decimal digit costs 4 bits,
    not 8, and a length byte every key shares costs nothing.
    """
    nr = 0
    total = 0
    for k in range(vm.shape[0]):
        m = vm[k]
        b = 63
        while b >= 0 and total < kb:
            if (m >> np.uint64(b)) & np.uint64(1):
                e = b
                while e >= 0 and (m >> np.uint64(e)) & np.uint64(1):
                    e -= 1
                width = min(b - e, kb - total)
                runs[nr, 0] = cols[k]
                runs[nr, 1] = b - width + 1
                runs[nr, 2] = ~np.uint64(0) >> np.uint64(64 - width)
                runs[nr, 3] = width
                nr += 1
                total += width
                b = e
            else:
                b -= 1
        if total >= kb:
            break
    return nr, total


@kernel
def _packed_bits(words, i, runs, nr, pad):
    """The varying key bits of row ``i`` of the cached ``words`` gathered by
    ``runs`` (``_varying_runs``), shifted up by ``pad``."""
    if pad >= 64:
        return np.uint64(0)
    v = np.uint64(0)
    for r in range(nr):
        v = (v << runs[r, 3]) | ((words[i, np.int64(runs[r, 0])] >> runs[r, 1]) & runs[r, 2])
    return v << np.uint64(pad)


@kernel
def _sample_masks(buf, offs, nw, vm, first):
    """``vm[k]``: the bits of sort word ``k`` that differ within a sample of
    up to _MASK_SAMPLE records spread over the run (a subset of the bits that
    vary in all of them); ``first[:m]`` their first words.  Returns ``m``."""
    n = offs.shape[0]
    all_w = np.empty(nw, dtype=np.uint64)
    any_w = np.zeros(nw, dtype=np.uint64)
    all_w[:] = ~np.uint64(0)
    m = 0
    for i in range(0, n, max(1, n // _MASK_SAMPLE)):
        off = offs[i]
        if record_ok(buf, off):  # the full pass reports a bad record
            for k in range(nw):
                w = _chunk_word(buf, off, 7 * k)
                all_w[k] &= w
                any_w[k] |= w
                if k == 0 and m < first.shape[0]:
                    first[m] = w
                    m += 1
    for k in range(nw):
        vm[k] = any_w[k] ^ all_w[k]
    return m


@kernel
def _common_words(first, m, vm0):
    """The values of the first sort word that at least 1/_COMMON_SHARE of the
    sampled records share, sorted (at most _COMMON_SHARE of them), when they
    cover half the sample and their codes (``_first_code``) take fewer bits
    than the word's varying bits ``vm0``; otherwise none."""
    vals = np.sort(first[:m])
    out = np.empty(_COMMON_SHARE, dtype=np.uint64)
    nd = 0
    covered = 0
    i = 0
    while i < m:
        j = i + 1
        while j < m and vals[j] == vals[i]:
            j += 1
        if (j - i) * _COMMON_SHARE >= m and nd < _COMMON_SHARE:
            out[nd] = vals[i]
            nd += 1
            covered += j - i
        i = j
    varying = 0
    for b in range(64):
        if (vm0 >> np.uint64(b)) & np.uint64(1):
            varying += 1
    if nd == 0 or 2 * covered < m or _code_bits(nd) >= varying:
        return out[:0]
    return out[:nd]


@kernel
def _code_bits(nd):
    """Bits of a first-word code with ``nd`` common words: codes 0..2*nd."""
    b = 1
    while (1 << b) < 2 * nd + 1:
        b += 1
    return b


@inline_kernel
def _first_code(common, w):
    """Order-keeping code of first word ``w``: ``2i + 1`` if it is common word
    ``i``, ``2i`` if it lies between common words ``i - 1`` and ``i``."""
    i = 0
    while i < common.shape[0] and common[i] < w:
        i += 1
    if i < common.shape[0] and common[i] == w:
        return np.uint64(2 * i + 1)
    return np.uint64(2 * i)


@inline_kernel
def _coded_key(words, i, common, cb, runs, nr, pad):
    """The first level's key bits of row ``i`` at the top of a word, with
    common first words: the first word's code (``cb`` bits), then, for a
    common first word only, the varying bits of the next words (``runs``,
    packed below the code).  Rows whose first word is not common tie on
    their code alone: a later word may only order rows whose first words
    are equal."""
    code = _first_code(common, words[i, 0])
    v = code << np.uint64(64 - cb)
    if code & np.uint64(1):
        v |= _packed_bits(words, i, runs, nr, pad) >> np.uint64(cb)
    return v


@kernel
def _plan_first_level(vm, common, ibits, runs):
    """The runs of the first level's key: over every cached word, or, with
    common first words, over the words after the first (``_coded_key``)."""
    nw = vm.shape[0]
    if common.shape[0] == 0:
        return _varying_runs(vm, np.arange(nw), 64 - ibits, runs)
    return _varying_runs(vm[1:], np.arange(1, nw), 64 - ibits - _code_bits(common.shape[0]), runs)


@kernel
def _top_words(buf, offs, ibits, words, vm, packed, runs, common_s):
    """First ``nw`` sort words and the trailer of every record, in input order
    (sequential reads), and the packed keys for the first level: above the
    record's input index (``ibits`` bits), the first ``64 - ibits`` bits of its
    words that vary between records (``_varying_runs``).  ``vm`` gets each
    word's varying bits.

    When a few values of the first word are most records' (keys under a
    common head such as ``tenant/``, the rest shorter or different), the
    first word becomes a small code instead (``_common_words``), so the bits
    go to the words after it.

    The packing is planned from a sample and done in the same pass; if the
    full pass finds varying bits the sample missed, it is done again
    (result -2).  Validates each record before reading it; the result is the
    first bad index, or -1.

    ``runs`` (64 x 4) and ``common_s`` (_COMMON_SHARE) are scratch from the
    caller: every array the per-record helpers take is an unowned view (see
    ``_sort_records``).
    """
    buf = unowned(buf)
    offs = unowned(offs)
    words = unowned(words)
    packed = unowned(packed)
    runs = unowned(runs)
    common_s = unowned(common_s)
    n = offs.shape[0]
    nw = words.shape[1] - 1  # last column: trailers
    first = np.empty(_MASK_SAMPLE + 1, dtype=np.uint64)
    m = _sample_masks(buf, offs, nw, vm, first)
    found = _common_words(first, m, vm[0])
    nc = found.shape[0]
    common_s[:nc] = found
    common = common_s[:nc]
    cb = _code_bits(nc) if nc else 0
    nr, total = _plan_first_level(vm, common, ibits, runs)
    pad = 64 - total
    all_w = np.empty(nw, dtype=np.uint64)
    any_w = np.zeros(nw, dtype=np.uint64)
    all_w[:] = ~np.uint64(0)
    coded = common.shape[0] > 0
    for i in range(n):
        prefetch(buf, offs[min(i + _AHEAD, n - 1)] + RECORD_HEADER)
        off = offs[i]
        if not record_ok(buf, off):
            return i
        for k in range(nw):
            w = _chunk_word(buf, off, 7 * k)
            words[i, k] = w
            all_w[k] &= w
            any_w[k] |= w
        words[i, nw] = trailer(buf, off)
        if coded:
            packed[i] = _coded_key(words, i, common, cb, runs, nr, pad) | np.uint64(i)
        else:
            packed[i] = _packed_bits(words, i, runs, nr, pad) | np.uint64(i)
    same = True
    for k in range(nw):
        mk = any_w[k] ^ all_w[k]
        same = same and mk == vm[k]
        vm[k] = mk
    if same:
        return -1
    nr, total = _plan_first_level(vm, common, ibits, runs)
    pad = 64 - total
    for i in range(n):
        if coded:
            packed[i] = _coded_key(words, i, common, cb, runs, nr, pad) | np.uint64(i)
        else:
            packed[i] = _packed_bits(words, i, runs, nr, pad) | np.uint64(i)
    return -2


@kernel
def _cached_compare(buf, ro, words, tr, x, y, depth, have, base):
    """Record order of positions ``x`` and ``y`` whose keys agree before ``depth``,
    using the ``have`` cached sort words and cached trailers first."""
    for k in range(have):
        r = (base + k) % words.shape[1]
        a = words[x, r]
        b = words[y, r]
        if a != b:
            return -1 if a < b else 1
        if (a & np.uint64(0xFF)) != np.uint64(8):
            have = -1  # keys are equal
            break
    if have >= 0:
        c = compare_keys_from(buf, ro[x], ro[y], depth + 7 * have)
        if c != 0:
            return c
    if tr[x] == tr[y]:
        return 0
    return -1 if tr[x] > tr[y] else 1


@kernel
def _pair_order(buf, top_words, qa, qb, a, b):
    """Record order (-1, 0, 1) of input records ``qa`` and ``qb`` (at offsets
    ``a`` and ``b``) from their cached words and trailers, then key bytes."""
    nw = top_words.shape[1] - 1
    equal = False
    for k in range(nw):
        x = top_words[qa, k]
        y = top_words[qb, k]
        if x != y:
            return -1 if x < y else 1
        if (x & np.uint64(0xFF)) != np.uint64(8):
            equal = True  # both keys end inside this chunk
            break
    if not equal:
        c = compare_keys_from(buf, a, b, 7 * nw)
        if c != 0:
            return c
    ta = top_words[qa, nw]
    tb = top_words[qb, nw]
    if ta == tb:
        return 0
    return -1 if ta > tb else 1


@kernel
def _small_sort(buf, ro, words, tr, pidx, ti, tv, lo, hi, depth, have, base):
    """Stable insertion sort of a small segment (a leaf: cached words are not kept)."""
    if hi - lo == 2:
        if _cached_compare(buf, ro, words, tr, lo, lo + 1, depth, have, base) > 0:
            x = ro[lo]
            ro[lo] = ro[lo + 1]
            ro[lo + 1] = x
            y = tr[lo]
            tr[lo] = tr[lo + 1]
            tr[lo + 1] = y
        return
    for i in range(lo, hi):
        pidx[i] = i
    for i in range(lo + 1, hi):
        x = pidx[i]
        j = i - 1
        while j >= lo and _cached_compare(buf, ro, words, tr, pidx[j], x, depth, have, base) > 0:
            pidx[j + 1] = pidx[j]
            j -= 1
        pidx[j + 1] = x
    _permute(ro, pidx, lo, hi, ti)
    _permute(tr, pidx, lo, hi, tv)


@kernel
def _run_end(vals, i, end, sh):
    """End of the run of ``vals[i:end]`` equal to ``vals[i]`` in their bits above ``sh``."""
    pre = vals[i] >> sh
    j = i + 1
    while j < end and (vals[j] >> sh) == pre:
        j += 1
    return j


@kernel
def _refill_groups(buf, ro, words, vals, lo, hi, depth, ti):
    """Cache the next sort words (from ``depth + 7``, all columns) of every record in
    a run of >= 2 equal, unfinished words of ``vals[lo:hi]``: one prefetched
    pass over the whole segment instead of a cache miss per record in many
    small child segments.  ``ti`` is scratch."""
    cnt = lo
    i = lo
    while i < hi:
        v = vals[i]
        j = _run_end(vals, i, hi, np.uint64(0))
        if j - i > 1 and (v & np.uint64(0xFF)) == np.uint64(8):
            for t in range(i, j):
                ti[cnt] = t
                cnt += 1
        i = j
    d = depth + 7
    for c in range(lo, cnt):
        prefetch(buf, ro[ti[min(c + _AHEAD, cnt - 1)]] + RECORD_HEADER + d)
        t = ti[c]
        off = ro[t]
        for k in range(words.shape[1]):
            words[t, k] = _chunk_word(buf, off, d + 7 * k)


@kernel
def _push_groups(vals, lo, hi, depth, have, base, st, top, nw):
    """Push every run of >= 2 equal words of ``vals[lo:hi]`` as a segment one level down.

    A stack entry is (lo, hi, depth, cached words left, slot of the first).
    ``have == 1`` means the children's words were refilled (``_refill_groups``).
    """
    i = lo
    while i < hi:
        v = vals[i]
        j = _run_end(vals, i, hi, np.uint64(0))
        if j - i > 1:
            st[top, 0] = i
            st[top, 1] = j
            if (v & np.uint64(0xFF)) == np.uint64(8):
                st[top, 2] = depth + 7
                if have == 1:
                    st[top, 3] = nw
                    st[top, 4] = 0
                else:
                    st[top, 3] = have - 1
                    st[top, 4] = (base + 1) % nw
            else:
                st[top, 2] = _TRAILER_DEPTH
                st[top, 3] = 0
                st[top, 4] = 0
            top += 1
        i = j
    return top



@kernel
def _lcp_with(buf, pp, q, j, n):
    """Index of the first byte in ``[j, n)`` where the keys at ``pp`` and ``q`` differ, or ``n``."""
    while j + 8 <= n and load_u64(buf, pp + j) == load_u64(buf, q + j):
        j += 8
    while j < n and buf[pp + j] == buf[q + j]:
        j += 1
    return j


@kernel
def _fill_at_lcp(buf, ro, words, lo, hi, depth):
    """Cache the sort words (all columns) of ``ro[lo:hi]`` at the keys' longest common
    prefix (>= ``depth``, which they share) and return its length.

    One pass does both: the prefix of the first _LCP_SAMPLE keys is a guess
    (an upper bound); every key is compared with the first one up to the guess
    and its words are cached there.  Only if some key turns out to leave the
    prefix earlier are the words read again, at the true one.
    """
    pivot = ro[lo]
    pp = pivot + RECORD_HEADER
    guess = key_len(buf, pivot)
    for i in range(lo + 1, min(hi, lo + _LCP_SAMPLE)):
        if guess <= depth:
            break
        off = ro[i]
        guess = _lcp_with(buf, pp, off + RECORD_HEADER, depth, min(guess, key_len(buf, off)))
    guess = max(guess, depth)
    lcp = guess
    for i in range(lo, hi):
        prefetch(buf, ro[min(i + _AHEAD, hi - 1)] + RECORD_HEADER + depth)
        off = ro[i]
        if lcp > depth:
            lcp = _lcp_with(buf, pp, off + RECORD_HEADER, depth, min(lcp, key_len(buf, off)))
        for k in range(words.shape[1]):
            words[i, k] = _chunk_word(buf, off, guess + 7 * k)
    if lcp < guess:
        _fill_words(buf, ro, words, lo, hi, lcp)
    return lcp


@kernel
def _radix_sort_keys(vals, lo, hi, tv, counts, skip):
    """Stable LSD byte radix sort of ``vals[lo:hi]`` (no payload) on bits ``8*skip`` and above.

    Bytes equal in every value are skipped.  ``tv`` is scratch as long as ``vals``.
    """
    _count_digits(vals, lo, hi, counts, skip)
    n = hi - lo
    src = vals
    dst = tv
    passes = 0
    for d in range(skip, 8):
        if not _digit_starts(counts, d, lo, n):
            continue
        shift = np.uint64(8 * d)
        for i in range(lo, hi):
            v = src[i]
            b = (v >> shift) & np.uint64(0xFF)
            p = counts[d, b]
            counts[d, b] = p + 1
            dst[p] = v
        src, dst = dst, src
        passes += 1
    if passes % 2 == 1:
        for i in range(lo, hi):
            vals[i] = src[i]


@kernel
def _pack_segment(buf, ro, words, tr, vals, pidx, lo, hi, depth, have, base, tv, ti, tw, counts, st, top, runs):
    """Order a long tie segment by packed keys; returns the new stack top.

    Cached words that every record shares are skipped (keys all ending there
    are equal: pushed for the trailer order); when fewer than two cached words
    remain, the segment jumps to its longest common prefix and caches the
    words there (one pass over its records).  Then records are sorted
    by packed keys: the first ``64 - b`` bits of the cached words that vary
    within the segment (``_varying_runs``), above the record's position in
    the segment (``b`` bits).  Each run that ties on those bits is pushed with
    the same depth and cached words: the bits it ties on are constant in it,
    so its own varying bits start further and it splits.  Records that no
    longer tie are done: only the tied ones get their trailers and words
    moved with them.
    """
    m = hi - lo
    nw = words.shape[1]
    all_w = np.empty(nw, dtype=np.uint64)
    any_w = np.empty(nw, dtype=np.uint64)
    while True:
        if have < 2:
            depth = _fill_at_lcp(buf, ro, words, lo, hi, depth)
            have = nw
            base = 0
        # the bits of every cached word that vary within the segment: one pass over the rows
        all_w[:] = ~np.uint64(0)
        any_w[:] = np.uint64(0)
        for i in range(lo, hi):
            for c in range(nw):
                all_w[c] &= words[i, c]
                any_w[c] |= words[i, c]
        # skip the cached words every record shares
        while have >= 2 and any_w[base] == all_w[base]:
            if (all_w[base] & np.uint64(0xFF)) != np.uint64(8):  # ... and every key ends in it
                st[top, 0] = lo
                st[top, 1] = hi
                st[top, 2] = _TRAILER_DEPTH
                st[top, 3] = 0
                st[top, 4] = 0
                return top + 1
            depth += 7
            have -= 1
            base = (base + 1) % nw
        if have >= 2:
            break
    cols = np.empty(have, dtype=np.int64)
    for k in range(have):
        cols[k] = (base + k) % nw
    vm = np.empty(have, dtype=np.uint64)
    for k in range(have):
        vm[k] = any_w[cols[k]] ^ all_w[cols[k]]
    ibits = 1
    while (1 << ibits) < m:
        ibits += 1
    sh = np.uint64(ibits)
    nr, total = _varying_runs(vm, cols, 64 - ibits, runs)
    pad = 64 - total
    for i in range(lo, hi):
        vals[i] = _packed_bits(words, i, runs, nr, pad) | np.uint64(i - lo)
    # positions are unique and already ascending within ties: only the bytes
    # holding key bits need sorting (the low ibits // 8 bytes are position bits)
    _radix_sort_keys(vals, lo, hi, tv, counts, ibits // 8)
    mask = (np.uint64(1) << sh) - np.uint64(1)
    for i in range(lo, hi):
        pidx[i] = lo + np.int64(vals[i] & mask)
    _permute(ro, pidx, lo, hi, ti)
    # only records that still tie need their trailers and words again: gather
    # those (all reads before any write back), push their runs
    first = top
    i = lo
    while i < hi:
        j = _run_end(vals, i, hi, sh)
        if j - i > 1:
            for t in range(i, j):
                q = pidx[t]
                tv[t] = tr[q]
                for k in range(nw):
                    tw[t, k] = words[q, k]
            st[top, 0] = i
            st[top, 1] = j
            st[top, 2] = depth
            st[top, 3] = have
            st[top, 4] = base
            top += 1
        i = j
    for e in range(first, top):
        for t in range(st[e, 0], st[e, 1]):
            tr[t] = tv[t]
            for k in range(nw):
                words[t, k] = tw[t, k]
    return top


@kernel
def _sort_records(buf, offs, top_words, packed, ibits, out, words, tw, tr, vals, ro, pidx, tv, ti, st, runs):
    """Sort the records given ``_top_words`` and its packed keys sorted ascending.

    Sorted packed keys order the records by the top bits of their first word,
    ties by input index; runs of equal top bits are refined from the full
    first word on.
    """
    # every array through an unowned view: the helpers below take them on
    # every call (see kernels.mem.unowned)
    buf = unowned(buf)
    offs = unowned(offs)
    top_words = unowned(top_words)
    packed = unowned(packed)
    out = unowned(out)
    words = unowned(words)
    tw = unowned(tw)
    tr = unowned(tr)
    vals = unowned(vals)
    ro = unowned(ro)
    pidx = unowned(pidx)
    tv = unowned(tv)
    ti = unowned(ti)
    st = unowned(st)
    runs = unowned(runs)
    n = offs.shape[0]
    nw = top_words.shape[1] - 1
    mask = (np.uint64(1) << np.uint64(ibits)) - np.uint64(1)
    sh = np.uint64(ibits)
    for i in range(n):
        out[i] = offs[np.int64(packed[i] & mask)]
    # two records that tie on the first level are ordered here; larger ties
    # are copied to compact arrays (dense working memory: few page faults and
    # cache misses when ties are rare)
    g = 0
    i = 0
    while i < n:
        j = _run_end(packed, i, n, sh)
        if j - i == 2:
            qa = np.int64(packed[i] & mask)
            qb = np.int64(packed[i + 1] & mask)
            if _pair_order(buf, top_words, qa, qb, out[i], out[i + 1]) > 0:
                x = out[i]
                out[i] = out[i + 1]
                out[i + 1] = x
        elif j - i > 2:
            g += j - i
        i = j
    if g == 0:
        return
    counts = np.zeros((8, 256), dtype=np.int64)
    top = 0
    c = 0
    i = 0
    while i < n:
        j = _run_end(packed, i, n, sh)
        if j - i > 2:
            st[top, 0] = c
            st[top, 1] = c + j - i
            st[top, 2] = 0
            st[top, 3] = nw
            st[top, 4] = 0
            top += 1
            for t in range(i, j):
                prefetch(top_words, np.int64(packed[min(t + _AHEAD, n - 1)] & mask) * (nw + 1))
                q = np.int64(packed[t] & mask)
                ro[c] = out[t]
                tr[c] = top_words[q, nw]
                for k in range(nw):
                    words[c, k] = top_words[q, k]
                c += 1
        i = j
    while top > 0:
        top -= 1
        lo = st[top, 0]
        hi = st[top, 1]
        depth = st[top, 2]
        have = st[top, 3]
        base = st[top, 4]
        if depth == _TRAILER_DEPTH:
            # keys are equal: order by cached trailer, descending
            for i in range(lo, hi):
                vals[i] = ~tr[i]
            if _segment_sort(vals, pidx, lo, hi, tv, ti, counts) > 0:
                _permute(ro, pidx, lo, hi, ti)
                _permute(tr, pidx, lo, hi, tv)
            continue
        if hi - lo <= _SMALL:
            _small_sort(buf, ro, words, tr, pidx, ti, tv, lo, hi, depth, have, base)
            continue
        if hi - lo >= _PACK_MIN:
            top = _pack_segment(buf, ro, words, tr, vals, pidx, lo, hi, depth, have, base, tv, ti, tw, counts, st, top,
                                runs)
            continue
        if have == 0:
            _fill_words(buf, ro, words, lo, hi, depth)
            have = nw
            base = 0
        v0 = words[lo, base]
        same = True
        for i in range(lo, hi):
            v = words[i, base]
            vals[i] = v
            same = same and v == v0
        if not same and _segment_sort(vals, pidx, lo, hi, tv, ti, counts) > 0:
            _permute(ro, pidx, lo, hi, ti)
            _permute(tr, pidx, lo, hi, tv)
            if have > 1:
                _permute_rows(words, pidx, lo, hi, tw)
        if have == 1:
            _refill_groups(buf, ro, words, vals, lo, hi, depth, ti)
        top = _push_groups(vals, lo, hi, depth, have, base, st, top, nw)
    # copy the sorted tie runs back in place
    c = 0
    i = 0
    while i < n:
        j = _run_end(packed, i, n, sh)
        if j - i > 2:
            for t in range(i, j):
                out[t] = ro[c]
                c += 1
        i = j


def _cached_words(buf, offs) -> int:
    """Sort words to cache per record: enough for the longest of a sample of
    keys, _MIN_WORDS to _MAX_WORDS.  Ties then rarely need another read of a
    record, which costs a cache miss in key order."""
    n = offs.shape[0]
    pick = offs[:: max(1, n // _LEN_SAMPLE)]
    pick = pick[(pick >= 0) & (pick + 4 <= buf.shape[0])]  # unchecked yet: _top_words validates
    if pick.shape[0] == 0:
        return _MIN_WORDS
    lens = buf[pick] | (buf[pick + 1].astype(np.int64) << 8) | (buf[pick + 2].astype(np.int64) << 16) | (buf[pick + 3].astype(np.int64) << 24)
    return int(min(_MAX_WORDS, max(_MIN_WORDS, -(-int(lens.max()) // 7))))


def sort_records(buf, offs) -> np.ndarray:
    """Offsets of the records of ``(buf, offs)`` ordered by (key asc, trailer desc).

    Stable: records with equal key and trailer keep their input order.  Every
    record is checked to lie inside ``buf`` (InvalidArgument otherwise).
    Scratch memory: 40 to 64 bytes per record, plus up to about 110 bytes per
    record whose first key bytes tie with another record's (reserved for
    every record, touched only for those); kept for the next call within
    :func:`keep_scratch`'s bound.
    """
    buf, offs = check_run(buf, offs, validate=False)  # _top_words validates as it reads
    n = offs.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if n >= 1 << 40:
        raise InvalidArgument(f"too many records to sort at once: {n}")
    ibits = max(1, (n - 1).bit_length())
    nw = _cached_words(buf, offs)
    out = np.empty(n, dtype=np.int64)
    with _Scratch(8 * (n * (2 * nw + 8) + (n // 2 + 2) * 5 + 64 * 4 + _COMMON_SHARE)) as scr:
        # Every array is allocated here, by numpy, not inside the kernels:
        # numpy asks for transparent huge pages for large arrays, numba's
        # allocator does not, and first-touch page faults cost more than the
        # sort itself.  Scratch parts that no tie reaches are never touched.
        top_words = scr.take((n, nw + 1), np.uint64)
        packed = scr.take((n,), np.uint64)
        runs = scr.take((64, 4), np.uint64)  # a packing plan (_varying_runs)
        vm = np.empty(nw, dtype=np.uint64)
        bad = _top_words(buf, offs, ibits, top_words, vm, packed, runs, scr.take((_COMMON_SHARE,), np.uint64))
        if bad >= 0:
            raise_bad_record(buf, offs, bad)
        packed.sort()  # numpy's vectorised sort (AVX-512 / AVX2 where available)
        words = scr.take((n, nw), np.uint64)  # cached sort words of tied records (aligned with ro)
        # scratch rows: the memory of top_words, which is not read again once
        # the ties are copied out (fewer fresh pages to fault in)
        tw = top_words.reshape(-1)[: n * nw].reshape(n, nw)
        tr, vals, tv = scr.take((3, n), np.uint64)  # cached trailers, sort values, scratch
        ro, pidx, ti = scr.take((3, n), np.int64)  # tied offsets, a permutation, scratch
        st = scr.take((n // 2 + 2, 5), np.int64)  # segment stack
        _sort_records(buf, offs, top_words, packed, ibits, out, words, tw, tr, vals, ro, pidx, tv, ti, st, runs)
    return out


_scratch_lock = threading.Lock()
_scratch_keep = 0  # bytes of scratch kept between sorts (keep_scratch)
_scratch_buf: np.ndarray | None = None


def keep_scratch(max_bytes: int) -> None:
    """Keep up to ``max_bytes`` of ``sort_records``' scratch memory between
    calls (0, the default, keeps none and frees what is kept).

    For a process that sorts again and again, as the flusher does on every
    L0 flush: fresh scratch pages are faulted in and cleared by the kernel on
    each call, about 7 % of a sort of 1M records (17 of 227 ms on prefixed
    keys).  A sort needing more than the bound, or one running while
    another thread's sort holds the kept memory, allocates its own.
    """
    global _scratch_keep, _scratch_buf
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise InvalidArgument(f"keep_scratch takes a byte count >= 0, got {max_bytes!r}")
    with _scratch_lock:
        _scratch_keep = max_bytes
        if _scratch_buf is not None and _scratch_buf.shape[0] > max_bytes:
            _scratch_buf = None


class _Scratch:
    """The scratch of one sort: the kept buffer when it is free and the size
    is within ``keep_scratch``'s bound (grown as needed), ``take`` carving
    arrays off it in turn; else each ``take`` is a fresh array (measured
    faster than carving a fresh buffer: fixed16 66.9 vs 70.6 ms)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.pos = 0
        self.kept = False
        self.buf = None

    def __enter__(self) -> "_Scratch":
        global _scratch_buf
        if 0 < self.nbytes <= _scratch_keep and _scratch_lock.acquire(blocking=False):
            if self.nbytes > _scratch_keep:  # the bound was lowered meanwhile
                _scratch_lock.release()
                return self
            self.kept = True
            if _scratch_buf is None or _scratch_buf.shape[0] < self.nbytes:
                _scratch_buf = None
                _scratch_buf = np.empty(self.nbytes, dtype=np.uint8)
            self.buf = _scratch_buf
        return self

    def __exit__(self, *exc) -> None:
        self.buf = None
        if self.kept:
            _scratch_lock.release()

    def take(self, shape: tuple, dtype) -> np.ndarray:
        if not self.kept:
            return np.empty(shape, dtype=dtype)
        count = 1
        for d in shape:
            count *= d
        end = self.pos + 8 * count
        if end > self.buf.shape[0]:
            raise AssertionError("sort scratch undersized")
        a = self.buf[self.pos : end].view(dtype).reshape(shape)
        self.pos = end
        return a


def concat_runs(runs) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate record runs ``[(buf, offs), ...]`` into one ``(buf, offs)``.

    Each buffer is copied whole (memcpy) to an 8-byte aligned position and its
    offsets are shifted by that position.  A single run is returned unchanged
    (as validated arrays); no runs give an empty run.
    """
    runs = [check_run(b, o) for b, o in runs]
    if len(runs) == 1:
        return runs[0]
    bases = []
    pos = 0
    for b, _ in runs:
        bases.append(pos)
        pos += (b.shape[0] + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)
    out = np.empty(pos, dtype=np.uint8)
    total = sum(o.shape[0] for _, o in runs)
    out_offs = np.empty(total, dtype=np.int64)
    k = 0
    for (b, o), base in zip(runs, bases):
        out[base : base + b.shape[0]] = b
        pad_end = base + ((b.shape[0] + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1))
        out[base + b.shape[0] : pad_end] = 0
        np.add(o, base, out=out_offs[k : k + o.shape[0]])
        k += o.shape[0]
    return out, out_offs
