"""The adapter interface every benchmarked engine implements.

The driver owns the phases, the clock for the simple phases, the data and the
checks; an adapter owns the engine calls and the inner loops (so an async
engine runs its loops inside one event-loop call, and no engine pays for
another's calling convention).

Conventions:

* Inputs are prepared before the clock starts, in the engine's native input
  form: ShaleDB takes the numpy ``(data, offsets)`` pairs as they are; the
  peers take lists of ``bytes`` (the conversion from numpy is not timed).
* Latencies are ``time.perf_counter_ns()`` differences around one call.
* The timed loops shared by the synchronous adapters (and the driver's
  harness-overhead calibration) live here: ``timed_ops``, ``timed_gets`` and
  ``ScanCheck.add_all``; an adapter binds its engine's calling convention
  once (``functools.partial``) and hands the callables in.
"""

from __future__ import annotations

import abc
import time

__all__ = ["Adapter", "ScanCheck", "expected_digest", "timed_gets", "timed_ops", "value_digest"]


class Adapter(abc.ABC):
    #: engine name as printed
    name: str = "?"

    def __init__(self, spec: dict):
        self.spec = spec

    # -- description -------------------------------------------------------

    @abc.abstractmethod
    def describe(self) -> dict:
        """Which API each phase uses, the store, and settings (for the output)."""

    def location(self) -> dict:
        """Where the engine's objects/files live: {"kind": "local", "path"} or
        {"kind": "s3", "bucket", "prefix", "endpoint"}."""
        return dict(self.spec["location"])

    def requests(self) -> dict | None:
        """Cumulative object-store request counts by kind, or None if unknown."""
        return None

    # -- lifecycle ---------------------------------------------------------

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def reopen(self) -> tuple[float, float]:
        """Close and open again; returns (close_s, open_s)."""
        import time

        t0 = time.perf_counter()
        self.close()
        t1 = time.perf_counter()
        self.open()
        return t1 - t0, time.perf_counter() - t1

    # -- phases ------------------------------------------------------------

    @abc.abstractmethod
    def prefill(self, ds, n: int, batch: int, writers: int, bar) -> dict:
        """Write records ``0:n`` of ``ds`` in batches, not awaiting durability.

        Returns at least {"elapsed_s": float, "writers": int}; the elapsed
        time covers the engine calls only (not input conversion)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make everything written so far durable (WAL on: the WAL; WAL off: the memtable)."""

    @abc.abstractmethod
    def run_ops(self, keys: list, values: list, is_put: list, await_durable: bool,
                deadline_ns: int) -> tuple[list, list, list]:
        """Run one chunk of the mixed phase in order, stopping after the first
        operation that ends past ``deadline_ns`` (``time.perf_counter_ns``).

        Returns (put_latencies_ns, get_latencies_ns, get_results) of the
        operations that ran (a prefix of the chunk)."""

    @abc.abstractmethod
    def get_many(self, keys: list) -> tuple[list, list]:
        """Point-get each key in order; returns (latencies_ns, value digests)
        (``value_digest``: each value dropped before the next get)."""

    def batch_get(self, keys: list):
        """``(api name, values)`` of one batch point read of ``keys`` (the
        engine's multi-get), or None when it has none."""
        return None

    def batch_get_arrays(self, keys: list):
        """``(api name, call)``: ``call()`` runs one batch point read of
        ``keys`` given as numpy arrays (prepared before the clock starts) and
        returns the values as a list; None when the engine has no such form."""
        return None

    def batch_scan(self):
        """``(api name, records, key+value bytes)`` of one full scan into
        column arrays (no per-record objects), or None when the engine has none."""
        return None

    def compact(self) -> dict:
        """Merge everything into as few sorted runs as the engine offers (a
        major compaction).  Returns {"api": str} plus, when known,
        "jobs", "bytes_in", "bytes_out"; {"api": None, "why": str} when the
        engine offers nothing to call (then the phase is reported as not run)."""
        return {"api": None, "why": "this engine's adapter has no compaction call"}

    def gc(self) -> dict:
        """Delete what the engine no longer needs, with no minimum age.
        Returns {"api": str, ...counts} or {"api": None, "why": str}."""
        return {"api": None, "why": "this engine's adapter has no garbage-collection call"}

    def tree(self) -> dict:
        """The shape of the tree now: {"l0": int|None, "sorted_runs": int|None}
        and any engine-specific detail (bytes by kind).  None fields: unknown."""
        return {"l0": None, "sorted_runs": None}

    def timeline(self) -> list | None:
        """Samples taken once per second during prefill/flush/compact, when the
        adapter takes them (ShaleDB does; see ``bench/plot.py``)."""
        return None

    @abc.abstractmethod
    def scan(self, bar, check: bool = False) -> dict:
        """Full scan. Returns {"count", "bytes"}; with ``check`` also
        {"in_order": bool, "digest": int} where digest is the sum modulo 2**64
        of ``xxh3_64(key + value)`` over all records."""


