"""Helpers of the compaction tests (not a test module): L0 SSTs built with
the real SST writer from a list of record tuples, and the plain model of
what a compaction must keep."""

from __future__ import annotations

import numpy as np
from reference.block import make_run, read_run

from shaledb.format.keys import sst_key
from shaledb.manifest.model import Manifest, SortedRun, SstRef
from shaledb.sst.reader import SstReader
from shaledb.sst.writer import build_ssts

MAX_SEQ = (1 << 56) - 1


def sort_records(records):
    """(key asc, seq desc), the record order."""
    return sorted(records, key=lambda r: (r[0], -r[1]))


def newest_per_key(records):
    seen, out = set(), []
    for r in sort_records(records):
        if r[0] not in seen:
            seen.add(r[0])
            out.append(r)
    return out


def write_ssts(store, records, *, target_bytes=4096, block_size=512):
    """Upload ``records`` (tuples; deduped to the newest per key, as an L0
    build does) as SSTs; returns their SstRefs in key order."""
    buf, offs = make_run(sort_records(records))
    buf = np.frombuffer(buf, dtype=np.uint8)
    offs = np.array(offs, dtype=np.int64)
    out = []
    for sst_id, data, info in build_ssts(buf, offs, target_bytes=target_bytes, block_size=block_size,
                                         min_bloom_keys=1):
        store.put(sst_key(sst_id), data)
        out.append(SstRef.from_info(info))
    return out


def read_ssts(store, refs):
    """Every record of ``refs`` in order, as tuples."""
    out = []
    for ref in refs:
        r = SstReader(store, sst_key(ref.sst_id), size=ref.size)
        assert r.info.num_entries == ref.num_entries
        for buf, offs in r.iter_range():
            out.extend(read_run(buf, offs))
    return out


def expected(records, *, retain_seq=None, bottom=False):
    """What a merge of ``records`` must keep (the dedupe + tombstone rules, written plainly)."""
    by_key = {}
    for r in sort_records(records):
        by_key.setdefault(r[0], []).append(r)
    out = []
    limit = MAX_SEQ if retain_seq is None else retain_seq
    for key in sorted(by_key):
        versions = by_key[key]
        keep = [versions[0]]
        if retain_seq is not None:
            keep = [v for v in versions if v[1] > retain_seq]
            visible = next((v for v in versions if v[1] <= retain_seq), None)
            if visible is not None:
                keep.append(visible)
        if bottom:
            keep = [v for v in keep if not (v[2] == 0 and v[1] <= limit)]
        out.extend(keep)
    return out


def manifest_of(l0=(), runs=()):
    """A manifest with ``l0`` (lists of SstRefs, newest first, each one L0
    SST per ref) and ``runs`` ((run_id, refs), highest first)."""
    l0_refs = tuple(r for group in l0 for r in group)
    sr = tuple(SortedRun(rid, tuple(refs)) for rid, refs in runs)
    seqs = [r.max_seq for r in l0_refs] + [s.max_seq for run in sr for s in run.ssts]
    return Manifest(l0=l0_refs, sorted_runs=sr, last_l0_seq=max(seqs, default=0), next_wal_id=2)
