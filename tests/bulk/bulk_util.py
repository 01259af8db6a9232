"""Helpers shared by the bulk-load tests (imported as ``bulk_util``)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))

from engine_util import SMALL, open_db, reap, scan_all, wait_gone  # noqa: E402,F401


def pairs(n: int, *, start: int = 0, step: int = 1, tag: bytes = b"v") -> tuple[list[bytes], list[bytes]]:
    """``n`` keys ``k%08d`` (start, start+step, ...) and values ``tag + key``."""
    keys = [b"k%08d" % (start + i * step) for i in range(n)]
    return keys, [tag + k for k in keys]
