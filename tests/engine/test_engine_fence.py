"""Fencing: a second open of the same root fences the first."""

from __future__ import annotations

import time

import pytest

import shaledb
from engine_util import open_db, s3_opts, s3_url, scan_all


def test_second_open_fences_the_first(tmp_path):
    _fence_scenario(str(tmp_path / "db"), {})


@pytest.mark.s3
def test_second_open_fences_the_first_s3(moto_server, s3_bucket):
    _fence_scenario(s3_url(s3_bucket), s3_opts(moto_server))


def _fence_scenario(root, extra):
    def open_db(root):
        from engine_util import open_db as o

        return o(root, **extra)

    db1 = open_db(root)
    try:
        db1.put(b"before", b"1")
        db1.put(b"pending", b"p", await_durable=False)
        db1.flush()
        db2 = open_db(root)
        try:
            assert db2.get(b"before") == b"1" and db2.get(b"pending") == b"p"
            with pytest.raises(shaledb.Fenced):
                db1.put(b"after", b"x")  # its WAL create collides, or the poll saw the new epoch
            for call in (lambda: db1.get(b"before"), db1.flush, lambda: db1.put(b"again", b"y", await_durable=False)):
                with pytest.raises(shaledb.Fenced):
                    call()
            db2.put(b"new", b"2")
            assert db2.get(b"after") is None and db2.get(b"again") is None
        finally:
            db2.close()
    finally:
        db1.close()  # a fenced Db closes quietly and frees its memory
    with open_db(root) as db3:
        assert scan_all(db3) == {b"before": b"1", b"pending": b"p", b"new": b"2"}


def test_idle_fenced_db_notices_through_the_manifest_poll(tmp_path):
    root = str(tmp_path / "db")
    db1 = open_db(root, manifest_poll_interval=0.05)
    try:
        db2 = open_db(root)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    db1.get(b"x")
                except shaledb.Fenced:
                    break
                assert time.monotonic() < deadline, "the idle Db never noticed the newer writer"
                time.sleep(0.05)
        finally:
            db2.close()
    finally:
        db1.close()
