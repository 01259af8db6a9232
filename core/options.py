"""Options of an open database (reference: docs/options.md).

:class:`Options` is a frozen dataclass: build one, or pass overrides to
``shaledb.open(root, **overrides)``; ``options.replace(**changes)`` returns a
validated copy.  Every field is checked when the object is built, so a bad
value raises :class:`~shaledb.InvalidArgument` before anything is opened.

The whole object is picklable: the flusher process and writer processes get
their own copy.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from shaledb.errors import InvalidArgument

__all__ = ["Options", "MAX_KEY_BYTES", "MAX_VALUE_BYTES", "StoreOpener", "wrap_store"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Largest key, in bytes (keys must also be non-empty).
MAX_KEY_BYTES = 64 * KiB
#: Largest value, in bytes (a record too big for an arena gets a segment of its own).
MAX_VALUE_BYTES = 256 * MiB
#: Values of ``Options.compression``.
COMPRESSIONS = ("zstd", "none")


def wrap_store(store, options: "Options"):
    """``store`` as the engine uses it in every process of a database (user,
    flusher, compactor): ``options.store_wrapper`` (a test seam) applied
    first, then the engine's one retry layer, retrying Unavailable within
    ``min(30 s, request_timeout)`` per operation (``storage.wrappers.RetryingStore``).
    With ``options.cache_dir``, an S3 store's SST reads go through a local
    disk cache (``storage.cache.DiskCacheStore``) under the retry layer.
    In a clone's root (one GET of ``clone/source.json`` tells) reads of the
    SSTs it shares with its source go to the source (docs/readers.md, "Clones").
    """
    from shaledb.storage.wrappers import RetryingStore

    if options.store_wrapper is not None:
        store = options.store_wrapper(store)
    if options.cache_dir is not None and store.spec()[0].startswith("s3://"):
        from shaledb.format.keys import COMPACTED_PREFIX
        from shaledb.storage.cache import DiskCacheStore

        # SST objects only: manifests and WAL objects change meaning or are re-read for news
        store = DiskCacheStore(store, options.cache_dir, options.cache_bytes, cacheable=(COMPACTED_PREFIX,))
    return _with_clone_source(RetryingStore(store, deadline=min(30.0, options.request_timeout)), options)


def _with_clone_source(store, options: "Options"):
    from shaledb.errors import ObjectNotFound
    from shaledb.format.clone import CLONE_DESCRIPTOR_KEY, decode_clone_descriptor

    try:
        d = decode_clone_descriptor(store.get(CLONE_DESCRIPTOR_KEY))
    except ObjectNotFound:
        return store
    from shaledb.format.keys import sst_key
    from shaledb.storage import open_store
    from shaledb.storage.overlay import OverlayStore

    def source():
        return wrap_store(open_store(d.source, **dict(options.store_options)), options)

    return OverlayStore(store, [sst_key(s) for s in d.ssts], source)


@dataclass(frozen=True)
class StoreOpener:
    """A picklable recipe for the engine's store of one database: calling it
    opens a fresh one in the calling process (``open_store(url,
    **store_options)``, ``guard`` applied to the raw store if given, then
    :func:`wrap_store`).  Sent to worker processes instead of a live store,
    which never leaves its process.  REQUIRES: a store a second process can
    open (not ``memory://``)."""

    url: str
    store_options: Mapping[str, Any]
    options: "Options"

    def __call__(self, guard: Callable[[Any], Any] | None = None):
        from shaledb.storage import open_store

        raw = open_store(self.url, **dict(self.store_options))
        return wrap_store(raw if guard is None else guard(raw), self.options)


@dataclass(frozen=True)
class Options:
    """Tuning and behaviour of one open database.  All sizes are in bytes,
    all durations in seconds."""

    #: Size of one shared-memory arena segment.  A single batch must fit in it.
    arena_bytes: int = 64 * MiB
    #: A generation (the memtable) is sealed and flushed to L0 once its arenas
    #: hold this many bytes; also the target size of one L0 SST.
    l0_sst_bytes: int = 64 * MiB
    #: The flusher uploads the WAL this often (and on request).
    flush_interval: float = 0.1
    #: Write-ahead log on.  With ``wal=False`` (bulk loads) nothing is durable
    #: before it reaches L0 (``flush()``, a sealed generation, or ``close()``).
    wal: bool = True
    #: Writers wait (bounded by ``request_timeout``) while the bytes not yet in
    #: L0 exceed this.
    max_unflushed_bytes: int = 512 * MiB
    #: Target size of an SST data block.
    block_size: int = 4096
    #: Codec of the SST data blocks that flushes and compactions write:
    #: ``"none"`` or ``"zstd"`` (level 3, one frame per block; needs the
    #: ``shaledb[zstd]`` extra).  Readers read either (the codec is in each
    #: SST's footer).  docs/values.md.
    compression: str = "none"
    #: Bloom filter bits per key in L0 SSTs (0 disables filters).
    bloom_bits_per_key: int = 10
    #: Size of the LRU cache of decoded SST blocks, per process.
    block_cache_bytes: int = 64 * MiB
    #: Number of arenas created when the database opens (more are added on
    #: demand, up to ``max_arenas``).
    initial_arenas: int = 2
    #: Upper bound on the number of arena segments at once.
    max_arenas: int = 64
    #: How long a call waits for the flusher (a flush, a durable ack, room under
    #: backpressure) before raising :class:`~shaledb.Unavailable`.
    request_timeout: float = 120.0
    #: How long ``open`` waits for the flusher to start, fence and replay.
    open_timeout: float = 120.0
    #: How long ``close`` waits for the final flush and the flusher's exit.
    close_timeout: float = 120.0
    #: Failpoints, ``"name=action;name=action"`` (see shaledb.failpoints).
    #: Also read from the ``SHALEDB_FAILPOINTS`` environment variable.
    failpoints: str = ""
    #: Extra keyword arguments for ``shaledb.storage.open_store`` (endpoint_url,
    #: region, ...).  Must be picklable.
    store_options: Mapping[str, Any] = field(default_factory=dict)
    #: The flusher re-reads the manifest this often to notice a newer
    #: writer (fencing) even when nothing is being written.
    manifest_poll_interval: float = 1.0
    #: Test seam: a picklable callable ``store -> store`` (module-level: a
    #: lambda is refused with InvalidArgument) applied to the store
    #: in every process of the database (flusher included), e.g. to inject
    #: latency or faults with shaledb.storage.wrappers.FaultyStore.
    store_wrapper: Callable[[Any], Any] | None = None
    #: Garbage collection (docs/gc.md): seconds between GC passes.
    gc_interval: float = 600.0
    #: An unreferenced object stays at least this long (seconds, >= 0) after
    #: it could first go: readers mid-scan on an older manifest are safe.
    gc_min_age: float = 300.0
    #: Compaction (docs/compaction.md): ``shaledb.open`` starts the compactor
    #: service (a process; a thread for ``memory://``), which also runs GC
    #: every ``gc_interval``.  With False, nothing compacts or collects
    #: unless ``db.compact()`` / ``db.gc()`` is called.
    compactor: bool = True
    #: Worker processes of one compaction (key-range subcompactions);
    #: default: cores - 1, at least 1.
    compaction_workers: int = field(default_factory=lambda: max(1, (os.cpu_count() or 1) - 1))
    #: L0 SSTs that trigger a compaction of L0 into a new sorted run.
    l0_compaction_threshold: int = 4
    #: Writers wait for the compactor while L0 holds this many SSTs.
    l0_max_ssts: int = 8
    #: Target size of an SST written by compaction.
    sst_target_bytes: int = 64 * MiB
    #: The compactor polls the manifest for work this often.
    compaction_interval: float = 1.0
    #: How long ``db.compact(full=True)`` waits for a major compaction
    #: (``db.compact()`` and ``db.gc()`` wait ``request_timeout``).
    full_compaction_timeout: float = 3600.0
    #: S3 disk cache (docs/reads.md): a local directory holding the parts of
    #: SST objects that reads fetched (shared safely by processes; manifests
    #: and WAL objects are never cached).  None (default): no disk cache.
    #: Local directory stores ignore it (their page cache is the cache).
    cache_dir: str | None = None
    #: Bound on the disk cache's bytes (least recently used parts evicted).
    cache_bytes: int = 1 * GiB

    def __post_init__(self) -> None:
        def _int(name: str, lo: int, hi: int | None = None) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise InvalidArgument(f"Options.{name} must be an int, got {type(v).__name__}")
            if v < lo or (hi is not None and v > hi):
                rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
                raise InvalidArgument(f"Options.{name} must be {rng}, got {v}")

        def _seconds(name: str, lo: float) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise InvalidArgument(f"Options.{name} must be a finite number of seconds, got {v!r}")
            if v <= lo:
                raise InvalidArgument(f"Options.{name} must be > {lo}, got {v}")

        _int("arena_bytes", 64 * KiB, 1 << 40)
        _int("l0_sst_bytes", 4 * KiB)
        _int("max_unflushed_bytes", 64 * KiB)
        _int("block_size", 256, 1 << 20)
        _int("bloom_bits_per_key", 0, 64)
        _int("block_cache_bytes", 0)
        _int("initial_arenas", 1, 4096)
        _int("max_arenas", 1, 4096)
        _seconds("flush_interval", 0.0)
        _seconds("request_timeout", 0.0)
        _seconds("open_timeout", 0.0)
        _seconds("close_timeout", 0.0)
        _seconds("manifest_poll_interval", 0.0)
        _seconds("gc_interval", 0.0)
        v = self.gc_min_age
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise InvalidArgument(f"Options.gc_min_age must be a finite number of seconds >= 0, got {v!r}")
        _int("compaction_workers", 1, 1024)
        _int("l0_compaction_threshold", 1)
        _int("l0_max_ssts", 1)
        _int("sst_target_bytes", 4 * KiB)
        _seconds("compaction_interval", 0.0)
        _seconds("full_compaction_timeout", 0.0)
        _int("cache_bytes", 1 * MiB)
        if self.cache_dir is not None:
            if isinstance(self.cache_dir, os.PathLike):
                object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
            if not isinstance(self.cache_dir, str) or not self.cache_dir or "\x00" in self.cache_dir:
                raise InvalidArgument(f"Options.cache_dir must be None or a directory path, got {self.cache_dir!r}")
        if not isinstance(self.compactor, bool):
            raise InvalidArgument(f"Options.compactor must be a bool, got {self.compactor!r}")
        if self.l0_max_ssts < self.l0_compaction_threshold:
            raise InvalidArgument("Options.l0_max_ssts must be >= l0_compaction_threshold")
        if not isinstance(self.wal, bool):
            raise InvalidArgument(f"Options.wal must be a bool, got {self.wal!r}")
        if self.compression not in COMPRESSIONS:
            raise InvalidArgument(
                f"Options.compression must be one of {', '.join(map(repr, COMPRESSIONS))}, got {self.compression!r}"
            )
        if self.compression == "zstd":
            import importlib.util

            if importlib.util.find_spec("zstandard") is None:
                raise InvalidArgument(
                    "Options.compression='zstd' needs the 'zstandard' package (pip install zstandard), "
                    "or open with compression='none'"
                )
        if self.initial_arenas > self.max_arenas:
            raise InvalidArgument("Options.initial_arenas must be <= max_arenas")
        if self.max_unflushed_bytes < self.l0_sst_bytes:
            raise InvalidArgument("Options.max_unflushed_bytes must be >= l0_sst_bytes")
        if not isinstance(self.failpoints, str):
            raise InvalidArgument("Options.failpoints must be a str")
        if not isinstance(self.store_options, Mapping):
            raise InvalidArgument("Options.store_options must be a mapping")
        if self.store_wrapper is not None and not callable(self.store_wrapper):
            raise InvalidArgument("Options.store_wrapper must be callable or None")
        if self.store_wrapper is not None:
            # it travels to the flusher process (and to writer processes)
            import pickle

            try:
                pickle.dumps(self.store_wrapper)
            except Exception as exc:  # noqa: BLE001 - any pickling failure
                raise InvalidArgument(
                    "Options.store_wrapper must be picklable: use a module-level function or an instance "
                    f"of a module-level class, not a lambda or a nested function ({type(exc).__name__}: {exc})"
                ) from None
        # Parse now so that a typo fails at open, not at the failpoint.
        from shaledb.failpoints import parse_failpoints

        parse_failpoints(self.failpoints)

    def replace(self, **changes: Any) -> "Options":
        """A validated copy with ``changes`` applied."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise InvalidArgument(f"unknown option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls, options: "Options | None", overrides: Mapping[str, Any]) -> "Options":
        """``options`` (or the defaults) with keyword ``overrides`` applied."""
        if options is None:
            options = cls()
        elif not isinstance(options, Options):
            raise InvalidArgument(f"options must be a shaledb.Options, got {type(options).__name__}")
        return options.replace(**overrides) if overrides else options
