"""Point reads, ShaleDB next to RocksDB (rocksdict), in one process, rounds alternating.

    python -m bench.point_reads --records 1000000            # builds both databases under --dir
    python -m bench.point_reads --records 10000000 --dir /tmp/pr --keep

Both databases hold the same ``--records`` keys (``key%013d``, 16 bytes) with
the same random 100-byte values (checked: both must answer the same), fully compacted (ShaleDB: one sorted run; RocksDB:
compact_range).  Then, after a fresh open of each, ``--rounds`` rounds: each
round runs ``--reads`` random gets on ShaleDB, then the same gets on RocksDB,
then one batch read of the same keys on each (ShaleDB ``db.get_many``,
rocksdict ``Rdict.get(list)``: RocksDB's multi_get).  The first round is
"cold" (right after open: page faults, SST opens), the others "warm".
Last, ShaleDB alone: ``get_many`` of ``--batch-sizes`` random keys (20k,
200k, 1M by default), as a numpy ``(data, offsets)`` pair and as a list.

Rates are given per CPU second of this process (``time.process_time``) and
per wall second: on a busy machine the CPU figure is the one that compares
engines fairly (wall time includes the time the scheduler gave to others).
Medians over the warm rounds; the ratio line is ShaleDB / RocksDB.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import time


def _build_shaledb(path: str, n: int, seed: int) -> None:
    import numpy as np

    import shaledb

    rng = np.random.default_rng(seed)
    with shaledb.open(path, wal=False) as db:
        for s in range(0, n, 50_000):
            m = min(50_000, n - s)
            db.put_many([b"key%013d" % i for i in range(s, s + m)], [rng.bytes(100) for _ in range(m)],
                        await_durable=False)
        db.flush(memtable=True)
        db.compact(full=True)


def _build_rocksdb(path: str, n: int, seed: int) -> None:
    import numpy as np
    from rocksdict import Rdict, WriteBatch

    rng = np.random.default_rng(seed)
    db = Rdict(path)
    for s in range(0, n, 50_000):
        wb = WriteBatch()
        for i in range(s, min(n, s + 50_000)):
            wb.put(b"key%013d" % i, rng.bytes(100))
        db.write(wb)
    db.compact_range(None, None)
    db.close()


def _loop(get, keys):
    lat = []
    c0, w0 = time.process_time(), time.perf_counter()
    for k in keys:
        a = time.perf_counter_ns()
        get(k)
        lat.append(time.perf_counter_ns() - a)
    c, w = time.process_time() - c0, time.perf_counter() - w0
    lat.sort()
    return {"cpu": len(keys) / c, "wall": len(keys) / w, "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}


def _batch(fn, keys):
    c0, w0 = time.process_time(), time.perf_counter()
    fn(keys)
    return {"cpu": len(keys) / (time.process_time() - c0), "wall": len(keys) / (time.perf_counter() - w0)}


def _batch_forms(db, rng, records: int, n: int) -> tuple[float, float]:
    """CPU keys/s of ``db.get_many`` over ``n`` random keys, numpy pair and
    list forms (best of 3 each, the pair built outside the clock)."""
    import numpy as np

    keys = [b"key%013d" % rng.randrange(records) for _ in range(n)]
    kd = np.frombuffer(b"".join(keys), dtype=np.uint8)
    ko = np.arange(n + 1, dtype=np.int64) * 16
    vd, vo, found = db.get_many((kd, ko))
    if not found.all() or db.get_many(keys[:100]) != [vd[vo[i]:vo[i + 1]].tobytes() for i in range(min(n, 100))]:
        raise SystemExit("get_many forms disagree: a wrong read")
    pair = max(_batch(lambda _k: db.get_many((kd, ko)), keys)["cpu"] for _ in range(3))
    lst = max(_batch(db.get_many, keys)["cpu"] for _ in range(3))
    return pair, lst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--reads", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", default=None, help="where the databases go (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep (and reuse) the databases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-sizes", default="20000,200000,1000000",
                   help="ShaleDB only, after the rounds: get_many of this many random keys as a numpy "
                        "(data, offsets) pair and as a list, best of 3 each (comma-separated; '' to skip)")
    args = p.parse_args(argv)

    import tempfile

    import shaledb
    from rocksdict import Rdict

    root = args.dir or tempfile.mkdtemp(prefix="shaledb-point-reads-")
    sp, rp = os.path.join(root, f"shaledb-{args.records}"), os.path.join(root, f"rocksdb-{args.records}")
    try:
        for path, build in ((sp, _build_shaledb), (rp, _build_rocksdb)):
            if not os.path.exists(path):
                t = time.perf_counter()
                build(path, args.records, args.seed)
                print(f"built {path} in {time.perf_counter() - t:.1f} s")
        rng = random.Random(args.seed + 1)
        keys = [b"key%013d" % rng.randrange(args.records) for _ in range(args.reads)]
        t = time.perf_counter()
        s = shaledb.open(sp)
        s_open = time.perf_counter() - t
        t = time.perf_counter()
        r = Rdict(rp)
        r_open = time.perf_counter() - t
        res: dict = {}
        try:
            for rnd in range(args.rounds):
                tag = "cold" if rnd == 0 else "warm"
                res.setdefault(("shaledb", tag), []).append(_loop(s.get, keys))
                res.setdefault(("rocksdb", tag), []).append(_loop(r.get, keys))
                res.setdefault(("shaledb", "batch"), []).append(_batch(s.get_many, keys))
                res.setdefault(("rocksdb", "batch"), []).append(_batch(r.get, keys))
            if s.get_many(keys) != r.get(keys):  # same seed: the same values in both
                raise SystemExit("the engines disagree on the values: a wrong read")
            sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
            batches = [(n, *_batch_forms(s, rng, args.records, n)) for n in sizes]
        finally:
            s.close()
            r.close()
        print(f"{args.records:,} records, {args.reads:,} random gets per round, {args.rounds} rounds "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        print(f"open: shaledb {s_open * 1e3:.0f} ms, rocksdb {r_open * 1e3:.0f} ms")

        def med(eng, tag, field):
            return statistics.median(x[field] for x in res[(eng, tag)])

        for eng in ("shaledb", "rocksdb"):
            c = res[(eng, "cold")][0]
            print(f"{eng:8s} cold  get: {c['cpu']:>10,.0f}/s cpu {c['wall']:>10,.0f}/s wall  "
                  f"p50 {c['p50'] / 1e3:.1f} us  p99 {c['p99'] / 1e3:.1f} us")
            print(f"{eng:8s} warm  get: {med(eng, 'warm', 'cpu'):>10,.0f}/s cpu {med(eng, 'warm', 'wall'):>10,.0f}/s wall  "
                  f"p50 {med(eng, 'warm', 'p50') / 1e3:.1f} us  p99 {med(eng, 'warm', 'p99') / 1e3:.1f} us")
            print(f"{eng:8s} batch get: {med(eng, 'batch', 'cpu'):>10,.0f}/s cpu {med(eng, 'batch', 'wall'):>10,.0f}/s wall")
        sw, rw = med("shaledb", "warm", "cpu"), med("rocksdb", "warm", "cpu")
        print(f"ratios (cpu): warm get {sw / rw:.2f}x, cold get "
              f"{res[('shaledb', 'cold')][0]['cpu'] / res[('rocksdb', 'cold')][0]['cpu']:.2f}x, "
              f"get_many vs multi_get {med('shaledb', 'batch', 'cpu') / med('rocksdb', 'batch', 'cpu'):.2f}x, "
              f"get_many vs own warm get {med('shaledb', 'batch', 'cpu') / sw:.1f}x")
        for n, pair, lst in batches:
            print(f"shaledb get_many of {n:,} random keys: numpy pair {pair:>10,.0f} keys/s cpu "
                  f"({pair / sw:.1f}x own warm get), list {lst:>10,.0f} keys/s cpu ({lst / sw:.1f}x)")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
