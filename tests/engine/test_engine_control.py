"""Options, failpoints and the authenticated control channel (no storage needed)."""

from __future__ import annotations

import os
import pickle
import threading
import time
from multiprocessing.connection import Client

import pytest

import shaledb
from shaledb.flush.control import ControlClient, ControlServer, new_control_address, remove_control_address
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


def _handler(op, args):
    if op == "echo":
        return args
    if op == "slow":
        time.sleep(args[0])
        return "late"
    if op == "fenced":
        raise shaledb.Fenced("a newer writer owns the database")
    raise ValueError("boom")


def test_control_roundtrip_errors_and_timeouts():
    addr = new_control_address()
    server = ControlServer(addr, _handler)
    client = ControlClient(addr, timeout=5)
    try:
        assert client.call("echo", 1, b"x") == (1, b"x")
        with pytest.raises(shaledb.Fenced, match="newer writer"):
            client.call("fenced")
        with pytest.raises(shaledb.Internal, match="ValueError: boom"):
            client.call("other")
        with pytest.raises(shaledb.Unavailable, match="did not answer"):
            client.call("slow", 1.0, timeout=0.1)
        assert client.call("echo", 2) == (2,)  # a fresh connection after the timeout
        # the handle pickles without live connections, and works in a new thread
        c2 = pickle.loads(pickle.dumps(client))
        out = []
        t = threading.Thread(target=lambda: out.append(c2.call("echo", 3)))
        t.start()
        t.join(5)
        assert out == [(3,)]
        c2.close()
        # a client without the key is refused
        with pytest.raises(Exception):
            Client(addr.path, family="AF_UNIX", authkey=os.urandom(32))
        assert client.call("echo", 4) == (4,)
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
        assert client.call("echo") == ()
        server.close()
        t0 = time.monotonic()
        with pytest.raises(shaledb.Unavailable):
            client.call("echo")
        with pytest.raises(shaledb.Unavailable):
            client.call("echo")
        assert time.monotonic() - t0 < 5
    finally:
        client.close()
        server.close()
        remove_control_address(addr)
