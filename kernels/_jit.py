"""The one jit decorator every ShaleDB kernel uses.

``@kernel`` is ``numba.njit`` with the project's flags: ``cache=True`` (compiled
code is reused across processes), ``nogil=True`` (writer threads and the
flusher run kernels without the GIL) and no fastmath (encodings must be exact
to the bit).  ``tests/kernels/test_jit_flags.py`` fails on a bare ``@njit``.

If the package's own cache directory is not writable (a read-only install),
numba is pointed at a per-user directory under the system temp folder before
it is imported, so importing the kernels never fails for want of a cache.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["JIT_OPTIONS", "inline_kernel", "kernel"]


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        return os.access(path, os.W_OK)
    except OSError:
        return False


def _ensure_writable_cache_dir() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    target = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(here, "__pycache__")
    if _writable(target):
        return
    fallback = os.path.join(tempfile.gettempdir(), f"shaledb-numba-cache-{os.getuid()}")
    os.makedirs(fallback, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = fallback


_ensure_writable_cache_dir()

import numba  # noqa: E402  (after the cache directory is settled)

JIT_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}


def kernel(fn):
    """Compile ``fn`` with the project's jit flags."""
    return numba.njit(**JIT_OPTIONS)(fn)


def inline_kernel(fn):
    """``kernel`` for a small helper of a hot loop: numba inlines its body
    into every caller (``inline="always"``), so the arrays it is passed are
    not reference-counted per call (an atomic increment and decrement of
    each array argument, which a point read's helpers paid about ten times a
    key).  Callable from jitted code and from Python alike."""
    return numba.njit(**JIT_OPTIONS, inline="always")(fn)
