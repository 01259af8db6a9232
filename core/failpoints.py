"""Named failpoints: test seams where a process can be made to crash or fail.

A failpoint is a name the engine passes at one precise step.  Each database
carries its own set, from ``Options(failpoints=...)`` and the environment
variable ``SHALEDB_FAILPOINTS`` (both are read; the option wins on a clash).
The spec is ``name=action[@n]`` items separated by ``;`` or ``,``::

    SHALEDB_FAILPOINTS="after-wal-upload=kill@3"

Actions:

``kill``        SIGKILL the process at that point (a crash: no cleanup runs)
``error``       raise :class:`~shaledb.Internal` (an injected failure)
``sleep:S``     sleep S seconds, then carry on (widens races)
``off``         nothing

``@n`` fires only from the n-th time the point is reached (1-based; default 1).

Names (where they sit in the flusher, which is the only process that writes
to the object store, except ``mid-append`` and ``mid-arena-create``):

``open-before-fence``  the flusher is opening: nothing written yet, the
                       writer epoch not yet bumped
``open-before-replay`` the epoch is bumped and the WAL fence written; the
                       WAL not yet replayed into L0
``after-wal-upload``   a WAL object landed; the durable seq is not yet
                       published, so no caller has been acknowledged
``after-sst-upload``   L0 SSTs landed; the manifest does not list them yet
``after-manifest``     the manifest lists the new L0; the sealed arenas are
                       not yet released to the pool
``mid-arena-create``   a process holds the pool lock and has created and
                       formatted a new arena segment, but not yet counted
                       it (``shaledb.memtable.arena_pool``)
``mid-append``         a writer holds the pool lock, has reserved the seqs
                       of its batch and written part of its bytes, but has
                       not committed it (``shaledb.memtable.arena_pool``)
``gc-mid-delete``      GC (``shaledb.gc.collect``) has deleted its first
                       object and not the rest
``compact-mid-merge``  the compactor uploaded the first output SST (or
                       range) of a job, not the rest (``shaledb.compact``)
``compact-after-upload`` every output SST of a job landed; the manifest
                       does not list them yet
``compact-after-manifest`` the manifest lists the job's output; the
                       compactor's bookkeeping is not yet cleaned up
``ingest-before-commit`` a bulk ingest (``db.ingest``) reserved its seq
                       and flushed the memtable to L0; the manifest does
                       not list the load yet
``ingest-after-commit`` the manifest lists the load; the caller has not
                       been answered
``clone-mid-wal-copy`` a clone (``shaledb.clone``) wrote its descriptor
                       and copied its first WAL object, not the rest
``clone-before-manifest`` a clone copied the WAL it needs; its manifest is
                       not written yet
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

from shaledb.errors import Internal, InvalidArgument

__all__ = ["ENV_VAR", "FAILPOINT_NAMES", "Failpoints", "parse_failpoints"]

ENV_VAR = "SHALEDB_FAILPOINTS"

FAILPOINT_NAMES = frozenset(
    {
        "after-wal-upload",
        "after-sst-upload",
        "after-manifest",
        "mid-append",
        "mid-arena-create",
        "open-before-fence",
        "open-before-replay",
        "gc-mid-delete",
        "compact-mid-merge",
        "compact-after-upload",
        "compact-after-manifest",
        "ingest-before-commit",
        "ingest-after-commit",
        "clone-mid-wal-copy",
        "clone-before-manifest",
    }
)


@dataclass(frozen=True)
class _Action:
    kind: str  # kill | error | sleep | off
    arg: float = 0.0
    from_hit: int = 1


def _parse_action(name: str, text: str) -> _Action:
    text = text.strip()
    from_hit = 1
    if "@" in text:
        text, n = text.rsplit("@", 1)
        try:
            from_hit = int(n)
        except ValueError:
            raise InvalidArgument(f"failpoint {name}: bad hit count {n!r}") from None
        if from_hit < 1:
            raise InvalidArgument(f"failpoint {name}: hit count must be >= 1")
    if text in ("kill", "error", "off"):
        return _Action(text, 0.0, from_hit)
    if text.startswith("sleep:"):
        try:
            secs = float(text[len("sleep:"):])
        except ValueError:
            raise InvalidArgument(f"failpoint {name}: bad sleep {text!r}") from None
        if not 0 <= secs <= 3600:
            raise InvalidArgument(f"failpoint {name}: sleep must be 0..3600 s")
        return _Action("sleep", secs, from_hit)
    raise InvalidArgument(f"failpoint {name}: unknown action {text!r} (kill, error, sleep:S, off)")


def parse_failpoints(spec: str) -> dict[str, _Action]:
    """Parse a failpoint spec; unknown names or actions raise InvalidArgument."""
    out: dict[str, _Action] = {}
    for item in spec.replace(",", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise InvalidArgument(f"failpoint item {item!r} is not name=action")
        name, action = (s.strip() for s in item.split("=", 1))
        if name not in FAILPOINT_NAMES:
            raise InvalidArgument(f"unknown failpoint {name!r}; known: {', '.join(sorted(FAILPOINT_NAMES))}")
        out[name] = _parse_action(name, action)
    return out


class Failpoints:
    """The failpoints of one database in one process.  Thread-safe."""

    def __init__(self, spec: str = "", *, use_env: bool = True):
        actions = parse_failpoints(os.environ.get(ENV_VAR, "")) if use_env else {}
        actions.update(parse_failpoints(spec))
        self._actions = actions
        self._hits: dict[str, int] = {}
        self._lock = threading.Lock()
        self.spec = spec

    def __bool__(self) -> bool:
        return bool(self._actions)

    def hit(self, name: str, when_firing=None) -> None:
        """Pass the failpoint ``name``: crash, fail or sleep if it is armed.

        ``when_firing`` (optional) is called just before the action, only when
        it fires: it sets up the state the crash should be caught in.
        """
        action = self._actions.get(name)
        if action is None:
            return
        with self._lock:
            n = self._hits.get(name, 0) + 1
            self._hits[name] = n
        if n < action.from_hit or action.kind == "off":
            return
        if when_firing is not None:
            when_firing()
        if action.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # the signal is asynchronous; never run past the point
        elif action.kind == "error":
            raise Internal(f"failpoint {name} fired (injected failure)")
        elif action.kind == "sleep":
            time.sleep(action.arg)
