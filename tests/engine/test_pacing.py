"""Write pacing (core/flush/pacing.py): the flusher turns the compactor's L0
drain rate into a shared write rate; writers take turns in it
(``ArenaPool.pace``) instead of stopping dead when L0 is full.

The pacer is driven with a fake clock and hand-made manifests; the pool's
schedule is checked through the waits it hands out (no timing); the engine
test checks that a Db whose L0 is full paces its writers, loses nothing, and
lifts the rate once the compactor caught up.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
from engine_util import open_db, scan_all, wait_for

from shaledb.compact import Compactor
from shaledb.flush.pacing import LIFT_CAP, LIFT_DOUBLING, MIN_BUSY, MIN_RATE, PRIOR_RATE, WINDOW, WritePacer
from shaledb.memtable.arena_pool import WRITER_PACE_MARK, WRITER_PACE_RATE, WRITER_PACE_STALE_NS, ArenaPool
from shaledb.storage import open_store

MiB = 1 << 20


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _manifest(*ids, size=16 * MiB):
    return SimpleNamespace(l0=tuple(SimpleNamespace(sst_id=i, size=size) for i in ids))


def _pacer(threshold=4, limit=8):
    """L0 up to the threshold (4 x 64 MiB) is the compactor's next job, not
    backlog; the L0 mark is 6 SSTs; room for the backlog: the 4 x 64 MiB of
    L0 above the threshold + 512 MiB of arenas = 768 MiB."""
    clock, rates = Clock(), []
    p = WritePacer(rates.append, compaction_threshold=threshold, l0_max_ssts=limit, l0_sst_bytes=64 * MiB,
                   max_unflushed_bytes=512 * MiB, clock=clock)
    return p, clock, rates


def test_no_rate_below_the_marks():
    p, clock, rates = _pacer()
    for mid, n in enumerate(range(1, 6), start=1):  # below the L0 mark (6), a small backlog
        assert p.observe(mid, _manifest(*[f"s{i}" for i in range(n)]), unflushed=100 * MiB) == 0
    assert rates == [] and p.rate == 0


def test_l0_up_to_the_threshold_is_not_backlog():
    """A full compaction job waiting in L0 (4 x 64 MiB, the threshold) with
    the arenas' normal contents is the steady state of a compactor that
    keeps up: not paced.  Counting that L0 as backlog (356 MiB of a 1 GiB
    room, past the quarter mark) kept a 20M-record load paced at 30-50
    MiB/s; only L0 past the threshold's worth fills the room."""
    p, clock, rates = _pacer()
    ids = [f"s{i}" for i in range(4)]
    assert p.observe(1, _manifest(*ids, size=64 * MiB), unflushed=100 * MiB) == 0
    assert p.fill() == pytest.approx(100 / 768)
    ids.append("s4")  # a fifth L0 SST: 64 MiB past the threshold's worth
    assert p.observe(2, _manifest(*ids, size=64 * MiB), unflushed=100 * MiB) == 0
    assert p.fill() == pytest.approx(164 / 768)
    assert p.observe(3, _manifest(*ids, size=64 * MiB), unflushed=128 * MiB) == PRIOR_RATE  # 192 MiB: a quarter
    assert rates == [PRIOR_RATE]


def test_prior_rate_then_measured_drain_then_lifted():
    p, clock, rates = _pacer()
    ids = [f"s{i}" for i in range(6)]
    assert p.observe(1, _manifest(*ids)) == PRIOR_RATE  # at the L0 mark, nothing drained yet: the prior
    clock.t += 4.0
    ids = ids[4:] + ["t0", "t1", "t2", "t3"]  # the compactor took the 4 oldest (64 MiB); 4 new ones
    assert p.observe(2, _manifest(*ids)) == 16 * MiB  # 64 MiB over the 4 s since the first observation
    clock.t += 1.0
    ids = ids + ["t4", "t5"]  # 8 = the limit: a quarter of the drain rate over 5 s
    assert p.observe(3, _manifest(*ids)) == max(MIN_RATE, int(64 * MiB / 5.0 * 0.25))
    clock.t += 1.0
    assert p.rate == MIN_RATE
    # drained below the mark (another 64 MiB, in the 2 s since the last
    # drain left a job's worth in L0), small backlog: the rate ramps up,
    # doubling each second, from the measured drain (128 MiB in 6 s of
    # compactor work), which is above the last paced rate
    last = p.observe(4, _manifest(*ids[:4]))
    assert last == int(128 * MiB / 6.0) == int(p.drain_rate())
    clock.t += 1.0
    assert p.observe(4, _manifest(*ids[:4])) == 2 * last
    clock.t += 3.5
    assert p.observe(4, _manifest(*ids[:4])) == int(last * 2**4.5)
    clock.t += LIFT_DOUBLING * math.log2(LIFT_CAP / last)  # past the cap: lifted
    assert p.observe(4, _manifest(*ids[:4])) == 0
    assert rates[-1] == 0 and p.rate == 0


