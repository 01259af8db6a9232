"""Write pacing: backpressure that slows writers smoothly instead of stopping them.

Without it, a load that outruns the compactor runs flat out until L0 reaches
``Options.l0_max_ssts``; then the flusher stops building L0, the arenas fill
to ``max_unflushed_bytes`` and every writer waits until a compaction job
lands (seconds: a job merges several L0 SSTs at once).  The load goes
stop-and-go and single ``put_many`` calls stall for seconds.

With it, once L0 holds more than ``l0_compaction_threshold`` SSTs the
flusher measures how fast the compactor drains L0 (bytes of L0 SSTs that
left the manifest in the last ``WINDOW`` seconds) and sets a shared write
rate a little below that (lower the fuller L0 is); writers take turns in
that rate before each append (``ArenaPool.pace``), so they run continuously
at the compactor's speed and the burst between two compaction jobs fits in
the L0 room and the arenas.  Below the mark the rate is lifted (0: no limit).
docs/compaction.md, "Backpressure".
"""

from __future__ import annotations

import collections
import threading
import time

__all__ = ["WritePacer", "WINDOW", "MIN_RATE", "PRIOR_RATE"]

#: Seconds of drain history the rate is computed from.
WINDOW = 20.0
#: The rate never goes below this (bytes/s): a compactor that drained
#: nothing lately (a long run merge) still lets writers trickle in.
MIN_RATE = 8 << 20
#: The drain rate assumed before any drain was seen (bytes/s).
PRIOR_RATE = 64 << 20
#: Shortest span the drain rate is averaged over (seconds).
MIN_SPAN = 2.0


class WritePacer:
    """Turns the L0 state the flusher observes into the pool's write rate.

    ``observe(manifest_id, manifest)`` may be called from any thread, with
    manifests in any order (older ones are ignored).  ``set_rate`` is the
    pool's ``set_pace_rate``.
    """

    def __init__(self, set_rate, *, compaction_threshold: int, l0_max_ssts: int, clock=time.monotonic):
        self._set_rate = set_rate
        self.mark = compaction_threshold + 1
        self.limit = max(l0_max_ssts, self.mark)
        self._clock = clock
        self._lock = threading.Lock()
        self._mid = -1
        self._seen: dict[str, int] = {}  # L0 SST id -> size, in the last manifest observed
        self._drains: collections.deque = collections.deque()  # (time, bytes)
        self._since = None  # when the first manifest was observed
        self._paced_since = None  # when the current stretch of pacing began
        self.rate = 0
        self.l0 = 0

    def observe(self, manifest_id: int, manifest) -> int:
        """Note which L0 SSTs left since the last (older) manifest observed
        and set the write rate for the L0 count of this one.  Returns the
        rate set (bytes/s, 0 = none)."""
        with self._lock:
            if manifest_id <= self._mid:
                return self.rate
            now = self._clock()
            if self._since is None:
                self._since = now
            self._mid = manifest_id
            cur = {r.sst_id: r.size for r in manifest.l0}
            gone = sum(size for sid, size in self._seen.items() if sid not in cur)
            self._seen = cur
            if gone:
                self._drains.append((now, gone))
            while self._drains and self._drains[0][0] < now - WINDOW:
                self._drains.popleft()
            self.l0 = len(cur)
            rate = self._rate_locked(now)
            if rate != self.rate:
                self.rate = rate
                self._set_rate(rate)
            return rate

    def drain_rate(self) -> float:
        """L0 bytes/s the compactor drained over the last WINDOW seconds
        (PRIOR_RATE before any drain was seen)."""
        with self._lock:
            return self._drain_locked(self._clock())

    def _drain_locked(self, now: float) -> float:
        if not self._drains:  # nothing drained lately: new pacing gets the prior for a window
            fresh = self._paced_since is None or now - self._paced_since < WINDOW
            return float(PRIOR_RATE) if fresh else 0.0
        span = max(MIN_SPAN, min(WINDOW, now - self._since))
        return sum(b for _, b in self._drains) / span

    def _rate_locked(self, now: float) -> int:
        n = self.l0
        if n < self.mark:
            self._paced_since = None
            return 0
        if self._paced_since is None:
            self._paced_since = now
        # 1.0 at the mark down to 0.5 one below the limit, 0.25 at it
        if n >= self.limit:
            factor = 0.25
        else:
            factor = 1.0 - 0.5 * (n - self.mark) / max(1, self.limit - 1 - self.mark)
        return max(MIN_RATE, int(self._drain_locked(now) * factor))

    def stop(self) -> None:
        """Lift the rate (close, abort, failure)."""
        with self._lock:
            self.rate = 0
            self._paced_since = None
            self._set_rate(0)
