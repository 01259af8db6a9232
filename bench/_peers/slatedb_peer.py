"""SlateDB through its ``slatedb`` Python binding (UniFFI, async), for the ingest benchmark.

Fastest honest bulk path: one ``WriteBatch`` per batch of records (``put``
per record, synchronous) applied with ``await db.write(batch)``, which
returns once the batch is in the memtable (the binding has no
``await_durable`` flag); then ``await db.flush()`` makes it durable (WAL on:
the WAL objects; WAL off: the memtable as L0).  Mixed puts use
``await db.put``; with ``--await-durable`` each also awaits
``WriteHandle.await_durable()``.  Scans use ``scan_with_options`` with 8 MiB
read-ahead and 4 fetch tasks (the defaults issue one ranged GET per block)
and ``DbIterator.next_batch(1000)``.  ``close`` is ``shutdown()`` (memtable
flushed to L0).  Every loop runs inside one event-loop call.

Object-store requests come from the binding's ``DefaultMetricsRecorder``
(``slatedb.object_store.request_count`` summed by API, every component).

The binding copies each ``bytes`` argument into Rust one byte at a time in
Python, so ingest through it is bounded near 20-50 k records/s for 100-byte
values; the benchmark runs it on a subset (``--peer-records``) and compares
rates.  SlateDB writes through ``object_store``'s local backend with no fsync.
"""

from __future__ import annotations

import asyncio
import os
import time

from bench._peers.base import Adapter, ScanCheck, value_digest

_READ_AHEAD = 8 << 20
_FETCH_TASKS = 4


