"""Compaction throughput: ``python -m bench.compact [--records N] [--l0 K]
[--workers 1,2] [--repeat 3] [--profile] [--json PATH]``.

Builds one database of N records (16-byte keys, ``--value-size`` random
value bytes, 100 by default; random key order) as K overlapping L0 SSTs with the real write path (``put_many``, one
``flush(memtable=True)`` per L0), then, on a fresh copy of that directory
for every run, times ``db.compact(full=True)`` through the engine's
compactor service with ``compaction_workers`` = each value of ``--workers``.
Prints MB/s of input (the L0 bytes read) overall and per merging process,
median of ``--repeat`` runs.  ``--profile`` runs one key range of the job
under cProfile in this process and splits its time into fetch, decode,
merge, encode and upload.  The first compaction of a Db with workers > 1
also pays for starting the worker pool (spawned interpreters); it is
counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from bench.common import generate_dataset, machine_info, write_json

MB = 1e6


def build(root: str, records: int, l0: int, batch: int = 100_000, value_size: int = 100) -> dict:
    """Write ``records`` as ``l0`` L0 SSTs; returns sizes and seconds."""
    import shaledb

    ds = generate_dataset(records, value_size=value_size)
    batch = max(1, min(batch, (64 << 20) // max(1, value_size + 16)))  # a call of at most ~64 MiB
    per = -(-records // l0)
    t0 = time.perf_counter()
    db = shaledb.open(root, wal=False, compactor=False, l0_sst_bytes=1 << 30, max_unflushed_bytes=2 << 30,
                      arena_bytes=256 << 20)
    try:
        for a in range(0, records, per):
            b = min(records, a + per)
            for s in range(a, b, batch):
                e = min(b, s + batch)
                ko, vo = ds.keys_offs[s : e + 1], ds.vals_offs[s : e + 1]
                db.put_many((ds.keys_data[ko[0] : ko[-1]], ko - ko[0]), (ds.vals_data[vo[0] : vo[-1]], vo - vo[0]),
                            await_durable=False)
            db.flush(memtable=True)
    finally:
        db.close()
    return {"records": records, "l0": l0, "value_size": value_size, "build_seconds": time.perf_counter() - t0}


def compact_once(src: str, work: str, workers: int) -> dict:
    """``db.compact(full=True)`` on a copy of ``src`` with ``workers``."""
    import shaledb

    root = os.path.join(work, f"run-{workers}")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(src, root)
    db = shaledb.open(root, wal=False, compactor=True, compaction_workers=workers, compaction_interval=3600.0,
                      gc_interval=3600.0, l0_compaction_threshold=64, l0_max_ssts=64)
    try:
        t0 = time.perf_counter()
        rep = db.compact(full=True)
        wall = time.perf_counter() - t0
    finally:
        db.close()
        shutil.rmtree(root, ignore_errors=True)
    procs = max(1, rep["workers"])
    return dict(rep, wall=wall, processes=procs,
                mb_s=rep["bytes_in"] / MB / rep["seconds"], mb_s_per_process=rep["bytes_in"] / MB / rep["seconds"] / procs)


def _warm(_):
    import shaledb.compact.executor  # noqa: F401 - what a worker imports for its first range
    import shaledb.kernels.merge  # noqa: F401

    return os.getpid()


def pool_start_seconds(workers: int) -> float:
    """Seconds to start a subcompaction pool of ``workers`` (spawned
    interpreters importing the engine) in this process: what the first
    compaction of a Db with workers > 1 pays on top of the merge."""
    from shaledb.compact.executor import new_pool

    t0 = time.perf_counter()
    pool = new_pool(workers)
    try:
        futs = [pool.submit(_warm, i) for i in range(workers)]
        for f in futs:
            f.result()
        return time.perf_counter() - t0
    finally:
        pool.shutdown(wait=True)


_PARTS = (  # (category, file suffix, function): cumulative time of these calls
    ("fetch", "storage/local.py", "get_range"),
    ("fetch", "storage/s3.py", "get_range"),
    ("read (fetch + decode)", "sst/reader.py", "iter_range"),
    ("merge kernel", "kernels/merge.py", "merge_runs"),
    ("dedupe kernel", "kernels/dedupe.py", "dedupe_sorted"),
    ("concat", "kernels/sort.py", "concat_runs"),
    ("gather", "kernels/block.py", "gather_records"),
    ("bound search (python)", "compact/executor.py", "cut"),
    ("encode", "sst/writer.py", "build_ssts"),
    ("upload", "storage/local.py", "put"),
    ("upload", "storage/s3.py", "put"),
    ("total", "compact/executor.py", "merge_range"),
)


def profile_range(src: str, work: str, parts: int) -> dict:
    """cProfile of the first of ``parts`` key ranges of the full job, merged here."""
    import cProfile
    import pstats

    from shaledb.compact.executor import MergeParams, merge_range, split_ranges
    from shaledb.compact.scheduler import SizeTieredScheduler, job_ssts
    from shaledb.manifest.store import ManifestStore
    from shaledb.storage import open_store

    root = os.path.join(work, "profile")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(src, root)
    try:
        store = open_store(root)
        m = ManifestStore.open_reader(store).current
        (job,) = SizeTieredScheduler().plan(m, full=True)
        sources = job_ssts(m, job)
        start, end = split_ranges(sources, parts, store)[0]
        prof = cProfile.Profile()
        prof.enable()
        merge_range(store, sources, start, end, MergeParams(bottom=True))
        prof.disable()
        st = pstats.Stats(prof).stats
        out: dict[str, float] = {}
        for (fname, _line, func), (_cc, _nc, _tt, ct, _callers) in st.items():
            for cat, suffix, name in _PARTS:
                if func == name and fname.endswith(suffix):
                    out[cat] = out.get(cat, 0.0) + ct
        if "read (fetch + decode)" in out:
            out["decode"] = out.pop("read (fetch + decode)") - out.get("fetch", 0.0)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compact", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=2_000_000)
    p.add_argument("--l0", type=int, default=8, help="L0 SSTs to build (overlapping key ranges)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (random)")
    p.add_argument("--workers", default="1,2", help="comma-separated compaction_workers values")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="cProfile one key range (of 2) in this process")
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    p.add_argument("--json", default=None, metavar="PATH")
    a = p.parse_args(argv)
    workers = [int(w) for w in a.workers.split(",")]
    work = a.dir or tempfile.mkdtemp(prefix="shaledb-bench-compact-")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "src")
    report: dict = {"machine": machine_info(), "runs": {}}
    try:
        shutil.rmtree(src, ignore_errors=True)
        report["build"] = build(src, a.records, a.l0, value_size=a.value_size)
        print(f"built {a.records:,} records as {a.l0} L0 SSTs in {report['build']['build_seconds']:.1f} s", flush=True)
        for _ in range(a.repeat):
            for w in workers:
                r = compact_once(src, work, w)
                report["runs"].setdefault(str(w), []).append(r)
                print(f"workers={w}: {r['bytes_in'] / MB:.0f} MB in {r['seconds']:.2f} s "
                      f"(ranges {r['ranges']}, processes {r['processes']}): {r['mb_s']:.0f} MB/s, "
                      f"{r['mb_s_per_process']:.0f} MB/s per process", flush=True)
        spawn = {str(w): pool_start_seconds(w) for w in workers if w > 1}
        report["pool_start_seconds"] = spawn
        for w, sec in spawn.items():
            print(f"starting a pool of {w} workers here: {sec:.2f} s (counted in the workers={w} figures)")
            for r in report["runs"][w]:
                r["mb_s_per_process_without_pool_start"] = r["bytes_in"] / MB / max(1e-9, r["seconds"] - sec) / r["processes"]
        report["median"] = {
            w: {k: statistics.median(r[k] for r in runs) for k in ("seconds", "mb_s", "mb_s_per_process")}
            for w, runs in report["runs"].items()
        }
        for w, med in report["median"].items():
            extra = ""
            if w in spawn:
                est = statistics.median(r["mb_s_per_process_without_pool_start"] for r in report["runs"][w])
                med["mb_s_per_process_without_pool_start"] = est
                extra = f" ({est:.0f} MB/s per process without the pool start)"
            print(f"median workers={w}: {med['seconds']:.2f} s, {med['mb_s']:.0f} MB/s, "
                  f"{med['mb_s_per_process']:.0f} MB/s per process{extra}")
        if a.profile:
            prof = profile_range(src, work, 2)
            report["profile"] = prof
            total = prof.get("total", 0.0) or 1.0
            print("one range of 2, in-process, cProfile (cumulative s; profiling slows Python code):")
            for k, v in sorted(prof.items(), key=lambda kv: -kv[1]):
                print(f"  {k:24s} {v:7.2f} s  {100 * v / total:5.1f}%")
    finally:
        if a.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        write_json(a.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
