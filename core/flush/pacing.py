"""Write pacing: backpressure that slows writers smoothly instead of stopping them.

Without it, a load that outruns the compactor runs flat out until L0 reaches
``Options.l0_max_ssts``; then the flusher stops building L0, the arenas fill
to ``max_unflushed_bytes`` and every writer waits until a compaction job
lands (seconds: a job merges several L0 SSTs at once).  The load goes
stop-and-go and single ``put_many`` calls stall for seconds.

With it, the flusher watches the backlog in front of the compactor: the
bytes of L0 SSTs past ``l0_compaction_threshold`` SSTs' worth (L0 up to the
threshold is the compactor's next job, where L0 sits in steady state even
when the compactor keeps up) plus the bytes in the arenas not yet in L0,
against the room for them (``(l0_max_ssts - l0_compaction_threshold) *
l0_sst_bytes + max_unflushed_bytes``).  Once the backlog fills a quarter of
that room, or L0 holds half-way from the threshold to ``l0_max_ssts`` SSTs
(6 of 8 by default), it sets a shared write rate: how fast the
compactor drains L0 (bytes of L0 SSTs that left the manifest in the last
``WINDOW`` seconds, over the seconds the compactor had a job's worth of L0
to work on), times a factor that falls from 1 to 1/4 as the backlog fills.
Dividing by wall time instead measured the writers, not the compactor: a
paced load drains only what the pacer let in, and the rate could never rise
above itself (1,000 values of 1 MiB: 24 MiB/s measured while the compactor
merged at ~120 MiB/s).
Writers take turns in that rate before each append (``ArenaPool.pace``), so
they run continuously near the compactor's speed and the burst between two
compaction jobs fits in the room left.  Below the marks the rate is lifted
gradually: from the last paced rate (or the measured drain, if higher) it
doubles every ``LIFT_DOUBLING`` seconds and is dropped (0: no limit) past
``LIFT_CAP``.  Lifting it at once
let two writers put 430 MB into the arenas within a second (at 20M
records), which the flusher turned into a full L0 and the writers then
waited 8 s for the compactor; ramping up, the backlog passes the start
mark again within a poll or two and pacing resumes before the arenas fill.
docs/compaction.md, "Backpressure".
"""

from __future__ import annotations

import collections
import threading
import time

__all__ = ["WritePacer", "WINDOW", "MIN_RATE", "PRIOR_RATE", "LIFT_DOUBLING", "LIFT_CAP", "MIN_BUSY", "MIN_SPAN"]

#: Seconds of drain history the rate is computed from.
WINDOW = 20.0
#: The rate never goes below this (bytes/s): a compactor that drained
#: nothing lately (a long run merge) still lets writers trickle in.
MIN_RATE = 8 << 20
#: The drain rate assumed before any drain was seen (bytes/s).
PRIOR_RATE = 64 << 20
#: Shortest span the drain rate is averaged over (seconds of compactor work).
MIN_SPAN = 1.0
#: Least work a drain is counted as (seconds): a drain the pacer did not
#: see coming (L0 never held a job's worth) or a trivial move.
MIN_BUSY = 0.25
#: Once pacing ends the rate doubles every this many seconds ...
LIFT_DOUBLING = 1.0
#: ... and is lifted altogether past this (bytes/s).
LIFT_CAP = 1 << 30


