"""SST low watermarks in the manifest (docs/gc.md): codec, golden bytes,
and what the manifest store does with them."""

from __future__ import annotations

import os

import pytest

from shaledb.errors import Corruption, InvalidArgument
from shaledb.format.keys import new_sst_id
from shaledb.manifest.model import Manifest, SstWatermark, decode_manifest, encode_manifest
from shaledb.manifest.store import ManifestStore, check_transition
from shaledb.storage.memory import MemoryStore

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "watermarks.manifest")


def ulid(n: int) -> str:
    return new_sst_id(now_ms=1_700_000_000_000 + n, rand=n.to_bytes(10, "big"))


def wm_manifest() -> Manifest:
    return Manifest(
        writer_epoch=4,
        compactor_epoch=2,
        next_wal_id=9,
        replay_after_wal_id=7,
        writer_sst_watermark=SstWatermark(4, ulid(50)),
        compactor_sst_watermark=SstWatermark(2, ulid(40)),
    )


def test_golden_watermarks(rewrite_golden):
    data = encode_manifest(wm_manifest())
    if rewrite_golden:
        with open(GOLDEN, "wb") as f:
            f.write(data)
    with open(GOLDEN, "rb") as f:
        assert f.read() == data
    assert decode_manifest(data, "g") == wm_manifest()


def test_absent_watermarks_keep_old_bytes():
    m = wm_manifest().replace(writer_sst_watermark=None, compactor_sst_watermark=None)
    assert decode_manifest(encode_manifest(m), "m") == m
    with open(os.path.join(os.path.dirname(GOLDEN), "new_db.manifest"), "rb") as f:
        assert decode_manifest(f.read(), "old").writer_sst_watermark is None


def test_bad_watermarks_refused():
    with pytest.raises(InvalidArgument):
        SstWatermark(1, "not-a-ulid")
    with pytest.raises(InvalidArgument):
        Manifest(writer_sst_watermark=("1", ulid(1)))
    data = bytearray(encode_manifest(wm_manifest()))
    data[30] ^= 0xFF
    with pytest.raises(Corruption):
        decode_manifest(bytes(data), "bad")


def test_new_sst_id_strictly_increasing():
    ids = [new_sst_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_store_sets_and_raises_watermarks():
    store = MemoryStore()
    w = ManifestStore.open_writer(store)
    first = w.current.writer_sst_watermark
    assert first.epoch == w.epoch
    sid = new_sst_id()
    assert sid > first.sst_id  # minted after the open
    c = ManifestStore.open_compactor(store)
    cw = c.current.compactor_sst_watermark
    assert cw.epoch == c.epoch and c.current.writer_sst_watermark == first
    m = w.publish_l0((), last_l0_seq=0, replay_after_wal_id=1, next_wal_id=2)
    assert m.writer_sst_watermark.sst_id > sid and m.compactor_sst_watermark == cw
    # an explicit, lower watermark breaks the earlier promise
    with pytest.raises(InvalidArgument):
        w.publish_l0((), last_l0_seq=0, replay_after_wal_id=2, next_wal_id=3, sst_watermark=first.sst_id)
    # a compaction without a watermark keeps the compactor's as it is
    assert c.apply_compaction().compactor_sst_watermark == cw


def test_transition_rules():
    old = wm_manifest()
    lower = old.replace(writer_sst_watermark=SstWatermark(4, ulid(10)))
    with pytest.raises(InvalidArgument, match="goes back"):
        check_transition(old, lower, 2, role="writer", now_ms=0)
    with pytest.raises(InvalidArgument, match="disappears"):
        check_transition(old, old.replace(compactor_sst_watermark=None), 2, role="compactor", now_ms=0)
    with pytest.raises(InvalidArgument, match="compactor's SST watermark"):
        check_transition(
            old, old.replace(compactor_sst_watermark=SstWatermark(2, ulid(60))), 2, role="writer", now_ms=0
        )
    with pytest.raises(InvalidArgument, match="writer's SST watermark"):
        check_transition(old, old.replace(writer_sst_watermark=SstWatermark(4, ulid(60))), 2, role="compactor", now_ms=0)
    # a newer epoch may start lower (the fenced epoch can publish nothing)
    newer = old.replace(writer_epoch=5, writer_sst_watermark=SstWatermark(5, ulid(1)))
    check_transition(old, newer, 2, role="writer", now_ms=0)
