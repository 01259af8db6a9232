"""Manifest hardening at open (issue 9): only the latest manifest matters,
a damaged latest manifest is still an error, and a root of foreign files is
InvalidArgument."""

from __future__ import annotations

import glob
import os
import sys

import pytest

import shaledb
from shaledb.manifest.store import ManifestStore
from shaledb.storage import LocalStore

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from engine_util import open_db  # noqa: E402


def _manifests(root: str) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "manifest", "*.manifest")))


def _damage(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.fixture
def three_sessions(tmp_path):
    root = str(tmp_path / "db")
    for i in range(3):
        with open_db(root) as db:
            db.put(b"k%d" % i, b"v%d" % i)
            db.flush(memtable=True)
    assert len(_manifests(root)) >= 3
    return root


@pytest.mark.parametrize("offset", [0, 14], ids=["magic", "header-json"])
def test_damaged_old_manifest_does_not_block_open(three_sessions, offset):
    root = three_sessions
    _damage(_manifests(root)[0], offset)
    with open_db(root) as db:
        assert [db.get(b"k%d" % i) for i in range(3)] == [b"v0", b"v1", b"v2"]
        db.put(b"k3", b"v3")
    with open_db(root) as db:
        assert db.get(b"k3") == b"v3"


@pytest.mark.parametrize("offset", [0, -1], ids=["header", "payload"])
def test_damaged_latest_manifest_is_corruption_never_a_fallback(three_sessions, offset):
    root = three_sessions
    latest = _manifests(root)[-1]
    _damage(latest, offset if offset >= 0 else os.path.getsize(latest) - 1)
    with pytest.raises(shaledb.Corruption, match=os.path.basename(latest)):
        open_db(root)
    ms = ManifestStore(LocalStore(root))
    with pytest.raises(shaledb.Corruption):
        ms.refresh()


def test_root_of_foreign_files_is_invalid_argument(tmp_path):
    root = tmp_path / "notadb"
    root.mkdir()
    (root / "notes.txt").write_bytes(b"someone else's file")
    with pytest.raises(shaledb.InvalidArgument, match="not a ShaleDB database") as info:
        open_db(str(root))
    assert "notes.txt" in str(info.value)
    assert sorted(os.listdir(root)) == ["notes.txt"] or all(
        n == "notes.txt" or n.startswith(".shaledb") for n in os.listdir(root)
    )


def test_manifest_store_refuses_foreign_root(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(shaledb.InvalidArgument, match="data.bin"):
        ManifestStore.open_writer(LocalStore(str(tmp_path)))
