"""Helpers of the reader tests (imported as ``readonly_util``)."""

from __future__ import annotations

import time

from shaledb.storage.wrappers import StoreWrapper

#: The Db of these tests: small SSTs and blocks (many objects), the
#: compactor off (tests compact themselves), GC with no minimum age.
OPTS = dict(
    arena_bytes=256 << 10,
    l0_sst_bytes=32 << 10,
    max_unflushed_bytes=2 << 20,
    sst_target_bytes=16 << 10,
    block_size=512,
    compactor=False,
    compaction_workers=1,
    gc_min_age=0.0,
)

#: Writes that reached a reader's store (op, key), in this process.
WRITES: list = []


class RecordWrites(StoreWrapper):
    """Records every write a reader's store receives (then forwards it)."""

    def put(self, key, data, metadata=None, *, put_id=None):
        WRITES.append(("put", key))
        return super().put(key, data, metadata, put_id=put_id)

    def put_if_absent(self, key, data, metadata=None, *, put_id=None):
        WRITES.append(("put_if_absent", key))
        return super().put_if_absent(key, data, metadata, put_id=put_id)

    def put_if_match(self, key, data, etag, metadata=None, *, put_id=None):
        WRITES.append(("put_if_match", key))
        return super().put_if_match(key, data, etag, metadata, put_id=put_id)

    def delete(self, key):
        WRITES.append(("delete", key))
        return super().delete(key)


#: SST reads of a reader's store that found the object gone, in this process.
MISSES: list = []


class RecordMisses(StoreWrapper):
    """Records every read of an SST that is gone (then raises as the store did)."""

    def _note(self, fn, key, *args):
        from shaledb.errors import ObjectNotFound

        try:
            return fn(key, *args)
        except ObjectNotFound:
            if key.startswith("compacted/"):
                MISSES.append(key)
            raise

    def get(self, key):
        return self._note(self.inner.get, key)

    def get_range(self, key, start, end):
        return self._note(self.inner.get_range, key, start, end)

    def head(self, key):
        return self._note(self.inner.head, key)


def record_misses(store):
    """Options.store_wrapper that records reads of deleted SSTs."""
    return RecordMisses(store)


def record_writes(store):
    """Options.store_wrapper for readers under test (module level: picklable)."""
    return RecordWrites(store)


def kv(i: int, gen: int = 0) -> tuple[bytes, bytes]:
    return b"key%06d" % i, b"val%06d-%d-" % (i, gen) + b"x" * 40


def wait_for(cond, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``cond`` until true; AssertionError after ``timeout`` (never hangs)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def listing(store) -> dict:
    """key -> (size, etag) of every object of ``store``."""
    return {m.key: (m.size, m.etag) for m in store.list("")}
