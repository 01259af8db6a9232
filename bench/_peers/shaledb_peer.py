"""ShaleDB, for the ingest benchmark, through its public API only.

* prefill: ``put_many((key_data, key_offs), (val_data, val_offs),
  await_durable=False)`` per batch, straight from the memory-mapped numpy
  arrays.  With ``--writers 1`` the engine process writes itself; with W >= 2,
  W ``multiprocessing`` (spawn) children each get a ``db.writer()`` handle
  and a contiguous 1/W share of the records.  The children start their clocks
  together behind a barrier, after importing and warming up; the phase time
  runs from the barrier to the last child's report.
* flush: ``db.flush()`` (WAL on: everything durable in the WAL) or
  ``db.flush(memtable=True)`` (WAL off: published as L0).
* mixed: ``db.put(k, v, await_durable=...)`` and ``db.get(k)``.
* read: ``db.get``; scan: ``db.scan()``; close: ``db.close()``.

Object-store requests come from the engine's instrumentation when the open
database exposes it: a ``requests`` (or ``store_requests``) mapping of
operation -> count in ``db.status()`` (or ``db.stats()``/``db.metrics()``),
cumulative for the open database.  Otherwise the output shows "n/a" and only
the object counts and sizes listed after each phase.
"""

from __future__ import annotations

import functools
import os
import queue
import time

from bench._peers.base import Adapter, ScanCheck, timed_gets, timed_ops

_WRITER_START_TIMEOUT = 300.0
_WRITER_RUN_TIMEOUT = 3600.0
#: put_many calls longer than this are listed with their start time (prefill "long_calls")
LONG_CALL_NS = 250_000_000


def _warmup() -> None:
    try:
        from shaledb.kernels.warmup import warmup
    except ImportError:
        return
    warmup()


