"""The actors of the simulation: each one a loop of operations over the real
protocol code, run in its own thread under the baton (bench/sim/world.py).

* :class:`Writer`: a flusher's view of the protocol: ``open_writer`` (epoch
  bump and WAL fence), recovery with ``read_wal_runs``, ``write_wal`` of real
  WAL objects (acknowledged when the call returns), L0 publishes
  (``publish_l0``) and ``advance_wal``.  Two writers fence each other.
* :class:`Compactor`: ``open_compactor``, merges the oldest L0 SSTs (and
  maybe every sorted run) into a new sorted run, ``apply_compaction`` with
  an SST watermark.  Two compactors fence each other.
* :class:`Collector`: ``gc.collect`` passes with ``min_age``.
* :class:`Reader`: follows the latest manifest, reads every SST it names and
  tails the WAL; its view must hold every write acknowledged before it began.
* :class:`Checkpointer`: pins the current manifest with an expiring
  checkpoint, reads the pinned manifest and SSTs while it lives, removes it.

SST bodies are a small text codec of this simulation (the SST format is not
part of the protocol); WAL bodies are the engine's WAL format.
"""

from __future__ import annotations

import random
import traceback

import numpy as np

from shaledb.errors import (
    Conflict,
    Fenced,
    InvalidArgument,
    ObjectNotFound,
    ShaleDBError,
    Unavailable,
)
from shaledb.flush.recovery import read_wal_runs
from shaledb.format.keys import manifest_key, new_sst_id, sst_key, wal_key
from shaledb.format.record import KIND_PUT, encode_record, unpack_header
from shaledb.format.wal import decode_wal, encode_wal
from shaledb.gc import collect
from shaledb.manifest.model import SortedRun, SstRef, decode_manifest
from shaledb.manifest.store import ManifestStore
from shaledb.storage.wrappers import RetryingStore

from bench.sim.world import Crash, Stop, new_signal

__all__ = [
    "ACTOR_KINDS",
    "Checkpointer",
    "Collector",
    "Compactor",
    "Reader",
    "Writer",
    "decode_sst",
    "encode_sst",
    "key_bytes",
    "wal_records",
]

SST_MAGIC = b"SIMSST\n"


def key_bytes(k: int) -> bytes:
    return b"k%05d" % k


def encode_sst(data: dict[int, int]) -> bytes:
    """``{key index: seq}`` as this simulation's SST body."""
    return SST_MAGIC + b"".join(b"%d %d\n" % (k, data[k]) for k in sorted(data))


def decode_sst(body: bytes) -> dict[int, int]:
    if not body.startswith(SST_MAGIC):
        raise ValueError("not a simulated SST")
    out = {}
    for line in body[len(SST_MAGIC) :].splitlines():
        k, s = line.split()
        out[int(k)] = int(s)
    return out


def wal_body(keys: list[int], seq: int) -> bytes:
    recs = [encode_record(key_bytes(k), b"v%d" % seq, seq, KIND_PUT) for k in keys]
    buf = np.frombuffer(b"".join(recs), dtype=np.uint8)
    offs = np.cumsum([0] + [len(r) for r in recs[:-1]]).astype(np.int64)
    return encode_wal(buf, offs)


def _records(buf, offs) -> dict[int, int]:
    out: dict[int, int] = {}
    raw = bytes(buf)
    for off in offs.tolist():
        klen, _vlen, seq, _kind = unpack_header(raw, off)
        k = int(raw[off + 16 + 1 : off + 16 + klen])
        if seq > out.get(k, -1):
            out[k] = seq
    return out


def wal_records(data: bytes, name: str) -> dict[int, int]:
    """``{key index: max seq}`` of a WAL object (a fence gives ``{}``)."""
    buf, offs = decode_wal(data, name)
    return _records(buf, offs)


def _merge(into: dict[int, int], more: dict[int, int]) -> None:
    for k, s in more.items():
        if s > into.get(k, -1):
            into[k] = s


