"""shaledb.read.reader.merge_visible (the scan merge) against a dict model."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import shaledb.read.reader as R


def _run(entries):
    """A record run (buf, offs) of (key, seq, kind, value) in record order."""
    entries = sorted(entries, key=lambda e: (e[0], -e[1]))
    buf = bytearray()
    offs = []
    for key, seq, kind, value in entries:
        offs.append(len(buf))
        v = value if kind == 1 else b""
        rec = len(key).to_bytes(4, "little") + len(v).to_bytes(4, "little") + ((seq << 8) | kind).to_bytes(8, "little") + key + v
        buf += rec + b"\0" * (-len(rec) % 8)
    return np.frombuffer(bytes(buf), dtype=np.uint8), np.array(offs, dtype=np.int64)


def _split(entries, pieces, rng):
    """One source: entries cut into consecutive runs (every version of a key in one run)."""
    entries = sorted(entries, key=lambda e: (e[0], -e[1]))
    keys = sorted({e[0] for e in entries})
    cuts = sorted(rng.sample(range(1, len(keys)), min(pieces, max(0, len(keys) - 1)))) if len(keys) > 1 else []
    groups, lo = [], 0
    for c in cuts + [len(keys)]:
        ks = set(keys[lo:c])
        groups.append(_run([e for e in entries if e[0] in ks]))
        lo = c
    return groups


def _model(sources_entries):
    best = {}
    for entries in sources_entries:
        for key, seq, kind, value in entries:
            if key not in best or seq > best[key][0]:
                best[key] = (seq, kind, value)
    return [(k, v[2]) for k, v in sorted(best.items()) if v[1] == 1]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 5), st.integers(1, 4), st.booleans())
def test_merge_visible_matches_model(seed, nsources, chunk_pow, dup_versions):
    rng = random.Random(seed)
    seq = 0
    sources_entries = []
    for _ in range(nsources):
        entries = []
        used = set()
        for _ in range(rng.randrange(0, 40)):
            key = b"k%03d" % rng.randrange(60)
            if key in used and not dup_versions:
                continue
            used.add(key)
            seq += 1
            kind = 1 if rng.random() < 0.75 else 0
            entries.append((key, seq, kind, b"v%d" % seq))
        sources_entries.append(entries)
    rng.shuffle(sources_entries)  # newest data is not always in the first source
    sources = [_split(e, rng.randrange(0, 4), rng) for e in sources_entries]
    old = R._CHUNK
    R._CHUNK = 2**chunk_pow  # small chunks: versions of a key across chunk boundaries
    try:
        got = list(R.merge_visible(sources))
    finally:
        R._CHUNK = old
    assert got == _model(sources_entries)


def test_merge_visible_empty_and_clip():
    assert list(R.merge_visible([])) == []
    assert list(R.merge_visible([iter([]), iter([])])) == []
    buf, offs = _run([(b"a", 1, 1, b"1"), (b"b", 2, 1, b"2"), (b"c", 3, 1, b"3"), (b"d", 4, 0, b"")])
    assert list(R.merge_visible([R._clip_run(buf, offs, b"b", b"d")])) == [(b"b", b"2"), (b"c", b"3")]
    assert list(R.merge_visible([R._clip_run(buf, offs, None, b"a")])) == []
    assert list(R.merge_visible([R._clip_run(buf, offs, b"b", None)])) == [(b"b", b"2"), (b"c", b"3")]


@pytest.mark.parametrize("tomb_first", [True, False])
def test_tombstone_in_newer_source_hides_older(tomb_first):
    newer = _run([(b"x", 10, 0, b""), (b"y", 11, 1, b"new")])
    older = _run([(b"x", 1, 1, b"old"), (b"y", 2, 1, b"old"), (b"z", 3, 1, b"z")])
    srcs = [[newer], [older]] if tomb_first else [[older], [newer]]
    assert list(R.merge_visible(srcs)) == [(b"y", b"new"), (b"z", b"z")]
