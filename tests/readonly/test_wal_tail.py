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


def _from_batches(batches) -> dict:
    out = {}
    for kd, ko, vd, vo in batches:
        for i in range(len(ko) - 1):
            out[kd[ko[i] : ko[i + 1]].tobytes()] = vd[vo[i] : vo[i + 1]].tobytes()
    return out


def test_batch_reads_of_readers_and_snapshots(tmp_path):
    """get_many (list and numpy forms) and scan_arrays of a following
    reader (tail + L0), a checkpoint reader and a snapshot."""
    import numpy as np

    url = str(tmp_path / "db")
    keys = [b"k%04d" % i for i in range(500)]
    with open_db(url, **OPTS) as db:
        for i, k in enumerate(keys):
            db.put(k, b"a%d" % i, await_durable=False)
        db.flush(memtable=True)
        for k in keys[::3]:
            db.put(k, b"b", await_durable=False)
        for k in keys[1::7]:
            db.delete(k, await_durable=False)
        db.flush()  # the newer versions only in the WAL
        want = scan_all(db)
        cp = db.create_checkpoint()
        with shaledb.open_reader(url, poll_interval=3600.0) as r, \
                shaledb.open_reader(url, checkpoint=cp.id) as c, db.snapshot() as s:
            probe = keys[:50] + [b"absent"]
            kd = np.frombuffer(b"".join(probe), dtype=np.uint8)
            ko = np.zeros(len(probe) + 1, dtype=np.int64)
            np.cumsum([len(k) for k in probe], out=ko[1:])
            for view in (r, c, s):
                assert view.get_many(probe) == [want.get(k) for k in probe]
                vd, vo, found = view.get_many((kd, ko))
                assert [vd[vo[i] : vo[i + 1]].tobytes() if found[i] else None for i in range(len(probe))] == \
                    [want.get(k) for k in probe]
                assert _from_batches(view.scan_arrays(batch_records=37)) == want
                assert _from_batches(view.scan_arrays(keys[10], keys[90])) == \
                    {k: v for k, v in want.items() if keys[10] <= k < keys[90]}
