"""Running, checking and shrinking one simulation (see bench/sim/__init__.py).

:func:`run` builds a :class:`World` from a :class:`SimConfig`, lets the
seeded scheduler step the actors and checks the invariants after every
step; :func:`shrink` turns a failing configuration into the shortest one
that still fails.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, replace

from shaledb.format.keys import parse_manifest_key, parse_sst_key, parse_wal_key
from shaledb.manifest.model import decode_manifest

from bench.sim.actors import ACTOR_KINDS, decode_sst, wal_records
from bench.sim.world import Baton, Crash, Faults, Hang, SimClock, SimStore, Stop

__all__ = ["BUGS", "SimConfig", "SimResult", "World", "run", "shrink"]

_SHORT = {"writer": "w", "compactor": "c", "gc": "g", "reader": "r", "checkpoint": "k"}

#: deliberately broken actors, to show that the checks catch what they claim
BUGS = ("", "ack-early", "gc-min-age-0")


@dataclass(frozen=True)
class SimConfig:
    """One simulation: every choice in it is drawn from ``seed``."""

    seed: int = 0
    steps: int = 10_000
    writers: int = 2
    compactors: int = 2
    gc: int = 1
    readers: int = 1
    checkpointers: int = 1
    faults: int = 2  # fault level: each fault kind with probability 1% per level
    crash_rate: float = 0.002  # per step: the stepped actor dies at its store call
    idle_rate: float = 0.002  # per step: the clock jumps 1..400 s (checkpoints expire, GC ages)
    gc_min_age: float = 10.0
    keys: int = 32
    bug: str = ""


@dataclass
class SimResult:
    config: SimConfig
    steps: int = 0
    violation: str | None = None
    log_tail: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    faults_injected: int = 0
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    digest: str = ""

    @property
    def ok(self) -> bool:
        return self.violation is None

    def to_json(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


class _Violation(Exception):
    pass


class World:
    """Shared state of one run: clock, store, actors, model, checks."""

    def __init__(self, cfg: SimConfig):
        if cfg.bug not in BUGS:
            raise ValueError(f"unknown bug {cfg.bug!r}; one of {BUGS}")
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.clock = SimClock()
        self.faults = Faults.level(cfg.faults)
        self.baton = Baton()
        self.store = SimStore(self)
        self.store.on_create = self._on_create
        self.log: deque = deque(maxlen=60)
        self._hash = hashlib.blake2b(digest_size=16)
        self.step_no = 0
        self.counts: Counter = Counter()
        self.violations: list[str] = []
        self.created = False
        # the model
        self.acked: dict[int, int] = {}  # key -> highest acknowledged seq
        self.wal_max_seq = 0  # highest seq in any WAL object that ever landed
        self.wal_max_id = 0  # highest WAL id that ever landed
        self.manifest_epochs: dict[int, tuple[int, int]] = {}  # every manifest that landed
        self._decoded: dict[tuple[str, str], object] = {}
        self._last_latest = (0, 0, 0)  # (id, writer epoch, compactor epoch) at the last check
        self._checked = None
        self._wal_ids: set[int] = set()
        self._manifest_ids: set[int] = set()
        seeds = random.Random(cfg.seed ^ 0x5EED)
        self.actors = []
        for kind, n in (
            ("writer", cfg.writers),
            ("compactor", cfg.compactors),
            ("gc", cfg.gc),
            ("reader", cfg.readers),
            ("checkpoint", cfg.checkpointers),
        ):
            for i in range(n):
                self.actors.append(ACTOR_KINDS[kind](self, f"{_SHORT[kind]}{i}", random.Random(seeds.randrange(1 << 62))))

    # ------------------------------------------------------ called by actors

    def note(self, actor, text: str) -> None:
        line = f"{self.step_no:>8} {self.clock.us / 1e6:>10.3f}s {actor.name:<3} {text}"
        self.log.append(line)
        self._hash.update(line.encode())

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def violate(self, msg: str) -> None:
        self.violations.append(msg)

    def ack(self, actor, keys, seq: int) -> None:
        for k in keys:
            if seq > self.acked.get(k, -1):
                self.acked[k] = seq
        self.count("acked")
        self.note(actor, f"acked seq {seq} keys {keys}")

    def fenced(self, actor, field_: str, epoch, err) -> None:
        """A handle raised Fenced: true only if a newer epoch of its role is stored."""
        self.count(f"fenced.{actor.kind}")
        self.note(actor, f"fenced ({err})"[:160])
        if epoch is None or not field_:
            return
        latest = self.latest()
        if latest is None or getattr(latest[1], field_) <= epoch:
            stored = None if latest is None else getattr(latest[1], field_)
            self.violate(f"{actor.name}: false fence: Fenced at epoch {epoch}, the latest manifest has {field_} {stored}")

    def missing(self, actor, key: str, t0: float, what: str) -> None:
        """An object the actor needed was gone; a violation within min_age of ``t0``."""
        self.count("missing_read")
        elapsed = self.clock.wall() - t0
        self.note(actor, f"{key} missing after {elapsed:.3f}s")
        if elapsed < self.cfg.gc_min_age:
            self.violate(
                f"{actor.name}: {key} ({what}) was deleted {elapsed:.3f}s after the manifest was read "
                f"(GC min_age {self.cfg.gc_min_age}s)"
            )

    # ------------------------------------------------------------- the store

    def _on_create(self, key: str, data: bytes) -> None:
        mid = parse_manifest_key(key)
        if mid is not None:
            self.created = True
            self._manifest_ids.add(mid)
            m = decode_manifest(data, key)
            ep = (m.writer_epoch, m.compactor_epoch)
            self.manifest_epochs[mid] = ep
            for other, cmp in ((mid - 1, lambda a, b: a <= b), (mid + 1, lambda a, b: a >= b)):
                o = self.manifest_epochs.get(other)
                if o is not None and not (cmp(o[0], ep[0]) and cmp(o[1], ep[1])):
                    self.violate(f"epochs went back between manifests {min(mid, other)} and {max(mid, other)}")
            return
        wid = parse_wal_key(key)
        if wid is not None:
            self._wal_ids.add(wid)
            self.wal_max_id = max(self.wal_max_id, wid)
            if data:
                recs = wal_records(data, key)
                if recs:
                    self.wal_max_seq = max(self.wal_max_seq, max(recs.values()))

    def _decode(self, key: str, kind: str):
        obj = self.store.objs.get(key)
        if obj is None:
            return None
        ck = (key, obj.etag)
        v = self._decoded.get(ck)
        if v is None:
            if kind == "m":
                v = decode_manifest(obj.data, key)
            elif kind == "s":
                v = decode_sst(obj.data)
            else:
                v = wal_records(obj.data, key)
            if len(self._decoded) > 20_000:
                self._decoded.clear()
            self._decoded[ck] = v
        return v

    def latest(self):
        """(id, Manifest) of the highest manifest id in the store, or None."""
        objs = self.store.objs
        ids = [i for i in self._manifest_ids if f"manifest/{i:020d}.manifest" in objs]
        self._manifest_ids = set(ids)
        if not ids:
            return None
        top = max(ids)
        from shaledb.format.keys import manifest_key

        return top, self._decode(manifest_key(top), "m")

    # ------------------------------------------------------------- checking

    def check(self) -> None:
        """The invariants (bench/sim/__init__.py); raises _Violation."""
        if self.violations:
            raise _Violation(self.violations[0])
        state = (self.store.version, self.counts["acked"], self.clock.us // 1_000_000)
        if state == self._checked:
            return
        self._checked = state
        from shaledb.format.keys import manifest_key, sst_key, wal_key

        top = self.latest()
        if top is None:
            if self.created:
                raise _Violation("every manifest is gone")
            return
        mid, m = top
        lid, lwe, lce = self._last_latest
        if mid < lid:
            raise _Violation(f"the latest manifest went back from {lid} to {mid}")
        if m.writer_epoch < lwe or m.compactor_epoch < lce:
            raise _Violation(f"epochs went back: ({lwe}, {lce}) then ({m.writer_epoch}, {m.compactor_epoch})")
        self._last_latest = (mid, m.writer_epoch, m.compactor_epoch)
        objs = self.store.objs
        view: dict[int, int] = {}
        for ref in m.all_ssts():
            d = self._decode(sst_key(ref.sst_id), "s")
            if d is None:
                raise _Violation(f"manifest {mid} references {sst_key(ref.sst_id)}, which is missing")
            for k, s in d.items():
                if s > view.get(k, -1):
                    view[k] = s
        now_ms = self.clock.peek_ms()
        for cp in m.checkpoints:
            if cp.expired(now_ms):
                continue
            pm = self._decode(manifest_key(cp.manifest_id), "m")
            if pm is None:
                raise _Violation(f"checkpoint {cp.id} pins manifest {cp.manifest_id}, which is missing")
            for ref in pm.all_ssts():
                if sst_key(ref.sst_id) not in objs:
                    raise _Violation(
                        f"checkpoint {cp.id} (manifest {cp.manifest_id}) references {sst_key(ref.sst_id)}, which is missing"
                    )
        # the WAL after the replay point: contiguous, and what recovery would replay
        wid = m.replay_after_wal_id + 1
        while wal_key(wid) in objs:
            d = self._decode(wal_key(wid), "w")
            for k, s in d.items():
                if s > m.last_l0_seq and s > view.get(k, -1):
                    view[k] = s
            wid += 1
        self._wal_ids = {i for i in self._wal_ids if wal_key(i) in objs}  # only what exists (GC deletes)
        above = [i for i in self._wal_ids if i > wid]
        if above:
            raise _Violation(f"WAL hole: {wal_key(wid)} is missing below {wal_key(min(above))} (replay after {m.replay_after_wal_id})")
        # no acknowledged write lost
        for k, s in self.acked.items():
            if view.get(k, -1) < s:
                raise _Violation(
                    f"acknowledged write lost: key {k} seq {s}; manifest {mid} (last_l0_seq {m.last_l0_seq}, "
                    f"replay after WAL {m.replay_after_wal_id}) and the WAL hold seq {view.get(k)}"
                )
        # L0 never leads the WAL
        if not m.replay_after_wal_id < m.next_wal_id:
            raise _Violation(f"manifest {mid}: replay_after_wal_id {m.replay_after_wal_id} >= next_wal_id {m.next_wal_id}")
        if m.replay_after_wal_id > self.wal_max_id:
            raise _Violation(f"manifest {mid} replays after WAL {m.replay_after_wal_id}, but no WAL beyond {self.wal_max_id} was ever written")
        if m.last_l0_seq > self.wal_max_seq:
            raise _Violation(f"manifest {mid}: last_l0_seq {m.last_l0_seq} leads the WAL (highest seq {self.wal_max_seq})")

    # ------------------------------------------------------------- stepping

    def run(self) -> SimResult:
        cfg = self.cfg
        res = SimResult(cfg)
        t0 = time.perf_counter()
        rng = self.rng
        started = []
        try:
            for a in self.actors:
                self.baton.start(a)
                started.append(a)
            step = 0
            for step in range(1, cfg.steps + 1):
                self.step_no = step
                if self.store.limbo:
                    for msg in self.store.deliver_due():
                        self._hash.update(msg.encode())
                        self.log.append(f"{step:>8} {self.clock.us / 1e6:>10.3f}s --- {msg}")
                if rng.random() < cfg.idle_rate:
                    self.clock.advance(rng.randrange(1, 400) * 1_000_000)
                live = [a for a in self.actors if not a.done]
                if not live:
                    break
                a = live[rng.randrange(len(live))]
                sig = Crash() if a.crashable and rng.random() < cfg.crash_rate else None
                self.baton.step(a, sig)
                self.check()
            res.steps = step
            # end: stop everyone, land what is still in flight, check once more
            for a in started:
                if not a.done:
                    self.baton.step(a, Stop())
            for msg in self.store.deliver_due(force=True):
                self.log.append(f"{step:>8} --- {msg}")
            self._checked = None
            self.check()
        except _Violation as e:
            res.violation = str(e)
            res.steps = self.step_no
        except Hang as e:
            res.violation = f"hang: {e}"
            res.steps = self.step_no
        finally:
            self._stop_all(started)
        res.log_tail = list(self.log)
        res.counts = dict(sorted(self.counts.items()))
        res.faults_injected = self.store.faults_injected
        res.sim_seconds = self.clock.us / 1e6
        res.wall_seconds = time.perf_counter() - t0
        res.digest = self._hash.hexdigest()
        return res

    def _stop_all(self, started) -> None:
        for a in started:
            if not a.done and a.thread is not None and a.thread.is_alive():
                try:
                    self.baton.step(a, Stop())
                except Hang:
                    pass
        for a in started:
            if a.thread is not None:
                a.thread.join(timeout=10)


def run(cfg: SimConfig) -> SimResult:
    """One simulation; deterministic in ``cfg``."""
    return World(cfg).run()


def shrink(cfg: SimConfig, *, budget: float = 120.0, log=None) -> tuple[SimConfig, SimResult]:
    """The smallest configuration that still fails, from a failing ``cfg``.

    A run of N steps is a prefix of a run of more steps with the same
    configuration, so the shortest failing prefix is found by bisection.
    Then actors, faults, crashes and idle jumps are removed one at a time
    while the run still fails (re-bisecting the steps each time).  Stops
    after ``budget`` seconds with the best found.
    """
    t_end = time.monotonic() + budget
    best = run(cfg)
    if best.ok:
        raise ValueError("shrink needs a failing configuration")

    def bisect(c: SimConfig, r: SimResult) -> tuple[SimConfig, SimResult]:
        lo, hi = 0, r.steps  # hi fails
        while hi - lo > 1 and time.monotonic() < t_end:
            mid = (lo + hi) // 2
            rr = run(replace(c, steps=mid))
            if rr.ok:
                lo = mid
            else:
                hi, r = mid, rr
        return replace(c, steps=hi), r

    full = cfg.steps
    cfg, best = bisect(replace(cfg, steps=best.steps), best)
    if log:
        log(f"shortest failing prefix: {cfg.steps} steps")
    for change in (
        dict(readers=0),
        dict(checkpointers=0),
        dict(gc=0),
        dict(compactors=1),
        dict(compactors=0),
        dict(writers=1),
        dict(faults=0),
        dict(crash_rate=0.0),
        dict(idle_rate=0.0),
    ):
        if time.monotonic() > t_end:
            break
        c = replace(cfg, **change, steps=full)
        if c == replace(cfg, steps=full):
            continue
        r = run(c)
        if not r.ok:
            cfg, best = bisect(replace(c, steps=r.steps), r)
            if log:
                log(f"still fails with {change}: {cfg.steps} steps")
    return cfg, best
