"""Run every ingest-benchmark phase against one engine, in this process.

    python -m bench._peers.driver SPEC.json RESULT.json

SPEC is written by ``bench.ingest``; RESULT receives the figures (see
``bench/README.md`` for their meaning).  The exit status is 0 when every
phase ran and the data verified, 1 otherwise (RESULT still says why).

Phases, in order: prefill, flush, ingest_close (close right after the
flush: the through-close ingest figure; then an untimed reopen), mixed,
read_before_compact and read (each: reopen, then cold and warm gets of the
same random existing keys) around compact (a major compaction), get_many
(the read keys again through the engine's batch get, if any), scan, gc
(then the space amplification), close; each phase records the tree's shape
after it (``tree``: L0 count, sorted runs, bytes).  Then an untimed
verification after a fresh open: sampled gets and a full scan that checks
the count, the key order and a digest of every key and value.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback

import numpy as np

from bench._peers import adapter_class
from bench._peers.base import expected_digest, timed_ops, value_digest
from bench.common import latency_summary, load_dataset, op_plan, progress, read_indices, rusage_peaks, write_json

_MIXED_CHUNK = 4096
#: the get_many phase's large batch (ShaleDB's numpy form): this many random existing keys at most
#: (its keys, rows and values take about 0.3 KB a key while it runs: kept small enough not to set
#: the run's memory peak, which the peers' runs do not pay for)
LARGE_BATCH_KEYS = 200_000
#: Warm read passes; the median one is reported.  A pass of 20,000 gets
#: takes 0.1-0.3 s, short enough for one stall of a shared machine to
#: move a single pass's rate by a third.
WARM_PASSES = 3


def count_objects(loc: dict) -> dict | None:
    """Number and total size of the files/objects under an engine's root."""
    try:
        if loc["kind"] == "local":
            n = size = 0
            for dirpath, _dirs, files in os.walk(loc["path"]):
                for f in files:
                    try:
                        size += os.stat(os.path.join(dirpath, f)).st_size
                        n += 1
                    except FileNotFoundError:
                        pass
            return {"objects": n, "bytes": size}
        if loc["kind"] == "s3":
            import boto3

            client = boto3.client("s3", endpoint_url=loc.get("list_endpoint") or loc.get("endpoint"))
            n = size = 0
            prefix = loc["prefix"].rstrip("/") + "/" if loc.get("prefix") else ""
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc["bucket"], Prefix=prefix):
                for obj in page.get("Contents", []):
                    n += 1
                    size += obj["Size"]
            return {"objects": n, "bytes": size}
    except Exception as exc:  # a listing failure must not fail the benchmark
        return {"error": repr(exc)}
    return None


