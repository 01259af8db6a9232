"""The multiprocess ingest benchmark: ShaleDB side by side with SlateDB and RocksDB.

    python -m bench.ingest                       # local directory, ~1 minute on 2 cores
    python -m bench.ingest --moto                # the same against a moto S3 server on loopback
    python -m bench.ingest --store s3://bucket/prefix --endpoint http://host:port
    python -m bench.ingest --records 100000 --peers none --json out.json

One data set (``--records`` unique keys of ``--key-size`` bytes, random
``--value-size``-byte values, from ``--seed``) is generated once as numpy
``(uint8 data, int64 offsets)`` pairs and memory-mapped by every engine.  Each
engine then runs, in its own process (``bench._peers.driver``), the phases

    prefill  N records in batches of --batch, await_durable off
             (ShaleDB: --writers processes, each with a db.writer() handle);
             per-call latency of each batch write (p50, p99, max)
    flush    timed from the end of prefill: everything durable (WAL on) or
             published to L0 (WAL off); prefill+flush is the ingest figure
    close    close right after the flush (records in sorted SSTs): the
             through-close ingest figure; then an untimed reopen
    mixed    --duration seconds of single puts and gets, --put-percentage puts,
             --await-durable on or off; puts overwrite random existing keys with
             their own values, so the content stays known
    read     close and reopen, then --reads random gets of existing keys
             (cold), then the same gets again (warm: three passes, the
             median one reported): once before compact;
             faults/get: the reading process's minor page faults per get
             (fresh pages for values, first touches of mapped files); each
             value is checked by its digest and dropped before the next get
    compact  a major compaction (ShaleDB db.compact(full=True), RocksDB
             compact_range), timed, MB/s of input
    read     the read phase again, on the compacted tree
    get_many the same keys through one batch call (ShaleDB db.get_many,
             RocksDB multi_get), warm, best of three; with its ratio to the
             engine's own warm gets
    scan     one full scan
    scan_arrays  ShaleDB only: a full scan into numpy batches (db.scan_arrays),
             best of three; with its ratio to ShaleDB's own scan and to each
             peer's scan
    gc       ShaleDB db.gc() with gc_min_age=0; space amplification = store
             bytes / live key+value bytes
    close

The shape of the tree (L0, sorted runs, store bytes) is printed after each
phase.  Before the engines, a probe measures the store's durable write
bandwidth (--probe-mib), and ingest is printed as a fraction of it given the
bytes each engine wrote per user byte.  --plot PATH draws ShaleDB's timeline
(bench/plot.py).  Finally an untimed check after a fresh open (sampled gets, a full scan
that checks the count, the order and a digest of every key and value).
Output: one table per phase, memory, the checks, then ShaleDB/peer ratios.
A run whose data is wrong says so and exits 1.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench._peers import PEERS
from bench.common import (
    TreeMemorySampler,
    fmt_bytes,
    fmt_ns,
    fmt_rate,
    fmt_seconds,
    format_table,
    KEY_DISTS,
    VALUE_DISTS,
    generate_mixed,
    machine_info,
    probe_local_write_bandwidth,
    probe_s3_put_bandwidth,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]
#: Default for --peer-records on slatedb: its binding copies bytes one at a time
#: in Python (about 20-50 k records/s), so the full default run would take minutes.
SLATEDB_DEFAULT_RECORDS = 50_000
MOTO_BUCKET = "shaledb-bench"
PHASES = ("prefill", "flush", "ingest_close", "mixed", "read_before_compact", "compact", "read", "get_many", "scan",
          "scan_arrays", "gc", "close")
#: Phases whose tree shape is printed, in order.
TREE_PHASES = ("prefill", "ingest_close", "mixed", "read_before_compact", "compact", "scan", "gc", "close")


# -- arguments ----------------------------------------------------------------


def _positive_int(text: str) -> int:
    v = int(text.replace("_", ""))
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="ShaleDB multiprocess ingest benchmark, side by side with slatedb and rocksdict.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--store", default=None,
                   help="local directory to run in (a fresh shaledb-bench-<id> folder is made inside it; "
                        "default: the current folder) or s3://bucket/prefix")
    p.add_argument("--endpoint", default=None, help="S3 endpoint URL for an s3:// --store")
    p.add_argument("--moto", action="store_true",
                   help="start a moto S3 server on loopback and run every engine against it")
    p.add_argument("--writers", type=_positive_int, default=2, help="ShaleDB writer processes in prefill")
    p.add_argument("--records", type=_positive_int, default=1_000_000, help="records for ShaleDB")
    p.add_argument("--peer-records", default=None,
                   help="records for peers: N for all, or engine=N,... "
                        f"(default: --records for rocksdict, min(--records, {SLATEDB_DEFAULT_RECORDS}) for slatedb)")
    p.add_argument("--key-size", type=_positive_int, default=16, help="key bytes of --key-dist random16")
    p.add_argument("--key-dist", default="random16", choices=KEY_DISTS,
                   help="keys (bench.common.make_keys): random16 (--key-size random bytes), prefixed (8..64 B "
                        "over 64 prefixes of 16..32 B), uuid-text (36 B), timestamp (16 B, nearly in order)")
    p.add_argument("--value-size", type=_positive_int, default=100, help="bytes per value, up to 1 MiB")
    p.add_argument("--value-dist", default="random", choices=VALUE_DISTS,
                   help="values (bench.common.make_values): random (incompressible), text (English-like), "
                        "json (JSON-lines slices)")
    p.add_argument("--compression", default=None, choices=("zstd", "none"),
                   help="ShaleDB's Options.compression (default: the engine's default)")
    p.add_argument("--batch", type=_positive_int, default=10_000, help="records per put_many / write batch")
    p.add_argument("--wal", action=argparse.BooleanOptionalAction, default=True, help="write-ahead log")
    p.add_argument("--await-durable", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed-phase puts wait for durability")
    p.add_argument("--put-percentage", type=float, default=20.0, help="share of puts in the mixed phase")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of the mixed phase")
    p.add_argument("--reads", type=_positive_int, default=None,
                   help="gets in each read pass (cold, warm); default 20000 on a local store, 5000 on S3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="write every figure to PATH")
    p.add_argument("--peers", default="auto",
                   help="comma list of slatedb,rocksdict; 'none' to skip; default: every installed one")
    p.add_argument("--keep", action="store_true", help="keep the store directory / objects")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verify-samples", type=_positive_int, default=1000, help="sampled gets in the final check")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per engine")
    p.add_argument("--readers", type=int, default=0, metavar="N",
                   help="afterwards, N reader processes doing random gets while one writer ingests, per engine "
                        "(bench.readers: reader gets/s, freshness lag; slatedb's DbReader side by side)")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="draw ShaleDB's timeline (records/s, L0, sorted runs, store bytes, stall time; "
                        "sampled once a second during prefill, flush and compact) to PATH (needs matplotlib)")
    p.add_argument("--plot-interval", type=float, default=1.0,
                   help="seconds between timeline samples (each lists the store and asks db.status())")
    p.add_argument("--probe-mib", type=_positive_int, default=256,
                   help="MiB of the durable write bandwidth probe (fsync'd sequential write; on S3 PUTs "
                        "of 8 MiB objects); 0 skips it")
    args = p.parse_args(argv)
    if not args.plot_interval > 0:
        p.error("--plot-interval must be > 0")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    if args.value_size > 1 << 20:
        p.error("--value-size must be at most 1 MiB (1048576)")
    if args.writers < 1:
        p.error("--writers must be >= 1")
    if not 0 <= args.put_percentage <= 100:
        p.error("--put-percentage must be in 0..100")
    if args.moto and args.store and args.store.startswith("s3://"):
        p.error("--moto picks its own bucket; give --store only for a local directory or without --moto")
    if args.endpoint and not (args.store or "").startswith("s3://"):
        p.error("--endpoint needs --store s3://bucket/prefix")
    if args.reads is None:
        args.reads = 5_000 if (args.moto or (args.store or "").startswith("s3://")) else 20_000
    args.peers_list = _resolve_peers(p, args.peers)
    args.records_by_engine = _records_by_engine(p, args)
    return args


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _resolve_peers(p, text: str) -> list[str]:
    text = text.strip().lower()
    if text == "none" or text == "":
        return []
    if text == "auto":
        return [e for e in ("rocksdict", "slatedb") if _installed(e)]
    peers = [x.strip() for x in text.split(",") if x.strip()]
    for e in peers:
        if e not in PEERS:
            p.error(f"unknown peer {e!r} (choose from {', '.join(PEERS)} or none)")
        if not _installed(e):
            p.error(f"peer {e!r} is not installed (pip install {e})")
    return list(dict.fromkeys(peers))


def _records_by_engine(p, args) -> dict[str, int]:
    out = {"shaledb": args.records}
    for e in args.peers_list:
        out[e] = args.records if e != "slatedb" else min(args.records, SLATEDB_DEFAULT_RECORDS)
    if args.peer_records:
        text = args.peer_records.strip()
        try:
            if "=" not in text:
                n = _positive_int(text)
                for e in args.peers_list:
                    out[e] = n
            else:
                for part in text.split(","):
                    name, _, val = part.partition("=")
                    name = name.strip()
                    if name not in PEERS:
                        p.error(f"--peer-records: unknown peer {name!r}")
                    if name in out:
                        out[name] = _positive_int(val.strip())
        except ValueError:
            p.error(f"--peer-records: cannot parse {text!r}")
    return out


# -- stores ---------------------------------------------------------------------


class Stores:
    """Where each engine writes, and the cleanup of it all."""

    def __init__(self, args, run_id: str):
        self.args = args
        self.run_id = run_id
        self.moto = None
        self.proxy = None
        self.kind = "local"
        self.local_root: Path | None = None
        self.scratch: Path | None = None
        self.bucket = self.prefix = self.endpoint = None
        self.env: dict[str, str] = {}

    def setup(self) -> None:
        a = self.args
        if a.moto:
            from shaledb.storage.testing import S3_TEST_CREDENTIALS, MotoServer

            self.env.update(S3_TEST_CREDENTIALS)
            os.environ.update(S3_TEST_CREDENTIALS)
            self.moto = MotoServer().start()
            self.moto.create_bucket(MOTO_BUCKET)
            from bench.s3count import CountingProxy

            self.proxy = CountingProxy(self.moto.endpoint_url).start()
            self.kind, self.bucket, self.endpoint = "s3", MOTO_BUCKET, self.proxy.endpoint_url
            self.prefix = f"run-{self.run_id}"
        elif a.store and a.store.startswith("s3://"):
            bucket, _, prefix = a.store[len("s3://"):].partition("/")
            if not bucket:
                raise SystemExit("--store s3:// needs a bucket: s3://bucket/prefix")
            self.kind, self.bucket, self.endpoint = "s3", bucket, a.endpoint
            self.prefix = "/".join(x for x in (prefix.strip("/"), f"run-{self.run_id}") if x)
        else:
            base = Path(a.store or ".").resolve()
            base.mkdir(parents=True, exist_ok=True)
            self.local_root = base / f"shaledb-bench-{self.run_id}"
            self.local_root.mkdir()
        if self.kind == "s3":
            if self.endpoint:
                self.env["AWS_ENDPOINT_URL"] = self.endpoint
            self.scratch = Path(".").resolve() / f"shaledb-bench-{self.run_id}-local"

    def location(self, engine: str) -> dict:
        if self.kind == "local":
            return {"kind": "local", "path": str(self.local_root / engine)}
        if engine == "rocksdict":  # RocksDB has no object-store backend
            return {"kind": "local", "path": str(self.scratch / engine)}
        loc = {"kind": "s3", "bucket": self.bucket, "prefix": f"{self.prefix}/{engine}", "endpoint": self.endpoint}
        if self.proxy is not None:
            loc["count_endpoint"] = self.proxy.endpoint_url
            loc["list_endpoint"] = self.moto.endpoint_url
        return loc

    def describe(self) -> str:
        if self.kind == "local":
            return f"local directory {self.local_root}"
        where = f"s3://{self.bucket}/{self.prefix}"
        if self.moto:
            return (f"{where} on a moto server at {self.moto.endpoint_url} (started by this run), "
                    f"reached through a request-counting proxy at {self.proxy.endpoint_url}")
        return where + (f" at {self.endpoint}" if self.endpoint else "")

    def cleanup(self) -> None:
        keep = self.args.keep
        try:
            if not keep:
                for d in (self.local_root, self.scratch):
                    if d is not None and d.exists():
                        shutil.rmtree(d, ignore_errors=True)
                if self.kind == "s3" and not self.moto:
                    self._delete_prefix()
        finally:
            if self.proxy is not None:
                self.proxy.stop()
            if self.moto is not None:
                if keep:
                    print(f"note: --keep has no lasting effect with --moto (the server stops now)", file=sys.stderr)
                self.moto.stop()

    def _delete_prefix(self) -> None:
        try:
            import boto3

            client = boto3.client("s3", endpoint_url=self.endpoint)
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + "/"):
                objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                for i in range(0, len(objs), 1000):
                    client.delete_objects(Bucket=self.bucket, Delete={"Objects": objs[i : i + 1000]})
        except Exception as exc:
            print(f"warning: could not delete s3://{self.bucket}/{self.prefix}/: {exc}", file=sys.stderr)


# -- running one engine ------------------------------------------------------------


def run_engine(engine: str, args, stores: Stores, data_dir: Path, work: Path, show_bars: bool) -> dict:
    n = args.records_by_engine[engine]
    spec = {
        "engine": engine,
        "n": n,
        "data_dir": str(data_dir),
        "location": stores.location(engine),
        "writers": args.writers if engine == "shaledb" else 1,
        "batch": args.batch,
        "wal": args.wal,
        "await_durable": args.await_durable,
        "put_percentage": args.put_percentage,
        "duration": args.duration,
        "reads": args.reads,
        "seed": args.seed,
        "verify_samples": args.verify_samples,
        "progress": show_bars,
        "timeline": bool(args.plot) and engine == "shaledb",
        "timeline_interval": args.plot_interval,
        "compression": args.compression,
    }
    spec_path, result_path = work / f"{engine}.spec.json", work / f"{engine}.result.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env.update(stores.env)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._peers.driver", str(spec_path), str(result_path)],
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr.fileno(),  # nothing of a child reaches our stdout (tables only)
        env=env,
        start_new_session=True,  # one process group: the whole engine tree can be stopped
    )
    sampler = TreeMemorySampler(proc.pid).start()
    status = ru = None
    timed_out = False
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                _kill_group(proc.pid)
                _pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    except BaseException:
        _kill_group(proc.pid)
        raise
    finally:
        mem = sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else None
        # Stragglers of the engine's process group (flusher, writers) must not outlive it.
        _kill_group(proc.pid)
    wall = time.perf_counter() - t0
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {"engine": engine, "ok": False, "error": "the engine process wrote no result"}
    if timed_out:
        result["ok"] = False
        result["error"] = f"timed out after {args.timeout:.0f} s"
    result["exit_code"] = proc.returncode
    if proc.returncode != 0 and "error" not in result and not result.get("verify"):
        result["error"] = f"engine process exited with code {proc.returncode}"
    result["wall_s"] = wall
    result["memory"] = dict(mem)
    if ru is not None:
        result["memory"]["wait4_peak_rss"] = ru.ru_maxrss * 1024
        result["memory"]["cpu_s"] = ru.ru_utime + ru.ru_stime
    rus = result.get("rusage") or {}
    result["memory"]["process_peak_rss"] = rus.get("self_peak_rss")
    result["memory"]["children_peak_rss"] = rus.get("children_peak_rss")
    result["spec"] = spec
    return result


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- output --------------------------------------------------------------------------


def _short(text: str, limit: int = 90) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _req(r: dict | None, describe_missing: str = "n/a") -> str:
    if not r:
        return describe_missing
    parts = sorted(((k, v) for k, v in r.items() if k != "total" and v), key=lambda kv: -kv[1])
    detail = ", ".join(f"{k} {v}" for k, v in parts[:3])
    return f"{r.get('total', sum(v for _k, v in parts))}" + (f" ({detail})" if detail else "")


def _objs(s: dict | None) -> str:
    if not s or "objects" not in s:
        return "-"
    return f"{s['objects']} / {fmt_bytes(s['bytes'])}"


def _lat(l: dict | None, key: str) -> str:
    return fmt_ns((l or {}).get(key))


def _dash(x) -> str:
    return "-" if x is None else str(x)


def written_bytes(r: dict) -> dict:
    """Bytes an engine wrote to its store, from the listings: everything in
    the store after the through-close (WAL + L0 + any background compaction:
    nothing was deleted yet), plus what the compact phase wrote.  For an
    engine that deletes files as it goes (RocksDB's WAL) a lower bound."""
    ph = r.get("phases") or {}
    ingest = ((ph.get("ingest_close") or {}).get("store_after") or {}).get("bytes")
    comp = ph.get("compact") or {}
    out = comp.get("bytes_out") if comp.get("ran") else None
    return {"ingest": ingest, "compaction": out}


def _render_bandwidth(report: dict, names: list) -> str:
    probe = report.get("write_probe") or {}
    title = "== durable write bandwidth: ingest as a fraction of the store's physical limit =="
    if not probe.get("mb_per_s"):
        return f"{title}\nprobe not run ({probe.get('error') or '--probe-mib 0'})"
    limit = probe["mb_per_s"]
    rows = []
    for e in names:
        r = report["engines"][e]
        user = (r["phases"].get("prefill") or {}).get("bytes")
        w = written_bytes(r)
        thr = r.get("ingest_through_close") or {}
        if not user or not w["ingest"] or not thr.get("mb_per_s"):
            continue
        amp = w["ingest"] / user
        frac = thr["mb_per_s"] * amp / limit
        comp = w["compaction"]
        amp_all = (w["ingest"] + comp) / user if comp else None
        lower = "" if e == "shaledb" else " (lower bound)"
        rows.append([e, fmt_bytes(w["ingest"]) + lower, f"{amp:.2f}", f"{thr['mb_per_s']:.1f}",
                     f"{thr['mb_per_s'] * amp:.1f}", f"{frac:.0%}", f"{amp_all:.2f}" if amp_all else "-"])
    return format_table(["engine", "written through close", "bytes/user byte", "user MB/s (through close)",
                         "store MB/s", "of limit", "bytes/user byte incl. compact"], rows,
                        f"{title}\nlimit: {limit:.0f} MB/s ({probe['method']}"
                        + (f": {', '.join(f'{r:.0f}' for r in probe['runs_mb_per_s'])} MB/s"
                           if probe.get("runs_mb_per_s") else f", {probe['seconds']:.2f} s") + ")")


def render(report: dict) -> str:
    eng = report["engines"]
    names = [e for e in report["config"]["engines"] if e in eng and "phases" in eng[e] and eng[e]["phases"]]
    out: list[str] = []

    def ph(e, name):
        return eng[e]["phases"].get(name) or {}

    rows = []
    for e in names:
        p = ph(e, "prefill")
        if not p:
            continue
        cl = p.get("call_latency") or {}
        rows.append([e, f"{p['records']:,}", p.get("writers", 1), fmt_seconds(p["seconds"]), fmt_rate(p["records_per_s"]),
                     f"{p['mb_per_s']:.1f}" if p.get("mb_per_s") else "-", _lat(cl, "p50_ns"), _lat(cl, "p99_ns"),
                     _lat(cl, "max_ns"), _req(p.get("requests")), _objs(p.get("store_after"))])
    out.append(format_table(["engine", "records", "writers", "time", "records/s", "MB/s", "call p50", "call p99", "call max",
                             "requests", "objects/bytes after"],
                            rows, "== prefill (await_durable off; requests and objects counted after the flush that follows at once) =="))

    rows = []
    for e in names:
        p = ph(e, "flush")
        if not p:
            continue
        ing = eng[e].get("ingest") or {}
        thr = eng[e].get("ingest_through_close") or {}
        ic = ph(e, "ingest_close")
        rows.append([e, fmt_seconds(p["seconds"]), _req(p.get("requests")), _objs(p.get("store_after")),
                     fmt_seconds(ing.get("seconds")), fmt_rate(ing.get("records_per_s")),
                     f"{ing['mb_per_s']:.1f}" if ing.get("mb_per_s") else "-",
                     fmt_seconds(ic.get("seconds")), fmt_rate(thr.get("records_per_s")),
                     f"{thr['mb_per_s']:.1f}" if thr.get("mb_per_s") else "-"])
    out.append(format_table(["engine", "flush time", "requests", "objects/bytes after", "prefill+flush", "records/s", "MB/s",
                             "then close", "through close rec/s", "MB/s"],
                            rows, "== flush (everything durable), prefill+flush, and through close (prefill+flush+close: "
                                  "the records in sorted SSTs) =="))
    out.append(_render_bandwidth(report, names))

    rows = []
    for e in names:
        p = ph(e, "mixed")
        if not p:
            continue
        rows.append([e, f"{p['records']:,}", fmt_seconds(p["seconds"]), fmt_rate(p["records_per_s"]), fmt_rate(p.get("puts_per_s")),
                     fmt_rate(p.get("gets_per_s")), _lat(p.get("put_latency"), "p50_ns"), _lat(p.get("put_latency"), "p99_ns"),
                     _lat(p.get("get_latency"), "p50_ns"), _lat(p.get("get_latency"), "p99_ns"), _req(p.get("requests"))])
    cfg = report["config"]
    over = [ph(e, "mixed").get("harness_overhead_ns") for e in names if ph(e, "mixed").get("harness_overhead_ns")]
    over_txt = f"; the timing loop itself costs ~{min(over):.0f} ns/op, included" if over else ""
    out.append(format_table(["engine", "ops", "time", "ops/s", "puts/s", "gets/s", "put p50", "put p99", "get p50", "get p99", "requests"],
                            rows, f"== mixed ({cfg['put_percentage']:g}% puts, await_durable {'on' if cfg['await_durable'] else 'off'}"
                            f"{over_txt}) =="))

    rows = []
    for e in names:
        p = ph(e, "compact")
        if not p:
            continue
        if not p.get("ran"):
            rows.append([e, "not run: " + _short(p.get("why") or "-", 70), "-", "-", "-", "-", "-", "-", "-"])
            continue
        tb = p.get("tree_before") or {}
        workers = p.get("workers") or None
        mbps = f"{p['mb_per_s']:.1f}" if p.get("mb_per_s") else "-"
        per_worker = f"{p['mb_per_s'] / workers:.1f}" if p.get("mb_per_s") and workers else "-"
        if p.get("mb_per_s_of") == "store bytes before":
            if tb.get("l0") == 0 and tb.get("sorted_runs") == 1:
                mbps = "- (already one run: nothing to merge)"
            else:
                mbps += " (of store bytes)"
        b_in = p.get("bytes_in") or (p.get("store_before") or {}).get("bytes")
        shape = f"{_dash(tb.get('l0'))}/{_dash(tb.get('sorted_runs'))} -> " \
                f"{_dash((p.get('tree') or {}).get('l0'))}/{_dash((p.get('tree') or {}).get('sorted_runs'))}"
        rows.append([e, _short(p.get("api") or "-", 60), fmt_seconds(p.get("seconds")), shape, fmt_bytes(b_in),
                     fmt_bytes(p.get("bytes_out")), mbps, _dash(workers), per_worker])
    out.append(format_table(["engine", "call", "time", "L0/runs", "bytes in", "bytes out", "MB/s in", "workers",
                             "MB/s per worker"], rows,
                            "== compact (after mixed and a first read pass: everything into one sorted run) =="))

    rows = []
    for e in names:
        for phase, label in (("read_before_compact", " (before compact)"), ("read", "")):
            rd = ph(e, phase)
            for temp in ("cold", "warm"):
                p = rd.get(temp)
                if not p:
                    continue
                extra = fmt_seconds(rd["reopen"]["open_s"]) if temp == "cold" and rd.get("reopen") else ""
                rows.append([e, temp + label, f"{p['records']:,}", extra, fmt_rate(p["records_per_s"]),
                             f"{p['mb_per_s']:.1f}" if p.get("mb_per_s") else "-",
                             _lat(p.get("latency"), "p50_ns"), _lat(p.get("latency"), "p99_ns"),
                             f"{p['minor_faults_per_get']:,.1f}" if p.get("minor_faults_per_get") is not None else "-",
                             _req(p.get("requests"))])
    out.append(format_table(["engine", "pass", "gets", "reopen", "gets/s", "MB/s", "p50", "p99", "faults/get",
                             "requests"],
                            rows, "== read (random gets of existing keys; cold right after reopen, then warm, "
                                  "the median of 3 passes; once before and once after compact) =="))

    rows = []
    for e in names:
        p = ph(e, "get_many")
        warm = (ph(e, "read").get("warm") or {}).get("records_per_s")
        if not p.get("ran"):
            if p:
                rows.append([e, "not run: " + (p.get("why") or "-"), "-", "-", "-", "-"])
            continue
        ratio = f"{p['records_per_s'] / warm:.1f}x" if warm and p.get("records_per_s") else "-"
        rows.append([e, _short(p.get("api") or "-", 40), f"{p['records']:,}", fmt_seconds(p["seconds"]),
                     fmt_rate(p["records_per_s"]), ratio])
        for v in p.get("variants") or ():
            vr = f"{v['records_per_s'] / warm:.1f}x" if warm and v.get("records_per_s") else "-"
            wrong = f" ({v['wrong_gets']} wrong)" if v.get("wrong_gets") else ""
            rows.append([e, _short(v["api"], 40) + wrong, f"{v['records']:,}", fmt_seconds(v["seconds"]),
                         fmt_rate(v["records_per_s"]), vr])
    out.append(format_table(["engine", "call", "keys", "time", "keys/s", "vs own warm get"], rows,
                            "== get_many (the read keys again, one batch call, warm; best of 3) =="))

    rows = []
    for e in names:
        p = ph(e, "scan")
        if not p:
            continue
        rows.append([e, f"{p['records']:,}", fmt_seconds(p["seconds"]), fmt_rate(p["records_per_s"]),
                     f"{p['mb_per_s']:.1f}" if p.get("mb_per_s") else "-", _req(p.get("requests"))])
    out.append(format_table(["engine", "records", "time", "records/s", "MB/s", "requests"], rows, "== scan (full) =="))

    rows = []
    for e in names:
        p = ph(e, "scan_arrays")
        if not p.get("ran"):
            continue
        vs = [f"{p['records_per_s'] / r:.2f}x" if r and p.get("records_per_s") else "-"
              for r in [ph(x, "scan").get("records_per_s") for x in names]]
        rows.append([e, _short(p.get("api") or "-", 40), f"{p['records']:,}", fmt_seconds(p["seconds"]),
                     fmt_rate(p["records_per_s"]), *vs])
    if rows:
        out.append(format_table(["engine", "call", "records", "time", "records/s", *[f"vs {x} scan" for x in names]],
                                rows, "== scan_arrays (full scan into numpy batches; best of 3) =="))

    rows = []
    for e in names:
        p = ph(e, "close")
        if not p:
            continue
        rows.append([e, fmt_seconds(p["seconds"]), _req(p.get("requests")), _objs(p.get("store_after"))])
    out.append(format_table(["engine", "close time", "requests", "objects/bytes at end"], rows, "== close =="))

    rows = []
    for e in names:
        p = ph(e, "gc")
        if not p:
            continue
        deleted = p.get("deleted")
        gone = ", ".join(f"{k} {v}" for k, v in deleted.items() if v) if isinstance(deleted, dict) else "-"
        sa = p.get("space_amplification")
        rows.append([e, _short(p.get("api") or ("not run: " + (p.get("why") or "-")), 60), gone or "nothing",
                     _objs(p.get("store_after")), fmt_bytes(p.get("live_bytes")), f"{sa:.2f}" if sa else "-"])
    out.append(format_table(["engine", "gc", "deleted", "objects/bytes after", "live key+value", "space amp"], rows,
                            "== gc and space amplification (store bytes after gc / live key+value bytes) =="))

    rows = []
    for e in names:
        for phase in TREE_PHASES:
            p = ph(e, phase)
            if phase == "read_before_compact":  # the tree the compaction started from
                c = ph(e, "compact")
                p = {"tree": c.get("tree_before"), "store_after": c.get("store_before")} if c.get("ran") else {}
            t = p.get("tree") or {}
            if not p:
                continue
            kinds = t.get("bytes_by_kind") or {}
            rows.append([e, phase, _dash(t.get("l0")), _dash(t.get("sorted_runs")), _objs(p.get("store_after")),
                         ", ".join(f"{k} {fmt_bytes(v)}" for k, v in kinds.items()) or "-"])
    out.append(format_table(["engine", "after phase", "L0", "sorted runs", "objects/bytes", "bytes by kind"], rows,
                            "== shape of the tree at the end of each phase (RocksDB: L0 files; runs = L0 files + "
                            "non-empty levels) =="))

    rows = []
    for e in report["config"]["engines"]:
        r = eng.get(e) or {}
        m = r.get("memory") or {}
        op = fmt_seconds(r.get("open_s"))
        if r.get("warmup_s"):
            op += f" (jit {fmt_seconds(r['warmup_s'])})"
        rows.append([e, op, fmt_bytes(m.get("process_peak_rss")), fmt_bytes(m.get("children_peak_rss") or None),
                     fmt_bytes(m.get("tree_peak_pss")), fmt_bytes(m.get("tree_peak_pss_nofile")),
                     fmt_bytes(m.get("tree_peak_rss_sum")), m.get("tree_peak_processes", "-"),
                     f"{m['cpu_s']:.1f} s" if m.get("cpu_s") is not None else "-", fmt_seconds(r.get("wall_s"))])
    out.append(format_table(["engine", "open", "peak RSS", "largest child", "tree PSS peak", "without mapped files",
                             "tree RSS-sum peak", "procs", "CPU", "wall"],
                            rows, "== memory and process (peak RSS: getrusage; tree: sampled every 0.2 s; "
                                  "'without mapped files': PSS less Pss_File, i.e. less the pages of mapped "
                                  "files: shared libraries, and SSTs that ShaleDB reads through mmap) =="))

    rows = []
    for e in report["config"]["engines"]:
        roles = ((eng.get(e) or {}).get("memory") or {}).get("by_role") or {}
        for role, m in roles.items():
            rows.append([e, role, fmt_bytes(m.get("pss")), fmt_bytes(m.get("pss_anon")), fmt_bytes(m.get("pss_shmem")),
                         fmt_bytes(m.get("pss_file"))])
    if rows:
        out.append(format_table(["engine", "processes", "PSS peak", "anonymous", "shared memory", "mapped files"], rows,
                                "== memory by process (peaks over the run, each column on its own; "
                                "shared memory: the arenas) =="))

    rows = []
    for e in report["config"]["engines"]:
        r = eng.get(e) or {}
        v = r.get("verify") or {}
        status = "OK" if r.get("ok") else ("FAILED: " + _short(r.get("error") or "data wrong")) if r else "not run"
        rows.append([e, status, f"{v.get('count', '-'):,}" if isinstance(v.get("count"), int) else "-", f"{v.get('expected_count', '-')}",
                     v.get("sampled_wrong", "-"), v.get("wrong_gets_during_phases", "-"), v.get("in_order", "-"), v.get("digest_ok", "-")])
    out.append(format_table(["engine", "verify", "count", "expected", "wrong sampled gets", "wrong gets in phases", "in order", "digest"],
                            rows, "== correctness (after close: fresh open, sampled gets, full scan with content digest) =="))

    if report.get("ratios"):
        rows = []
        for metric, by_peer in report["ratios"].items():
            rows.append([metric] + [f"{by_peer[p]:.3g}x" if by_peer.get(p) is not None else "-" for p in report["config"]["peers"]])
        out.append(format_table(["ShaleDB vs peer (>1: ShaleDB better)"] + list(report["config"]["peers"]), rows, "== ratios =="))

    # A phase table with no rows (every engine failed before it) says nothing.
    out = [t for t in out if len(t.splitlines()) > 3 or not t.startswith("== ") or "memory" in t or "correctness" in t]
    how = ["== how each engine ran =="]
    for e in report["config"]["engines"]:
        d = (eng.get(e) or {}).get("describe") or {}
        if d:
            how.append(f"{e}: {d.get('engine')}; store {d.get('store')}")
            for k in ("compression", "prefill_api", "flush_api", "put_api", "get_api", "scan_api", "close_api",
                      "compact_api", "gc_api", "fsync", "writers_note", "requests_source", "open_note", "tree_note"):
                if d.get(k):
                    how.append(f"    {k.replace('_', ' ')}: {d[k]}")
    how.extend("note: " + note for note in report.get("notes", []))
    out.append("\n".join(how))
    return "\n\n".join(out)


def compute_ratios(report: dict) -> dict:
    eng = report["engines"]
    s = eng.get("shaledb")
    if not s or not s.get("phases"):
        return {}
    peers = [p for p in report["config"]["peers"] if eng.get(p, {}).get("phases")]
    if not peers:
        return {}

    def get(r, *path):
        cur = r
        for k in path:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(k)
        return cur

    higher_better = {
        "prefill records/s": ("phases", "prefill", "records_per_s"),
        "prefill+flush records/s": ("ingest", "records_per_s"),
        "through-close records/s": ("ingest_through_close", "records_per_s"),
        "read warm gets/s before compact": ("phases", "read_before_compact", "warm", "records_per_s"),
        "mixed ops/s": ("phases", "mixed", "records_per_s"),
        "mixed puts/s": ("phases", "mixed", "puts_per_s"),
        "mixed gets/s": ("phases", "mixed", "gets_per_s"),
        "read cold gets/s": ("phases", "read", "cold", "records_per_s"),
        "read warm gets/s": ("phases", "read", "warm", "records_per_s"),
        "get_many keys/s": ("phases", "get_many", "records_per_s"),
        "scan records/s": ("phases", "scan", "records_per_s"),
    }
    lower_better = {
        "flush time": ("phases", "flush", "seconds"),
        "close time": ("phases", "close", "seconds"),
        "mixed put p99": ("phases", "mixed", "put_latency", "p99_ns"),
        "mixed get p99": ("phases", "mixed", "get_latency", "p99_ns"),
        "tree PSS peak": ("memory", "tree_peak_pss"),
        "tree PSS peak without mapped files": ("memory", "tree_peak_pss_nofile"),
        "prefill call p99": ("phases", "prefill", "call_latency", "p99_ns"),
        "space amplification": ("phases", "gc", "space_amplification"),
    }
    out: dict[str, dict] = {}
    for metric, path in higher_better.items():
        out[metric] = {}
        for p in peers:
            a, b = get(s, *path), get(eng[p], *path)
            out[metric][p] = a / b if a and b else None
    for metric, path in lower_better.items():
        out[metric] = {}
        for p in peers:
            a, b = get(s, *path), get(eng[p], *path)
            out[metric][p] = b / a if a and b else None
    return out


# -- main ---------------------------------------------------------------------------------


def _probe(args, stores: "Stores") -> dict:
    """The store's durable write bandwidth (``--probe-mib``); errors are reported, not raised."""
    nbytes = args.probe_mib << 20
    if not nbytes:
        return {}
    print(f"probing the store's durable write bandwidth ({args.probe_mib} MiB) ...", file=sys.stderr)
    try:
        if stores.kind == "local":
            return probe_local_write_bandwidth(stores.local_root, nbytes)
        endpoint = stores.moto.endpoint_url if stores.moto is not None else stores.endpoint
        return probe_s3_put_bandwidth(stores.bucket, stores.prefix, endpoint, nbytes)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _plot(path: str, report: dict) -> None:
    samples = ((report["engines"].get("shaledb") or {}).get("timeline")) or []
    try:
        from bench.plot import plot_timeline
    except ImportError as exc:
        print(f"\n--plot: cannot draw ({exc}); pip install -e '.[bench]' brings matplotlib", file=sys.stderr)
        return
    if not samples:
        print("\n--plot: ShaleDB took no timeline samples (did it run?)", file=sys.stderr)
        return
    cfg = report["config"]
    prefill = (((report["engines"].get("shaledb") or {}).get("phases") or {}).get("prefill")) or {}
    plot_timeline(samples, path, title=f"ShaleDB bench.ingest: {cfg['records']:,} records, {cfg['writers']} writers, "
                                       f"batch {cfg['batch']:,}, {cfg.get('store_description', '')[:60]}",
                  long_calls=prefill.get("long_calls"))
    print(f"\ntimeline: {path}")


def _shaledb_available() -> tuple[bool, str]:
    try:
        import shaledb
    except Exception as exc:
        return False, f"cannot import shaledb: {exc}"
    if not callable(getattr(shaledb, "open", None)):
        return False, "shaledb.open does not exist yet (the engine has not landed)"
    return True, ""


def main(argv=None) -> int:
    args = parse_args(argv)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    show_bars = not args.quiet and sys.stderr.isatty()
    notes: list[str] = []

    ok_engine, why = _shaledb_available()
    engines = (["shaledb"] if ok_engine else []) + args.peers_list
    if not ok_engine:
        notes.append(f"ShaleDB did not run: {why}")
        print(f"warning: ShaleDB will not run: {why}", file=sys.stderr)
    for e in args.peers_list:
        if args.records_by_engine[e] < args.records:
            notes.append(
                f"{e} ran on the first {args.records_by_engine[e]:,} of {args.records:,} records (--peer-records): "
                "rates and latencies compare, totals and store sizes do not"
            )
    if args.writers > 1 and args.peers_list:
        notes.append(f"ShaleDB prefills with {args.writers} writer processes; each peer with one writer (its only option)")

    n_max = max([args.records_by_engine[e] for e in engines] + [args.records])
    work = Path(tempfile.mkdtemp(prefix="shaledb-bench-data-"))
    stores = Stores(args, run_id)
    report: dict = {
        "config": {
            **{k: v for k, v in vars(args).items() if k not in ("peers_list", "records_by_engine")},
            "peers": args.peers_list,
            "engines": engines,
            "records_by_engine": args.records_by_engine,
            "run_id": run_id,
            "argv": list(sys.argv if argv is None else ["python", "-m", "bench.ingest", *argv]),
        },
        "machine": {**machine_info(), "loadavg_start": os.getloadavg()},
        "engines": {},
        "notes": notes,
    }
    try:
        t0 = time.perf_counter()
        ds = generate_mixed(n_max, args.key_dist, args.value_dist, args.key_size, args.value_size, args.seed)
        ds.save(work / "data")
        del ds
        report["config"]["data_gen_s"] = time.perf_counter() - t0
        stores.setup()
        report["config"]["store_description"] = stores.describe()
        kdesc = f"{args.key_size} B random key" if args.key_dist == "random16" else f"{args.key_dist} key"
        print(f"data: {n_max:,} records x ({kdesc} + {args.value_size} B {args.value_dist} value), seed {args.seed}; "
              f"store: {stores.describe()}", file=sys.stderr)
        report["write_probe"] = _probe(args, stores)
        for e in engines:
            print(f"running {e} ({args.records_by_engine[e]:,} records) ...", file=sys.stderr)
            report["engines"][e] = run_engine(e, args, stores, work / "data", work, show_bars)
            r = report["engines"][e]
            print(f"  {e}: {'ok' if r.get('ok') else 'FAILED: ' + _short(r.get('error') or 'data wrong', 200)} in {r['wall_s']:.1f} s",
                  file=sys.stderr)
    finally:
        try:
            stores.cleanup()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    report["machine"]["loadavg_end"] = os.getloadavg()
    load = report["machine"].get("loadavg_start")
    if load and load[0] > (os.cpu_count() or 1) * 0.5:
        notes.append(f"the machine was busy when the run started (load average {load[0]:.1f} on {os.cpu_count()} CPUs): "
                     "figures are lower than on an idle machine")
    report["ratios"] = compute_ratios(report)
    failed = [e for e in engines if not report["engines"].get(e, {}).get("ok")]
    report["ok"] = not failed and ok_engine
    print(render(report))
    if failed:
        print(f"\nFAILED: {', '.join(failed)}: data wrong or engine error (see above)")
    if not ok_engine:
        print(f"\nShaleDB did not run: {why}")
    if args.readers > 0:  # bench.readers, with this run's duration and peers
        from bench.readers import run_readers

        report["readers"] = run_readers(args.readers, args.duration, peers=args.peers_list)
    if args.json:
        write_json(args.json, report)
    if args.plot:
        _plot(args.plot, report)
    if args.keep and not args.moto:
        print(f"\nkept: {report['config'].get('store_description', '-')}"
              + (f" and {stores.scratch}" if stores.scratch and stores.scratch.exists() else ""))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
