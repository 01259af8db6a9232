"""Ingest against a dict: seeded random interleavings of put, delete,
ingest (several partitions, overlapping earlier data), flush, compaction and
reopen; after every step the database reads as the model."""

from __future__ import annotations

import random

import pytest

from shaledb.bulk import SstWriter, new_load_id

from bulk_util import open_db, scan_all


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_random_interleavings_match_a_dict(tmp_path, seed):
    rng = random.Random(seed)
    root = str(tmp_path / "db")
    model: dict[bytes, bytes] = {}
    keyspace = [b"k%04d" % i for i in range(600)]
    db = open_db(root, compactor=False)
    try:
        for step in range(10):
            op = rng.choice(["put", "put", "delete", "ingest", "ingest", "flush", "compact", "reopen"])
            if op == "put":
                ks = rng.sample(keyspace, 50)
                vs = [b"p%d-%d" % (step, i) for i in range(len(ks))]
                db.put_many(ks, vs)
                model.update(zip(ks, vs))
            elif op == "delete":
                for k in rng.sample(keyspace, 10):
                    db.delete(k)
                    model.pop(k, None)
            elif op == "ingest":
                load = new_load_id()
                ks = sorted(rng.sample(keyspace, 200))
                cut = [0, *sorted(rng.sample(range(1, len(ks)), 2)), len(ks)]  # 3 key-range partitions
                descs = []
                for p, (a, b) in enumerate(zip(cut, cut[1:])):
                    with SstWriter(root, load_id=load, partition=p, sst_target_bytes=4096) as w:
                        batch = ks[a:b]
                        rng.shuffle(batch)
                        vs = [b"i%d-" % step + k for k in batch]
                        w.add(batch, vs)
                        w.add(batch[:5], [b"dup%d" % step] * len(batch[:5]))  # last by input order wins
                        descs += w.finish()
                        model.update(zip(batch, vs))
                        model.update((k, b"dup%d" % step) for k in batch[:5])
                db.ingest(descs)
            elif op == "flush":
                db.flush(memtable=True)
            elif op == "compact":
                db.compact(full=rng.random() < 0.5)
            else:
                db.close()
                db = open_db(root, compactor=False)
            assert scan_all(db) == model, (seed, step, op)
    finally:
        db.close()
