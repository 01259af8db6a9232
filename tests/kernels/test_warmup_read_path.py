"""After ``shaledb.kernels.warmup()``, the read path (get, get_many in both
forms, scans) and a flush compile nothing new: every numba dispatcher of
shaledb.kernels has the same signatures before and after them (checked in a
fresh subprocess, on memory:// where the flush and the compaction run
in-process, and on a local directory where SSTs are mapped)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    r'''
    import importlib, json, pkgutil, sys, tempfile, uuid
    import numpy as np
    import shaledb
    import shaledb.kernels as K
    from numba.core.registry import CPUDispatcher

    K.warmup()
    from shaledb.kernels import point as P

    def signatures():
        out = {}
        for m in pkgutil.iter_modules(K.__path__):
            mod = importlib.import_module("shaledb.kernels." + m.name)
            for name, obj in vars(mod).items():
                if isinstance(obj, CPUDispatcher):
                    out[m.name + "." + name] = [str(s) for s in obj.signatures]
        return out

    keys = [b"k%04d" % i for i in range(3000)]
    values = [b"v%d" % i * 5 for i in range(3000)]

    def exercise(db, flush):
        probe = keys[::7] + [b"nope", b"k0003\x00"]
        kd = np.frombuffer(b"".join(probe), dtype=np.uint8)
        ko = np.zeros(len(probe) + 1, dtype=np.int64)
        np.cumsum([len(k) for k in probe], out=ko[1:])
        for _ in range(2):
            [db.get(k) for k in probe]
            db.get_many(probe)
            db.get_many((kd, ko))
            db.get_many((kd.copy(), ko))
            P.SORTED_COPY_MIN, keep = 0, P.SORTED_COPY_MIN  # the large-batch path too
            try:
                db.get_many(probe)
                db.get_many((kd, ko))
            finally:
                P.SORTED_COPY_MIN = keep
            list(db.scan())
            list(db.scan(b"k0100", b"k0200"))
            if flush:
                db.put(b"k0001", b"again", await_durable=False)
                db.flush(memtable=True)

    def load(db):
        db.put_many(keys[:2000], values[:2000], await_durable=False)
        db.delete(b"k0005", await_durable=False)
        db.flush(memtable=True)
        db.compact(full=True)
        db.put_many(keys[1500:], values[1500:], await_durable=False)
        db.flush(memtable=True)
        db.put(b"k0007", b"in an arena", await_durable=False)

    before = signatures()
    with shaledb.open("memory://warm-" + uuid.uuid4().hex[:8], block_size=512) as db:
        load(db)
        exercise(db, flush=True)
    after_mem = signatures()
    with tempfile.TemporaryDirectory() as d:
        with shaledb.open(d + "/db", block_size=512) as db:
            load(db)
            db.close()
        with shaledb.open(d + "/db", block_size=512) as db:
            mid = signatures()
            exercise(db, flush=False)
            after_local = signatures()
    new = {}
    for a, b in ((before, after_mem), (mid, after_local)):
        for k, sigs in b.items():
            extra = sorted(set(sigs) - set(a.get(k, [])))
            if extra:
                new[k] = extra
    print(json.dumps(new))
    '''
)


def test_read_path_compiles_nothing_after_warmup():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "{}", "compiled after warmup(): " + r.stdout[-3000:]
