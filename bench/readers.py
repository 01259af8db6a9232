"""Read-only readers while a writer ingests (docs/readers.md).

    python -m bench.readers --readers 2 --duration 5 [--records 50000] [--poll 0.1] [--json PATH]

Per engine, on a local directory: prefill ``--records`` records (flushed
to L0), then for ``--duration`` seconds one writer ingests batches of new
records at ``--rate`` records/s (the same for every engine, so the readers
have the same WAL to follow), each batch followed by a marker put and a WAL
flush, while
``--readers`` reader processes do random gets of prefilled keys.  Reported:

* reader gets/s (all readers together, and per reader);
* freshness lag: the time from the writer's ``flush()`` returning (the
  marker is durable) to a reader first seeing that marker (p50/p95/max);
* ShaleDB only: what a snapshot costs (``db.snapshot()`` + get + close,
  against a bare ``flush(memtable=True)``) and one reader's get latency
  against the writer's own.

Peers measured in the same run: slatedb's ``DbReader`` (UniFFI binding,
``DbReaderBuilder`` in FOLLOW_LATEST mode with the same poll interval).
rocksdict has no reader that follows a live writer across processes
(secondary instances need ``try_catch_up_with_primary`` and the writer's
local files) and is left out.  Figures on the shared 2-core machine are
noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

SPAWN = multiprocessing.get_context("spawn")
MARKER = b"\x00fresh"


def _key(i: int) -> bytes:
    return b"k%011d" % i


def _reader_loop(get, n, stop, q):
    """Random gets until ``stop``; every 200 gets one get of the marker.
    Sends (gets, seconds, {marker: first time seen})."""
    rng = np.random.default_rng(os.getpid())
    seen = {}
    gets = 0
    q.put("ready")
    t0 = time.perf_counter()
    while not stop.is_set():
        for i in rng.integers(0, n, 200).tolist():
            get(_key(i))
        gets += 200
        m = get(MARKER)
        if m is not None and int(m) not in seen:
            seen[int(m)] = time.time()
    q.put((gets, time.perf_counter() - t0, seen))


def _shaledb_reader(url, poll, n, stop, q):
    import shaledb

    with shaledb.open_reader(url, poll_interval=poll) as r:
        _reader_loop(r.get, n, stop, q)


def _slatedb_reader(path, poll, n, stop, q):
    import asyncio

    from slatedb.uniffi import DbReaderBuilder, ObjectStore, ReaderMode, ReaderOptions

    loop = asyncio.new_event_loop()
    b = DbReaderBuilder(path, ObjectStore.resolve("file:///"))
    b.with_options(ReaderOptions(manifest_poll_interval_ms=max(1, int(poll * 1000)), checkpoint_lifetime_ms=600_000,
                                 max_memtable_bytes=64 << 20, skip_wal_replay=False))
    b.with_reader_mode(ReaderMode.FOLLOW_LATEST())
    r = loop.run_until_complete(b.build())
    try:
        _reader_loop(lambda k: loop.run_until_complete(r.get(k)), n, stop, q)
    finally:
        loop.run_until_complete(r.shutdown())
        loop.close()


class _ShaleWriter:
    name = "shaledb"

    def __init__(self, root):
        import shaledb

        self.url = os.path.join(root, "shaledb")
        self.db = shaledb.open(self.url)
        self.reader = _shaledb_reader
        self.where = self.url

    def put_many(self, keys, values):
        self.db.put_many(keys, values, await_durable=False)

    def put(self, k, v):
        self.db.put(k, v, await_durable=False)

    def flush(self, memtable=False):
        self.db.flush(memtable=memtable)

    def close(self):
        self.db.close()


class _SlateWriter:
    name = "slatedb"

    def __init__(self, root):
        import asyncio

        from slatedb.uniffi import DbBuilder, ObjectStore

        self.loop = asyncio.new_event_loop()
        self.where = os.path.abspath(os.path.join(root, "slatedb")).lstrip("/")
        self.db = self.loop.run_until_complete(DbBuilder(self.where, ObjectStore.resolve("file:///")).build())
        self.reader = _slatedb_reader

    def put_many(self, keys, values):
        from slatedb.uniffi import WriteBatch

        wb = WriteBatch()
        for k, v in zip(keys, values):
            wb.put(k, v)
        self.loop.run_until_complete(self.db.write(wb))

    def put(self, k, v):
        self.loop.run_until_complete(self.db.put(k, v))

    def flush(self, memtable=False):
        from slatedb.uniffi import FlushOptions, FlushType

        ft = FlushType.MEM_TABLE if memtable else FlushType.WAL
        self.loop.run_until_complete(self.db.flush_with_options(FlushOptions(flush_type=ft)))

    def close(self):
        self.loop.run_until_complete(self.db.shutdown())
        self.loop.close()


def run_engine(cls, root, args) -> dict:
    """Prefill, then readers against an ingesting writer; the figures of one engine."""
    w = cls(root)
    value = b"v" * args.value_size
    procs = []
    stop = SPAWN.Event()
    q = SPAWN.Queue()
    try:
        for lo in range(0, args.records, 10_000):
            ks = [_key(i) for i in range(lo, min(args.records, lo + 10_000))]
            w.put_many(ks, [value] * len(ks))
        w.flush(memtable=True)
        procs = [SPAWN.Process(target=w.reader, args=(w.where, args.poll, args.records, stop, q), daemon=True)
                 for _ in range(args.readers)]
        for p in procs:
            p.start()
        for _ in procs:
            assert q.get(timeout=300) == "ready"
        t0 = time.time()
        durable = {}
        nxt = args.records
        marker = 0
        while time.time() - t0 < args.duration:
            ks = [_key(i) for i in range(nxt, nxt + args.batch)]
            nxt += args.batch
            w.put_many(ks, [value] * len(ks))
            marker += 1
            w.put(MARKER, b"%d" % marker)
            w.flush()
            durable[marker] = time.time()
            if args.rate:  # the same ingest rate for every engine: comparable freshness
                ahead = t0 + (nxt - args.records) / args.rate - time.time()
                if ahead > 0:
                    time.sleep(ahead)
        time.sleep(3 * args.poll + 0.5)  # the last marker's poll window
        stop.set()
        results = [q.get(timeout=300) for _ in procs]
    finally:
        stop.set()
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join(10)
        w.close()
    lags = []
    missed = 0
    for gets, secs, seen in results:
        for m, t in durable.items():
            if m in seen:
                lags.append(seen[m] - t)
            elif m == marker:
                missed += 1
    total = sum(g for g, _, _ in results)
    rate = sum(g / s for g, s, _ in results if s > 0)
    lags.sort()
    pick = (lambda f: lags[min(len(lags) - 1, int(f * len(lags)))] * 1000) if lags else (lambda f: None)
    return {
        "engine": cls.name,
        "readers": args.readers,
        "reader_gets": total,
        "reader_gets_per_s": rate,
        "writer_batches": marker,
        "writer_records_per_s": (nxt - args.records) / args.duration,
        "lag_ms_p50": pick(0.5),
        "lag_ms_p95": pick(0.95),
        "lag_ms_max": lags[-1] * 1000 if lags else None,
        "lag_samples": len(lags),
        "last_marker_unseen_by": missed,
    }


def snapshot_cost(root, reps: int = 15) -> dict:
    """ShaleDB: snapshot() + get + close against flush(memtable=True); reader
    and snapshot get latency against the writer's own (medians)."""
    import shaledb

    url = os.path.join(root, "snapcost")
    db = shaledb.open(url, compactor=False)
    try:
        for i in range(20_000):
            db.put(_key(i), b"v" * 50, await_durable=False)
        db.flush(memtable=True)

        def med(fn):
            xs = []
            for _ in range(reps):
                db.put(_key(1), b"x", await_durable=False)  # a non-empty memtable each time
                a = time.perf_counter()
                fn()
                xs.append(time.perf_counter() - a)
            return statistics.median(xs) * 1000

        def snap():
            s = db.snapshot()
            s.get(_key(1))
            s.close()

        def cp():
            c = db.create_checkpoint()
            db.delete_checkpoint(c.id)

        out = {
            "flush_memtable_ms": med(lambda: db.flush(memtable=True)),
            "flush_wal_ms": med(db.flush),
            "snapshot_get_close_ms": med(snap),
            "checkpoint_create_delete_ms": med(cp),
        }

        def get_us(get):
            xs = []
            for i in range(2000):
                a = time.perf_counter()
                get(_key(i * 7))
                xs.append(time.perf_counter() - a)
            return statistics.median(xs) * 1e6

        with db.snapshot() as s:
            out["snapshot_get_us"] = get_us(s.get)
        out["db_get_us"] = get_us(db.get)
        with shaledb.open_reader(url) as r:
            out["reader_get_us"] = get_us(r.get)
        return out
    finally:
        db.close()


