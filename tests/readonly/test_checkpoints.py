"""Checkpoints by url (``shaledb.checkpoints``) and from the writer
(``Db.*_checkpoint``): create, list, refresh, delete; GC keeps what a live
checkpoint pins and removes an expired one; tools holding no writer never
fence the writer."""

from __future__ import annotations

import datetime as dt

import pytest
from engine_util import open_db, scan_all
from readonly_util import OPTS, kv

import shaledb
from shaledb import checkpoints
from shaledb.manifest.store import ManifestStore
from shaledb.manifest.versioned import SystemClock
from shaledb.storage import open_store


def _load(db, gen, memtable=True):
    for i in range(200):
        db.put(*kv(i, gen), await_durable=False)
    db.flush(memtable=memtable)


def test_checkpoints_by_url_while_the_writer_runs(tmp_path):
    url = str(tmp_path / "db")
    with open_db(url, **OPTS) as db:
        _load(db, 0)
        a = checkpoints.create(url, name="by-url")  # no writer handle: a reader-role update
        assert a.name == "by-url" and a.expires_at is None
        assert a.created_at.tzinfo is dt.timezone.utc
        b = db.create_checkpoint(lifetime=dt.timedelta(hours=1))
        assert b.expires_at is not None and b.expires_at > b.created_at
        assert [c.id for c in checkpoints.list(url)] == [a.id, b.id] == [c.id for c in db.list_checkpoints()]
        c = checkpoints.refresh(url, b.id, 7200)
        assert c.id == b.id and c.manifest_id == b.manifest_id and c.expires_at > b.expires_at
        assert checkpoints.refresh(url, b.id, None).expires_at is None
        _load(db, 1)  # the writer was fenced by none of it
        checkpoints.delete(url, a.id)
        assert [c.id for c in db.list_checkpoints()] == [b.id]
        with pytest.raises(shaledb.InvalidArgument, match="no checkpoint"):
            checkpoints.delete(url, a.id)
        db.delete_checkpoint(b.id)
        assert checkpoints.list(url) == []
    with pytest.raises(shaledb.InvalidArgument, match="no ShaleDB database"):
        checkpoints.list(str(tmp_path / "nothing"))


def test_gc_keeps_what_a_checkpoint_pins_and_drops_it_when_expired(tmp_path):
    url = str(tmp_path / "db")
    with open_db(url, **OPTS) as db:
        _load(db, 0)
        keep = db.create_checkpoint()
        short = db.create_checkpoint(lifetime=3600)
        want = scan_all(db)
        for gen in (1, 2):
            _load(db, gen)
        db.compact(full=True)
        res = db.gc()
        assert res["expired_checkpoints"] == []
        with shaledb.open_reader(url, checkpoint=keep.id) as r:
            assert dict(r.scan()) == want
        # expire it: a refresh made on a clock an hour behind, with a one-second lifetime
        ManifestStore.open_reader(open_store(url), clock=_Behind(3600)).refresh_checkpoint(short.id, lifetime_ms=1000)
        assert [c.id for c in db.list_checkpoints()] == [keep.id]  # list() hides an expired one
        assert db.gc()["expired_checkpoints"] == [short.id]
        with pytest.raises(shaledb.InvalidArgument, match="no checkpoint"):
            shaledb.open_reader(url, checkpoint=short.id)
        db.delete_checkpoint(keep.id)
        assert db.gc()["deleted"]["sst"] > 0  # what only the checkpoint kept is collected now
        assert scan_all(db) == {kv(i)[0]: kv(i, 2)[1] for i in range(200)}


class _Behind(SystemClock):
    def __init__(self, seconds: float):
        self.ms = int(seconds * 1000)

    def now_ms(self) -> int:
        return super().now_ms() - self.ms


def test_refresh_may_change_only_the_expiry():
    """check_transition: a checkpoint named in drop_checkpoints may change its
    expiry (a refresh), nothing else; without the name, not even that."""
    from shaledb.manifest.model import Checkpoint as Model
    from shaledb.manifest.model import Manifest
    from shaledb.manifest.store import check_transition

    cp = Model(id="01ARZ3NDEKTSV4RRFFQ69G5FAV", manifest_id=1, expires_at_ms=5_000, name="n")
    old = Manifest(checkpoints=(cp,))
    longer = old.replace(checkpoints=(cp.replace_expiry(9_000),))
    check_transition(old, longer, 2, role="reader", now_ms=1_000, drop_checkpoints=[cp.id])
    with pytest.raises(shaledb.InvalidArgument, match="changed"):
        check_transition(old, longer, 2, role="reader", now_ms=1_000)
    import dataclasses

    moved = old.replace(checkpoints=(dataclasses.replace(cp, manifest_id=2, expires_at_ms=9_000),))
    with pytest.raises(shaledb.InvalidArgument, match="changed"):
        check_transition(old, moved, 2, role="reader", now_ms=1_000, drop_checkpoints=[cp.id])
