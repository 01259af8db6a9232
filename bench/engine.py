"""Engine figures: ``python -m bench.engine [local] [s3] [putget] [--records N] [--json PATH]``.

Prints numbers and asserts nothing (no test ever asserts a timing).

* ``local`` / ``s3``: ``put_many`` ingest of N records (16-byte keys, 100-byte
  values, numpy batches of ``--batch``, ``await_durable=False``) from 1 writer
  (the Db process) and from 2 writer processes (``db.writer()``), into a local
  directory or a moto S3 server on loopback.  "appended" = records/s until the
  last ``put_many`` returned; "incl. final flush" = until ``db.flush()``
  returned (everything durable).
* ``putget``: from one process, 100,000 single puts (``await_durable=False``,
  then one flush), 20,000 gets answered from arenas, then from L0 after
  ``flush(memtable=True)``, and 200 durable puts in a row.

With no mode given, all three run.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import time

import numpy as np

import shaledb
from bench.common import machine_info, write_json

__all__ = ["ingest", "main", "putget"]

MODES = ("local", "s3", "putget")
_WAIT = 600  # seconds any one wait on a child may take


def make(n: int, start: int, ksize: int = 16, vsize: int = 100):
    """``(keys, key_offs, values, value_offs)`` of records ``start .. start+n-1``."""
    ids = np.arange(start, start + n, dtype=np.int64)
    keys = np.frombuffer(b"".join(b"key%013d" % i for i in ids), np.uint8)
    ko = np.arange(0, (n + 1) * ksize, ksize, dtype=np.int64)
    vals = np.random.default_rng(start).integers(0, 255, n * vsize, dtype=np.uint8)
    vo = np.arange(0, (n + 1) * vsize, vsize, dtype=np.int64)
    return keys, ko, vals, vo


def _warm(target, data) -> None:
    target.put_many((data[0][:160], data[1][:11]), (data[2][:1000], data[3][:11]), await_durable=False)


def _put_batches(target, data, batch: int) -> float:
    """``put_many`` every record of ``data`` in batches; seconds taken."""
    keys, ko, vals, vo = data
    n = ko.shape[0] - 1
    t = time.perf_counter()
    for i in range(0, n, batch):
        j = min(n, i + batch)
        target.put_many(
            (keys[ko[i] : ko[j]], ko[i : j + 1] - ko[i]), (vals[vo[i] : vo[j]], vo[i : j + 1] - vo[i]), await_durable=False
        )
    return time.perf_counter() - t


def _writer_main(handle, start, n, batch, barrier, q) -> None:
    data = make(n, start)
    with handle as w:
        _warm(w, data)
        barrier.wait(_WAIT)
        q.put(_put_batches(w, data, batch))


def ingest(url: str, writers: int, n: int, batch: int = 10_000, **kw) -> tuple[float, float]:
    """(appended records/s, records/s including the final flush)."""
    ctx = mp.get_context("spawn")
    with shaledb.open(url, **kw) as db:
        if writers == 1:
            data = make(n, 0)
            _warm(db, data)
            t = time.perf_counter()
            t_app = _put_batches(db, data, batch)
            db.flush()
            return n / t_app, n / (time.perf_counter() - t)
        barrier = ctx.Barrier(writers + 1)
        q = ctx.Queue()
        per = n // writers
        ps = [ctx.Process(target=_writer_main, args=(db.writer(), k * per, per, batch, barrier, q)) for k in range(writers)]
        try:
            for p in ps:
                p.start()
            barrier.wait(_WAIT)
            t = time.perf_counter()
            t_app = max(q.get(timeout=_WAIT) for _ in ps)
            db.flush()
            t_all = time.perf_counter() - t
        finally:
            for p in ps:
                p.join(_WAIT)
                if p.is_alive():
                    p.kill()
                    p.join(_WAIT)
        return per * writers / t_app, per * writers / t_all


def putget(url: str, n: int = 100_000, **kw) -> tuple[float, float, float, float]:
    """(put/s, get/s from arenas, get/s from L0, durable put/s)."""
    with shaledb.open(url, **kw) as db:
        keys = [b"p%012d" % i for i in range(n)]
        db.put(b"warm", b"x")
        t = time.perf_counter()
        for k in keys:
            db.put(k, b"v" * 100, await_durable=False)
        db.flush()
        put_rate = n / (time.perf_counter() - t)
        sample = keys[::7][:20_000]
        t = time.perf_counter()
        for k in sample:
            db.get(k)
        get_arena = len(sample) / (time.perf_counter() - t)
        db.flush(memtable=True)
        db.get(keys[0])
        sample = keys[::5][:20_000]
        t = time.perf_counter()
        for k in sample:
            db.get(k)
        get_l0 = len(sample) / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(200):
            db.put(b"durable", b"x")
        durable = 200 / (time.perf_counter() - t)
        return put_rate, get_arena, get_l0, durable


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.splitlines()[0])
    ap.add_argument("modes", nargs="*", metavar="{local,s3,putget}", help="what to run (default: all)")
    ap.add_argument("--records", type=int, default=int(os.environ.get("N", "1000000")), help="records ingested (default 1e6)")
    ap.add_argument("--batch", type=int, default=10_000, help="records per put_many (default 10,000)")
    ap.add_argument("--putget-records", type=int, default=100_000, help="single puts of putget (default 100,000)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    bad = sorted(set(args.modes) - set(MODES))
    if bad:
        ap.error(f"unknown mode(s) {bad}; choose from {list(MODES)}")
    modes = args.modes or list(MODES)
    out: dict = {"machine": machine_info(), "records": args.records, "batch": args.batch, "figures": {}}
    figs = out["figures"]
    d = tempfile.mkdtemp(prefix="shaledb-bench-engine-")
    try:
        if "local" in modes:
            for w in (1, 2):
                app, full = ingest(f"{d}/ingest{w}", w, args.records, args.batch)
                figs[f"local_put_many_writers{w}"] = {"appended_rec_s": app, "with_flush_rec_s": full}
                print(f"local   put_many writers={w}: appended {app:,.0f} rec/s, incl. final flush {full:,.0f} rec/s", flush=True)
        if "s3" in modes:
            from shaledb.storage.testing import S3_TEST_CREDENTIALS, MotoServer

            os.environ.update(S3_TEST_CREDENTIALS)
            with MotoServer() as m:
                for w in (1, 2):
                    m.create_bucket(f"ingest-{w}")
                    app, full = ingest(
                        f"s3://ingest-{w}/db", w, args.records, args.batch, store_options={"endpoint_url": m.endpoint_url}
                    )
                    figs[f"moto_s3_put_many_writers{w}"] = {"appended_rec_s": app, "with_flush_rec_s": full}
                    print(f"moto S3 put_many writers={w}: appended {app:,.0f} rec/s, incl. final flush {full:,.0f} rec/s", flush=True)
        if "putget" in modes:
            put, ga, gl, dur = putget(f"{d}/putget", args.putget_records)
            figs["local_putget"] = {"put_ops_s": put, "get_arena_ops_s": ga, "get_l0_ops_s": gl, "durable_put_ops_s": dur}
            print(
                f"local   put(await_durable=False) {put:,.0f} ops/s; get from arenas {ga:,.0f} ops/s; "
                f"get from L0 {gl:,.0f} ops/s; durable put {dur:,.0f} ops/s",
                flush=True,
            )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
