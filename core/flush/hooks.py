"""The writer side of the control channel: how writer handles reach the flusher.

:class:`FlusherHooks` plugs into ``shaledb.memtable.writer.Writer`` (its
``WriterHooks``): durable acks, seal requests, liveness checks and flushes
become requests to the flusher (``shaledb.flush.requests.Request``).
Picklable (a writer handle travels to other processes); connects on first
use.  See docs/architecture.md.
"""

from __future__ import annotations

import time

from shaledb.errors import Unavailable
from shaledb.ipc.control import ControlAddress, ControlClient
from shaledb.flush.requests import Request
from shaledb.memtable.writer import WriterHooks
from shaledb.options import Options

__all__ = ["FlusherHooks"]

#: A writer waiting under backpressure pings the flusher at most this often.
_PING_EVERY = 0.5


class FlusherHooks(WriterHooks):
    """Writer hooks that talk to the flusher over the control channel.

    Picklable (address, key and options only); each process connects on
    first use.  Thread-safe (the client keeps one connection per thread).
    """

    def __init__(self, addr: ControlAddress, options: Options):
        self.addr = addr
        self.options = options
        self._client: ControlClient | None = None
        self._last_alive = 0.0

    def __getstate__(self):
        return {"addr": self.addr, "options": self.options}

    def __setstate__(self, st):
        self.__init__(st["addr"], st["options"])

    def _c(self) -> ControlClient:
        if self._client is None:
            self._client = ControlClient(self.addr, self.options.request_timeout)
        return self._client

    def await_durable(self, pool, seq: int, timeout: float) -> None:
        if not self.options.wal:
            # no WAL: a write is durable once its generation is in L0
            if pool.durable_seq() < seq:
                self._c().call(Request.FLUSH_MEMTABLE, timeout=timeout + 5)
            return
        if pool.durable_seq() >= seq:
            return
        try:
            pool.check_status()
        except Unavailable:
            pass  # the flusher failed: its answer below names the cause
        self._c().call(Request.AWAIT_DURABLE, seq, timeout, timeout=timeout + 5)

    def request_seal(self, pool) -> None:
        self._c().call(Request.SEAL)

    def sealed(self, pool, gen: int) -> None:
        pass  # the flusher finds sealed generations every flush_interval

    def check_alive(self, pool) -> None:
        pool.check_status()
        now = time.monotonic()
        if now - self._last_alive > _PING_EVERY:
            self._last_alive = now
            self._c().call(Request.PING, timeout=min(10.0, self.options.request_timeout))

    def flush(self, pool, memtable: bool) -> int:
        return self._c().call(Request.FLUSH_MEMTABLE if memtable else Request.FLUSH_WAL)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
