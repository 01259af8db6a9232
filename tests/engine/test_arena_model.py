"""A state machine of writers, seals and releases against a dict.

Two writers share one small pool; sealed generations are "flushed" (their
records folded into a dict standing in for L0, newest seq wins) and released
oldest first.  A read is: the arenas, then that L0.  It must always equal the
model, which checks newest-wins across arenas, the seq order of generations
and arena reuse.
"""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shaledb.memtable.arena_pool import ArenaPool
from shaledb.memtable.writer import WriteBatch, Writer

KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e" * 30, b"\x00", b"\xff\xff"])
VALUES = st.binary(max_size=300)


class PoolModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        import uuid

        self.root = f"memory://arena-model-{uuid.uuid4().hex}"  # only names the segments
        self.pool = ArenaPool.create(
            self.root, arena_bytes=64 << 10, max_arenas=64, initial_arenas=1, max_unflushed_bytes=1 << 30
        )
        self.writers = [
            Writer(self.pool.descriptor(), pool=self.pool, buffer_records=4),
            Writer(self.pool.descriptor(), pool=self.pool, buffer_puts=False),
        ]
        self.model: dict[bytes, bytes | None] = {}
        self.l0: dict[bytes, tuple[int, int, bytes]] = {}
        self.last_sealed_max = 0

    def teardown(self):
        for w in self.writers:
            w.close()
        self.pool.destroy()

    @rule(w=st.integers(0, 1), k=KEYS, v=VALUES, durable=st.booleans())
    def put(self, w, k, v, durable):
        self.writers[w].put(k, v, await_durable=False) if not durable else self._put_now(w, k, v)
        self.model[k] = v

    def _put_now(self, w, k, v):
        self.writers[w].drain()
        self.writers[w].write(WriteBatch().put(k, v), await_durable=False)

    @rule(w=st.integers(0, 1), k=KEYS)
    def delete(self, w, k):
        self.writers[w].delete(k, await_durable=False)
        self.model[k] = None

    @rule(w=st.integers(0, 1), pairs=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=40))
    def put_many(self, w, pairs):
        self.writers[w].put_many([k for k, _ in pairs], [v for _, v in pairs], await_durable=False)
        for k, v in pairs:
            self.model[k] = v

    @rule(w=st.integers(0, 1), ops=st.lists(st.tuples(KEYS, st.none() | VALUES), min_size=1, max_size=10))
    def write(self, w, ops):
        b = WriteBatch()
        for k, v in ops:
            b.delete(k) if v is None else b.put(k, v)
            self.model[k] = v
        self.writers[w].write(b, await_durable=False)

    @rule()
    def seal(self):
        for w in self.writers:
            w.drain()
        self.pool.seal()

    @precondition(lambda self: self.pool.has_sealed())
    @rule()
    def flush_oldest(self):
        gen = self.pool.sealed_generations()[0]
        self.pool.begin_flush(gen)
        seqs = []
        for buf, offs in gen.runs():
            for off in offs:
                kl, vl = (int(x) for x in buf[off : off + 8].view("<u4"))
                trailer = int(buf[off + 8 : off + 16].view("<u8")[0])
                key = bytes(buf[off + 16 : off + 16 + kl])
                value = bytes(buf[off + 16 + kl : off + 16 + kl + vl])
                seqs.append(trailer >> 8)
                if key not in self.l0 or self.l0[key][0] < trailer >> 8:
                    self.l0[key] = (trailer >> 8, trailer & 0xFF, value)
        # the generation invariant: older generations hold smaller seqs
        assert min(seqs) > self.last_sealed_max
        self.last_sealed_max = max(seqs)
        self.pool.release(gen)

    @invariant()
    def reads_match_model(self):
        for w in self.writers:
            w.drain()
        for k, expected in self.model.items():
            e = self.pool.lookup(k)
            if e is None and k in self.l0:
                _, kind, value = self.l0[k]
                got = value if kind else None
            elif e is None:
                got = None
            else:
                got = e[3]
            assert got == expected, (k, got, expected)

    @invariant()
    def accounting(self):
        live = sum(
            int(self.pool.ctl[32 + 8 * i + 3]) for i, _, _ in self.pool.live_slots()
        )
        assert live == self.pool.unflushed_bytes()
        assert np.all(self.pool.ctl[32 + 8 * np.arange(int(self.pool.ctl[11]))] <= 4)


TestPoolModel = PoolModel.TestCase
TestPoolModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