class Actor:
    """A thread that loops over operations; see the module docstring."""

    kind = "actor"
    crashable = True
    restart_delay = 50  # a dead or fenced actor sits out up to this many of its turns
    cooldown = 0

    def __init__(self, world, name: str, rng: random.Random):
        self.world = world
        self.name = name
        self.rng = rng
        self.sem = new_signal()
        self.signal: BaseException | None = None
        self.pending = "start"
        self.thread = None
        self.done = False
        clock = world.clock
        self.clock = clock
        self.view = world.store.view(self)
        self.store = RetryingStore(
            self.view,
            max_attempts=3,
            base_delay=0.02,
            max_delay=0.5,
            deadline=5.0,
            sleep=clock.sleep,
            clock=clock.monotonic,
            seed=rng.randrange(1 << 32),
        )
        self.reset()

    # ------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        """Forget everything (the process died or gave up its handles)."""

    def manifest_store(self) -> ManifestStore:
        return ManifestStore(
            self.store,
            clock=self.clock,
            rng=random.Random(self.rng.randrange(1 << 62)),
            update_timeout=10.0,
        )

    def thread_main(self) -> None:
        w = self.world
        try:
            w.baton.park(self, "start")
            while True:
                try:
                    w.baton.park(self, "op")
                    if self.cooldown > 0:
                        self.cooldown -= 1
                        continue
                    self.op()
                except Crash:
                    w.count(f"crash.{self.kind}")
                    w.note(self, "CRASH")
                    self.reset()
                    self.cooldown = self.rng.randrange(self.restart_delay)
                except Unavailable as e:
                    w.count("unavailable")
                    w.note(self, f"op failed: Unavailable ({str(e)[:60]})")
                except Conflict:
                    w.count("conflict")
                except Fenced as e:
                    self.on_fenced(e)
                    self.reset()
                    self.cooldown = self.rng.randrange(self.restart_delay * 4)
                except (InvalidArgument, ObjectNotFound) as e:
                    if w.created:
                        raise
                    w.note(self, f"no database yet ({type(e).__name__})")
        except Stop:
            pass
        except ShaleDBError as e:
            w.violate(f"{self.name}: unexpected {type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}")
        except BaseException as e:  # noqa: BLE001 - any other error is a bug to report
            w.violate(f"{self.name}: unexpected error {e!r}\n{traceback.format_exc(limit=8)}")
        finally:
            self.done = True
            w.baton.finished()

    def op(self) -> None:
        raise NotImplementedError

    def on_fenced(self, e: Fenced) -> None:
        self.world.fenced(self, self._epoch_field(), self._my_epoch(), e)

    def _epoch_field(self) -> str:
        return ""

    def _my_epoch(self):
        return None

    def read_sst(self, sst_id: str) -> dict[int, int]:
        return decode_sst(self.store.get(sst_key(sst_id)))

    def mint(self) -> str:
        return new_sst_id(now_ms=self.clock.now_ms(), rand=self.rng.randbytes(10))

    def upload_sst(self, data: dict[int, int]) -> SstRef:
        sid = self.mint()
        body = encode_sst(data)
        self.store.put(sst_key(sid), body)
        ks = sorted(data)
        seqs = [data[k] for k in ks]
        return SstRef(sid, key_bytes(ks[0]), key_bytes(ks[-1]), len(body), min(seqs), max(seqs), len(ks))


