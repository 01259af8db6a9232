"""Shared pieces of the ShaleDB benchmarks: data, timing, memory, tables, JSON.

Data sets are generated once, deterministically from a seed, as numpy
``(uint8 data, int64 offsets)`` pairs (offsets hold ``n + 1`` entries: record
``i`` is ``data[offs[i]:offs[i + 1]]``), saved as ``.npy`` files in a
directory and memory-mapped by every engine process, so each engine sees
byte-identical records.

Keys are unique by construction: the last ``min(8, key_size)`` bytes are an
odd-multiplier permutation of the record index (a bijection modulo
``2**(8 * width)``) and the bytes before them are random, so the key order is
random with respect to the insertion order. Values are random bytes (they do
not compress).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "KEY_DISTS",
    "VALUE_DISTS",
    "generate_dataset",
    "generate_mixed",
    "make_keys",
    "make_values",
    "load_dataset",
    "op_plan",
    "read_indices",
    "latency_summary",
    "rusage_peaks",
    "TreeMemorySampler",
    "progress",
    "format_table",
    "fmt_rate",
    "fmt_bytes",
    "fmt_seconds",
    "fmt_ns",
    "machine_info",
    "write_json",
]

# An odd 64-bit constant (golden-ratio based): multiplication by it permutes the
# integers modulo any power of two.
_PERMUTE = 0x9E3779B97F4A7C15

_FILES = ("keys_data", "keys_offs", "vals_data", "vals_offs")


@dataclass
class Dataset:
    """Records as two (data, offsets) pairs; offsets have ``n + 1`` entries."""

    keys_data: np.ndarray
    keys_offs: np.ndarray
    vals_data: np.ndarray
    vals_offs: np.ndarray

    @property
    def n(self) -> int:
        return len(self.keys_offs) - 1

    @property
    def payload_bytes(self) -> int:
        """Key plus value bytes of all records."""
        return int(self.keys_offs[-1]) + int(self.vals_offs[-1])

    def payload_bytes_of(self, n: int) -> int:
        """Key plus value bytes of the first ``n`` records."""
        return int(self.keys_offs[n]) + int(self.vals_offs[n])

    def key(self, i: int) -> bytes:
        return self.keys_data[self.keys_offs[i] : self.keys_offs[i + 1]].tobytes()

    def value(self, i: int) -> bytes:
        return self.vals_data[self.vals_offs[i] : self.vals_offs[i + 1]].tobytes()

    def pairs(self, a: int, b: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Records ``a:b`` as rebased ``(data, offsets)`` pairs (offsets start at 0).

        The data arrays are views into the (memory-mapped) files; only the
        small offset arrays are copied.
        """
        ko = self.keys_offs[a : b + 1]
        vo = self.vals_offs[a : b + 1]
        keys = (np.asarray(self.keys_data[ko[0] : ko[-1]]), np.asarray(ko - ko[0], dtype=np.int64))
        vals = (np.asarray(self.vals_data[vo[0] : vo[-1]]), np.asarray(vo - vo[0], dtype=np.int64))
        return keys, vals

    def bytes_lists(self, a: int, b: int) -> tuple[list[bytes], list[bytes]]:
        """Records ``a:b`` as two lists of ``bytes`` (the input form peers take)."""
        ko = self.keys_offs[a : b + 1]
        vo = self.vals_offs[a : b + 1]
        kb = self.keys_data[ko[0] : ko[-1]].tobytes()
        vb = self.vals_data[vo[0] : vo[-1]].tobytes()
        ko = (ko - ko[0]).tolist()
        vo = (vo - vo[0]).tolist()
        keys = [kb[ko[i] : ko[i + 1]] for i in range(b - a)]
        vals = [vb[vo[i] : vo[i + 1]] for i in range(b - a)]
        return keys, vals

    def save(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            np.save(d / f"{name}.npy", getattr(self, name))


def generate_dataset(n: int, key_size: int = 16, value_size: int = 100, seed: int = 0) -> Dataset:
    """``n`` records with unique ``key_size``-byte keys and random values."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if key_size < 1:
        raise ValueError("key_size must be >= 1")
    if value_size < 0:
        raise ValueError("value_size must be >= 0")
    width = min(8, key_size)
    if width < 8 and n > (1 << (8 * width)):
        raise ValueError(f"{n} unique keys do not fit in {key_size} bytes")
    rng = np.random.default_rng(seed)
    keys = np.empty((n, key_size), dtype=np.uint8)
    if key_size > width:
        keys[:, : key_size - width] = rng.integers(0, 256, size=(n, key_size - width), dtype=np.uint8)
    mask = np.uint64((1 << (8 * width)) - 1) if width < 8 else np.uint64(0xFFFFFFFFFFFFFFFF)
    idx = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        perm = (idx * np.uint64(_PERMUTE) + np.uint64(seed & 0xFFFFFFFF)) & mask
    # Big-endian so that the permuted index also orders the tail bytes.
    tail = perm.astype(">u8").view(np.uint8).reshape(n, 8)[:, 8 - width :]
    keys[:, key_size - width :] = tail
    vals = rng.integers(0, 256, size=n * value_size, dtype=np.uint8)
    return Dataset(
        keys_data=keys.reshape(-1),
        keys_offs=np.arange(n + 1, dtype=np.int64) * key_size,
        vals_data=vals,
        vals_offs=np.arange(n + 1, dtype=np.int64) * value_size,
    )


KEY_DISTS = ("random16", "prefixed", "uuid-text", "timestamp")
VALUE_DISTS = ("random", "text", "json")


def _perm(n: int, seed: int) -> np.ndarray:
    """A bijection of ``0..n-1`` into uint64 (odd-multiplier permutation)."""
    idx = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return idx * np.uint64(_PERMUTE) + np.uint64(seed & 0xFFFFFFFF)


def _pack_rows(rows: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first ``lengths[i]`` bytes of each row as a (data, offsets) pair."""
    offs = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offs[1:])
    mask = np.arange(rows.shape[1])[None, :] < lengths[:, None]
    return np.ascontiguousarray(rows[mask]), offs


