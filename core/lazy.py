"""Lazy package surfaces (PEP 562): a package lists its public names and the
submodule that defines each; a name is imported on first use, so importing
the package loads nothing heavy (no numba, no pool) and makes no cycles.

Usage in a package ``__init__``::

    __all__, __getattr__, __dir__ = lazy_surface(__name__, {"Name": "submodule"}, submodules=("submodule",))
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Iterable, Mapping

__all__ = ["lazy_surface"]


def lazy_surface(
    package: str, where: Mapping[str, str], submodules: Iterable[str] = ()
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``: each public name in
    ``where`` maps to the submodule that defines it; ``submodules`` are public
    too.  A resolved name is cached in the package's namespace."""
    where = dict(where)
    subs = tuple(submodules)
    public = sorted(set(where) | set(subs))

    def __getattr__(name: str):
        if name in subs:
            return importlib.import_module(f"{package}.{name}")
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return public, __getattr__, __dir__
