"""Read-ahead for scans of SSTs on stores that do not map objects (S3):
several ranged GETs in flight, results handed out in key order.

``fetch_groups(fetch, offsets, first, last)`` cuts blocks ``first..last-1``
(``offsets``: the SST's block offsets) into groups of consecutive blocks of
up to ``group_bytes`` and yields ``(i, j, bytes)`` per group (blocks
``i..j-1``; a memoryview into the GET's bytes), in order, while a shared pool
of ``THREADS`` threads fetches ahead with ``fetch(i, j)``, one ranged GET
per run of groups of up to ``GET_BYTES``, at most ``MAX_IN_FLIGHT_BYTES``
beyond the group being handed out.  Each fetch runs in a copy of the
submitting thread's context, so the caller's ``call_deadline`` (the scan
step's) bounds its retries.  An error is raised when its group's turn
comes, as if the fetch had been made then; a consumer that stops early
cancels what has not started (what is running finishes and is dropped).

Thread safety: the pool is shared by every reader of the process and
rebuilt after a fork.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

__all__ = ["GET_BYTES", "GROUP_BYTES", "MAX_IN_FLIGHT_BYTES", "THREADS", "fetch_groups"]

#: Bytes of consecutive blocks handed out at a time (the caller decodes a group at once).
GROUP_BYTES = 256 * 1024
#: Bytes of consecutive blocks fetched by one ranged GET (several groups:
#: fewer, larger requests; an object store's cost is mostly per request).
GET_BYTES = 2 * 1024 * 1024
#: Bytes requested ahead of the group being handed out, per scan of one SST.
MAX_IN_FLIGHT_BYTES = 8 * 1024 * 1024
#: Fetch threads shared by every scan of the process.
THREADS = 4

_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="shaledb-prefetch")
            _pool_pid = os.getpid()
        return _pool


def _groups(offsets, first: int, last: int, group_bytes: int):
    i = first
    while i < last:
        start = int(offsets[i])
        j = i + 1
        while j < last and int(offsets[j + 1]) - start <= group_bytes:
            j += 1
        yield i, j, start, int(offsets[j])
        i = j


def fetch_groups(fetch: Callable[[int, int], bytes], offsets, first: int, last: int, *,
                 group_bytes: int = GROUP_BYTES, get_bytes: int = GET_BYTES,
                 max_in_flight: int = MAX_IN_FLIGHT_BYTES) -> Iterator[tuple[int, int, memoryview]]:
    """See the module docstring.  REQUIRES: 0 <= first <= last < len(offsets)."""
    for i, j, data in _fetch_gets(fetch, offsets, first, last, max(get_bytes, group_bytes), max_in_flight):
        if j - i == 1:
            yield i, j, data
            continue
        mv = memoryview(data)
        base = int(offsets[i])
        for a, b, s, e in _groups(offsets, i, j, group_bytes):
            yield a, b, mv[s - base : e - base]


def _fetch_gets(fetch, offsets, first, last, get_bytes, max_in_flight):
    plan = _groups(offsets, first, last, get_bytes)
    nxt = next(plan, None)
    if nxt is None:
        return
    after = next(plan, None)
    if after is None:  # one GET: no thread
        i, j, a, b = nxt
        yield i, j, fetch(i, j)
        return
    pool = _executor()
    pending: deque = deque()
    in_flight = 0

    def submit(g):
        i, j, a, b = g
        ctx = contextvars.copy_context()
        pending.append((i, j, b - a, pool.submit(ctx.run, fetch, i, j)))
        return b - a

    try:
        in_flight += submit(nxt)
        nxt = after
        while True:
            while nxt is not None and (in_flight + (nxt[3] - nxt[2]) <= max_in_flight or not pending):
                in_flight += submit(nxt)
                nxt = next(plan, None)
            if not pending:
                return
            i, j, n, fut = pending.popleft()
            data = fut.result()
            in_flight -= n
            yield i, j, data
    finally:
        for _i, _j, _n, fut in pending:
            fut.cancel()
