"""Reads on S3 (a moto server on loopback): ShaleDB with and without the disk
cache (``Options.cache_dir``), side by side with SlateDB, in one run.

    python -m bench.s3reads                      # 300k records, ~2 minutes on 2 cores
    python -m bench.s3reads --records 1000000 --peers none --json out.json

One data set (``--records`` keys of 16 bytes, 100-byte values) is loaded into
each engine (ShaleDB: put_many, flush, full compaction: one sorted run;
SlateDB: the ingest benchmark's adapter, WAL off, flushed).  Then, per
engine and configuration, each figure from a fresh open:

    get cold      --reads random gets of existing keys right after open
    get warm      the same gets again (in-process caches warm)
    scan          one full scan (ShaleDB: Db.scan tuples, then scan_arrays)

ShaleDB runs three configurations: no disk cache; ``cache_dir`` with an
empty cache (cold disk); ``cache_dir`` again after the first (parts on
disk, a fresh process-level state: "disk warm").  Each figure is the median
of ``--repeat`` fresh opens.  The output is one table; ratios are to SlateDB
in the same run.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import numpy as np

from bench.common import format_table, generate_dataset, progress, read_indices, write_json

BUCKET = "shaledb-s3reads"


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.s3reads", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=300_000)
    p.add_argument("--reads", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3, help="fresh opens per figure (median)")
    p.add_argument("--peers", default="slatedb", help="slatedb or none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.records < 1 or a.reads < 1 or a.repeat < 1:
        p.error("--records, --reads and --repeat must be >= 1")
    return a


def _median(xs):
    return statistics.median(xs) if xs else None


def _shaledb(a, ds, endpoint, scratch):
    import shaledb
    from shaledb.kernels import warmup

    warmup()  # load every kernel before the clock starts (the first configuration would pay for it)
    url = f"s3://{BUCKET}/shaledb-{uuid.uuid4().hex[:8]}"
    base = dict(compactor=False, store_options={"endpoint_url": endpoint})
    t0 = time.perf_counter()
    with shaledb.open(url, wal=False, **base) as db:
        for s in range(0, ds.n, 100_000):
            keys, vals = ds.pairs(s, min(ds.n, s + 100_000))
            db.put_many(keys, vals, await_durable=False)
        db.flush(memtable=True)
        db.compact(full=True)
    load_s = time.perf_counter() - t0
    print(f"shaledb: loaded {ds.n} records in {load_s:.1f} s", file=sys.stderr, flush=True)
    idx = read_indices(a.seed, ds.n, a.reads)
    keys = [ds.key(int(i)) for i in idx]
    want = [ds.value(int(i)) for i in idx]
    cache = os.path.join(scratch, "cache")
    rows = {}
    for name, opts, wipe in (("shaledb", {}, False), ("shaledb cache_dir (disk cold)", {"cache_dir": cache}, True),
                             ("shaledb cache_dir (disk warm)", {"cache_dir": cache}, False)):
        figs = {"get_cold": [], "get_warm": [], "scan": [], "scan_arrays": []}
        for _ in range(a.repeat):
            for what in ("gets", "scan"):
                if wipe:
                    shutil.rmtree(cache, ignore_errors=True)
                with shaledb.open(url, **base, **opts) as db:
                    if what == "gets":
                        for temp in ("get_cold", "get_warm"):
                            t = time.perf_counter()
                            got = [db.get(k) for k in keys]
                            figs[temp].append(len(keys) / (time.perf_counter() - t))
                            assert got == want, f"{name}: wrong values"
                    else:
                        t = time.perf_counter()
                        n = sum(1 for _ in db.scan())
                        figs["scan"].append(n / (time.perf_counter() - t))
                        assert n == ds.n, f"{name}: scan counted {n}"
                        if wipe:
                            shutil.rmtree(cache, ignore_errors=True)
                        t = time.perf_counter()
                        n = sum(len(b[1]) - 1 for b in db.scan_arrays())
                        figs["scan_arrays"].append(n / (time.perf_counter() - t))
                        assert n == ds.n
        rows[name] = {k: _median(v) for k, v in figs.items()}
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)  # partial results survive a kill
    rows["shaledb"]["load_s"] = load_s
    return rows


def _slatedb(a, ds, endpoint):
    from bench._peers.base import value_digest
    from bench._peers.slatedb_peer import SlateDBAdapter

    spec = {"location": {"kind": "s3", "bucket": BUCKET, "prefix": f"slatedb-{uuid.uuid4().hex[:8]}",
                         "endpoint": endpoint}, "wal": False, "await_durable": False}
    ad = SlateDBAdapter(spec)
    ad.open()
    t0 = time.perf_counter()
    with progress(False, total=ds.n) as bar:
        ad.prefill(ds, ds.n, 10_000, 1, bar)
    ad.flush()
    ad.close()
    load_s = time.perf_counter() - t0
    idx = read_indices(a.seed, ds.n, a.reads)
    keys = [ds.key(int(i)) for i in idx]
    want = [value_digest(ds.value(int(i))) for i in idx]
    figs = {"get_cold": [], "get_warm": [], "scan": []}
    for _ in range(a.repeat):
        ad.open()
        for temp in ("get_cold", "get_warm"):
            t = time.perf_counter()
            _lat, got = ad.get_many(keys)
            figs[temp].append(len(keys) / (time.perf_counter() - t))
            assert list(got) == want, "slatedb: wrong values"
        ad.close()
        ad.open()
        with progress(False, total=ds.n) as bar:
            t = time.perf_counter()
            s = ad.scan(bar)
            figs["scan"].append(s["count"] / (time.perf_counter() - t))
        ad.close()
    out = {k: _median(v) for k, v in figs.items()}
    out["load_s"] = load_s
    print(f"slatedb: {out}", file=sys.stderr, flush=True)
    return {"slatedb": out}


def main(argv=None) -> int:
    a = _args(argv)
    from shaledb.storage.testing import S3_TEST_CREDENTIALS, MotoServer

    os.environ.update(S3_TEST_CREDENTIALS)
    moto = MotoServer().start()
    scratch = tempfile.mkdtemp(prefix="shaledb-s3reads-")
    try:
        moto.create_bucket(BUCKET)
        os.environ["AWS_ENDPOINT_URL"] = moto.endpoint_url
        ds = generate_dataset(a.records, 16, 100, a.seed)
        rows = _shaledb(a, ds, moto.endpoint_url, scratch)
        if a.peers == "slatedb":
            rows.update(_slatedb(a, ds, moto.endpoint_url))
    finally:
        moto.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    peer = rows.get("slatedb")

    def cell(r, k):
        v = r.get(k)
        if v is None:
            return "-"
        s = f"{v / 1e3:,.1f}k/s"
        if peer and peer.get(k) and r is not peer:
            s += f" ({v / peer[k]:.2f}x)"
        return s

    table = [[name] + [cell(r, k) for k in ("get_cold", "get_warm", "scan", "scan_arrays")] for name, r in rows.items()]
    print(format_table(["engine", "get cold", "get warm", "scan (tuples)", "scan_arrays"], table,
                       f"== S3 reads on moto, {a.records:,} records, {a.reads} gets, median of {a.repeat} fresh opens "
                       "(x: ratio to slatedb, same run)"))
    if a.json:
        write_json(a.json, {"records": a.records, "reads": a.reads, "repeat": a.repeat, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