def _digits(x: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII decimal digits of ``x`` (uint64), zero-padded."""
    out = np.empty((len(x), width), dtype=np.uint8)
    x = x.copy()
    for j in range(width - 1, -1, -1):
        out[:, j] = (x % np.uint64(10)).astype(np.uint8) + 48
        x //= np.uint64(10)
    return out


def make_keys(n: int, dist: str, key_size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unique keys as a (data, offsets) pair, in insertion order.

    * ``random16``: ``key_size`` bytes, random order (the classic dataset);
    * ``prefixed``: 8..64 bytes over 64 prefixes of 16..32 bytes
      (``tenant/NNNN/letters/``) then decimal digits (random, ending in 8 digits of a permuted index;
      at least 8, so keys shorter than prefix + 8 keep the start of it);
    * ``uuid-text``: 36-character UUID text (the last 16 hex digits are a
      permuted index, so keys are unique);
    * ``timestamp``: 16 bytes, a big-endian nanosecond timestamp that grows
      by 1..1000 ns per record, then 8 bytes of source id; arrivals are
      out of order only within windows of 64 records.
    """
    rng = np.random.default_rng([seed, 7])
    if dist == "random16":
        ds = generate_dataset(n, key_size, 0, seed)
        return ds.keys_data, ds.keys_offs
    if dist == "prefixed":
        if n > 10**8:
            raise ValueError("prefixed keys hold at most 10**8 records")
        prefixes = np.zeros((64, 32), dtype=np.uint8)
        plen = rng.integers(16, 33, size=64)
        for j in range(64):
            head = b"tenant/%04d/" % int(rng.integers(0, 10000))
            fill = bytes(rng.integers(97, 123, size=int(plen[j]) - len(head) - 1, dtype=np.uint8))
            prefixes[j, : plen[j]] = np.frombuffer(head + fill + b"/", dtype=np.uint8)
        pick = rng.integers(0, 64, size=n)
        total = rng.integers(8, 65, size=n)
        ndig = np.maximum(total - plen[pick], 8)
        keep = total - ndig  # prefix bytes kept
        rows = np.zeros((n, 64), dtype=np.uint8)
        rows[:, :32] = prefixes[pick]
        # the last 8 digits: a permutation of 0..10**8-1 (48271 is prime to 10), so keys are unique
        idx = np.arange(n, dtype=np.int64)
        dig = _digits(((idx * 48271 + (seed % 10**8)) % 10**8).astype(np.uint64), 8)
        pad = rng.integers(48, 58, size=(n, 64), dtype=np.uint8)
        pad[:, 56:] = dig
        # the key's digit tail is the last ndig digits of pad (zero-padded number)
        col = np.arange(64)[None, :]
        src = 64 - ndig[:, None] + (col - keep[:, None])
        tail = np.take_along_axis(pad, np.clip(src, 0, 63), axis=1)
        rows = np.where(col >= keep[:, None], tail, rows)
        return _pack_rows(rows, total)
    if dist == "uuid-text":
        hexd = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
        raw = np.empty((n, 16), dtype=np.uint8)
        raw[:, :8] = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
        raw[:, 8:] = _perm(n, seed).astype(">u8").view(np.uint8).reshape(n, 8)
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
        nib = np.empty((n, 32), dtype=np.uint8)
        nib[:, 0::2] = hexd[raw >> 4]
        nib[:, 1::2] = hexd[raw & 0x0F]
        rows = np.full((n, 36), ord("-"), dtype=np.uint8)
        for a, b, c in ((0, 8, 0), (9, 13, 8), (14, 18, 12), (19, 23, 16), (24, 36, 20)):
            rows[:, a:b] = nib[:, c : c + b - a]
        return rows.reshape(-1).copy(), np.arange(n + 1, dtype=np.int64) * 36
    if dist == "timestamp":
        ts = np.uint64(1_790_000_000_000_000_000) + np.cumsum(rng.integers(1, 1001, size=n)).astype(np.uint64)
        order = np.arange(n)
        w = 64
        m = n - n % w
        blocks = order[:m].reshape(-1, w)
        blocks[:] = np.take_along_axis(blocks, rng.permuted(np.tile(np.arange(w), (len(blocks), 1)), axis=1), axis=1)
        rows = np.empty((n, 16), dtype=np.uint8)
        rows[:, :8] = ts[order].astype(">u8").view(np.uint8).reshape(n, 8)
        rows[:, 8:] = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
        return rows.reshape(-1), np.arange(n + 1, dtype=np.int64) * 16
    raise ValueError(f"unknown key distribution {dist!r} (known: {', '.join(KEY_DISTS)})")


_WORDS = None


def _text_corpus(nbytes: int, seed: int) -> np.ndarray:
    """English-like text: words drawn Zipf-like from a 4096-word vocabulary."""
    rng = np.random.default_rng([seed, 11])
    lens = rng.integers(2, 11, size=4096)
    vocab = [bytes(rng.integers(97, 123, size=int(k), dtype=np.uint8)) + b" " for k in lens]
    ranks = np.minimum(rng.zipf(1.3, size=nbytes // 4 + 16) - 1, 4095)
    text = b"".join(vocab[r] for r in ranks.tolist())
    while len(text) < nbytes:
        text += text
    return np.frombuffer(text[:nbytes], dtype=np.uint8)


def _json_corpus(nbytes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """JSON lines of event-like objects; also the start offset of every line."""
    rng = np.random.default_rng([seed, 12])
    words = _text_corpus(1 << 16, seed).tobytes().split()
    kinds = [b"click", b"view", b"purchase", b"signup", b"logout", b"search"]
    lines = []
    total = 0
    i = 0
    while total < nbytes:
        w = [words[int(k)].decode() for k in rng.integers(0, len(words), size=6)]
        line = (
            '{"id":%d,"user":"user-%06d","event":"%s","ts":%d,"score":%.3f,'
            '"tags":["%s","%s"],"note":"%s %s %s %s"}\n'
            % (i, int(rng.integers(0, 10**6)), kinds[i % len(kinds)].decode(),
               1790000000000 + i * 37, float(rng.random()) * 100, w[0], w[1], w[2], w[3], w[4], w[5])
        ).encode()
        lines.append(line)
        total += len(line)
        i += 1
    data = b"".join(lines)
    starts = np.zeros(len(lines), dtype=np.int64)
    np.cumsum([len(x) for x in lines[:-1]], out=starts[1:])
    return np.frombuffer(data, dtype=np.uint8), starts


def make_values(n: int, dist: str, value_size: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` values of ``value_size`` bytes as a (data, offsets) pair.

    * ``random``: random bytes (incompressible);
    * ``text``: slices of English-like text (words Zipf-distributed over a
      4096-word vocabulary); zstd shrinks it about 2x;
    * ``json``: slices of a JSON-lines corpus of event objects, each
      starting at an object boundary; zstd shrinks it 3-4x.

    A corpus is at most 64 MiB, so values beyond it repeat corpus bytes
    (never inside one block of 4 KiB values; a 1 MiB value is one slice).
    """
    rng = np.random.default_rng([seed, 13])
    offs = np.arange(n + 1, dtype=np.int64) * value_size
    if dist == "random":
        return rng.integers(0, 256, size=n * value_size, dtype=np.uint8), offs
    if dist not in ("text", "json"):
        raise ValueError(f"unknown value distribution {dist!r} (known: {', '.join(VALUE_DISTS)})")
    if value_size == 0:
        return np.empty(0, dtype=np.uint8), offs
    size = int(min(max(4 * value_size, n * value_size), 64 << 20)) + value_size
    if dist == "text":
        corpus = _text_corpus(size, seed)
        starts = rng.integers(0, len(corpus) - value_size + 1, size=n)
    else:
        corpus, lines = _json_corpus(size, seed)
        lines = lines[lines <= len(corpus) - value_size]
        starts = lines[rng.integers(0, len(lines), size=n)]
    out = np.empty(n * value_size, dtype=np.uint8)
    view = out.reshape(n, value_size)
    chunk = max(1, (64 << 20) // value_size)
    windows = np.lib.stride_tricks.sliding_window_view(corpus, value_size)
    for a in range(0, n, chunk):
        view[a : a + chunk] = windows[starts[a : a + chunk]]
    return out, offs


def generate_mixed(n: int, key_dist: str = "random16", value_dist: str = "random", key_size: int = 16,
                   value_size: int = 100, seed: int = 0) -> Dataset:
    """``n`` records with keys from :func:`make_keys` and values from :func:`make_values`."""
    if key_dist == "random16" and value_dist == "random":
        return generate_dataset(n, key_size, value_size, seed)
    kd, ko = make_keys(n, key_dist, key_size, seed)
    vd, vo = make_values(n, value_dist, value_size, seed)
    return Dataset(keys_data=kd, keys_offs=ko, vals_data=vd, vals_offs=vo)


def load_dataset(directory: str | os.PathLike, mmap: bool = True) -> Dataset:
    d = Path(directory)
    mode = "r" if mmap else None
    return Dataset(**{name: np.load(d / f"{name}.npy", mmap_mode=mode) for name in _FILES})


def op_plan(seed: int, n: int, put_percentage: float, chunk: int):
    """Endless chunks of ``(is_put: bool[chunk], index: int64[chunk])`` for the mixed phase.

    The sequence depends only on ``seed``, ``n`` and ``put_percentage``, so
    every engine (on the same ``n``) runs the same operations in the same order.
    """
    rng = np.random.default_rng([seed, 1])
    while True:
        is_put = rng.random(chunk) < (put_percentage / 100.0)
        idx = rng.integers(0, max(n, 1), size=chunk, dtype=np.int64)
        yield is_put, idx


def read_indices(seed: int, n: int, count: int) -> np.ndarray:
    """``count`` random indices of existing records (same for equal ``seed``/``n``)."""
    rng = np.random.default_rng([seed, 2])
    return rng.integers(0, max(n, 1), size=count, dtype=np.int64)


def latency_summary(lat_ns) -> dict:
    """p50/p99/p999/max in nanoseconds of a sequence of latencies (empty -> None)."""
    a = np.asarray(lat_ns, dtype=np.int64)
    if a.size == 0:
        return {"count": 0, "p50_ns": None, "p99_ns": None, "p999_ns": None, "max_ns": None, "mean_ns": None}
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {
        "count": int(a.size),
        "p50_ns": float(p50),
        "p99_ns": float(p99),
        "p999_ns": float(p999),
        "max_ns": int(a.max()),
        "mean_ns": float(a.mean()),
    }


def rusage_peaks() -> dict:
    """Peak RSS in bytes of this process and of its largest waited-for descendant.

    Linux reports ``ru_maxrss`` in KiB; for RUSAGE_CHILDREN it is the largest
    peak of any reaped descendant (a maximum, not a sum).
    """
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "self_peak_rss": me.ru_maxrss * 1024,
        "children_peak_rss": ch.ru_maxrss * 1024,
        "self_cpu_s": me.ru_utime + me.ru_stime,
        "children_cpu_s": ch.ru_utime + ch.ru_stime,
    }


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def _smaps(pid: int) -> dict:
    """``/proc/PID/smaps_rollup`` of one process: the fields below, in bytes
    (absent when the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in _SMAPS_FIELDS:
                    out[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


_SMAPS_FIELDS = ("Pss", "Rss", "Pss_File", "Pss_Anon", "Pss_Shmem")


def _role(pid: int, root: int) -> str:
    """What a process of an engine's tree is, from its command line: the
    engine process itself, ShaleDB's flusher or compactor, or another child
    (the benchmark's writer processes, a peer's helpers)."""
    if pid == root:
        return "engine"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "other"
    text = b" ".join(argv)
    for mod, role in ((b"shaledb.flush", "flusher"), (b"shaledb.compact", "compactor")):
        if mod in text:
            return role
    return "writer" if b"multiprocessing" in text else "other"


class TreeMemorySampler:
    """Samples the summed PSS and RSS of a process and all its descendants.

    PSS divides shared pages (shared-memory arenas, memory-mapped input) among
    the processes mapping them, so the PSS sum is the memory the process tree
    really holds; the RSS sum counts shared pages once per process.  The
    peak of PSS without file-backed pages (``Pss_File``: mapped files, i.e.
    shared libraries and SSTs read through mmap, which are the kernel's page
    cache and are dropped under memory pressure) is kept apart, so engines that read files with
    ``pread`` (their page cache is not in any process) compare fairly.

    ``by_role`` keeps, per kind of process (``_role``: engine, flusher,
    compactor, writer, other; processes of one role summed), the peak of
    its PSS and of each part of it: anonymous memory (heaps, numba), shared
    memory (the arenas) and mapped files.  The parts peak at different
    times, so they need not add up to the PSS peak.
    """

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid = pid
        self.interval = interval
        self.peak_pss = 0
        self.peak_pss_nofile = 0
        self.peak_rss_sum = 0
        self.peak_processes = 0
        self.by_role: dict[str, dict[str, int]] = {}
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)

    def start(self) -> "TreeMemorySampler":
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        return {
            "tree_peak_pss": self.peak_pss,
            "tree_peak_pss_nofile": self.peak_pss_nofile,
            "tree_peak_rss_sum": self.peak_rss_sum,
            "tree_peak_processes": self.peak_processes,
            "by_role": {r: dict(v) for r, v in sorted(self.by_role.items())},
        }

    def _sample(self) -> None:
        pids, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            pids.append(p)
            todo.extend(_children(p))
        pss = rss = pss_file = 0
        roles: dict[str, dict[str, int]] = {}
        for p in pids:
            m = _smaps(p)
            pss += m.get("Pss", 0)
            rss += m.get("Rss", 0)
            pss_file += m.get("Pss_File", 0)
            role = self._roles.get(p)
            if role is None:
                role = self._roles[p] = _role(p, self.pid)
            acc = roles.setdefault(role, dict.fromkeys(("pss", "pss_anon", "pss_shmem", "pss_file"), 0))
            for key, field in (("pss", "Pss"), ("pss_anon", "Pss_Anon"), ("pss_shmem", "Pss_Shmem"),
                               ("pss_file", "Pss_File")):
                acc[key] += m.get(field, 0)
        for role, acc in roles.items():
            peak = self.by_role.setdefault(role, dict.fromkeys(acc, 0))
            for key, v in acc.items():
                peak[key] = max(peak[key], v)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_pss_nofile = max(self.peak_pss_nofile, pss - pss_file)
        self.peak_rss_sum = max(self.peak_rss_sum, rss)
        self.peak_processes = max(self.peak_processes, len(pids))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(enabled: bool, total=None, desc: str = "", unit: str = "rec"):
    """A tqdm bar on stderr, or a do-nothing stand-in when disabled."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional at run time
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, leave=False, dynamic_ncols=True)


def fmt_rate(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suf}"
    return f"{x:.1f}"


def fmt_bytes(x) -> str:
    if x is None:
        return "-"
    for div, suf in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(x) >= div:
            return f"{x / div:.1f} {suf}"
    return f"{x} B"


def fmt_seconds(x) -> str:
    if x is None:
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def fmt_ns(x) -> str:
    if x is None:
        return "-"
    return fmt_seconds(x / 1e9)


def format_table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """A plain-text table with right-aligned columns (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    if title:
        lines.append(title)
    for j, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_info() -> dict:
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total"] = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for mod in ("numba", "slatedb", "rocksdict", "boto3", "moto"):
        try:
            from importlib.metadata import version

            info[f"{mod}_version"] = version(mod)
        except Exception:  # not installed
            pass
    return info


def write_json(path: str | os.PathLike, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# -- durable write bandwidth of the store -------------------------------------------

_PROBE_CHUNK = 8 << 20


def probe_local_write_bandwidth(directory, nbytes: int, repeat: int = 3) -> dict:
    """Write ``nbytes`` of incompressible data sequentially to a new file in
    ``directory`` in 8 MiB writes, fsync it, delete it; ``repeat`` times.
    The time runs from the first write to the end of the fsync: the
    physical durable write bandwidth a local-directory store can reach.
    The median of the runs is the figure (single runs of 256 MiB measured
    198-793 MB/s on one virtual machine); every run is in ``runs_mb_per_s``."""
    buf = memoryview(os.urandom(_PROBE_CHUNK))
    rates, total = [], 0.0
    for _ in range(max(1, int(repeat))):
        path = os.path.join(os.fspath(directory), f".write-probe-{os.getpid()}-{time.time_ns()}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            done = 0
            t0 = time.perf_counter()
            while done < nbytes:
                want = min(_PROBE_CHUNK, nbytes - done)
                done += os.write(fd, buf[:want])
            os.fsync(fd)
            secs = time.perf_counter() - t0
        finally:
            os.close(fd)
            os.unlink(path)
        total += secs
        rates.append(nbytes / secs / 1e6 if secs > 0 else float("inf"))
    med = statistics.median(rates)
    return {"method": f"fsync'd sequential write of {fmt_bytes(nbytes)} in 8 MiB writes, median of {len(rates)}",
            "bytes": nbytes, "seconds": total, "mb_per_s": med, "runs_mb_per_s": rates}


def probe_s3_put_bandwidth(bucket: str, prefix: str, endpoint: str | None, nbytes: int, threads: int = 4) -> dict:
    """PUT ``nbytes`` as 8 MiB objects under ``prefix`` from ``threads``
    threads (boto3), then delete them: the PUT throughput of the endpoint."""
    import boto3
    from concurrent.futures import ThreadPoolExecutor

    client = boto3.client("s3", endpoint_url=endpoint)
    body = os.urandom(_PROBE_CHUNK)
    count = max(1, nbytes // _PROBE_CHUNK)
    keys = [f"{prefix.strip('/')}/write-probe/{i:05d}" for i in range(count)]
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=body), keys))
        secs = time.perf_counter() - t0
    finally:
        for k in keys:
            try:
                client.delete_object(Bucket=bucket, Key=k)
            except Exception:
                pass
    total = count * _PROBE_CHUNK
    return {"method": f"{count} PUTs of 8 MiB objects from {threads} threads", "bytes": total,
            "seconds": secs, "mb_per_s": total / secs / 1e6 if secs > 0 else None}
