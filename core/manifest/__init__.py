"""The manifest: its model and codec (``model``), the generic fenced
versioned object (``versioned``) and the manifest store that plugs the two
together (``store``).  Fencing lives here.  See docs/format/manifest.md.

Loaded lazily (module ``__getattr__``) to keep ``import shaledb`` cheap and
free of cycles.
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("model", "store", "versioned")
_NAMES = {
    **dict.fromkeys(
        ("Checkpoint", "Manifest", "SortedRun", "SstRef", "SstWatermark", "decode_manifest", "encode_manifest"),
        "model",
    ),
    **dict.fromkeys(("FenceableObject", "Version", "VersionedObject", "create_only"), "versioned"),
    **dict.fromkeys(("ManifestStore", "check_transition"), "store"),
}

__all__ = sorted(_SUBMODULES + tuple(_NAMES))


def __getattr__(name: str):
    """Import the defining submodule on first use of a public name."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