_MASK64 = (1 << 64) - 1


def timed_ops(put, get, keys, values, is_put, deadline_ns: int) -> tuple[list, list, list]:
    """The mixed-phase loop (see ``Adapter.run_ops``): ``put(k, v)`` or
    ``get(k)`` in order, each timed, until one ends past ``deadline_ns``."""
    clock = time.perf_counter_ns
    pl, gl, got = [], [], []
    for k, v, p in zip(keys, values, is_put):
        if p:
            t0 = clock()
            put(k, v)
            t1 = clock()
            pl.append(t1 - t0)
        else:
            t0 = clock()
            r = get(k)
            t1 = clock()
            gl.append(t1 - t0)
            got.append(r)
        if t1 > deadline_ns:
            break
    return pl, gl, got


def timed_gets(get, keys) -> tuple[list, list]:
    """``get(k)`` for each key in order; (latencies_ns, value digests).

    Each value is digested (``value_digest``, outside the timed call) and
    dropped before the next get, as a reading program that uses its values
    would: keeping every value alive through a pass made each get of a large
    value take fresh memory from the allocator (256 page faults per 1 MiB
    value), so the figure depended on the harness process's allocator state,
    not on the engine."""
    clock = time.perf_counter_ns
    lat, got = [], []
    for k in keys:
        t0 = clock()
        r = get(k)
        lat.append(clock() - t0)
        got.append(value_digest(r))
    return lat, got


def value_digest(v) -> int | None:
    """What a read pass keeps of a value: None for absent, else its xxh3-64."""
    from xxhash import xxh3_64_intdigest

    return None if v is None else xxh3_64_intdigest(v)


class ScanCheck:
    """Count, bytes, order check and order-independent content digest of a scan.

    ``add_all(pairs, bar)`` runs the scan loop itself (no call per record);
    with ``check=False`` only count and bytes are kept.
    """

    def __init__(self, check: bool = True, copy: bool = False):
        from xxhash import xxh3_64_intdigest

        self._h = xxh3_64_intdigest
        self.check = check
        self.copy = copy  # keys/values are views: compare and hash bytes copies
        self.prev: bytes | None = None
        self.in_order = True
        self.digest = 0
        self.count = 0
        self.nbytes = 0

    def add_all(self, pairs, bar=None) -> None:
        """Take every ``(key, value)`` of ``pairs``; ``bar`` advances every 65,536 records."""
        seen = nbytes = 0
        check, copy, add = self.check, self.copy, self.add
        for k, v in pairs:
            seen += 1
            nbytes += len(k) + len(v)
            if check:
                if copy:
                    add(bytes(k), bytes(v))
                else:
                    add(k, v)
            if bar is not None and not seen & 0xFFFF:
                bar.update(0x10000)
        if bar is not None:
            bar.update(seen & 0xFFFF)
        self.count += seen
        self.nbytes += nbytes

    def scan_result(self) -> dict:
        """{"count", "bytes"}, plus {"in_order", "digest"} when checking."""
        out = {"count": self.count, "bytes": self.nbytes}
        if self.check:
            out.update(self.result())
        return out

    def add(self, key: bytes, value: bytes) -> None:
        if self.prev is not None and key <= self.prev:
            self.in_order = False
        self.prev = key
        self.digest = (self.digest + self._h(key + value)) & _MASK64

    def result(self) -> dict:
        return {"in_order": self.in_order, "digest": self.digest}


def expected_digest(ds, n: int) -> int:
    """The digest :class:`ScanCheck` must reach over records ``0:n`` of ``ds``."""
    from xxhash import xxh3_64_intdigest

    total = 0
    step = 65536
    for a in range(0, n, step):
        b = min(n, a + step)
        ks, vs = ds.bytes_lists(a, b)
        total = (total + sum(xxh3_64_intdigest(k + v) for k, v in zip(ks, vs))) & _MASK64
    return total
