"""Engine figures (not a test; prints numbers, asserts nothing).

    python tests/engine/engine_figures.py [local] [s3] [putget]     (N=records, default 1e6)

* put_many ingest of N records (16-byte keys, 100-byte values, numpy batches
  of 10,000, await_durable=False) from 1 writer (the Db process) and from 2
  writer processes (db.writer()), into a local directory and into a moto S3
  server on loopback: "appended" = records/s until the last put_many returned,
  "incl. final flush" = records/s until db.flush() returned (all durable).
* put()/get() from one process: 100,000 single puts (await_durable=False,
  then one flush), 20,000 gets answered from arenas, then from L0 after
  flush(memtable=True), and 200 durable puts in a row.
"""
import os, sys, time, tempfile, shutil
import numpy as np
import shaledb

def make(n, start, ksize=16, vsize=100):
    ids = np.arange(start, start + n, dtype=np.int64)
    keys = np.frombuffer(b"".join(b"key%013d" % i for i in ids), np.uint8)
    ko = np.arange(0, (n + 1) * ksize, ksize, dtype=np.int64)
    vals = np.random.default_rng(start).integers(0, 255, n * vsize, dtype=np.uint8)
    vo = np.arange(0, (n + 1) * vsize, vsize, dtype=np.int64)
    return keys, ko, vals, vo

def writer_main(h, start, n, batch, barrier, q):
    data = make(n, start)
    with h as w:
        w.put_many((data[0][:160], data[1][:11]), (data[2][:1000], data[3][:11]), await_durable=False)  # warm
        barrier.wait(60)
        t = time.perf_counter()
        for i in range(0, n, batch):
            j = min(n, i + batch)
            ko = data[1][i:j + 1] - data[1][i]; vo = data[3][i:j + 1] - data[3][i]
            w.put_many((data[0][data[1][i]:data[1][j]], ko), (data[2][data[3][i]:data[3][j]], vo), await_durable=False)
        q.put(time.perf_counter() - t)

def ingest(url, writers, n, batch=10000, **kw):
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    with shaledb.open(url, **kw) as db:
        if writers == 1:
            data = make(n, 0)
            db.put_many((data[0][:160], data[1][:11]), (data[2][:1000], data[3][:11]), await_durable=False)
            t = time.perf_counter()
            for i in range(0, n, batch):
                j = min(n, i + batch)
                ko = data[1][i:j + 1] - data[1][i]; vo = data[3][i:j + 1] - data[3][i]
                db.put_many((data[0][data[1][i]:data[1][j]], ko), (data[2][data[3][i]:data[3][j]], vo), await_durable=False)
            t_app = time.perf_counter() - t
            db.flush()
            t_all = time.perf_counter() - t
        else:
            barrier = ctx.Barrier(writers + 1); q = ctx.Queue()
            per = n // writers
            ps = [ctx.Process(target=writer_main, args=(db.writer(), k * per, per, batch, barrier, q)) for k in range(writers)]
            for p in ps: p.start()
            barrier.wait(120)
            t = time.perf_counter()
            apps = [q.get(timeout=600) for _ in ps]
            t_app = max(apps)
            db.flush()
            t_all = time.perf_counter() - t
            for p in ps: p.join(60)
        return n / t_app, n / t_all

def putget(url, n=100_000, **kw):
    with shaledb.open(url, **kw) as db:
        keys = [b"p%012d" % i for i in range(n)]
        db.put(b"warm", b"x")
        t = time.perf_counter()
        for k in keys:
            db.put(k, b"v" * 100, await_durable=False)
        db.flush()
        put_rate = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for k in keys[::7][:20000]:
            db.get(k)
        get_arena = 20000 / (time.perf_counter() - t)
        db.flush(memtable=True)
        db.get(keys[0])
        t = time.perf_counter()
        for k in keys[::5][:20000]:
            db.get(k)
        get_l0 = 20000 / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(200):
            db.put(b"durable", b"x")
        durable = 200 / (time.perf_counter() - t)
        return put_rate, get_arena, get_l0, durable

if __name__ == "__main__":
    from shaledb.storage.testing import MotoServer, S3_TEST_CREDENTIALS
    os.environ.update(S3_TEST_CREDENTIALS)
    which = sys.argv[1:] or ["local", "s3", "putget"]
    n = int(os.environ.get("N", "1000000"))
    d = tempfile.mkdtemp(prefix="shaledb-measure-")
    try:
        if "local" in which:
            for w in (1, 2):
                r = ingest(f"{d}/ingest{w}", w, n)
                print(f"local  put_many writers={w}: appended {r[0]:,.0f} rec/s, incl. final flush {r[1]:,.0f} rec/s", flush=True)
        if "s3" in which:
            with MotoServer() as m:
                for w in (1, 2):
                    m.create_bucket(f"ingest-{w}")
                    r = ingest(f"s3://ingest-{w}/db", w, n, store_options={"endpoint_url": m.endpoint_url})
                    print(f"moto S3 put_many writers={w}: appended {r[0]:,.0f} rec/s, incl. final flush {r[1]:,.0f} rec/s", flush=True)
        if "putget" in which:
            r = putget(f"{d}/putget")
            print(f"local put(await_durable=False) {r[0]:,.0f} ops/s; get from arenas {r[1]:,.0f} ops/s; "
                  f"get from L0 {r[2]:,.0f} ops/s; durable put {r[3]:,.0f} ops/s", flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
