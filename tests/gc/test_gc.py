"""GC (shaledb.gc.collect): what goes, what stays, dry runs, watermarks,
checkpoints, readers on older manifests, and a SIGKILL mid-pass."""

from __future__ import annotations

import time

import pytest

from shaledb.format.keys import COMPACTED_PREFIX, MANIFEST_PREFIX, WAL_PREFIX, new_sst_id, sst_key
from shaledb.gc import collect
from shaledb.gc.collector import MIN_MANIFEST_AGE
from shaledb.manifest.store import ManifestStore
from shaledb.storage.urls import open_store

from engine_util import SPAWN, memory_url, reap, s3_opts, s3_url
from engine_util import open_db as _open_engine_db


def open_db(root, **kw):
    """A Db without its compactor service: these tests drive the GC
    themselves, and count the objects and epochs it would change."""
    kw.setdefault("compactor", False)
    return _open_engine_db(root, **kw)


N = 3000
VAL = b"v" * 300


def _key(i: int) -> bytes:
    return b"key-%06d" % i


def _write(url: str, rounds: int = 3, **kw) -> dict:
    """Write several generations (so several L0 SSTs and WAL objects), close."""
    db = open_db(url, **kw)
    expect = {}
    try:
        for r in range(rounds):
            for i in range(r, N, rounds):
                v = VAL + b"%d" % r
                db.put(_key(i), v, await_durable=False)
                expect[_key(i)] = v
            db.flush()  # WAL objects
            db.flush(memtable=True)  # an L0 generation
    finally:
        db.close()
    return expect


def _keys(store, prefix):
    return {m.key: m for m in store.list(prefix)}


def _check_reads(url: str, expect: dict, **kw) -> None:
    db = open_db(url, **kw)
    try:
        for k, v in expect.items():
            assert db.get(k) == v, k
    finally:
        db.close()


@pytest.fixture(params=["memory", "local"])
def url(request, tmp_path):
    return memory_url() if request.param == "memory" else str(tmp_path / "db")


def _manifest(store):
    return ManifestStore.open_reader(store)


def test_min_age_zero_deletes_wal_below_replay_point_and_nothing_live(url):
    expect = _write(url)
    store = open_store(url)
    ms = _manifest(store)
    m = ms.current
    assert len(m.l0) >= 3
    wal_before = _keys(store, WAL_PREFIX)
    fences = {k for k, meta in wal_before.items() if meta.size == 0}
    assert fences
    res = collect(store, min_age=0)
    assert res.counts["wal"] > 0
    # exactly the non-empty WAL objects at or below the replay point
    from shaledb.format.keys import parse_wal_key

    want = {k for k, meta in wal_before.items() if meta.size > 0 and parse_wal_key(k) <= m.replay_after_wal_id}
    assert set(res.keys["wal"]) == want
    after = _keys(store, WAL_PREFIX)
    assert fences <= set(after)  # fences stay
    assert not want & set(after)
    assert res.counts["sst"] == 0  # every SST is live
    assert {sst_key(s) for s in m.sst_ids()} <= set(_keys(store, COMPACTED_PREFIX))
    assert ms.refresh() == m  # the latest manifest is untouched
    _check_reads(url, expect)
    assert collect(store, min_age=0).total == 0  # a second pass finds nothing


def _orphan(store, sst_id: str | None = None) -> str:
    """An uploaded, never published SST (what a crashed flush leaves)."""
    sid = sst_id or new_sst_id()
    store.put(sst_key(sid), b"orphan-bytes")
    return sid


def test_unreferenced_sst_below_watermark_collected_young_one_kept(url):
    _write(url, rounds=1)
    store = open_store(url)
    old = _orphan(store)
    # a writer opening after the upload raises the watermark above it
    _write(url, rounds=1)
    res = collect(store, min_age=3600)
    assert sst_key(old) not in res.keys["sst"]  # younger than min_age: kept
    assert sst_key(old) in _keys(store, COMPACTED_PREFIX)
    res = collect(store, min_age=3600, now=time.time() + 7200)
    assert res.keys["sst"] == [sst_key(old)]
    assert sst_key(old) not in _keys(store, COMPACTED_PREFIX)


