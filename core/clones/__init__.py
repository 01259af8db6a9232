"""Clones: a writable database that shares its source's SSTs
(``shaledb.clone``; docs/readers.md, "Clones").  Loaded lazily."""

from __future__ import annotations

from shaledb.lazy import lazy_surface

__all__, __getattr__, __dir__ = lazy_surface(__name__, {"CloneResult": "clone", "clone": "clone", "release_source": "clone"})