def _writer_main(handle, data_dir, a, b, batch, go, counter, results) -> None:
    """One writer process: append records ``a:b`` in batches through ``handle``."""
    from bench.common import load_dataset

    try:
        t_start = time.perf_counter()
        ds = load_dataset(data_dir)
        _warmup()
        with handle:
            startup = time.perf_counter() - t_start
            results.put({"ready": os.getpid()})
            if not go.wait(timeout=_WRITER_START_TIMEOUT):
                raise TimeoutError("the engine process never gave the start signal")
            clock = time.perf_counter_ns
            calls, long_calls = [], []
            t0 = time.perf_counter()
            for lo in range(a, b, batch):
                hi = min(b, lo + batch)
                keys, vals = ds.pairs(lo, hi)
                c0 = clock()
                handle.put_many(keys, vals, await_durable=False)
                calls.append(clock() - c0)
                if calls[-1] > LONG_CALL_NS:
                    long_calls.append((c0, calls[-1]))
                with counter.get_lock():
                    counter.value += hi - lo
            t1 = time.perf_counter()
        results.put({"ok": True, "pid": os.getpid(), "records": b - a, "elapsed_s": t1 - t0,
                     "exit_s": time.perf_counter() - t1, "startup_s": startup, "call_ns": calls,
                     "long_calls": long_calls})
    except BaseException as exc:  # reported to the engine process, which fails the phase
        import traceback

        results.put({"ok": False, "pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()})


def _find_request_counts(obj) -> dict | None:
    """Pull request counters out of whatever stats object the engine returns."""
    if obj is None:
        return None
    if hasattr(obj, "_asdict"):
        obj = obj._asdict()
    elif hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        obj = dataclasses.asdict(obj)
    if not isinstance(obj, dict):
        return None
    for key in ("requests", "store_requests", "object_store_requests"):
        v = obj.get(key)
        if isinstance(v, dict):
            # {op: count}, {op: {"count": ...}} or {op: OpStats} (shaledb.storage InstrumentedStore)
            out = {}
            for k, n in v.items():
                if isinstance(n, dict):
                    n = n.get("count")
                elif hasattr(n, "count") and not isinstance(n, (int, float)):
                    n = n.count
                if isinstance(n, (int, float)):
                    out[str(k)] = int(n)
            return out
    # Fallback: the flusher's upload counters (writes only; reads are not counted).
    uploads = {"wal_uploads": "PUT wal", "l0_ssts": "PUT sst", "manifest_updates": "PUT manifest"}
    if all(isinstance(obj.get(k), int) for k in uploads):
        return {label: int(obj[k]) for k, label in uploads.items()}
    return None


def _default_compression() -> str:
    from shaledb import Options

    return Options().compression


class ShaleDBAdapter(Adapter):
    name = "shaledb"

    def __init__(self, spec: dict):
        super().__init__(spec)
        loc = spec["location"]
        if loc["kind"] == "local":
            self.url = os.path.abspath(loc["path"])
            self.endpoint = None
        else:
            self.url = f"s3://{loc['bucket']}/{loc['prefix'].strip('/')}"
            self.endpoint = loc.get("endpoint")
        self.db = None
        self._requests_source = None
        self._list_store = None
        self._done = 0
        self._sampler = _Sampler(self)

    def _overrides(self) -> dict:
        # gc_min_age 0: the space-amplification figure is taken after a GC
        # that keeps nothing it may delete (this bench is the only user).
        ov: dict = {"wal": bool(self.spec["wal"]), "gc_min_age": 0.0}
        if self.spec.get("compression"):
            ov["compression"] = self.spec["compression"]
        if self.endpoint:
            ov["store_options"] = {"endpoint_url": self.endpoint}
        return ov

    def describe(self) -> dict:
        wal = bool(self.spec["wal"])
        w = int(self.spec["writers"])
        return {
            "engine": "ShaleDB " + _version(),
            "compression": self.spec.get("compression") or f"{_default_compression()} (default)",
            "store": self.url + (f" (endpoint {self.endpoint})" if self.endpoint else ""),
            "prefill_api": "put_many(numpy (data, offsets) pairs, await_durable=False) per batch"
            + (f" from {w} writer processes via db.writer()" if w > 1 else " from the engine process"),
            "flush_api": "db.flush()" if wal else "db.flush(memtable=True) (WAL off)",
            "put_api": f"db.put(k, v, await_durable={bool(self.spec['await_durable'])})",
            "get_api": "db.get",
            "scan_api": "db.scan()",
            "close_api": "db.close()",
            "compact_api": "db.compact(full=True)" if self.db is None or callable(getattr(self.db, "compact", None))
            else "shaledb.compact.Compactor(store).compact_once(full=True) (the Db has no compact() yet)",
            "gc_api": "db.gc() with gc_min_age=0" if self.db is None or callable(getattr(self.db, "gc", None))
            else "shaledb.gc.collect(store, min_age=0) (the Db has no gc() yet)",
            "writers": w,
            "fsync": "per the local store (fsync on)" if self.endpoint is None and self.url.startswith("/") else "S3 PUT",
            "requests_source": self._requests_source,
            "open_note": "open includes shaledb.kernels.warmup.warmup() (numba cache load or compile)",
        }

    def requests(self) -> dict | None:
        db = self.db
        if db is None:  # closed: the flusher's counters are gone (close's own uploads are not counted)
            return None
        for name in ("status", "stats", "metrics"):
            fn = getattr(db, name, None)
            if callable(fn):
                try:
                    counts = _find_request_counts(fn())
                except Exception:
                    counts = None
                if counts is not None:
                    self._requests_source = f"db.{name}()" + (
                        " upload counters (PUTs of WAL, SST and manifest objects; reads not counted)"
                        if "PUT wal" in counts else "")
                    merged = dict(self._base)
                    for k, v in counts.items():
                        merged[k] = merged.get(k, 0) + v
                    self._last_requests = merged
                    return merged
        return None

    _last_requests: dict | None = None
    _base: dict = {}

    def open(self) -> None:
        import shaledb

        t0 = time.perf_counter()
        _warmup()
        self.warmup_s = time.perf_counter() - t0
        self._base = dict(self._last_requests or {})
        self.db = shaledb.open(self.url, **self._overrides())

    def close(self) -> None:
        sampling = self._sampler.running
        if sampling:
            self._sampler.phase("close")
        try:
            if self.db is not None:
                self.requests()
                db, self.db = self.db, None  # the sampler stops asking for status
                db.close()
        finally:
            self._sampler.stop()
        if self._list_store is not None:
            self._list_store.close()
            self._list_store = None

    def reap(self) -> None:
        """Join the writer processes of the last prefill (after the flush)."""
        procs, self._to_reap = getattr(self, "_to_reap", []), []
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)

    def prefill(self, ds, n: int, batch: int, writers: int, bar) -> dict:
        if writers <= 1:
            self._sampler.start("prefill", lambda: self._done)
            db = self.db
            clock = time.perf_counter_ns
            calls, long_calls = [], []
            self._done = 0
            t0 = time.perf_counter()
            for lo in range(0, n, batch):
                hi = min(n, lo + batch)
                keys, vals = ds.pairs(lo, hi)
                c0 = clock()
                db.put_many(keys, vals, await_durable=False)
                calls.append(clock() - c0)
                if calls[-1] > LONG_CALL_NS:
                    long_calls.append((c0, calls[-1]))
                self._done = hi
                bar.update(hi - lo)
            return {"elapsed_s": time.perf_counter() - t0, "writers": 1, "call_ns": calls,
                    "long_calls": self._sampler.long_calls(long_calls, t0)}
        return self._prefill_processes(ds, n, batch, writers, bar)

    def _prefill_processes(self, ds, n: int, batch: int, writers: int, bar) -> dict:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        go = ctx.Event()
        counter = ctx.Value("q", 0)
        results = ctx.Queue()
        bounds = [n * i // writers for i in range(writers + 1)]
        procs: list = []
        self._to_reap = []
        try:
            for i in range(writers):
                h = self.db.writer()
                p = ctx.Process(
                    target=_writer_main,
                    args=(h, self.spec["data_dir"], bounds[i], bounds[i + 1], batch, go, counter, results),
                    name=f"bench-writer-{i}",
                )
                p.start()
                procs.append(p)
            # Every writer has loaded the data, warmed up and attached: start them together.
            self._collect(procs, results, writers, "ready", time.monotonic() + _WRITER_START_TIMEOUT, None)
            self._sampler.start("prefill", lambda: counter.value)
            t0 = time.perf_counter()
            go.set()
            reports = self._collect(procs, results, writers, "ok", time.monotonic() + _WRITER_RUN_TIMEOUT,
                                    (counter, bar))
            elapsed = time.perf_counter() - t0
            # Every writer reported its last put_many done: the flush phase
            # starts now; the writer processes exit meanwhile and are joined
            # after it (reap()), so their exit is neither timed nor a pause
            # in which the flusher could catch up untimed.
            self._to_reap = procs
            return {
                "elapsed_s": elapsed,
                "writers": writers,
                "call_ns": [c for r in reports for c in r["call_ns"]],
                "long_calls": self._sampler.long_calls([c for r in reports for c in r.get("long_calls", ())], t0),
                "per_writer": [
                    {"records": r["records"], "elapsed_s": r["elapsed_s"], "startup_s": r["startup_s"],
                     "exit_s": r["exit_s"], "records_per_s": r["records"] / r["elapsed_s"] if r["elapsed_s"] else None}
                    for r in reports
                ],
            }
        finally:
            # On success the writers are reaped after the flush (reap()); on a
            # failure here, now.
            for p in procs if self._to_reap is not procs else ():
                if p.is_alive():
                    p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=10)
            results.close()

    @staticmethod
    def _collect(procs, results, count: int, key: str, deadline: float, progress_of) -> list[dict]:
        """Wait for ``count`` messages holding ``key`` from the writer processes.

        Fails at once when a writer reports an error or dies, and at ``deadline``."""
        got: list[dict] = []
        shown = 0
        while len(got) < count:
            try:
                r = results.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"writer processes: {len(got)} of {count} reported {key!r} in time")
                dead = [p for p in procs if p.exitcode is not None and p.exitcode != 0]
                if dead:
                    raise RuntimeError(f"writer process {dead[0].name} exited with code {dead[0].exitcode}")
            else:
                if r.get("ok") is False:
                    raise RuntimeError(f"writer {r['pid']} failed: {r['error']}\n{r['traceback']}")
                if key in r:
                    got.append(r)
            if progress_of is not None:
                counter, bar = progress_of
                done = counter.value
                bar.update(done - shown)
                shown = done
        return got

    def flush(self) -> None:
        # The timeline goes on through the close that follows (the L0 build of
        # the through-close figure); close() stops it.
        self._sampler.phase("flush")
        if self.spec["wal"]:
            self.db.flush()
        else:
            self.db.flush(memtable=True)

    # -- LSM lifecycle: compaction, GC, the shape of the tree -----------------

    def _listing_store(self):
        """A store handle on the database root for listings and manifest
        reads (on S3 behind the counting proxy: the server itself, so the
        bench's own listings are not counted as the engine's requests)."""
        if self._list_store is None:
            from shaledb.storage import open_store

            loc = self.spec["location"]
            if loc["kind"] == "local":
                self._list_store = open_store(self.url)
            else:
                ep = loc.get("list_endpoint") or loc.get("endpoint")
                self._list_store = open_store(self.url, **({"endpoint_url": ep} if ep else {}))
        return self._list_store

    def tree(self) -> dict:
        from shaledb.cli import database_info

        info = database_info(self._listing_store(), what=self.url)
        kinds = info["store"]["by_kind"]
        out = {
            "l0": info["l0"]["count"],
            "l0_bytes": info["l0"]["bytes"],
            "sorted_runs": len(info["sorted_runs"]),
            "run_bytes": sum(r["bytes"] for r in info["sorted_runs"]),
            "store_bytes": info["store"]["bytes"],
            "store_objects": info["store"]["objects"],
            "bytes_by_kind": {k: v["bytes"] for k, v in kinds.items() if v["objects"]},
        }
        return out

    def compact(self) -> dict:
        self._sampler.start("compact", lambda: None)
        try:
            fn = getattr(self.db, "compact", None)
            if callable(fn):
                rep = _plain(fn(full=True))
                return {"api": "db.compact(full=True)", "workers": getattr(self.db, "options", None) and
                        getattr(self.db.options, "compaction_workers", None), **rep}
            # This Db has no compact() yet: the library compactor on the same root.
            from shaledb.compact import Compactor
            from shaledb.options import Options, wrap_store

            opts = Options(**({"store_options": {"endpoint_url": self.endpoint}} if self.endpoint else {}))
            store = wrap_store(self._new_store(), opts)
            try:
                with Compactor(store, opts) as c:
                    rep = _plain(c.compact_once(full=True))
            finally:
                store.close()
            return {"api": "shaledb.compact.Compactor(store).compact_once(full=True) "
                           "(this Db has no compact() yet)", "workers": opts.compaction_workers, **rep}
        finally:
            self._sampler.stop()

    def _new_store(self):
        from shaledb.storage import open_store

        return open_store(self.url, **({"endpoint_url": self.endpoint} if self.endpoint else {}))

    def gc(self) -> dict:
        fn = getattr(self.db, "gc", None)
        if callable(fn):
            res = fn(dry_run=False)
            api = "db.gc() (opened with gc_min_age=0)"
        else:
            from shaledb.gc import collect

            res = collect(self._listing_store(), min_age=0)
            api = "shaledb.gc.collect(store, min_age=0) (this Db has no gc() yet)"
        if isinstance(res, dict):  # db.gc(): counts under "deleted" (older builds: "counts")
            counts, nbytes = res.get("deleted", res.get("counts")), res.get("bytes")
        else:
            counts, nbytes = res.counts, res.bytes
        return {"api": api, "deleted": counts, "deleted_bytes": nbytes}

    def timeline(self) -> list | None:
        return self._sampler.samples

    def run_ops(self, keys, values, is_put, await_durable, deadline_ns):
        put = functools.partial(self.db.put, await_durable=await_durable)
        return timed_ops(put, self.db.get, keys, values, is_put, deadline_ns)

    def get_many(self, keys):
        return timed_gets(self.db.get, keys)

    def batch_get(self, keys):
        return "Db.get_many(list of bytes)", self.db.get_many(keys)

    def batch_get_arrays(self, keys):
        import numpy as np

        offs = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum([len(k) for k in keys], out=offs[1:])
        pair = (np.frombuffer(b"".join(keys), dtype=np.uint8), offs)

        def call():
            vd, vo, found = self.db.get_many(pair)
            return vd, vo, found

        return "Db.get_many(numpy (data, offsets))", call

    def batch_scan(self):
        n = nbytes = 0
        for kd, ko, vd, _vo in self.db.scan_arrays():
            n += len(ko) - 1
            nbytes += len(kd) + len(vd)
        return "Db.scan_arrays() (numpy batches of 65536)", n, nbytes

    def scan(self, bar, check: bool = False) -> dict:
        tally = ScanCheck(check, copy=True)
        tally.add_all(self.db.scan(), bar)
        return tally.scan_result()

