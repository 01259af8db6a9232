"""RocksDB through ``rocksdict`` (raw bytes mode), for the ingest benchmark.

Fastest honest bulk path: one ``WriteBatch`` per batch of records, filled
with ``WriteBatch.put`` and applied with ``Rdict.write``; WAL as configured
(``WriteOptions.disable_wal``), no fsync per batch.  Durability points:

* flush phase: WAL on -> ``flush_wal(sync=True)`` (fsync of the WAL);
  WAL off -> ``flush(wait=True)`` (memtable to an SST file);
* mixed with ``--await-durable``: each put uses ``WriteOptions(sync=True)``;
* close: ``flush(wait=True)`` then ``close()``.

RocksDB allows one writing process per database, so prefill uses one writer
whatever ``--writers`` says.  It always runs on a local directory (when the
benchmark store is S3, on a scratch directory next to the run).
"""

from __future__ import annotations

import functools
import time

from bench._peers.base import Adapter, ScanCheck, timed_gets, timed_ops


class RocksdictAdapter(Adapter):
    name = "rocksdict"

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.path = spec["location"]["path"]
        self.db = None

    def describe(self) -> dict:
        import rocksdict  # noqa: F401
        from importlib.metadata import version

        wal = bool(self.spec["wal"])
        return {
            "engine": "RocksDB via rocksdict " + version("rocksdict"),
            "compression": "snappy (RocksDB's default; 4 KiB blocks; no bottommost override)",
            "store": f"local directory {self.path}",
            "prefill_api": "WriteBatch(raw_mode=True).put per record + Rdict.write(batch)"
            + ("" if wal else " with disable_wal"),
            "flush_api": "Rdict.flush_wal(sync=True)" if wal else "Rdict.flush(wait=True)",
            "put_api": "Rdict.put" + (" with WriteOptions(sync=True)" if self.spec["await_durable"] else ""),
            "get_api": "Rdict.get",
            "scan_api": "Rdict.items() iterator",
            "close_api": "Rdict.flush(wait=True) + close()",
            "compact_api": "Rdict.compact_range(None, None)",
            "tree_note": "sorted runs: each L0 file plus each non-empty level (rocksdb.num-files-at-levelN)",
            "writers": 1,
            "writers_note": "RocksDB admits one writing process per database",
            "fsync": "WAL fsync at the flush phase (WAL on) / SST files synced on memtable flush",
        }

    def _options(self):
        from rocksdict import Options

        opt = Options(raw_mode=True)
        opt.create_if_missing(True)
        return opt

    def _write_options(self, sync: bool = False):
        from rocksdict import WriteOptions

        wo = WriteOptions()
        wo.disable_wal = not bool(self.spec["wal"])
        wo.sync = bool(sync) and bool(self.spec["wal"])
        return wo

    def open(self) -> None:
        from rocksdict import Rdict

        self.db = Rdict(self.path, self._options())
        self._wo = self._write_options()
        self._wo_sync = self._write_options(sync=True)

    def close(self) -> None:
        if self.db is not None:
            self.db.flush(True)
            self.db.close()
            self.db = None

    def prefill(self, ds, n: int, batch: int, writers: int, bar) -> dict:
        from rocksdict import WriteBatch

        db, wo = self.db, self._wo
        clock = time.perf_counter_ns
        calls = []
        for a in range(0, n, batch):
            b = min(n, a + batch)
            keys, vals = ds.bytes_lists(a, b)  # input conversion: not timed
            t0 = clock()
            wb = WriteBatch(raw_mode=True)
            put = wb.put
            for k, v in zip(keys, vals):
                put(k, v)
            db.write(wb, wo)
            calls.append(clock() - t0)
            bar.update(b - a)
        return {"elapsed_s": sum(calls) / 1e9, "writers": 1, "call_ns": calls}

    def compact(self) -> dict:
        self.db.compact_range(None, None)
        return {"api": "Rdict.compact_range(None, None) (every level, into the last)"}

    def gc(self) -> dict:
        return {"api": None, "why": "RocksDB deletes obsolete files itself after each flush and compaction"}

    def tree(self) -> dict:
        if self.db is None:
            return {"l0": None, "sorted_runs": None}
        prop = self.db.property_int_value
        levels = [prop(f"rocksdb.num-files-at-level{i}") or 0 for i in range(7)]
        return {"l0": levels[0], "sorted_runs": levels[0] + sum(1 for n in levels[1:] if n),
                "files_per_level": levels}

    def flush(self) -> None:
        if self.spec["wal"]:
            self.db.flush_wal(True)
        else:
            self.db.flush(True)

    def run_ops(self, keys, values, is_put, await_durable, deadline_ns):
        put = functools.partial(self.db.put, write_opt=self._wo_sync if await_durable else self._wo)
        return timed_ops(put, self.db.get, keys, values, is_put, deadline_ns)

    def get_many(self, keys):
        return timed_gets(self.db.get, keys)

    def batch_get(self, keys):
        return "Rdict.get(list) (multi_get)", self.db.get(keys)

    def scan(self, bar, check: bool = False) -> dict:
        tally = ScanCheck(check)
        tally.add_all(self.db.items(), bar)
        return tally.scan_result()
