"""SST objects: the byte format (``format``), the writer (``build_ssts``), the
reader (``SstReader``) and the block cache.  See docs/format/sst.md and
docs/format/block.md.

Loaded lazily (module ``__getattr__``): the reader and writer pull in the
numba kernels, which ``import shaledb`` must not load.
"""

from __future__ import annotations

from shaledb.lazy import lazy_surface

_SUBMODULES = ("block_cache", "format", "reader", "writer")
_NAMES = {
    "BlockCache": "block_cache",
    "Footer": "format",
    "SstInfo": "format",
    "SstReader": "reader",
    "build_ssts": "writer",
}

__all__, __getattr__, __dir__ = lazy_surface(__name__, _NAMES, _SUBMODULES)