def test_a_ramp_that_fills_the_backlog_paces_again():
    p, clock, _ = _pacer()
    ids = [f"s{i}" for i in range(6)]
    assert p.observe(1, _manifest(*ids)) == PRIOR_RATE
    clock.t += 1.0
    # drained (80 MiB in the 1 s since L0 held a job's worth): the ramp starts
    # at the measured drain, above the last (prior) rate
    assert p.observe(2, _manifest("s5")) == 80 * MiB
    clock.t += 1.0
    assert p.observe(3, _manifest("s5"), unflushed=100 * MiB) == 160 * MiB
    clock.t += 0.5
    # the burst the ramp let in passes the start mark: paced on the measured drain again, no ramp left
    rate = p.observe(4, _manifest("s5"), unflushed=400 * MiB)
    assert 0 < rate <= 80 * MiB
    clock.t += 0.5
    assert p.observe(5, _manifest("s5"), unflushed=0) == max(rate, 80 * MiB)  # a new ramp, from the drain


def test_a_filling_backlog_lowers_the_rate():
    p, clock, _ = _pacer()
    ids = ["a", "b"]  # 2 x 16 MiB of L0: below the L0 mark and the threshold's worth; the arenas decide
    got = [p.observe(1, _manifest(*ids), unflushed=100 * MiB)]  # 13 % of the room: unpaced
    us = (192, 360, 480, 700)
    for mid, u in enumerate(us, start=2):
        got.append(p.observe(mid, _manifest(*ids), unflushed=u * MiB))
    fills = [u / 768 for u in us]  # 25 %, 47 %, 62 %, 91 %
    want = [max(MIN_RATE, int(PRIOR_RATE * max(0.25, 1 - 0.75 * max(0.0, f - 0.25) / 0.65))) for f in fills]
    assert got == [0] + want
    assert want[0] == PRIOR_RATE and want[-1] == PRIOR_RATE // 4 and want[1] > want[2] > want[3]
    # the unflushed bytes alone (same manifest id) move the rate too: below
    # the start mark the ramp begins at the last rate
    assert p.observe(5, _manifest(*ids), unflushed=0) == want[-1]


def test_no_drain_for_a_window_falls_to_the_floor_and_old_drains_expire():
    p, clock, _ = _pacer()
    ids = [f"s{i}" for i in range(6)]
    p.observe(1, _manifest(*ids))
    clock.t += 2.0
    p.observe(2, _manifest(*(ids[4:] + ["a", "b", "c", "d"])))  # 64 MiB drained
    assert p.drain_rate() == 32 * MiB
    clock.t += WINDOW + 1  # that drain leaves the window; nothing new
    assert p.observe(3, _manifest(*(ids[4:] + ["a", "b", "c", "d", "e"]))) == MIN_RATE


def test_the_drain_rate_counts_only_the_compactors_working_time():
    """The compactor's speed, not the writers': seconds when L0 held less
    than a job's worth (the compactor idle, waiting for the flusher) do not
    dilute the rate.  Measured over wall time, the drain of a load the pacer
    held back was only what the pacer let in (1,000 values of 1 MiB: 24
    MiB/s measured against a compactor doing ~120 MiB/s)."""
    p, clock, _ = _pacer()
    p.observe(1, _manifest("a", "b"))  # below the threshold: no job
    clock.t += 10.0
    p.observe(2, _manifest("a", "b", "c", "d"))  # a job's worth: the compactor starts
    clock.t += 0.5
    p.observe(3, _manifest("a", "b", "c", "d", "e", "f"))  # still working
    clock.t += 1.5
    p.observe(4, _manifest("e", "f"))  # 4 x 16 MiB drained after 2 s of work
    assert p.drain_rate() == 32 * MiB
    clock.t += 5.0
    p.observe(5, _manifest("e", "f", "g", "h"))  # idle 5 s, then a job's worth again
    clock.t += 1.0
    p.observe(6, _manifest("h"))  # 3 x 16 MiB in 1 s
    assert p.drain_rate() == pytest.approx(112 * MiB / 3.0)
    clock.t += 1.0
    p.observe(7, _manifest())  # a drain below the threshold: counted as MIN_BUSY of work
    assert p.drain_rate() == pytest.approx(128 * MiB / (3.0 + MIN_BUSY))