def test_sst_at_or_above_watermark_kept_even_with_min_age_zero(url):
    expect = _write(url, rounds=1)
    store = open_store(url)
    # an in-flight upload of the (closed) writer: minted after its last watermark
    inflight = _orphan(store)
    m = _manifest(store).current
    assert inflight > m.writer_sst_watermark.sst_id
    res = collect(store, min_age=0)
    assert res.counts["sst"] == 0
    assert sst_key(inflight) in _keys(store, COMPACTED_PREFIX)
    # the in-process registry protects ids below the watermark too
    db = open_db(url)  # raises the watermark above ``inflight``
    db.close()
    res = collect(store, min_age=0, inflight={inflight})
    assert res.counts["sst"] == 0
    res = collect(store, min_age=0)
    assert res.keys["sst"] == [sst_key(inflight)]
    _check_reads(url, expect)


def test_opened_role_without_its_watermark_blocks_sst_gc(url):
    """A compactor epoch with no watermark of that epoch (an older build
    opened it) gives no promise: no unreferenced SST may go."""
    from shaledb.format.keys import manifest_key
    from shaledb.manifest.model import encode_manifest

    _write(url, rounds=1)
    store = open_store(url)
    sid = _orphan(store)
    db = open_db(url)  # writer watermark now above ``sid``
    db.close()
    ms = _manifest(store)
    raw = ms.current.replace(compactor_epoch=ms.current.compactor_epoch + 1)
    assert raw.compactor_sst_watermark is None
    store.put_if_absent(manifest_key(ms.manifest_id + 1), encode_manifest(raw))
    res = collect(store, min_age=0)
    assert res.counts["sst"] == 0 and any("compactor" in r for r in res.skipped)
    ManifestStore.open_compactor(store)  # a current compactor sets its watermark
    assert collect(store, min_age=0).keys["sst"] == [sst_key(sid)]


def test_checkpoint_pins_manifest_ssts_and_wal_then_expiry_releases_them(url):
    expect = _write(url, rounds=2)
    store = open_store(url)
    reader = _manifest(store)
    pinned_id = reader.manifest_id
    pinned = reader.current
    cp = reader.add_checkpoint(manifest_id=pinned_id, lifetime_ms=int((MIN_MANIFEST_AGE + 60) * 1000))
    # retire the pinned state: a compactor drops every L0 SST
    comp = ManifestStore.open_compactor(store)
    gone = tuple(s.sst_id for s in comp.current.l0)
    # (a toy compaction: the data moves nowhere, so reads are not checked after it)
    comp.apply_compaction(removed_l0=gone, sst_watermark=new_sst_id())
    far = time.time() + MIN_MANIFEST_AGE + 10
    res = collect(store, min_age=0, now=far)
    assert not set(res.keys["sst"]) & {sst_key(s) for s in pinned.sst_ids()}
    assert "manifest/%020d.manifest" % pinned_id not in res.keys["manifest"]
    assert all(k in _keys(store, COMPACTED_PREFIX) for k in map(sst_key, pinned.sst_ids()))
    assert res.keys["manifest"]  # older, unpinned manifests go
    # after expiry the checkpoint is removed first, then its objects collected
    later = far + 120
    dry = collect(store, min_age=0, now=later, dry_run=True)
    assert dry.expired_checkpoints == [cp.id]
    assert _manifest(store).current.checkpoints == (cp,)  # dry run: still there
    res = collect(store, min_age=0, now=later)
    assert res.expired_checkpoints == [cp.id]
    assert _manifest(store).current.checkpoints == ()
    assert set(res.keys["sst"]) == {sst_key(s) for s in gone}
    assert sorted(res.keys["sst"]) == sorted(dry.keys["sst"])
    assert "manifest/%020d.manifest" % pinned_id in res.keys["manifest"]
    latest = _manifest(store).manifest_id
    assert "manifest/%020d.manifest" % latest in _keys(store, MANIFEST_PREFIX)
    del expect


