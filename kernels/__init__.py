"""ShaleDB numba kernels: numpy arrays in, numpy arrays out.

Records share one layout (``shaledb.format.record``, docs/format/record.md);
a record run is ``(buf: uint8[:], offs: int64[:])``.  The public wrappers are
re-exported here lazily, so ``import shaledb.kernels`` does not import numba;
inside the package, import from the submodules: ``mem`` (load/store
primitives), ``record`` (record accessors), ``hashing``, then the kernels.

Kernels run without the GIL and keep no state: wrappers validate their inputs,
allocate their outputs and may be called from several threads at once.
"""

from __future__ import annotations

import importlib

# Eager, so that the function (not the submodule of the same name) is the
# package attribute; kernels/warmup.py imports nothing heavy at import time.
from shaledb.kernels.warmup import warmup

_EXPORTS = {
    "block_checksum_ok": "block",
    "bloom_build": "bloom",
    "bloom_build_from_hashes": "bloom",
    "bloom_may_contain": "bloom",
    "concat_runs": "sort",
    "decode_block": "block",
    "dedupe_sorted": "dedupe",
    "encode_blocks": "block",
    "merge_runs": "merge",
    "seek_block": "block",
    "sort_records": "sort",
    "xxh64": "hashing",
}

__all__ = sorted([*_EXPORTS, "warmup"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