class Writer(Actor):
    """The writer epoch's flusher: WAL, L0, recovery (see the module docstring)."""

    kind = "writer"

    def reset(self) -> None:
        self.ms: ManifestStore | None = None
        self.mem: list[tuple[int, int, list[int]]] = []  # (wal id, seq, keys) durable, not in L0
        self.batch = None  # (wal id, seq, keys, body) being written
        self.sst = None  # (ref, last seq, last wal id, how many mem entries) being published
        self.epoch = None

    def _epoch_field(self) -> str:
        return "writer_epoch"

    def _my_epoch(self):
        return self.epoch

    def op(self) -> None:
        if self.ms is None:
            self.open()
            return
        r = self.rng.random()
        if r < 0.62:
            self.write()
        elif r < 0.87:
            self.flush()
        elif r < 0.92:
            self.ms.advance_wal(self.next_wal)
        elif r < 0.94:
            self.world.note(self, "gives up its handle (reopen)")
            self.reset()
        else:
            self.ms.refresh()

    def open(self) -> None:
        ms = self.manifest_store()
        fence = ms.create_or_open_writer()
        self.world.note(self, f"opened: epoch {ms.epoch}, fence wal {fence}")
        m = ms.current
        runs, _n, max_seq = read_wal_runs(self.store, m.replay_after_wal_id + 1, fence, m.last_l0_seq)
        recovered: dict[int, int] = {}
        for buf, offs in runs:
            _merge(recovered, _records(buf, offs))
        if recovered:
            ref = self.upload_sst(recovered)
            ms.publish_l0([ref], last_l0_seq=max_seq, replay_after_wal_id=fence, next_wal_id=fence + 1)
        elif m.replay_after_wal_id < fence:
            ms.publish_l0((), last_l0_seq=m.last_l0_seq, replay_after_wal_id=fence, next_wal_id=fence + 1)
        self.seq = max(ms.current.last_l0_seq, max_seq)
        self.next_wal = fence + 1
        self.epoch = ms.epoch
        self.ms = ms
        self.world.count("writer.open")

    def write(self) -> None:
        if self.batch is None:
            n = self.rng.randint(1, 4)
            keys = self.rng.sample(range(self.world.cfg.keys), n)
            self.seq += 1
            self.batch = (self.next_wal, self.seq, keys, wal_body(keys, self.seq))
            if self.world.cfg.bug == "ack-early":
                self.world.ack(self, keys, self.seq)
        wal_id, seq, keys, body = self.batch
        self.ms.write_wal(wal_id, body)
        self.batch = None
        self.next_wal = wal_id + 1
        self.mem.append((wal_id, seq, keys))
        self.world.ack(self, keys, seq)

    def flush(self) -> None:
        if self.sst is None:
            if not self.mem:
                return
            data: dict[int, int] = {}
            for _wid, seq, keys in self.mem:
                for k in keys:
                    data[k] = seq
            ref = self.upload_sst(data)
            self.sst = (ref, self.mem[-1][1], self.mem[-1][0], len(self.mem))
        ref, last_seq, last_wal, n = self.sst
        try:
            self.ms.publish_l0([ref], last_l0_seq=last_seq, replay_after_wal_id=last_wal, next_wal_id=self.next_wal)
        except (Unavailable, Conflict):
            # As the engine's flusher does: the next attempt builds new SSTs
            # (new ids).  Re-publishing this id could meet a compaction that
            # already retired it (check_transition refuses a reused id).
            self.sst = None
            raise
        self.world.count("writer.flush")
        self.mem = self.mem[n:]
        self.sst = None


class Compactor(Actor):
    """Merges the oldest L0 SSTs (and maybe all runs) into a new sorted run."""

    kind = "compactor"

    def reset(self) -> None:
        self.ms: ManifestStore | None = None
        self.job = None
        self.epoch = None

    def _epoch_field(self) -> str:
        return "compactor_epoch"

    def _my_epoch(self):
        return self.epoch

    def op(self) -> None:
        if self.ms is None:
            if not self.world.created:
                return
            ms = self.manifest_store()
            ms.init_compactor()
            self.ms, self.epoch = ms, ms.epoch
            self.world.note(self, f"opened: compactor epoch {ms.epoch}")
            return
        if self.job is None:
            self.plan()
            if self.job is None:
                return
        rm_l0, rm_runs, run = self.job
        if self.rng.random() < 0.5:
            self.job = None  # half the time a failed job is planned afresh, half the time retried as is
        try:
            self.ms.apply_compaction(removed_l0=rm_l0, removed_runs=rm_runs, new_runs=[run], sst_watermark=self.mint())
        except InvalidArgument:
            # A refused job whose inputs are gone (an earlier attempt of ours
            # that reported failure landed late, seed 3000009014): the
            # engine's compactor service logs it and plans afresh.  Any other
            # refusal is a bug.
            m = self.ms.current
            l0 = {s.sst_id for s in m.l0}
            runs = {r.run_id for r in m.sorted_runs}
            if all(i in l0 for i in rm_l0) and all(i in runs for i in rm_runs):
                raise
            self.job = None
            self.world.count("compactor.stale_job")
            self.world.note(self, "job refused: its inputs were already compacted; planning afresh")
            return
        self.world.count("compactor.apply")
        self.job = None

    def plan(self) -> None:
        m = self.ms.refresh()
        t0 = self.clock.wall()
        if len(m.l0) < 2 and not (m.l0 and m.sorted_runs):
            return
        k = self.rng.randint(1, len(m.l0))
        src_l0 = m.l0[len(m.l0) - k :]
        src_runs = m.sorted_runs if (self.rng.random() < 0.5 or len(m.sorted_runs) > 2) else ()
        merged: dict[int, int] = {}
        for ref in list(src_l0) + [s for r in src_runs for s in r.ssts]:
            try:
                _merge(merged, self.read_sst(ref.sst_id))
            except ObjectNotFound:
                self.world.missing(self, sst_key(ref.sst_id), t0, "an SST of the manifest it compacts")
                return
        ks = sorted(merged)
        cut = self.rng.randint(1, len(ks)) if len(ks) > 1 else len(ks)
        parts = [p for p in (ks[:cut], ks[cut:]) if p]
        outs = tuple(self.upload_sst({k: merged[k] for k in p}) for p in parts)
        run_id = max((r.run_id for r in m.sorted_runs), default=-1) + 1
        self.job = ([s.sst_id for s in src_l0], [r.run_id for r in src_runs], SortedRun(run_id, outs))


