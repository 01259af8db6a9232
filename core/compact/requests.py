"""The requests the compactor service serves over its control channel
(``shaledb.ipc.control``), from the Db that started it.

Not persisted (sent only between processes of one open Db, which run the
same code), so members may be renumbered; they are sent as plain ints.
"""

from __future__ import annotations

from enum import IntEnum, unique

__all__ = ["CompactorRequest"]


@unique
class CompactorRequest(IntEnum):
    """One compactor request (arguments in brackets)."""

    #: [full] compact now; answer the CompactionReport as a dict
    COMPACT = 1
    #: [dry_run] one GC pass now; answer the GcResult as a dict
    GC = 2
    #: a dict of counters; answered for a fenced compactor too
    STATUS = 3
    #: stop the service (the process exits)
    STOP = 4
    #: is the compactor alive?
    PING = 5
