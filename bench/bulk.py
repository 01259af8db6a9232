"""Bulk-load throughput: ``python -m bench.bulk [--records N] [--repeat 3]
[--moto] [--workers 1,2] [--json PATH]``.

The same N records (16-byte unique keys in random order, 100-byte random
values), loaded into a fresh, empty database each run, durable at the end:

(a) ``put_many`` through the write path (batches of 100k, then ``flush()``:
    durable in the WAL);
(b) one ``SstWriter`` in this process + ``db.ingest`` (durable once the
    ingest returns: the manifest lists the load);
(c) ``shaledb.dask.bulk_load`` on a ``distributed.LocalCluster`` of 1 and
    of 2 worker processes (1 thread each); the records are generated on the
    workers, block by block (the client never holds them), and persisted in
    the workers' memory, the cluster started and warmed up, before the clock
    starts;
(d) RocksDB (rocksdict): sort the keys (NumPy), ``SstFileWriter`` in key
    order, ``Rdict.ingest_external_file`` (durable when it returns), always
    on a local directory.

Prints records/s, median of ``--repeat`` runs (and CPU seconds of (a), (b),
(d) over the timed section: this process and the Db's flusher process), and the ratios the goals are
about: (b)/(a), (b)/(d) and (c, 2 workers)/(c, 1 worker).  ``--moto`` runs
ShaleDB against a moto S3 server on loopback (RocksDB stays local).
``--manifest N`` only measures the manifest codec with N ingested SSTs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import numpy as np

from bench.common import machine_info, write_json

KEY, VALUE = 16, 100
REC = KEY + VALUE
_MUL = 0x9E3779B97F4A7C15


def records(lo: int, hi: int) -> np.ndarray:
    """Records ``lo:hi`` as an ``(hi-lo, 116)`` uint8 array: the same bytes
    wherever they are made (8 random bytes + the big-endian permuted index
    make a unique key; 100 random bytes of value)."""
    n = hi - lo
    out = np.empty((n, REC), dtype=np.uint8)
    rng = np.random.default_rng(lo)
    out[:, :8] = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    with np.errstate(over="ignore"):
        perm = np.arange(lo, hi, dtype=np.uint64) * np.uint64(_MUL)
    out[:, 8:16] = perm.astype(">u8").view(np.uint8).reshape(n, 8)
    out[:, 16:] = rng.integers(0, 256, size=(n, VALUE), dtype=np.uint8)
    return out


def columns(recs: np.ndarray):
    """``(keys, values)`` as (data, offsets) pairs."""
    n = len(recs)
    k = np.ascontiguousarray(recs[:, :KEY]).reshape(-1)
    v = np.ascontiguousarray(recs[:, KEY:]).reshape(-1)
    return (k, np.arange(n + 1, dtype=np.int64) * KEY), (v, np.arange(n + 1, dtype=np.int64) * VALUE)


class Where:
    """Fresh database roots: local directories, or prefixes of a moto bucket."""

    def __init__(self, moto: bool, tmp: str):
        self.tmp = tmp
        self.server = None
        self.store_options: dict = {}
        if moto:
            from shaledb.storage.testing import S3_TEST_CREDENTIALS, MotoServer

            os.environ.update(S3_TEST_CREDENTIALS)
            self.server = MotoServer().start()
            self.server.create_bucket("bench-bulk")
            self.store_options = {"endpoint_url": self.server.endpoint_url}

    def new_root(self) -> str:
        name = "db-" + uuid.uuid4().hex[:10]
        if self.server is not None:
            return f"s3://bench-bulk/{name}"
        return os.path.join(self.tmp, name)

    def open(self, root: str):
        import shaledb

        return shaledb.open(root, compactor=False, store_options=self.store_options, max_unflushed_bytes=1 << 30)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flusher_pid(db) -> int | None:
    try:
        return int(db.status()["pid"])
    except Exception:  # noqa: BLE001 - a status without the pid: count this process only
        return None


def cpu_seconds(pid: int | None = None) -> tuple[float, float]:
    """CPU time of this process, and of the flusher process ``pid`` (0 without one)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime, (_proc_cpu(pid) if pid else 0.0)