class Collector(Actor):
    """GC passes (``shaledb.gc.collect``)."""

    kind = "gc"

    def op(self) -> None:
        if not self.world.created:
            return
        min_age = 0.0 if self.world.cfg.bug == "gc-min-age-0" else self.world.cfg.gc_min_age
        res = collect(self.store, min_age=min_age, now=self.clock.wall())
        c = res.counts
        self.world.count("gc.pass")
        for kind, n in c.items():
            if n:
                self.world.count(f"gc.deleted.{kind}", n)
        self.world.note(self, f"gc pass: deleted {c}")


class Reader(Actor):
    """Follows the manifest and tails the WAL; checks its view."""

    kind = "reader"

    def reset(self) -> None:
        self.ms: ManifestStore | None = None

    def op(self) -> None:
        if not self.world.created:
            return
        if self.ms is None:
            self.ms = self.manifest_store()
        snap = dict(self.world.acked)
        t0 = self.clock.wall()
        m = self.ms.refresh()
        view: dict[int, int] = {}
        for ref in m.all_ssts():
            for _ in range(self.rng.randrange(4)):  # a slow reader: widens its race with compaction + GC
                self.world.baton.park(self, "reading")
            try:
                _merge(view, self.read_sst(ref.sst_id))
            except ObjectNotFound:
                self.world.missing(self, sst_key(ref.sst_id), t0, f"an SST of manifest {self.ms.manifest_id}")
                return
        wid = m.replay_after_wal_id + 1
        while True:
            try:
                data = self.store.get(wal_key(wid))
            except ObjectNotFound:
                break
            recs = wal_records(data, wal_key(wid))
            _merge(view, {k: s for k, s in recs.items() if s > m.last_l0_seq})
            wid += 1
        self.world.count("reader.read")
        if self.clock.wall() - t0 < self.world.cfg.gc_min_age:
            lost = [k for k, s in snap.items() if view.get(k, -1) < s]
            if lost:
                self.world.violate(
                    f"{self.name}: manifest {self.ms.manifest_id} + WAL {m.replay_after_wal_id + 1}..{wid - 1} "
                    f"lacks acknowledged writes of keys {lost[:5]} (acked before the read began)"
                )


class Checkpointer(Actor):
    """Creates an expiring checkpoint, reads what it pins, removes it."""

    kind = "checkpoint"

    def reset(self) -> None:
        self.ms: ManifestStore | None = None
        self.cp = None
        self.guarded = False

    def op(self) -> None:
        if not self.world.created:
            return
        if self.ms is None:
            self.ms = self.manifest_store()
        if self.cp is None:
            self.ms.refresh()
            t0 = self.clock.wall()
            cp = self.ms.add_checkpoint(lifetime_ms=self.rng.randint(2_000, 90_000), name=self.name)
            # GC may have deleted what the pinned manifest names if the pin
            # was written more than min_age after that manifest was current
            self.guarded = self.clock.wall() - t0 < self.world.cfg.gc_min_age
            self.cp = cp
            self.world.count("checkpoint.add")
            self.world.note(self, f"checkpoint pins manifest {cp.manifest_id} until {cp.expires_at_ms}")
            return
        cp = self.cp
        if self.rng.random() < 0.25:
            self.cp = None  # from the request on: a removal that reports failure may have landed
            self.ms.remove_checkpoint(cp.id)
            self.world.count("checkpoint.remove")
            return
        if self.clock.peek_ms() >= cp.expires_at_ms:
            self.cp = None
            return
        key = manifest_key(cp.manifest_id)
        try:
            m = decode_manifest(self.store.get(key), key)
            for ref in m.all_ssts():
                key = sst_key(ref.sst_id)
                self.read_sst(ref.sst_id)
        except ObjectNotFound:
            if self.guarded and self.clock.peek_ms() < cp.expires_at_ms:
                self.world.violate(f"{self.name}: {key} is gone while checkpoint {cp.id} (pins manifest {cp.manifest_id}) lives")
            self.cp = None
            return
        self.world.count("checkpoint.read")


ACTOR_KINDS = {"writer": Writer, "compactor": Compactor, "gc": Collector, "reader": Reader, "checkpoint": Checkpointer}
