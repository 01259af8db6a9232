"""The WAL tail against the writer as the model: random puts and deletes,
WAL flushes and memtable flushes and compactions, the tail refreshed after
each round (its runs are appended, merged and dropped as the replay point
moves); a following reader must answer every get and scan as the writer
does."""

from __future__ import annotations

import random

from engine_util import open_db, scan_all
from readonly_util import OPTS

import shaledb


def test_tail_runs_match_the_writer(tmp_path):
    url = str(tmp_path / "db")
    rng = random.Random(13)
    keys = [b"k%04d" % i for i in range(300)]
    with open_db(url, **OPTS) as db, shaledb.open_reader(url, poll_interval=3600.0) as r:
        shapes = set()
        for rnd in range(40):
            for _ in range(rng.randrange(1, 60)):
                k = rng.choice(keys)
                if rng.random() < 0.2:
                    db.delete(k, await_durable=False)
                else:
                    db.put(k, b"%d-%d" % (rnd, rng.randrange(1000)), await_durable=False)
            step = rng.random()
            if step < 0.15:
                db.flush(memtable=True)
            elif step < 0.2:
                db.flush(memtable=True)
                db.compact(full=rng.random() < 0.5)
            else:
                db.flush()
            r.refresh()
            st = r.tail
            shapes.add(len(st.runs))
            want = scan_all(db)
            assert dict(r.scan()) == want, f"round {rnd}"
            for k in rng.sample(keys, 40):
                assert r.get(k) == want.get(k), f"round {rnd}: {k!r}"
        assert max(shapes) >= 2  # several runs at once were exercised