def _minor_faults() -> int:
    """Minor page faults of this process so far (in a read pass: fresh
    pages for the values returned, and first touches of mapped files)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    out = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    out["total"] = sum(v for k, v in out.items() if k != "total")
    return out


def harness_overhead_ns(n: int = 1 << 15) -> float:
    """Per-operation cost of the mixed-phase loop itself (timers, branches,
    list appends) around no-op calls, in ns: included in every engine's
    latencies and ops/s."""
    keys = [b"k"] * n
    vals = [b"v"] * n
    flags = [bool(i % 5 == 0) for i in range(n)]

    def put(k, v, await_durable=False):
        return None

    def get(k):
        return None

    clock = time.perf_counter_ns
    deadline_ns = clock() + 10**12
    bound_put = functools.partial(put, await_durable=False)  # as the adapters bind theirs
    best = None
    for _ in range(3):
        start = clock()
        timed_ops(bound_put, get, keys, vals, flags, deadline_ns)
        per_op = (clock() - start) / n
        best = per_op if best is None else min(best, per_op)
    return best


class Driver:
    def __init__(self, spec: dict):
        self.spec = spec
        self.n = int(spec["n"])
        self.ds = load_dataset(spec["data_dir"])
        self.adapter = adapter_class(spec["engine"])(spec)
        self.bars = bool(spec.get("progress"))
        self.result: dict = {"engine": spec["engine"], "n": self.n, "phases": {}, "ok": False}

    # -- helpers ------------------------------------------------------------

    def _requests(self) -> dict:
        """Request counters now: the engine's own, and the counting proxy's (S3 via --moto)."""
        out = {"engine": self.adapter.requests(), "http": None}
        ep = self.adapter.location().get("count_endpoint")
        if ep:
            from bench.s3count import fetch_counts

            out["http"] = fetch_counts(ep)
        return out

    def _phase(self, name: str, seconds: float, records: int, nbytes: int, req_before, **extra) -> dict:
        req_after = self._requests()
        eng = _delta(req_before["engine"], req_after["engine"])
        http = _delta(req_before["http"], req_after["http"])
        r = {
            "seconds": seconds,
            "records": records,
            "bytes": nbytes,
            "records_per_s": records / seconds if seconds > 0 else None,
            "mb_per_s": nbytes / seconds / 1e6 if seconds > 0 else None,
            # The proxy counts every engine the same way; without it, the engine's own counters.
            "requests": http if http is not None else eng,
            "requests_source": "http proxy" if http is not None else ("engine" if eng is not None else None),
            "engine_requests": eng,
            "http_requests": http,
            "store_after": count_objects(self.adapter.location()),
            "tree": self._tree(),
        }
        r.update(extra)
        return r

    def _tree(self) -> dict:
        """The adapter's tree shape; an error in it must not fail the run."""
        try:
            return self.adapter.tree()
        except Exception as exc:
            return {"l0": None, "sorted_runs": None, "error": f"{type(exc).__name__}: {exc}"}

    def _rate(self, seconds: float) -> dict:
        nbytes = self.ds.payload_bytes_of(self.n)
        return {"seconds": seconds, "records_per_s": self.n / seconds if seconds > 0 else None,
                "mb_per_s": nbytes / seconds / 1e6 if seconds > 0 else None}

    def _payload(self, idx) -> int:
        ko, vo = self.ds.keys_offs, self.ds.vals_offs
        idx = np.asarray(idx, dtype=np.int64)
        return int((ko[idx + 1] - ko[idx]).sum() + (vo[idx + 1] - vo[idx]).sum())

    # -- phases ---------------------------------------------------------------

    def run(self) -> dict:
        spec, a, res = self.spec, self.adapter, self.result
        res["describe"] = a.describe()
        t0 = time.perf_counter()
        a.open()
        res["open_s"] = time.perf_counter() - t0
        res["warmup_s"] = getattr(a, "warmup_s", None)
        ph = res["phases"]

        # prefill
        req = self._requests()
        with progress(self.bars, total=self.n, desc=f"{a.name} prefill") as bar:
            info = a.prefill(self.ds, self.n, int(spec["batch"]), int(spec["writers"]), bar)
        # flush, at once: no untimed bookkeeping between the two phases, in
        # which an engine's background flushing could catch up for free.  So
        # the request counts and store snapshot of prefill are taken after the
        # flush and cover both phases; flush has none of its own.
        try:
            t0 = time.perf_counter()
            a.flush()
            flush_secs = time.perf_counter() - t0
        finally:
            reap = getattr(a, "reap", None)
            if reap is not None:
                reap()
        secs = info.pop("elapsed_s")
        calls = info.pop("call_ns", None)
        ph["prefill"] = self._phase("prefill", secs, self.n, self.ds.payload_bytes_of(self.n), req, **info)
        ph["prefill"]["requests_cover"] = "prefill+flush"
        if calls is not None:
            ph["prefill"]["call_latency"] = latency_summary(calls)
        ph["flush"] = {
            "seconds": flush_secs,
            "records": self.n,
            "bytes": self.ds.payload_bytes_of(self.n),
            "records_per_s": None,  # a duration, not a rate
            "mb_per_s": None,
            "requests": None,
            "requests_source": "counted with prefill",
            "engine_requests": None,
            "http_requests": None,
            "store_after": ph["prefill"]["store_after"],
            "tree": ph["prefill"]["tree"],
        }
        ingest = ph["prefill"]["seconds"] + flush_secs
        res["ingest"] = self._rate(ingest)

        # Through close: the records in sorted SSTs (L0 / RocksDB's memtable
        # flush), not only in the WAL.  close is timed right after the flush,
        # then the engine reopens, untimed.
        req = self._requests()
        t0 = time.perf_counter()
        a.close()
        close_s = time.perf_counter() - t0
        ph["ingest_close"] = self._phase("ingest_close", close_s, 0, 0, req, records_per_s=None)
        ph["ingest_close"]["mb_per_s"] = None
        res["ingest_through_close"] = self._rate(ingest + close_s)
        t0 = time.perf_counter()
        a.open()
        res["reopen_after_ingest_s"] = time.perf_counter() - t0

        ph["mixed"] = self._mixed()
        ph["read_before_compact"] = self._read()

        # compact: everything into one sorted run (where the engine offers it)
        before = count_objects(a.location())
        tree_before = self._tree()
        req = self._requests()
        t0 = time.perf_counter()
        c = a.compact()
        secs = time.perf_counter() - t0
        if c.get("api") is None:
            ph["compact"] = {"ran": False, "why": c.get("why"), "seconds": None, "tree": self._tree()}
        else:
            if "seconds" in c:  # the engine's own figure; the phase time is ours
                c["engine_seconds"] = c.pop("seconds")
            b_in = c.get("bytes_in")
            # An engine that does not say what it read: the bytes in its store before (an estimate).
            c["mb_per_s_of"] = "bytes_in" if b_in else "store bytes before"
            if not b_in:
                b_in = (before or {}).get("bytes")
            ph["compact"] = self._phase("compact", secs, 0, b_in or 0, req, ran=True, store_before=before,
                                        tree_before=tree_before, **c)
            ph["compact"]["records_per_s"] = None
            ph["compact"]["mb_per_s"] = b_in / secs / 1e6 if b_in and secs > 0 else None

        ph["read"] = self._read()
        ph["get_many"] = self._batch_get()

        # scan
        req = self._requests()
        with progress(self.bars, total=self.n, desc=f"{a.name} scan") as bar:
            t0 = time.perf_counter()
            s = a.scan(bar)
            secs = time.perf_counter() - t0
        ph["scan"] = self._phase("scan", secs, s["count"], s["bytes"], req)
        ph["scan"]["count_ok"] = s["count"] == self.n
        ph["scan_arrays"] = self._batch_scan()

        # gc, then space amplification: bytes in the store / live key+value bytes
        t0 = time.perf_counter()
        g = a.gc()
        g_secs = time.perf_counter() - t0
        after = count_objects(a.location())
        live = self.ds.payload_bytes_of(self.n)
        ph["gc"] = {"ran": g.get("api") is not None, "seconds": g_secs if g.get("api") else None, **g,
                    "store_after": after, "tree": self._tree(), "live_bytes": live,
                    "space_amplification": after["bytes"] / live if after and "bytes" in after and live else None}

        # close
        req = self._requests()
        t0 = time.perf_counter()
        a.close()
        secs = time.perf_counter() - t0
        ph["close"] = self._phase("close", secs, 0, 0, req)
        ph["close"]["records_per_s"] = ph["close"]["mb_per_s"] = None
        res["rusage_after_close"] = rusage_peaks()
        res["timeline"] = a.timeline()

        res["describe"] = a.describe()  # again: some fields are known only after a run
        res["verify"] = self._verify()
        res["ok"] = bool(res["verify"]["ok"])
        return res

    def _mixed(self) -> dict:
        spec, a = self.spec, self.adapter
        duration = float(spec["duration"])
        await_durable = bool(spec["await_durable"])
        put_lat: list[int] = []
        get_lat: list[int] = []
        wrong = puts = gets = 0
        nbytes = 0
        busy = 0.0
        req = self._requests()
        plan = op_plan(int(spec["seed"]), self.n, float(spec["put_percentage"]), _MIXED_CHUNK)
        ds = self.ds
        with progress(self.bars, total=None, desc=f"{a.name} mixed", unit="op") as bar:
            while busy < duration:
                is_put, idx = next(plan)
                keys = [ds.key(i) for i in idx]
                vals = [ds.value(i) if p else None for i, p in zip(idx, is_put)]
                flags = is_put.tolist()
                t0 = time.perf_counter()
                # The adapter stops after the op that crosses the deadline (slow durable puts).
                deadline_ns = time.perf_counter_ns() + int((duration - busy) * 1e9)
                pl, gl, got = a.run_ops(keys, vals, flags, await_durable, deadline_ns)
                busy += time.perf_counter() - t0
                done = len(pl) + len(gl)
                is_put, idx = is_put[:done], idx[:done]
                put_lat.extend(pl)
                get_lat.extend(gl)
                puts += len(pl)
                gets += len(gl)
                nbytes += self._payload(idx)
                gi = idx[~is_put]
                for i, v in zip(gi, got):
                    if v != ds.value(i):
                        wrong += 1
                bar.update(done)
        r = self._phase("mixed", busy, puts + gets, nbytes, req)
        r.update(
            puts=puts,
            gets=gets,
            puts_per_s=puts / busy if busy else None,
            gets_per_s=gets / busy if busy else None,
            put_latency=latency_summary(put_lat),
            get_latency=latency_summary(get_lat),
            wrong_gets=wrong,
            harness_overhead_ns=harness_overhead_ns(),
            await_durable=await_durable,
            put_percentage=float(spec["put_percentage"]),
        )
        return r

    def _read(self) -> dict:
        a, ds = self.adapter, self.ds
        count = min(int(self.spec["reads"]), max(self.n, 1) * 10)
        idx = read_indices(int(self.spec["seed"]), self.n, count)
        keys = [ds.key(i) for i in idx]
        nbytes = self._payload(idx)
        close_s, open_s = a.reopen()
        out = {"reopen": {"close_s": close_s, "open_s": open_s, "store_after": count_objects(a.location())}}
        for temp, passes in (("cold", 1), ("warm", WARM_PASSES)):
            runs = []
            for k in range(passes):
                req = self._requests()
                label = f"{a.name} read {temp}" + (f" {k + 1}/{passes}" if passes > 1 else "")
                with progress(self.bars, total=None, desc=label, unit="get"):
                    f0 = _minor_faults()
                    t0 = time.perf_counter()
                    lat, got = a.get_many(keys)
                    secs = time.perf_counter() - t0
                    faults = _minor_faults() - f0
                wrong = sum(1 for i, v in zip(idx, got) if v != value_digest(ds.value(i)))
                runs.append(self._phase(f"read_{temp}", secs, len(keys), nbytes, req, latency=latency_summary(lat),
                                        wrong_gets=wrong, minor_faults_per_get=faults / max(len(keys), 1)))
            # the median pass by time (its own latencies and counters); every
            # pass's wrong gets are counted
            pick = dict(sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2])
            pick["wrong_gets"] = sum(r["wrong_gets"] for r in runs)
            pick["passes"] = len(runs)
            pick["pass_records_per_s"] = [r["records_per_s"] for r in runs]
            out[temp] = pick
        return out

    def _batch_get(self) -> dict:
        """The read phase's keys again (warm), through the engine's batch
        get if it has one: the best of three passes."""
        a, ds = self.adapter, self.ds
        count = min(int(self.spec["reads"]), max(self.n, 1) * 10)
        idx = read_indices(int(self.spec["seed"]), self.n, count)
        keys = [ds.key(i) for i in idx]
        best = None
        for _ in range(3):
            req = self._requests()
            t0 = time.perf_counter()
            got = a.batch_get(keys)
            secs = time.perf_counter() - t0
            if got is None:
                return {"ran": False, "why": "the engine's adapter has no batch get"}
            api, values = got
            wrong = sum(1 for i, v in zip(idx, values) if v != ds.value(i))
            if best is None or secs < best["seconds"]:
                best = self._phase("get_many", secs, len(keys), self._payload(idx), req, ran=True, api=api,
                                   wrong_gets=wrong)
        # the numpy form, on these keys and on a large batch (up to LARGE_BATCH_KEYS random existing keys)
        variants = []
        big = min(max(self.n, 1), LARGE_BATCH_KEYS)
        for vidx in (idx, read_indices(int(self.spec["seed"]) + 1, self.n, big) if self.n > count else None):
            if vidx is None:
                continue
            vkeys = [ds.key(i) for i in vidx]
            arrays = a.batch_get_arrays(vkeys)
            if arrays is None:
                break
            api, call = arrays
            secs = None
            for _ in range(3):
                t0 = time.perf_counter()
                vd, vo, found = call()
                took = time.perf_counter() - t0
                secs = took if secs is None else min(secs, took)
            wrong = sum(1 for x, i in enumerate(vidx)
                        if not found[x] or vd[vo[x]:vo[x + 1]].tobytes() != ds.value(i))
            variants.append({"api": api, "records": len(vkeys), "seconds": secs,
                             "records_per_s": len(vkeys) / secs if secs else None, "wrong_gets": wrong})
        best["variants"] = variants
        return best

    def _batch_scan(self) -> dict:
        """One full scan into column arrays, if the engine has one: the best of three."""
        best = None
        for _ in range(3):
            req = self._requests()
            t0 = time.perf_counter()
            got = self.adapter.batch_scan()
            secs = time.perf_counter() - t0
            if got is None:
                return {"ran": False, "why": "the engine's adapter has no batch scan"}
            api, n, nbytes = got
            if best is None or secs < best["seconds"]:
                best = self._phase("scan_arrays", secs, n, nbytes, req, ran=True, api=api, count_ok=n == self.n)
        return best

    def _verify(self) -> dict:
        a, ds = self.adapter, self.ds
        out: dict = {"ok": False}
        a.open()
        try:
            samples = int(self.spec.get("verify_samples", 1000))
            idx = np.random.default_rng([int(self.spec["seed"]), 3]).integers(0, max(self.n, 1), size=samples if self.n else 0)
            _lat, got = a.get_many([ds.key(i) for i in idx])
            out["sampled_gets"] = int(len(idx))
            out["sampled_wrong"] = sum(1 for i, v in zip(idx, got) if v != value_digest(ds.value(i)))
            with progress(self.bars, total=self.n, desc=f"{a.name} verify") as bar:
                s = a.scan(bar, check=True)
            out["count"] = s["count"]
            out["expected_count"] = self.n
            out["in_order"] = s["in_order"]
            out["digest_ok"] = s["digest"] == expected_digest(ds, self.n)
        finally:
            a.close()
        wrong_reads = sum(
            p.get("wrong_gets", 0)
            for p in (self.result["phases"]["mixed"], *self.result["phases"]["read"].values(),
                      *self.result["phases"]["read_before_compact"].values(), self.result["phases"].get("get_many"))
            if isinstance(p, dict)
        )
        out["wrong_gets_during_phases"] = wrong_reads
        out["ok"] = (
            out["sampled_wrong"] == 0
            and out["count"] == self.n
            and out["in_order"]
            and out["digest_ok"]
            and wrong_reads == 0
        )
        return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m bench._peers.driver SPEC.json RESULT.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    result: dict = {"engine": spec.get("engine"), "ok": False}
    code = 1
    try:
        driver = Driver(spec)
        result = driver.result
        driver.run()
        code = 0 if result["ok"] else 1
    except BaseException as exc:  # report every failure in RESULT, then exit non-zero
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        print(result["traceback"], file=sys.stderr)
        code = 1
    result["rusage"] = rusage_peaks()
    write_json(argv[1], result)
    return code


if __name__ == "__main__":
    sys.exit(main())