def test_older_manifests_are_ignored():
    p, clock, _ = _pacer()
    p.observe(5, _manifest("a", "b", "c", "d", "e", "f"))
    clock.t += 3
    # an older manifest (the flusher's own view, behind a probe's) must not count drains
    assert p.observe(4, _manifest("a")) == PRIOR_RATE
    assert p.drain_rate() == PRIOR_RATE and p.l0 == 6


def test_stop_lifts_the_rate():
    p, clock, rates = _pacer()
    p.observe(1, _manifest(*"abcdef"))
    assert p.rate > 0
    p.stop()
    assert p.rate == 0 and rates[-1] == 0


# ---------------------------------------------------------------- the pool


@pytest.fixture
def pool(tmp_path):
    p = ArenaPool.create(str(tmp_path / "db"), arena_bytes=256 << 10, max_arenas=4, initial_arenas=1)
    try:
        yield p
    finally:
        p.destroy()


def test_pool_pace_is_a_shared_schedule(pool):
    assert pool.pace(1 << 20) == 0.0  # no rate: never waits
    assert pool.paced_seconds() == 0.0
    pool.set_pace_rate(10 * MiB)
    assert pool.pace_rate() == 10 * MiB
    other = ArenaPool.attach(pool.descriptor())  # another writer's handle (same shared control words)
    try:
        first = pool.pace(5 * MiB)
        waits = [other.pace(5 * MiB), pool.pace(5 * MiB)]
        # each reservation starts where the previous one ended: 0.5 s of rate apiece
        assert first < 0.1
        assert 0.4 < waits[0] <= 0.5 + first
        assert 0.9 < waits[1] <= 1.0 + first
        assert pool.paced_seconds() == pytest.approx(first + sum(waits), abs=1e-6)
        pool.set_pace_rate(0)
        assert other.pace(5 * MiB) == 0.0
    finally:
        other.close()


def _fill(pool, nbytes):
    """Append records of about ``nbytes`` in all (the unflushed bytes grow by what the arena uses)."""
    from shaledb.memtable.writer import Writer

    w = Writer(pool.descriptor(), pool=pool, buffer_puts=False)
    try:
        while pool.unflushed_bytes() < nbytes:
            w.put_many([b"k%06d" % pool.next_seq()], [b"x" * 1000], await_durable=False)
    finally:
        w.close()


