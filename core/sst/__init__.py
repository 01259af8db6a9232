"""SST objects: the byte format (``format``), the writer (``build_ssts``), the
reader (``SstReader``) and the block cache.  See docs/format/sst.md and
docs/format/block.md.

Loaded lazily (module ``__getattr__``): the reader and writer pull in the
numba kernels, which ``import shaledb`` must not load.
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("block_cache", "format", "reader", "writer")
_NAMES = {
    "BlockCache": "block_cache",
    "Footer": "format",
    "SstInfo": "format",
    "SstReader": "reader",
    "build_ssts": "writer",
}

__all__ = sorted(_SUBMODULES + tuple(_NAMES))


def __getattr__(name: str):
    """Import the defining submodule on first use of a public name."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
