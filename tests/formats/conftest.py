"""Fixtures of the format tests.

``--rewrite-golden`` (or ``SHALEDB_REWRITE_GOLDEN=1``) makes the golden-byte
tests rewrite the fixtures under ``tests/golden/`` instead of comparing with
them; use it only after an intended format change, and review the diff::

    python -m pytest tests/formats --rewrite-golden
"""

from __future__ import annotations

import os

import pytest

from formats_testlib import GOLDEN_DIR


def pytest_addoption(parser):
    parser.addoption(
        "--rewrite-golden",
        action="store_true",
        default=False,
        help="rewrite the golden byte fixtures under tests/golden/ instead of comparing",
    )


@pytest.fixture
def golden(request):
    """``golden(name, data)``: compare ``data`` with tests/golden/<name>, or
    write it there under --rewrite-golden.  Returns the fixture's bytes."""
    rewrite = bool(request.config.getoption("--rewrite-golden", default=False)) or os.environ.get(
        "SHALEDB_REWRITE_GOLDEN", ""
    ) not in ("", "0")

    def check(name: str, data: bytes) -> bytes:
        path = GOLDEN_DIR / name
        if rewrite:
            GOLDEN_DIR.mkdir(exist_ok=True)
            path.write_bytes(data)
            return data
        assert path.exists(), f"missing golden fixture {path}; run pytest tests/formats --rewrite-golden"
        expected = path.read_bytes()
        assert data == expected, f"{name}: the writer no longer reproduces the golden bytes"
        return expected

    check.rewrite = rewrite
    return check
