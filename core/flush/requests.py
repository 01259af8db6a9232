"""The requests the flusher serves: one enum for the control channel's client
(Db, writer handles) and server (the flusher), and for the worker's queue.

Not persisted (only ever sent between processes of one open Db, which run
the same code), so members may be renumbered; they are sent as plain ints.
"""

from __future__ import annotations

from enum import IntEnum, unique

__all__ = ["Request", "QUEUED", "SERVED_DURING_BUILD"]


@unique
class Request(IntEnum):
    """One flusher request (arguments in brackets)."""

    #: upload everything appended so far to the WAL; answer the durable seq
    FLUSH_WAL = 1
    #: seal the generation and publish it to L0; answer the durable seq
    FLUSH_MEMTABLE = 2
    #: [seq, timeout] answer once ``seq`` is durable (nudges a WAL upload)
    AWAIT_DURABLE = 3
    #: seal the current generation (backpressure)
    SEAL = 4
    #: a dict of counters; answered for a failed or fenced flusher too
    STATUS = 5
    #: final flush to L0, then the flusher stops
    CLOSE = 6
    #: is the flusher alive and usable?
    PING = 7
    #: stop without flushing (a fenced or failed Db)
    ABORT = 8
    #: internal, never sent: a durable write waits, upload the WAL now
    TICK = 9
    #: internal, never sent: the L0 build on the helper thread has finished
    BUILT = 10
    #: [SstRefs in key order] a bulk ingest (docs/bulk.md): reserve a seq,
    #: flush the memtable, add the SSTs as one new sorted run; answer a dict
    INGEST = 11


#: Requests that go through the worker's queue (the others are answered on
#: the control thread).
QUEUED = frozenset(
    {Request.FLUSH_WAL, Request.FLUSH_MEMTABLE, Request.SEAL, Request.CLOSE, Request.ABORT, Request.INGEST}
)

#: Requests the worker serves while an L0 build runs on its helper thread;
#: the other queued requests wait until the build is done.
SERVED_DURING_BUILD = frozenset({Request.TICK, Request.FLUSH_WAL})