def test_writers_pace_themselves_past_the_mark_before_the_flusher_sets_a_rate(tmp_path):
    """The first second of a fast load: the arenas fill while the flusher
    is busy with its first WAL upload.  Past WRITER_PACE_MARK of the room,
    while the flusher has not looked at the backlog lately, the writers
    share WRITER_PACE_RATE on their own; a rate the flusher sets takes over,
    and below the mark there is none."""
    pool = ArenaPool.create(str(tmp_path / "db"), arena_bytes=256 << 10, max_arenas=8, initial_arenas=1,
                            max_unflushed_bytes=1 << 20)
    try:
        mark = int(WRITER_PACE_MARK * pool.max_unflushed_bytes())
        _fill(pool, mark - 4096)
        assert pool.unflushed_bytes() <= mark
        assert pool.pace(1 << 20) == 0.0
        _fill(pool, mark + 1)
        first = pool.pace(WRITER_PACE_RATE // 10)  # a tenth of a second of the rate
        second = pool.pace(1)
        assert first < 0.05 and 0.09 < second - first <= 0.1
        assert pool.pace_rate() == 0  # nothing is written into the shared rate: the flusher's word stays its own
        # a flusher that has just looked at the backlog and set no rate is not overruled ...
        pool.pace_seen()
        assert not pool.pacing() and pool.pace(WRITER_PACE_RATE) == 0.0
        # ... until its look is WRITER_PACE_STALE_NS old (busy with a long WAL upload, say)
        time.sleep(WRITER_PACE_STALE_NS / 1e9 + 0.05)
        assert pool.pacing()
        pool.pace(WRITER_PACE_RATE // 10)  # the schedule went idle meanwhile: this one starts now ...
        assert pool.pace(1) > 0.05  # ... and the next waits for it
        pool.set_pace_rate(WRITER_PACE_RATE * 10)  # the flusher's rate takes over
        third = pool.pace(WRITER_PACE_RATE)  # a tenth of a second at the flusher's rate
        assert 0.09 < pool.pace(1) - third <= 0.1
    finally:
        pool.destroy()


def test_a_writer_takes_its_turns_past_the_mark(tmp_path):
    """Through ``Writer.put_many`` (which asks ``ArenaPool.pacing`` before
    it reserves): below the mark no turn is taken, past it the appends of a
    writer share WRITER_PACE_RATE."""
    from shaledb.memtable.writer import Writer

    pool = ArenaPool.create(str(tmp_path / "db"), arena_bytes=4 << 20, max_arenas=8, initial_arenas=1,
                            max_unflushed_bytes=16 << 20)
    try:
        w = Writer(pool.descriptor(), pool=pool, buffer_puts=False, timeout=10.0)
        try:
            batch = [b"v" * 1000] * 1000  # about 1 MB a call
            w.put_many([b"a%06d" % i for i in range(1000)], batch, await_durable=False)
            assert not pool.pacing() and pool.paced_seconds() == 0.0
            i = 0
            while not pool.pacing():
                i += 1
                w.put_many([b"b%03d-%06d" % (i, j) for j in range(1000)], batch, await_durable=False)
            assert pool.unflushed_bytes() > WRITER_PACE_MARK * pool.max_unflushed_bytes()
            before = pool.paced_seconds()  # (a call split in arena-sized chunks may have had a turn already)
            for r in range(4):  # 4 MB at 64 MiB/s: the later calls wait about 1/64 s each
                w.put_many([b"c%03d-%06d" % (r, j) for j in range(1000)], batch, await_durable=False)
            assert 0.03 < pool.paced_seconds() - before < 1.0
        finally:
            w.close()
    finally:
        pool.destroy()


# ---------------------------------------------------------------- the engine

OPTS = dict(
    arena_bytes=64 << 10,
    l0_sst_bytes=64 << 10,
    max_unflushed_bytes=256 << 10,
    flush_interval=0.02,
    manifest_poll_interval=0.05,
    compactor=False,
    compaction_workers=1,
    l0_compaction_threshold=2,
    l0_max_ssts=4,
    request_timeout=60.0,
)


def test_a_full_l0_paces_writers_and_a_compaction_lifts_it(tmp_path):
    url = str(tmp_path / "db")
    model = {}
    with open_db(url, **OPTS) as db:
        store = open_store(url)
        assert db.status().stall.pace_rate == 0
        with Compactor(store, db.options) as comp:  # opened after the Db: the flusher sees a compactor arrive
            for i in range(3):  # L0 at 3 = the pacing mark (threshold 2 + 1)
                k = b"k%03d" % i
                db.put(k, b"v%d" % i, await_durable=False)
                model[k] = b"v%d" % i
                db.flush(memtable=True)
            wait_for(lambda: db.status().stall.pace_rate > 0, "the flusher to pace writers")
            assert db.status().stall.pace_rate >= MIN_RATE
            for j in range(10):  # paced writes go through (well within L0's and the arenas' room)
                ks = [b"p%02d-%03d" % (j, i) for i in range(20)]
                db.put_many(ks, [b"x" * 100] * 20, await_durable=False)
                model.update((k, b"x" * 100) for k in ks)
            comp.compact_once(full=True)
            wait_for(lambda: db.status().stall.pace_rate == 0, "the rate to be lifted after the compaction")
        assert dict(scan_all(db)) == model


def test_writers_of_every_process_keep_to_the_rate(tmp_path):
    """The pool's rate set by hand (no compactor: the flusher never sets one):
    put_many from this process and a writer handle wait their turns."""
    url = str(tmp_path / "db")
    with open_db(url, arena_bytes=1 << 20, compactor=False) as db:
        db._pool.set_pace_rate(1 << 20)  # 1 MiB/s
        t0 = time.monotonic()
        for j in range(3):  # 3 x ~130 KB: the later ones wait for the earlier ones' share
            db.put_many([b"a%d-%04d" % (j, i) for i in range(1000)], [b"v" * 100] * 1000, await_durable=False)
        w = db.writer()
        w.put_many([b"w-%04d" % i for i in range(1000)], [b"v" * 100] * 1000, await_durable=False)
        took = time.monotonic() - t0
        st = db.status().stall
        assert st.pace_rate == 0  # the flusher reports its own pacer, which never paced
        assert st.paced_seconds >= 0.3  # 4 x 128 KB at 1 MiB/s: turns of 0, 0.12, 0.24, 0.37 s
        assert took >= 0.3
        db._pool.set_pace_rate(0)
        assert db.get(b"w-0999") == b"v" * 100
        assert len(list(db.scan())) == 4000
