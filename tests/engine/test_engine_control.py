"""Options, failpoints and the authenticated control channel (no storage needed)."""

from __future__ import annotations

import os
import pickle
import threading
import time
from enum import IntEnum
from multiprocessing.connection import Client

import pytest

import shaledb
from shaledb.ipc.control import ControlClient, ControlServer, new_control_address, remove_control_address
from shaledb.failpoints import Failpoints, parse_failpoints
from shaledb.options import Options


def test_options_defaults_and_validation():
    o = Options()
    assert o.flush_interval == 0.1 and o.wal is True and o.block_size == 4096 and o.bloom_bits_per_key == 10
    assert pickle.loads(pickle.dumps(o)) == o
    assert o.replace(wal=False).wal is False
    for bad in (
        {"arena_bytes": 10},
        {"arena_bytes": "big"},
        {"flush_interval": 0},
        {"flush_interval": float("nan")},
        {"wal": 1},
        {"block_size": True},
        {"l0_sst_bytes": 1 << 30, "max_unflushed_bytes": 1 << 20},
        {"failpoints": "no-such-point=kill"},
        {"failpoints": "after-manifest=explode"},
    ):
        with pytest.raises(shaledb.InvalidArgument):
            Options(**bad)
    with pytest.raises(shaledb.InvalidArgument, match="unknown option"):
        o.replace(no_such_option=1)
    with pytest.raises(AttributeError):
        o.wal = False  # frozen


def test_failpoints_parse_and_fire(monkeypatch):
    assert set(parse_failpoints("after-wal-upload=kill@3; after-manifest=sleep:0.01")) == {
        "after-wal-upload",
        "after-manifest",
    }
    fp = Failpoints("after-sst-upload=error@2", use_env=False)
    fp.hit("after-sst-upload")
    with pytest.raises(shaledb.Internal):
        fp.hit("after-sst-upload")
    fp.hit("after-manifest")  # unarmed: nothing
    monkeypatch.setenv("SHALEDB_FAILPOINTS", "mid-append=error")
    with pytest.raises(shaledb.Internal):
        Failpoints("").hit("mid-append")


class Op(IntEnum):
    """The ops of this test's server (the channel carries any int op)."""

    ECHO = 1
    SLOW = 2
    FENCED = 3
    OTHER = 4


def _handler(op, args):
    if op == Op.ECHO:
        return args
    if op == Op.SLOW:
        time.sleep(args[0])
        return "late"
    if op == Op.FENCED:
        raise shaledb.Fenced("a newer writer owns the database")
    raise ValueError("boom")


def test_control_roundtrip_errors_and_timeouts():
    addr = new_control_address()
    server = ControlServer(addr, _handler)
    client = ControlClient(addr, timeout=5)
    try:
        assert client.call(Op.ECHO, 1, b"x") == (1, b"x")
        with pytest.raises(shaledb.Fenced, match="newer writer"):
            client.call(Op.FENCED)
        with pytest.raises(shaledb.Internal, match="ValueError: boom"):
            client.call(Op.OTHER)
        with pytest.raises(shaledb.Unavailable, match="did not answer"):
            client.call(Op.SLOW, 1.0, timeout=0.1)
        assert client.call(Op.ECHO, 2) == (2,)  # a fresh connection after the timeout
        # the handle pickles without live connections, and works in a new thread
        c2 = pickle.loads(pickle.dumps(client))
        out = []
        t = threading.Thread(target=lambda: out.append(c2.call(Op.ECHO, 3)))
        t.start()
        t.join(5)
        assert out == [(3,)]
        c2.close()
        # a client without the key is refused
        with pytest.raises(Exception):
            Client(addr.path, family="AF_UNIX", authkey=os.urandom(32))
        assert client.call(Op.ECHO, 4) == (4,)
        assert oct(os.stat(os.path.dirname(addr.path)).st_mode & 0o777) == "0o700"
    finally:
        client.close()
        server.close()
        remove_control_address(addr)


def test_control_peer_gone_is_unavailable():
    addr = new_control_address()
    server = ControlServer(addr, _handler)
    client = ControlClient(addr, timeout=5)
    try:
        assert client.call(Op.ECHO) == ()
        server.close()
        t0 = time.monotonic()
        with pytest.raises(shaledb.Unavailable):
            client.call(Op.ECHO)
        with pytest.raises(shaledb.Unavailable):
            client.call(Op.ECHO)
        assert time.monotonic() - t0 < 5
    finally:
        client.close()
        server.close()
        remove_control_address(addr)


def test_control_refuses_a_request_without_an_int_op():
    addr = new_control_address()
    server = ControlServer(addr, _handler)
    try:
        conn = Client(addr.path, family="AF_UNIX", authkey=addr.authkey)
        try:
            conn.send(("echo", 1))
            assert conn.poll(5)
            reply = conn.recv()
        finally:
            conn.close()
        assert reply[:2] == ("err", "InvalidArgument") and "malformed request" in reply[2]
    finally:
        server.close()
        remove_control_address(addr)


def test_flusher_serves_only_client_requests():
    from shaledb.flush.flusher import Flusher
    from shaledb.flush.requests import QUEUED, Request

    fl = Flusher(None, Options(), None)  # never started: nothing is served
    with pytest.raises(shaledb.InvalidArgument, match="unknown flusher request 99"):
        fl.handle(99, ())
    for internal in (Request.TICK, Request.BUILT):
        assert internal not in QUEUED
        with pytest.raises(shaledb.InvalidArgument, match=internal.name):
            fl.handle(int(internal), ())
    assert fl.handle(int(Request.PING), ()) is True