def _plain(rep) -> dict:
    """A compaction report (dataclass, named tuple or dict) as a dict."""
    import dataclasses

    if dataclasses.is_dataclass(rep):
        return dataclasses.asdict(rep)
    if hasattr(rep, "_asdict"):
        return dict(rep._asdict())
    return dict(rep) if isinstance(rep, dict) else {"report": repr(rep)}


class _Sampler:
    """Once a second (spec ``timeline_interval``), in a background thread: records written so far,
    ``db.status()`` (L0 count, stall seconds) and the tree from a store
    listing, while prefill, flush or compact runs.  Samples accumulate in
    ``samples`` (a list of dicts, time ``t`` from the first start).
    Thread safety: start/phase/stop from the driver's thread only."""

    INTERVAL = 1.0

    def __init__(self, adapter: "ShaleDBAdapter"):
        import threading

        self.adapter = adapter
        self.samples: list[dict] = []
        self._t0: float | None = None
        self._phase = None
        self._records = None
        self._stop = threading.Event()
        self._thread = None

    def start(self, phase: str, records) -> None:
        import threading

        if not self.adapter.spec.get("timeline"):
            return
        self.stop()
        self._phase, self._records = phase, records
        if self._t0 is None:  # the first sample at time 0, before the clock of the phase starts
            self._t0 = time.perf_counter()
            self.sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-timeline", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def phase(self, phase: str) -> None:
        """Go on sampling under another phase name (starts if stopped)."""
        if self._thread is None:
            self.start(phase, lambda: None)
        self._phase = phase

    def stop(self) -> None:
        t, self._thread = self._thread, None
        if t is not None:
            self._stop.set()
            self.sample()  # the end of the phase
            t.join(timeout=30)

    def _run(self) -> None:
        interval = float(self.adapter.spec.get("timeline_interval") or self.INTERVAL)
        while not self._stop.wait(interval):
            self.sample()

    def long_calls(self, calls, origin: float) -> list[list[float]]:
        """``(start perf_counter_ns, duration ns)`` pairs (from any process
        of this machine: one monotonic clock) as ``[t, seconds]`` on the
        timeline's clock (without a timeline: seconds since ``origin``, a
        ``perf_counter`` reading), in start order."""
        t0 = self._t0 if self._t0 is not None else origin
        return [[round(c0 / 1e9 - t0, 3), round(d / 1e9, 3)] for c0, d in sorted(calls)]

    def sample(self) -> None:
        a = self.adapter
        s: dict = {"t": time.perf_counter() - self._t0, "phase": self._phase}
        try:
            s["records"] = self._records() if self._records is not None else None
        except Exception:
            s["records"] = None
        db = a.db
        try:
            st = db.status() if db is not None else {}
            s["l0_status"] = st.get("l0")
            s["stall_s"] = st.get("l0_stall_seconds")
            s["paced_s"] = st.get("write_paced_seconds")
            s["pace_rate"] = st.get("write_pace_rate")
        except Exception as exc:
            s["status_error"] = type(exc).__name__
        try:
            s.update(a.tree())
        except Exception as exc:
            s["tree_error"] = type(exc).__name__
        self.samples.append(s)


def _version() -> str:
    try:
        import shaledb

        return getattr(shaledb, "__version__", "?")
    except ImportError:
        return "?"
