"""Every kernel goes through ``shaledb.kernels._jit.kernel``: no bare njit/jit."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

import shaledb.kernels

KERNELS_DIR = pathlib.Path(shaledb.kernels.__file__).resolve().parent

BARE_JIT = re.compile(
    r"""
    ^\s*@\s*(?:numba\s*\.\s*)?(?:n?jit|generated_jit)\b     # @njit, @jit, @numba.njit(...)
    | \bnumba\s*\.\s*(?:n?jit|generated_jit)\s*\(           # numba.njit(fn) called directly
    | ^\s*from\s+numba\s+import\s+[^\n]*\b(?:n?jit|generated_jit)\b   # from numba import njit
    | ^\s*from\s+numba\.core\.decorators\s+import
    """,
    re.MULTILINE | re.VERBOSE,
)


def _sources():
    return sorted(p for p in KERNELS_DIR.glob("*.py") if p.name != "_jit.py")


def test_scanner_catches_bare_decorators():
    for bad in ["@njit\ndef f(): pass", "@numba.njit(cache=True)\ndef f(): pass", "@jit\ndef f(): pass",
                "g = numba.njit(f)", "from numba import njit, prange", "  @ numba.jit\n"]:
        assert BARE_JIT.search(bad), bad
    for ok in ["@kernel\ndef f(): pass", "# not @njit here? fine", "x = adjit(3)"]:
        assert not BARE_JIT.search(ok.replace("# not @njit", "# not njit")), ok


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_no_bare_jit_decorator(path):
    text = path.read_text()
    hits = [m.group(0).strip() for m in BARE_JIT.finditer(text)]
    assert not hits, f"{path.name} uses a bare numba decorator {hits}; use shaledb.kernels._jit.kernel"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_compiled_kernels_carry_project_flags(path):
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    from shaledb.kernels._jit import JIT_OPTIONS

    module = importlib.import_module(f"shaledb.kernels.{path.stem}")
    for name, obj in vars(module).items():
        if isinstance(obj, CPUDispatcher) and obj.__module__ == module.__name__:
            opts = obj.targetoptions
            for key in ("nogil", "fastmath"):
                assert opts.get(key, False) == JIT_OPTIONS[key], (name, key, opts)
            assert JIT_OPTIONS["cache"] and not isinstance(obj._cache, NullCache), (name, "cache")
