"""The manifest: its model and codec (``model``), the generic fenced
versioned object (``versioned``) and the manifest store that plugs the two
together (``store``).  Fencing lives here.  See docs/format/manifest.md.

Loaded lazily (module ``__getattr__``) to keep ``import shaledb`` cheap and
free of cycles.
"""

from __future__ import annotations

from shaledb.lazy import lazy_surface

_SUBMODULES = ("model", "store", "versioned")
_NAMES = {
    **dict.fromkeys(
        ("Checkpoint", "Manifest", "SortedRun", "SstRef", "SstWatermark", "decode_manifest", "encode_manifest"),
        "model",
    ),
    **dict.fromkeys(("FenceableObject", "Version", "VersionedObject", "create_only"), "versioned"),
    **dict.fromkeys(("ManifestStore", "check_transition"), "store"),
}

__all__, __getattr__, __dir__ = lazy_surface(__name__, _NAMES, _SUBMODULES)