def run_readers(readers: int, duration: float = 5.0, peers=("slatedb",), **overrides) -> dict:
    """The reader benchmark with the default settings (``bench.ingest --readers N``
    calls this): prints its tables and returns the figures."""
    argv = ["--readers", str(readers), "--duration", str(duration), "--peers", "auto" if "slatedb" in peers else "none"]
    for k, v in overrides.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    out: dict = {}
    main(argv, result=out)
    return out


def main(argv=None, result: dict | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readers", type=int, default=2, help="reader processes per engine")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of ingest while readers read")
    p.add_argument("--records", type=int, default=50_000, help="prefilled records")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--batch", type=int, default=1000, help="records per writer batch (then a marker and a flush)")
    p.add_argument("--poll", type=float, default=0.1, help="reader poll interval, seconds")
    p.add_argument("--rate", type=float, default=10_000, help="writer records/s (0: as fast as it goes)")
    p.add_argument("--peers", default="auto", choices=("auto", "none"))
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="shaledb-bench-readers-")
    try:
        engines = [_ShaleWriter]
        if args.peers == "auto":
            try:
                import slatedb.uniffi  # noqa: F401

                engines.append(_SlateWriter)
            except ImportError:
                print("slatedb not installed: no peer")
        rows = [run_engine(e, root, args) for e in engines]
        cost = snapshot_cost(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    from bench.common import format_table, write_json

    heads = ["engine", "readers", "reader gets/s", "lag p50 ms", "lag p95 ms", "lag max ms", "samples", "writer rec/s"]
    table = [[r["engine"], r["readers"], f"{r['reader_gets_per_s']:.0f}",
              *(f"{r[k]:.0f}" if r[k] is not None else "-" for k in ("lag_ms_p50", "lag_ms_p95", "lag_ms_max")),
              r["lag_samples"], f"{r['writer_records_per_s']:.0f}"] for r in rows]
    print(format_table(heads, table, title=f"readers while one writer ingests (poll {args.poll} s, {args.duration} s, writer rate {args.rate or 'max'})"))
    print(format_table(["figure", "value"], [[k, f"{v:.1f}"] for k, v in cost.items()], title="ShaleDB snapshot cost"))
    figures = {"args": vars(args), "engines": rows, "snapshot_cost": cost}
    if result is not None:
        result.update(figures)
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
