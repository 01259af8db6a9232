"""Kernel microbenchmarks: ``python -m bench.kernels [--records N] [--repeat R] [--datasets A,B] [--json PATH]``.

Three datasets of N records with 100-byte values, in arena order (unsorted,
~10 % overwrites of earlier keys, ~5 % tombstones):

* ``fixed16``: 16-byte random keys;
* ``var8-64``: 8..64-byte keys that share one of 64 prefixes (6..24 bytes);
* ``prefixed``: 8..64-byte keys (length uniform) with 64 distinct prefixes of
  16..32 bytes (``tenant/NNNN/`` then letters, ``/``) followed by decimal
  digits; a key keeps at least 8 digits, so one shorter than its prefix + 8
  keeps only the start of its prefix (keys from 24 bytes on carry it whole).

For each kernel: the median of R runs, records/s and GB/s (bytes = the record
bytes the kernel reads), next to a baseline measured in the same run:
the ``xxhash`` package for hashing, ``sorted()`` and ``np.lexsort`` for
sorting, plain-Python loops for append, block encode, bloom, dedupe and merge
(those run on a sample and are scaled to N; the table says so).  ``np.copyto``
of the record buffer is the bandwidth ceiling.  Then the CPU time of the
whole flush path (sort + dedupe + block encode with checksums + bloom; the
keys hashed once, by dedupe, for the bloom filter; the sort's scratch kept
between passes, as the flusher process keeps it, the first pass not
counted) and the cold-compile and
cached-load times of ``warmup()`` in fresh processes.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import pathlib
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

from shaledb.kernels._jit import kernel
from shaledb.format.record import RECORD_HEADER
from shaledb.kernels.hashing import xxh64, xxh64_range
from shaledb.kernels.record import key_len

ROOT = pathlib.Path(__file__).resolve().parent.parent
VALUE_LEN = 100


# --------------------------------------------------------------------------- data


@kernel
def _fill_records(buf, offs, keys, key_offs, trailers, value_len):
    for i in range(offs.shape[0]):
        o = offs[i]
        ks = key_offs[i]
        kl = key_offs[i + 1] - ks
        for b in range(4):
            buf[o + b] = (kl >> (8 * b)) & 0xFF
            buf[o + 4 + b] = (value_len >> (8 * b)) & 0xFF
        t = trailers[i]
        for b in range(8):
            buf[o + 8 + b] = np.uint8((t >> np.uint64(8 * b)) & np.uint64(0xFF))
        for j in range(kl):
            buf[o + RECORD_HEADER + j] = keys[ks + j]
        for j in range(value_len):
            buf[o + RECORD_HEADER + kl + j] = np.uint8((i + j) & 0xFF)


@kernel
def _hash_keys(buf, offs, out):
    for i in range(offs.shape[0]):
        o = offs[i]
        out[i] = xxh64_range(buf, o + RECORD_HEADER, key_len(buf, o), np.uint64(0))


class Dataset:
    def __init__(self, name: str, keys: list[bytes], rng: np.random.Generator):
        n = len(keys)
        self.name = name
        self.keys = keys
        lens = np.fromiter((len(k) for k in keys), dtype=np.int64, count=n)
        key_offs = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=key_offs[1:])
        sizes = (RECORD_HEADER + lens + VALUE_LEN + 7) & ~7
        self.offs = np.zeros(n, dtype=np.int64)
        np.cumsum(sizes[:-1], out=self.offs[1:])
        self.buf = np.zeros(int(sizes.sum()), dtype=np.uint8)
        kinds = (rng.random(n) >= 0.05).astype(np.uint64)  # ~5 % tombstones (their value bytes are kept: bench only)
        self.trailers = (np.arange(1, n + 1, dtype=np.uint64) << np.uint64(8)) | kinds
        _fill_records(self.buf, self.offs, np.frombuffer(b"".join(keys), dtype=np.uint8), key_offs, self.trailers, VALUE_LEN)
        self.lens = lens
        self.kinds = kinds

    @property
    def nbytes(self) -> int:
        return int(self.buf.shape[0])

    def __len__(self) -> int:
        return len(self.keys)


def make_datasets(n: int, seed: int = 1) -> list[Dataset]:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    fixed = [bytes(r) for r in raw]
    _overwrite(fixed, rng)
    prefixes = [b"shale/" + bytes(rng.integers(97, 123, size=int(rng.integers(0, 19)), dtype=np.uint8)) for _ in range(64)]
    pick = rng.integers(0, 64, size=n)
    total = rng.integers(8, 65, size=n)
    tails = rng.integers(48, 58, size=(n, 64), dtype=np.uint8)  # ascii digits
    var = []
    for i in range(n):
        p = prefixes[pick[i]]
        t = max(int(total[i]) - len(p), 1)
        var.append(p + tails[i, :t].tobytes())
    _overwrite(var, rng)
    return [Dataset("fixed16", fixed, rng), Dataset("var8-64", var, rng), Dataset("prefixed", prefixed_keys(n, rng), rng)]


def prefixed_keys(n: int, rng, n_prefixes: int = 64) -> list[bytes]:
    """``n`` keys of 8..64 bytes over ``n_prefixes`` prefixes of 16..32 bytes (see module doc)."""
    prefixes = []
    for _ in range(n_prefixes):
        size = int(rng.integers(16, 33))
        head = b"tenant/%04d/" % int(rng.integers(0, 10000))
        fill = bytes(rng.integers(97, 123, size=size - len(head) - 1, dtype=np.uint8))
        prefixes.append(head + fill + b"/")
    pick = rng.integers(0, n_prefixes, size=n)
    total = rng.integers(8, 65, size=n)
    digits = rng.integers(48, 58, size=(n, 64), dtype=np.uint8)
    keys = []
    for i in range(n):
        L = int(total[i])
        p = prefixes[pick[i]][: L - 8]
        keys.append(p + digits[i, : L - len(p)].tobytes())
    _overwrite(keys, rng)
    return keys


def _overwrite(keys: list[bytes], rng) -> None:
    n = len(keys)
    if n < 2:
        return
    for i in rng.integers(1, n, size=n // 10):
        keys[i] = keys[int(rng.integers(0, i))]


# ----------------------------------------------------------------------- timing


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, dataset, kernel_name, impl, seconds, n, nbytes, note="", baseline_of=None):
        row = {
            "dataset": dataset,
            "kernel": kernel_name,
            "impl": impl,
            "seconds": seconds,
            "records": n,
            "records_per_s": n / seconds if seconds > 0 else float("inf"),
            "gb_per_s": nbytes / seconds / 1e9 if seconds > 0 else float("inf"),
            "note": note,
        }
        self.rows.append(row)
        print(
            f"{dataset:9} {kernel_name:12} {impl:26} {seconds * 1e3:10.1f} ms {row['records_per_s'] / 1e6:9.2f} M rec/s "
            f"{row['gb_per_s']:7.2f} GB/s  {note}",
            flush=True,
        )
        return row

    def speedup(self, dataset, kernel_name, fast, slow):
        rows = {r["impl"]: r for r in self.rows if r["dataset"] == dataset and r["kernel"] == kernel_name}
        if fast in rows and slow in rows:
            ratio = rows[slow]["seconds"] / rows[fast]["seconds"]
            rows[fast].setdefault("speedup", {})[slow] = ratio
            print(f"{'':9} {'':12} -> {fast} is {ratio:.1f}x {slow}", flush=True)


# --------------------------------------------------------------------- baselines


def py_bloom(keys, bits_per_key=10):
    """Pure-Python bloom build with the same bit recipe (hash from the xxhash package)."""
    import math

    import xxhash

    n = len(keys)
    k = max(1, min(30, round(bits_per_key * math.log(2))))
    m = max(64, -(-n * bits_per_key // 64) * 64)
    bits = bytearray(m // 8)
    for key in keys:
        h = xxhash.xxh64_intdigest(key)
        a, d = h & 0xFFFFFFFF, h >> 32
        for i in range(k):
            b = (((a + i * d) & 0xFFFFFFFF) * m) >> 32
            bits[b >> 3] |= 1 << (b & 7)
    return bits


def py_dedupe(raw: bytes, offs: list[int]):
    """Per-record Python loop over sorted offsets: read the key, keep the first of each."""
    out = []
    prev = None
    unpack = struct.unpack_from
    for off in offs:
        (klen,) = unpack("<I", raw, off)
        key = raw[off + RECORD_HEADER : off + RECORD_HEADER + klen]
        if key != prev:
            out.append(off)
            prev = key
    return out


def py_append(records, arena_size):
    """A per-record Python loop: pack header, copy key and value, index by key in a dict."""
    arena = bytearray(arena_size)
    index = {}
    pos = 0
    for seq, (key, value, kind) in enumerate(records):
        struct.pack_into("<IIQ", arena, pos, len(key), len(value), (seq << 8) | kind)
        s = pos + RECORD_HEADER
        arena[s : s + len(key)] = key
        arena[s + len(key) : s + len(key) + len(value)] = value
        index[key] = pos
        pos += (RECORD_HEADER + len(key) + len(value) + 7) & ~7
    return pos


# ------------------------------------------------------------------------ runs


def bench_dataset(ds: Dataset, table: Table, repeat: int, sample: int) -> dict:
    from shaledb.flush.process import SORT_SCRATCH_KEEP
    from shaledb.kernels.bloom import bloom_build, bloom_build_from_hashes
    from shaledb.kernels.dedupe import dedupe_sorted
    from shaledb.kernels.merge import merge_runs
    from shaledb.kernels.sort import keep_scratch, sort_records

    n, nb, name = len(ds), ds.nbytes, ds.name
    s = min(sample, n)
    scale = n / s
    sample_note = f"Python on {s} records, x{scale:.0f}" if s < n else "Python"
    buf, offs = ds.buf, ds.offs

    dst = np.empty_like(buf)
    table.add(name, "copy", "np.copyto (ceiling)", median_time(lambda: np.copyto(dst, buf), repeat), n, nb)

    # hashing: every key
    out = np.empty(n, dtype=np.uint64)
    _hash_keys(buf, offs, out)
    key_bytes = int(ds.lens.sum())
    table.add(name, "xxh64 keys", "numba", median_time(lambda: _hash_keys(buf, offs, out), repeat), n, key_bytes)
    import xxhash

    keys = ds.keys
    t = median_time(lambda: [xxhash.xxh64_intdigest(k) for k in keys], max(1, repeat // 2))
    table.add(name, "xxh64 keys", "xxhash pkg (Python loop)", t, n, key_bytes)
    table.speedup(name, "xxh64 keys", "numba", "xxhash pkg (Python loop)")
    table.add(name, "xxh64 buffer", "numba", median_time(lambda: xxh64(buf), repeat), n, nb, "one call over the whole buffer")
    table.add(name, "xxh64 buffer", "xxhash pkg", median_time(lambda: xxhash.xxh64_intdigest(buf), repeat), n, nb)
    table.speedup(name, "xxh64 buffer", "numba", "xxhash pkg")

    # sort
    sorted_offs = sort_records(buf, offs)
    table.add(name, "sort", "sort_records", median_time(lambda: sort_records(buf, offs), repeat), n, nb)
    keep_scratch(SORT_SCRATCH_KEEP)
    try:
        sort_records(buf, offs)  # untimed: the kept scratch is allocated and faulted in here, not in a timed call
        table.add(name, "sort", "sort_records, scratch kept", median_time(lambda: sort_records(buf, offs), repeat), n, nb,
                  "keep_scratch, as the flusher process: no fresh pages")
    finally:
        keep_scratch(0)
    neg = (-(ds.trailers.astype(np.int64))).tolist()
    triples = list(zip(keys, neg, offs.tolist()))
    t = median_time(lambda: sorted(triples), min(repeat, 3))
    table.add(name, "sort", "sorted() of (key,-trailer)", t, n, nb, "tuples prebuilt, not timed")
    width = int(ds.lens.max() + 7) // 8
    padded = np.zeros((n, width * 8), dtype=np.uint8)
    for L in np.unique(ds.lens):
        rows = np.nonzero(ds.lens == L)[0]
        padded[rows, :L] = np.frombuffer(b"".join(keys[i] for i in rows), dtype=np.uint8).reshape(-1, L)
    words = padded.view(">u8").astype(np.uint64)
    cols = [~ds.trailers, ds.lens] + [words[:, j] for j in range(width - 1, -1, -1)]
    if ds.lens.min() == ds.lens.max():
        cols.pop(1)
    t = median_time(lambda: np.lexsort(cols), min(repeat, 3))
    table.add(name, "sort", "np.lexsort", t, n, nb, f"{len(cols)} uint64 columns prebuilt, not timed")
    table.speedup(name, "sort", "sort_records", "sorted() of (key,-trailer)")
    table.speedup(name, "sort", "sort_records", "np.lexsort")
    table.speedup(name, "sort", "sort_records, scratch kept", "sorted() of (key,-trailer)")
    table.speedup(name, "sort", "sort_records, scratch kept", "np.lexsort")
    del padded, words, cols, triples

    # dedupe
    deduped = dedupe_sorted(buf, sorted_offs)
    table.add(name, "dedupe", "dedupe_sorted", median_time(lambda: dedupe_sorted(buf, sorted_offs), repeat), n, nb,
              f"{deduped.shape[0]} of {n} kept")
    raw = buf.tobytes()
    some = sorted_offs[:s].tolist()
    t = median_time(lambda: py_dedupe(raw, some), max(1, repeat // 2)) * scale
    table.add(name, "dedupe", "Python loop", t, n, nb, sample_note)
    del raw
    table.speedup(name, "dedupe", "dedupe_sorted", "Python loop")

    # merge: 8 sorted runs of the data
    k = 8
    runs = np.array_split(np.arange(n), k)
    parts = [sort_records(buf, offs[r]) for r in runs]
    bounds = np.concatenate([[0], np.cumsum([p.shape[0] for p in parts])]).astype(np.int64)
    joined = np.concatenate(parts)
    table.add(name, "merge k=8", "merge_runs", median_time(lambda: merge_runs(buf, bounds, joined), repeat), n, nb)
    py_runs = [sorted(zip(keys[r[0] : r[0] + len(r)], neg[r[0] : r[0] + len(r)]))[: max(1, s // k)] for r in runs]
    m = sum(len(r) for r in py_runs)
    t = median_time(lambda: list(heapq.merge(*py_runs)), max(1, repeat // 2)) * (n / m)
    table.add(name, "merge k=8", "heapq.merge", t, n, nb, f"Python on {m} records, x{n / m:.0f}")
    table.speedup(name, "merge k=8", "merge_runs", "heapq.merge")

    # bloom
    table.add(name, "bloom build", "bloom_build", median_time(lambda: bloom_build(buf, deduped), repeat),
              deduped.shape[0], nb, "hashes every key")
    _, hashes = dedupe_sorted(buf, sorted_offs, key_hashes=True)
    table.add(name, "bloom build", "bloom_build_from_hashes", median_time(lambda: bloom_build_from_hashes(hashes), repeat),
              deduped.shape[0], nb, "hashes from dedupe_sorted(key_hashes=True)")
    table.add(name, "dedupe", "dedupe_sorted+hashes", median_time(lambda: dedupe_sorted(buf, sorted_offs, key_hashes=True), repeat),
              n, nb, "key_hashes=True")
    dkeys = keys[:s]
    t = median_time(lambda: py_bloom(dkeys), max(1, repeat // 2)) * (deduped.shape[0] / s)
    table.add(name, "bloom build", "Python (xxhash pkg hash)", t, deduped.shape[0], nb, sample_note)
    table.speedup(name, "bloom build", "bloom_build", "Python (xxhash pkg hash)")
    table.speedup(name, "bloom build", "bloom_build_from_hashes", "Python (xxhash pkg hash)")

    result = {"sorted": sorted_offs, "deduped": deduped}
    bench_block(ds, table, repeat, sample, deduped)
    bench_arena(ds, table, repeat, sample)
    return result


def _reference(modname):
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import importlib

    return importlib.import_module(f"reference.{modname}")


def bench_block(ds, table, repeat, sample, deduped):
    try:
        from shaledb.kernels.block import encode_blocks
    except ImportError as exc:
        print(f"{ds.name:9} block encode: skipped (kernels/block.py not importable: {exc})")
        return
    n = deduped.shape[0]
    nb = int(ds.nbytes * n / len(ds))
    table.add(ds.name, "block encode", "encode_blocks", median_time(lambda: encode_blocks(ds.buf, deduped), repeat), n, nb)
    try:
        ref = _reference("block")
        from reference.sort import decode_run
    except ImportError as exc:
        print(f"{ds.name:9} block encode baseline skipped: {exc}")
        return
    s = min(sample, n)
    recs = decode_run(ds.buf, deduped[:s])
    t = median_time(lambda: ref.encode_blocks_ref(recs), max(1, repeat // 2)) * (n / s)
    table.add(ds.name, "block encode", "Python (tests/reference)", t, n, nb, f"Python on {s} records, x{n / s:.0f}")
    table.speedup(ds.name, "block encode", "encode_blocks", "Python (tests/reference)")


def bench_arena(ds, table, repeat, sample, batch=1000):
    try:
        from shaledb.kernels import arena as A
    except ImportError as exc:
        print(f"{ds.name:9} arena append: skipped (kernels/arena.py not importable: {exc})")
        return
    n = len(ds)
    keys = ds.keys
    key_offs = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(ds.lens, out=key_offs[1:])
    kbuf = np.frombuffer(b"".join(keys), dtype=np.uint8)
    vbuf = np.full(n * VALUE_LEN, 7, dtype=np.uint8)
    voffs = np.arange(n + 1, dtype=np.int64) * VALUE_LEN
    kinds = ds.kinds.astype(np.uint8)
    size = ds.nbytes * 2 + (64 << 20)
    arena = np.zeros(size, dtype=np.uint8)
    batches = []
    for b in range(0, n, batch):
        e = min(n, b + batch)
        batches.append((kbuf, key_offs[b : e + 1] - 0, vbuf, voffs[b : e + 1], kinds[b:e], b + 1))

    def run():
        A.arena_init(arena)
        for kb, ko, vb, vo, kd, seq in batches:
            if A.arena_append(arena, kb, ko, vb, vo, kd, seq) != kd.shape[0]:
                raise RuntimeError("arena full in benchmark")

    try:
        run()
    except Exception as exc:  # the arena API is ARENA's; report rather than crash the benchmark
        print(f"{ds.name:9} arena append: skipped ({type(exc).__name__}: {exc})")
        return
    table.add(ds.name, f"append b={batch}", "arena_append", median_time(run, repeat), n, ds.nbytes, "incl. hash index")
    s = min(sample, n)
    recs = [(keys[i], bytes(VALUE_LEN), int(kinds[i])) for i in range(s)]
    t = median_time(lambda: py_append(recs, ds.nbytes), max(1, repeat // 2)) * (n / s)
    table.add(ds.name, f"append b={batch}", "Python per-record loop", t, n, ds.nbytes, f"Python on {s} records, x{n / s:.0f}")
    table.speedup(ds.name, f"append b={batch}", "arena_append", "Python per-record loop")


def _flush_pass(ds, parts, sort_records, dedupe_sorted, encode_blocks, bloom_build_from_hashes) -> None:
    """One timed pass of the flush path, its times appended to ``parts``."""
    c0, w0 = time.process_time(), time.perf_counter()
    t = time.perf_counter()
    so = sort_records(ds.buf, ds.offs)
    parts["sort"].append(time.perf_counter() - t)
    t = time.perf_counter()
    dd, hashes = dedupe_sorted(ds.buf, so, key_hashes=True)
    parts["dedupe"].append(time.perf_counter() - t)
    t = time.perf_counter()
    if encode_blocks is not None:
        encode_blocks(ds.buf, dd)
    parts["encode"].append(time.perf_counter() - t)
    t = time.perf_counter()
    bloom_build_from_hashes(hashes)
    parts["bloom"].append(time.perf_counter() - t)
    parts["total_cpu"].append(time.process_time() - c0)
    parts["total_wall"].append(time.perf_counter() - w0)


def bench_flush(ds, repeat) -> dict:
    """CPU time of sort + dedupe + block encode (with checksums) + bloom for the
    dataset; dedupe hashes the kept keys and the bloom filter is built from
    those hashes (one hash per key per flush); the sort's scratch is kept
    between passes, as in the flusher process, and the first pass (fresh
    scratch) is not counted."""
    from shaledb.flush.process import SORT_SCRATCH_KEEP
    from shaledb.kernels.bloom import bloom_build_from_hashes
    from shaledb.kernels.dedupe import dedupe_sorted
    from shaledb.kernels.sort import keep_scratch, sort_records

    try:
        from shaledb.kernels.block import encode_blocks
    except ImportError:
        encode_blocks = None

    parts: dict[str, list[float]] = {"sort": [], "dedupe": [], "encode": [], "bloom": [], "total_cpu": [], "total_wall": []}
    keep_scratch(SORT_SCRATCH_KEEP)  # as the flusher process does between L0 flushes
    try:
        for _ in range(repeat + 1):
            _flush_pass(ds, parts, sort_records, dedupe_sorted, encode_blocks, bloom_build_from_hashes)
    finally:
        keep_scratch(0)
    res = {k: statistics.median(v[1:]) for k, v in parts.items()}
    res["encode_included"] = encode_blocks is not None
    res["records"] = len(ds)
    print(
        f"{ds.name:9} flush path ({len(ds)} records): CPU {res['total_cpu'] * 1e3:.0f} ms "
        f"(wall {res['total_wall'] * 1e3:.0f} ms: sort {res['sort'] * 1e3:.0f}, dedupe {res['dedupe'] * 1e3:.0f}, "
        f"encode {res['encode'] * 1e3:.0f}{'' if encode_blocks else ' [block.py missing]'}, "
        f"bloom from hashes {res['bloom'] * 1e3:.0f}; sort scratch kept)",
        flush=True,
    )
    return res


def bench_warmup() -> dict:
    """warmup() in fresh processes: cold (empty NUMBA_CACHE_DIR), then cached."""
    code = "import time; t=time.perf_counter(); import shaledb.kernels as K; K.warmup(); print(time.perf_counter()-t)"
    tmp = tempfile.mkdtemp(prefix="shaledb-bench-cache-")
    env = dict(os.environ, NUMBA_CACHE_DIR=tmp)
    res = {}
    try:
        for label in ("cold", "cached"):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900, check=True)
            res[label] = float(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"warmup() in a fresh process: cold compile {res['cold']:.1f} s, cached load {res['cached']:.2f} s", flush=True)
    return res


def print_summary(table: Table, flush: dict) -> None:
    """One line per dataset: the issue-16 figures (sort vs sorted() and np.lexsort,
    bloom build vs Python, flush-path CPU time per 1M records)."""
    print("summary: sort x sorted() / x np.lexsort, bloom build x Python (from hashes), flush path CPU per 1M records")
    for name, res in flush.items():
        def ratio(kernel_name, fast, slow):
            for r in table.rows:
                if r["dataset"] == name and r["kernel"] == kernel_name and r["impl"] == fast:
                    return r.get("speedup", {}).get(slow, float("nan"))
            return float("nan")

        per_m = res["total_cpu"] * 1e6 / res["records"]
        print(
            f"  {name:9} sort {ratio('sort', 'sort_records', 'sorted() of (key,-trailer)'):5.1f}x / "
            f"{ratio('sort', 'sort_records', 'np.lexsort'):4.1f}x  bloom "
            f"{ratio('bloom build', 'bloom_build', 'Python (xxhash pkg hash)'):5.1f}x "
            f"({ratio('bloom build', 'bloom_build_from_hashes', 'Python (xxhash pkg hash)'):5.1f}x)  "
            f"flush {per_m * 1e3:4.0f} ms",
            flush=True,
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="records per dataset (default 1000000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement; the median is reported (default 5)")
    ap.add_argument("--sample", type=int, default=100_000,
                    help="records the slow pure-Python baselines run on, scaled to --records (default 100000)")
    ap.add_argument("--datasets", default="fixed16,var8-64,prefixed",
                    help="comma-separated datasets to run (default: fixed16,var8-64,prefixed)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--no-warmup-timing", action="store_true", help="skip the fresh-process warmup() timings")
    args = ap.parse_args(argv)
    if args.records < 16 or args.repeat < 1 or args.sample < 1:
        ap.error("--records >= 16, --repeat >= 1 and --sample >= 1 required")

    import shaledb.kernels as K

    t0 = time.perf_counter()
    K.warmup()
    print(f"warmup() in this process: {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
    datasets = [d for d in make_datasets(args.records) if d.name in wanted]
    if not datasets:
        ap.error(f"--datasets: none of {wanted} (known: fixed16, var8-64, prefixed)")
    print(f"datasets: {', '.join(f'{d.name} {len(d)} records {d.nbytes / 1e6:.0f} MB' for d in datasets)} "
          f"(built in {time.perf_counter() - t0:.1f} s)", flush=True)
    table = Table()
    print(f"{'dataset':9} {'kernel':12} {'impl':26} {'median':>13} {'':>15} {'':>12}", flush=True)
    flush = {}
    for ds in datasets:
        bench_dataset(ds, table, args.repeat, args.sample)
        flush[ds.name] = bench_flush(ds, args.repeat)
    print_summary(table, flush)
    warm = None if args.no_warmup_timing else bench_warmup()
    if args.json:
        doc = {"records": args.records, "repeat": args.repeat, "sample": args.sample, "cpus": os.cpu_count(),
               "rows": table.rows, "flush_path": flush, "warmup": warm}
        pathlib.Path(args.json).write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