class SlateDBAdapter(Adapter):
    name = "slatedb"

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.loop = asyncio.new_event_loop()
        self.db = None
        self.recorder = None
        self._store = None
        loc = spec["location"]
        if loc["kind"] == "local":
            self.url = "file:///"
            self.db_path = os.path.abspath(loc["path"]).lstrip("/")
        else:
            if loc.get("endpoint"):
                os.environ["AWS_ENDPOINT"] = loc["endpoint"]
                if loc["endpoint"].startswith("http://"):
                    os.environ["AWS_ALLOW_HTTP"] = "true"
            if "AWS_REGION" not in os.environ:
                os.environ["AWS_REGION"] = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
            self.url = f"s3://{loc['bucket']}"
            self.db_path = loc["prefix"].strip("/")

    def describe(self) -> dict:
        from importlib.metadata import version

        wal = bool(self.spec["wal"])
        return {
            "engine": "SlateDB via slatedb " + version("slatedb") + " (UniFFI binding, asyncio)",
            "store": f"{self.url} path {self.db_path}",
            "prefill_api": "WriteBatch.put per record + await Db.write(batch)",
            "flush_api": "await Db.flush()" + (" (WAL)" if wal else " (memtable to L0, WAL off)"),
            "put_api": "await Db.put" + (" + await WriteHandle.await_durable()" if self.spec["await_durable"] else ""),
            "get_api": "await Db.get",
            "scan_api": f"Db.scan_with_options(read_ahead_bytes={_READ_AHEAD}, max_fetch_tasks={_FETCH_TASKS}) + next_batch(1000)",
            "close_api": "await Db.shutdown()",
            "compact_api": "none: Db has no compaction call (Admin.submit_compaction needs a running compactor)",
            "writers": 1,
            "writers_note": "one writer per database; the binding is driven from one asyncio loop",
            "fsync": "none (object_store local backend does not fsync)" if self.url == "file:///" else "S3 PUT",
        }

    def requests(self) -> dict | None:
        if self.recorder is None:
            return self._last_requests
        out: dict[str, int] = {}
        for m in self.recorder.snapshot():
            if m.name != "slatedb.object_store.request_count":
                continue
            labels = {lab.key: lab.value for lab in m.labels}
            api = labels.get("api", "?")
            val = m.value[0] if hasattr(m.value, "__getitem__") else 0
            out[api] = out.get(api, 0) + int(val)
        for api, val in self._base.items():
            out[api] = out.get(api, 0) + val
        self._last_requests = out
        return out

    _last_requests: dict | None = None
    _base: dict = {}

    def _run(self, coro):
        return self.loop.run_until_complete(coro)

    def open(self) -> None:
        from slatedb.uniffi import DbBuilder, DefaultMetricsRecorder, ObjectStore, Settings

        # A fresh recorder per open; carry earlier counts over so the totals stay cumulative.
        self._base = dict(self._last_requests or {})
        if self._store is None:
            self._store = ObjectStore.resolve(self.url)
        settings = Settings.default()
        settings.set("wal_enabled", "true" if self.spec["wal"] else "false")
        builder = DbBuilder(self.db_path, self._store)
        builder.with_settings(settings)
        self.recorder = DefaultMetricsRecorder()
        builder.with_metrics_recorder(self.recorder)
        self.db = self._run(builder.build())

    def close(self) -> None:
        if self.db is not None:
            self.requests()
            self._run(self.db.shutdown())
            self.requests()
            self.db = None
            self.recorder = None

    def prefill(self, ds, n: int, batch: int, writers: int, bar) -> dict:
        from slatedb.uniffi import WriteBatch

        db = self.db
        calls = []

        async def write(keys, vals):
            wb = WriteBatch()
            put = wb.put
            for k, v in zip(keys, vals):
                put(k, v)
            await db.write(wb)

        for a in range(0, n, batch):
            b = min(n, a + batch)
            keys, vals = ds.bytes_lists(a, b)  # input conversion: not timed
            t0 = time.perf_counter_ns()
            self._run(write(keys, vals))
            calls.append(time.perf_counter_ns() - t0)
            bar.update(b - a)
        return {"elapsed_s": sum(calls) / 1e9, "writers": 1, "call_ns": calls}

    def compact(self) -> dict:
        return {"api": None, "why": "the binding's Db has no compaction call; Admin.submit_compaction hands a "
                                    "spec to a separately running compactor, which this benchmark does not run"}

    def gc(self) -> dict:
        return {"api": None, "why": "the binding's Admin.run_gc_once exists, but without a compaction "
                                    "there is little for it to collect; not driven"}

    def flush(self) -> None:
        self._run(self.db.flush())

    def run_ops(self, keys, values, is_put, await_durable, deadline_ns):
        db = self.db
        clock = time.perf_counter_ns

        async def ops():
            pl, gl, got = [], [], []
            for k, v, p in zip(keys, values, is_put):
                if p:
                    t0 = clock()
                    h = await db.put(k, v)
                    if await_durable:
                        await h.await_durable()
                    t1 = clock()
                    pl.append(t1 - t0)
                else:
                    t0 = clock()
                    r = await db.get(k)
                    t1 = clock()
                    gl.append(t1 - t0)
                    got.append(r)
                if t1 > deadline_ns:
                    break
            return pl, gl, got

        return self._run(ops())

    def get_many(self, keys):
        db = self.db
        clock = time.perf_counter_ns

        async def gets():
            lat, got = [], []
            for k in keys:
                t0 = clock()
                r = await db.get(k)
                lat.append(clock() - t0)
                got.append(value_digest(r))
            return lat, got

        return self._run(gets())

    def scan(self, bar, check: bool = False) -> dict:
        from slatedb.uniffi import DurabilityLevel, KeyRange, ScanOptions

        db = self.db
        tally = ScanCheck(check)

        async def scan():
            opts = ScanOptions(
                durability_filter=DurabilityLevel.MEMORY,
                dirty=False,
                read_ahead_bytes=_READ_AHEAD,
                cache_blocks=True,
                max_fetch_tasks=_FETCH_TASKS,
            )
            rng = KeyRange(start=None, start_inclusive=False, end=None, end_inclusive=False)
            it = await db.scan_with_options(rng, opts)
            while rows := await it.next_batch(1000):
                tally.add_all((kv.key, kv.value) for kv in rows)
                bar.update(len(rows))

        self._run(scan())
        return tally.scan_result()