def test_dry_run_deletes_nothing_and_reports_the_same_set(url):
    expect = _write(url)
    store = open_store(url)
    _orphan(store)
    db = open_db(url)
    db.close()
    before = {k: m.size for k, m in _keys(store, "").items()}
    far = time.time() + MIN_MANIFEST_AGE + 10
    dry = collect(store, min_age=0, now=far, dry_run=True)
    assert {k: m.size for k, m in _keys(store, "").items()} == before
    assert dry.counts["wal"] and dry.counts["sst"] and dry.counts["manifest"]
    real = collect(store, min_age=0, now=far)
    assert real.keys == dry.keys and real.bytes == dry.bytes
    assert not set(sum(real.keys.values(), [])) & set(_keys(store, ""))
    _check_reads(url, expect)


def test_reader_on_older_manifest_protected_by_min_age(url):
    """A reader in another process scanning manifest k: after a compaction
    retires k's SSTs, they stay for min_age after k stopped being the latest."""
    _write(url, rounds=2)
    store = open_store(url)
    old = _manifest(store).current
    comp = ManifestStore.open_compactor(store)
    comp.apply_compaction(removed_l0=tuple(s.sst_id for s in old.l0), sst_watermark=new_sst_id())
    res = collect(store, min_age=300)
    assert res.counts["sst"] == 0
    for sid in old.sst_ids():  # what the reader reads is still there
        assert store.get(sst_key(sid))
    res = collect(store, min_age=300, now=time.time() + 301)
    assert set(res.keys["sst"]) == {sst_key(s) for s in old.sst_ids()}


def test_fences_and_latest_manifest_stay_forever(url):
    _write(url, rounds=1)
    for _ in range(3):
        db = open_db(url)
        db.close()
    store = open_store(url)
    fences = {k for k, m in _keys(store, WAL_PREFIX).items() if m.size == 0}
    assert len(fences) >= 4
    collect(store, min_age=0, now=time.time() + 10 * MIN_MANIFEST_AGE)
    assert fences <= set(_keys(store, WAL_PREFIX))
    latest = _manifest(store).manifest_id
    assert set(_keys(store, MANIFEST_PREFIX)) == {"manifest/%020d.manifest" % latest}


def _gc_child(url: str, now: float) -> None:
    collect(open_store(url), min_age=0, now=now, failpoints="gc-mid-delete=kill")


def test_sigkill_mid_gc_leaves_a_database_that_reopens_and_next_gc_completes(tmp_path):
    url = str(tmp_path / "db")
    expect = _write(url)
    store = open_store(url)
    _orphan(store)
    db = open_db(url)
    db.close()
    far = time.time() + MIN_MANIFEST_AGE + 10
    plan = collect(store, min_age=0, now=far, dry_run=True)
    assert plan.total >= 3
    p = SPAWN.Process(target=_gc_child, args=(url, far))
    p.start()
    try:
        p.join(120)
        assert p.exitcode == -9  # killed at the failpoint
    finally:
        reap([p])
    left = set(_keys(store, ""))
    done = set(sum(plan.keys.values(), [])) - left
    assert len(done) == 1  # exactly one deletion happened before the kill
    _check_reads(url, expect)  # reopens intact (and writes a new fence/manifest)
    rest = collect(store, min_age=0, now=far + MIN_MANIFEST_AGE + 10)
    assert set(sum(plan.keys.values(), [])) - done <= set(sum(rest.keys.values(), []))
    assert not set(sum(plan.keys.values(), [])) & set(_keys(store, ""))
    _check_reads(url, expect)


@pytest.mark.s3
def test_gc_on_s3(moto_server, s3_bucket):
    url = s3_url(s3_bucket)
    kw = s3_opts(moto_server)
    expect = _write(url, rounds=2, **kw)
    store = open_store(url, **kw["store_options"])
    sid = _orphan(store)
    db = open_db(url, **kw)
    db.close()
    res = collect(store, min_age=0)
    assert res.counts["wal"] > 0 and res.keys["sst"] == [sst_key(sid)]
    fences = [m for m in store.list(WAL_PREFIX) if m.size == 0]
    assert fences
    _check_reads(url, expect, **kw)