class WritePacer:
    """Turns the backlog the flusher observes into the pool's write rate.

    ``observe(manifest_id, manifest, unflushed)`` may be called from any
    thread, with manifests in any order (an older one only updates
    ``unflushed``).  ``set_rate`` is the pool's ``set_pace_rate``.
    """

    #: backlog fill (of the room) where pacing starts, and where it is
    #: at its lowest factor
    START, FULL = 0.25, 0.9

    def __init__(self, set_rate, *, compaction_threshold: int, l0_max_ssts: int, l0_sst_bytes: int = 64 << 20,
                 max_unflushed_bytes: int = 512 << 20, clock=time.monotonic):
        self._set_rate = set_rate
        # L0 up to the compaction threshold is the compactor's next job, not
        # a backlog: L0 sits there in steady state even when the compactor
        # keeps up, so neither the count mark nor the fill counts it
        self.mark = compaction_threshold + max(1, (l0_max_ssts - compaction_threshold) // 2)
        self.limit = max(l0_max_ssts, self.mark)
        self.base = compaction_threshold * l0_sst_bytes
        self.room = max(1, max(0, l0_max_ssts - compaction_threshold) * l0_sst_bytes + max_unflushed_bytes)
        self._clock = clock
        self._lock = threading.Lock()
        self._mid = -1
        self._seen: dict[str, int] = {}  # L0 SST id -> size, in the last manifest observed
        self._drains: collections.deque = collections.deque()  # (time, bytes, busy seconds)
        self.threshold = compaction_threshold
        self._busy_since = None  # since when L0 has held the compactor's next job (it is working)
        self._paced_since = None  # when the current stretch of pacing began
        self._lift: tuple[float, int] | None = None  # (since, from rate) while the rate ramps up
        self.rate = 0
        self.l0 = 0
        self.l0_bytes = 0
        self.unflushed = 0

    def observe(self, manifest_id: int, manifest, unflushed: int | None = None) -> int:
        """Note which L0 SSTs left since the last (older) manifest observed,
        and the arenas' unflushed bytes, and set the write rate for the
        backlog now.  Returns the rate set (bytes/s, 0 = none)."""
        with self._lock:
            now = self._clock()
            if unflushed is not None:
                self.unflushed = max(0, int(unflushed))
            if manifest_id > self._mid:
                self._mid = manifest_id
                cur = {r.sst_id: r.size for r in manifest.l0}
                gone = sum(size for sid, size in self._seen.items() if sid not in cur)
                self._seen = cur
                if gone:
                    # the seconds the compactor had this job: since L0 first
                    # held a job's worth (or since the last drain, when it
                    # took L0 below that)
                    start = self._busy_since if self._busy_since is not None else now - MIN_BUSY
                    self._drains.append((now, gone, max(MIN_BUSY, now - start)))
                if len(cur) < self.threshold:
                    self._busy_since = None
                elif gone or self._busy_since is None:
                    self._busy_since = now  # a job's worth waits: the compactor starts on it now
                self.l0 = len(cur)
                self.l0_bytes = sum(cur.values())
            while self._drains and self._drains[0][0] < now - WINDOW:
                self._drains.popleft()
            rate = self._rate_locked(now)
            if rate != self.rate:
                self.rate = rate
                self._set_rate(rate)
            return rate

    def fill(self) -> float:
        """The backlog (L0 bytes past the compaction threshold's worth +
        unflushed arena bytes) over its room."""
        return (max(0, self.l0_bytes - self.base) + self.unflushed) / self.room

    def drain_rate(self) -> float:
        """L0 bytes/s the compactor drained over the last WINDOW seconds,
        per second it had work (PRIOR_RATE before any drain was seen)."""
        with self._lock:
            return self._drain_locked(self._clock())

    def _drain_locked(self, now: float) -> float:
        if not self._drains:  # nothing drained lately: new pacing gets the prior for a window
            fresh = self._paced_since is None or now - self._paced_since < WINDOW
            return float(PRIOR_RATE) if fresh else 0.0
        busy = sum(t for _, _, t in self._drains)
        return sum(b for _, b, _ in self._drains) / max(MIN_SPAN, busy)

    def _rate_locked(self, now: float) -> int:
        n, fill = self.l0, self.fill()
        if n < self.mark and fill < self.START:
            if self._paced_since is not None and self.rate:
                # pacing ends: ramp up from its last rate, or from the drain
                # measured if higher (the rate fell to a quarter of it when
                # L0 was full; the compactor can take that much again)
                measured = int(self._drain_locked(now)) if self._drains else 0
                self._lift = (now, max(self.rate, measured))
            self._paced_since = None
            if self._lift is not None:
                since, start = self._lift
                ramp = start * 2.0 ** ((now - since) / LIFT_DOUBLING)
                if ramp < LIFT_CAP:
                    return int(ramp)
                self._lift = None
            return 0
        self._lift = None
        if self._paced_since is None:
            self._paced_since = now
        if n >= self.limit:  # the flusher is stalled: only the arenas take writes
            factor = 0.25
        else:
            over = max(0.0, fill - self.START) / (self.FULL - self.START)
            factor = max(0.25, 1.0 - 0.75 * over)
        return max(MIN_RATE, int(self._drain_locked(now) * factor))

    def stop(self) -> None:
        """Lift the rate (close, abort, failure)."""
        with self._lock:
            self.rate = 0
            self._paced_since = None
            self._lift = None
            self._set_rate(0)