def settle(pid: int | None, quiet: float = 0.3, limit: float = 10.0) -> None:
    """Wait until the flusher process ``pid`` is idle (no CPU tick for
    ``quiet`` seconds, at most ``limit`` s): a fresh Db's flusher loads its
    kernels on a background thread for about a second of CPU, which would
    otherwise be timed (and take a core) in whatever runs first."""
    if not pid:
        return
    deadline = time.monotonic() + limit
    last, since = _proc_cpu(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = _proc_cpu(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


CPU: dict[str, list[float]] = {}  # this process
FLUSHER_CPU: dict[str, list[float]] = {}  # the Db's flusher process (idle ticks included)


def _cpu(name: str, c0: tuple[float, float], pid: int | None = None) -> None:
    c1 = cpu_seconds(pid)
    CPU.setdefault(name, []).append(c1[0] - c0[0])
    FLUSHER_CPU.setdefault(name, []).append(c1[1] - c0[1])


def run_put_many(where: Where, recs: np.ndarray, batch: int = 100_000) -> float:
    root = where.new_root()
    with where.open(root) as db:
        pid = flusher_pid(db)
        settle(pid)
        c0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        for a in range(0, len(recs), batch):
            k, v = columns(recs[a : a + batch])
            db.put_many(k, v, await_durable=False)
        db.flush()
        dt = time.perf_counter() - t0
        _cpu("put_many", c0, pid)
    return dt


def run_sst_writer(where: Where, recs: np.ndarray, batch: int = 1_000_000) -> float:
    from shaledb.bulk import SstWriter

    root = where.new_root()
    with where.open(root) as db:
        pid = flusher_pid(db)
        settle(pid)
        c0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        with SstWriter(root, store_options=where.store_options, memory_bytes=1 << 30) as w:
            for a in range(0, len(recs), batch):
                w.add(*columns(recs[a : a + batch]))
            descs = w.finish()
        db.ingest(descs)
        dt = time.perf_counter() - t0
        _cpu("sst_writer", c0, pid)
        assert db.get(bytes(recs[len(recs) // 2, :KEY])) == bytes(recs[len(recs) // 2, KEY:])
    return dt


def _block(lo: int, hi: int) -> np.ndarray:
    from bench.bulk import records as make

    return make(lo, hi)


def dask_records(n: int, chunk: int):
    import dask
    import dask.array as da

    blocks = [da.from_delayed(dask.delayed(_block)(a, min(n, a + chunk)), shape=(min(n, a + chunk) - a, REC),
                              dtype=np.uint8) for a in range(0, n, chunk)]
    return da.concatenate(blocks, axis=0)


def run_dask(where: Where, client, n: int, workers: int, chunk: int) -> float:
    import distributed

    from shaledb.dask import bulk_load

    root = where.new_root()
    with where.open(root) as db:
        data = client.persist(dask_records(n, chunk))  # the records sit in the workers' memory, as
        distributed.wait(data)  # (a), (b) and (d) have them in this process's before the clock starts
        t0 = time.perf_counter()
        bulk_load(root, data, key=slice(0, KEY), value=slice(KEY, REC), db=db, client=client,
                  partitions=2 * workers, store_options=where.store_options, memory_bytes=1 << 30)
        return time.perf_counter() - t0


def run_rocksdb(tmp: str, recs: np.ndarray) -> float:
    from rocksdict import Options, Rdict, SstFileWriter

    d = os.path.join(tmp, "rocks-" + uuid.uuid4().hex[:8])
    os.makedirs(d)
    db = Rdict(os.path.join(d, "db"), Options(raw_mode=True))
    c0 = cpu_seconds()
    try:
        t0 = time.perf_counter()
        keys = np.ascontiguousarray(recs[:, :KEY]).view(f"S{KEY}").ravel()
        order = np.argsort(keys, kind="stable")  # SstFileWriter takes keys in order
        kb = np.ascontiguousarray(recs[order, :KEY]).tobytes()
        vb = np.ascontiguousarray(recs[order, KEY:]).tobytes()
        w = SstFileWriter(Options(raw_mode=True))
        path = os.path.join(d, "load.sst")
        w.open(path)
        for i in range(len(recs)):
            w[kb[i * KEY : (i + 1) * KEY]] = vb[i * VALUE : (i + 1) * VALUE]
        w.finish()
        db.ingest_external_file([path])
        dt = time.perf_counter() - t0
        mid = len(recs) // 2
        assert db[bytes(recs[mid, :KEY])] == bytes(recs[mid, KEY:])
        _cpu("rocksdb", c0)
        return dt
    finally:
        db.close()
        shutil.rmtree(d, ignore_errors=True)


def manifest_figures(n_ssts: int, repeat: int = 3) -> dict:
    """Encode/decode time and size of a manifest listing ``n_ssts`` ingested
    SSTs (one sorted run; 16-byte first/last keys, as a 100-worker load of
    1000 SSTs each would leave), with the model's own codec."""
    from shaledb.format.enums import ManifestFormat
    from shaledb.format.keys import new_sst_id
    from shaledb.manifest.model import Manifest, SortedRun, SstRef, decode_manifest, encode_manifest

    seq = 1_000_000
    keys = records(0, 2 * n_ssts)[:, :KEY]
    keys = np.sort(np.ascontiguousarray(keys).view(f"S{KEY}").ravel())
    refs = tuple(SstRef(new_sst_id(), bytes(keys[2 * i]), bytes(keys[2 * i + 1]), 64 << 20, seq, seq, 550_000,
                        global_seq=seq) for i in range(n_ssts))
    m = Manifest(writer_epoch=3, compactor_epoch=2, next_wal_id=10, replay_after_wal_id=9, last_l0_seq=seq,
                 sorted_runs=(SortedRun(1, refs),), format_version=ManifestFormat.V2)
    enc, dec = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        raw = encode_manifest(m)
        enc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        back = decode_manifest(raw, "bench")
        dec.append(time.perf_counter() - t0)
    assert back == m
    return {"ssts": n_ssts, "bytes": len(raw), "bytes_per_sst": len(raw) / n_ssts,
            "encode_s": statistics.median(enc), "decode_s": statistics.median(dec)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", default="1,2", help="LocalCluster sizes for (c); empty to skip")
    p.add_argument("--chunk", type=int, default=250_000, help="records per input block of (c)")
    p.add_argument("--moto", action="store_true", help="ShaleDB against a moto S3 server on loopback")
    p.add_argument("--skip", default="", help="comma-separated of put_many,sst_writer,dask,rocksdb")
    p.add_argument("--manifest", type=int, default=0, metavar="N",
                   help="only measure the manifest codec with N ingested SSTs (e.g. 100000)")
    p.add_argument("--json", default=None, metavar="PATH")
    a = p.parse_args(argv)
    if a.manifest:
        fig = manifest_figures(a.manifest, a.repeat)
        print(f"manifest with {fig['ssts']:,} ingested SSTs: {fig['bytes'] / 1e6:.1f} MB "
              f"({fig['bytes_per_sst']:.0f} B/SST), encode {fig['encode_s']:.2f} s, decode {fig['decode_s']:.2f} s "
              f"(median of {a.repeat})")
        if a.json:
            write_json(a.json, {"bench": "bulk-manifest", **fig, "machine": machine_info()})
        return 0
    skip = set(filter(None, a.skip.split(",")))
    n = a.records
    tmp = tempfile.mkdtemp(prefix="shaledb-bench-bulk-")
    where = Where(a.moto, tmp)
    times: dict[str, list[float]] = {}
    try:
        import shaledb.kernels

        shaledb.kernels.warmup()
        recs = records(0, n)
        runs = [("put_many", lambda: run_put_many(where, recs)), ("sst_writer", lambda: run_sst_writer(where, recs)),
                ("rocksdb", lambda: run_rocksdb(tmp, recs))]
        run_sst_writer(where, recs[: min(n, 20_000)])  # warm-up: numba caches, imports
        CPU.clear()
        FLUSHER_CPU.clear()
        for rep in range(a.repeat):
            for name, fn in runs:
                if name in skip:
                    continue
                times.setdefault(name, []).append(fn())
                print(f"  run {rep + 1}: {name:10s} {n / times[name][-1] / 1e6:6.2f} M rec/s", file=sys.stderr)
        del recs
        if "dask" not in skip:
            for w in [int(x) for x in a.workers.split(",") if x]:
                import distributed

                with distributed.LocalCluster(n_workers=w, processes=True, threads_per_worker=1,
                                              dashboard_address=None) as cluster, distributed.Client(cluster) as c:
                    run_dask(where, c, min(n, 20_000), w, a.chunk)  # warm-up on the workers
                    for rep in range(a.repeat):
                        name = f"dask_{w}w"
                        times.setdefault(name, []).append(run_dask(where, c, n, w, a.chunk))
                        print(f"  run {rep + 1}: {name:10s} {n / times[name][-1] / 1e6:6.2f} M rec/s",
                              file=sys.stderr)
    finally:
        where.close()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: n / v for k, v in med.items()}
    print(f"\nbulk load of {n:,} records (16 B keys, 100 B values), {'moto S3' if a.moto else 'local directory'}"
          f", median of {a.repeat}:")
    cpu = {k: statistics.median(v) for k, v in CPU.items()}
    fcpu = {k: statistics.median(v) for k, v in FLUSHER_CPU.items()}
    for k, r in rate.items():
        extra = f", CPU {cpu[k]:.2f} s here + {fcpu[k]:.2f} s flusher" if k in cpu else ""
        print(f"  {k:12s} {r / 1e6:7.2f} M rec/s  ({med[k]:.2f} s wall{extra})")
    ratios = {}
    for label, x, y in (("sst_writer / put_many", "sst_writer", "put_many"),
                        ("sst_writer / rocksdb", "sst_writer", "rocksdb"),
                        ("dask 2 workers / 1 worker", "dask_2w", "dask_1w")):
        if x in rate and y in rate:
            ratios[label] = rate[x] / rate[y]
            print(f"  {label:28s} {ratios[label]:.2f}x")
    tot = {k: cpu[k] + fcpu.get(k, 0.0) for k in cpu}
    for label, x, y in (("CPU: put_many / sst_writer", "put_many", "sst_writer"),
                        ("CPU: rocksdb / sst_writer", "rocksdb", "sst_writer")):
        if x in tot and y in tot:
            ratios[label] = tot[x] / tot[y]
            print(f"  {label:28s} {ratios[label]:.2f}x (CPU seconds, flusher included)")
    if a.json:
        write_json(a.json, {"bench": "bulk", "records": n, "moto": a.moto, "repeat": a.repeat, "seconds": times,
                            "median_seconds": med, "records_per_s": rate,
                            "cpu_seconds": CPU, "flusher_cpu_seconds": FLUSHER_CPU, "ratios": ratios,
                            "machine": machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
