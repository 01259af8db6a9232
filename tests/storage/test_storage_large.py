"""Objects larger than 64 MiB on the local directory and on S3 (moto over HTTP)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

SIZE = (64 << 20) + 12345


@pytest.fixture(scope="module")
def big():
    return np.random.default_rng(7).integers(0, 256, SIZE, dtype=np.uint8)


def test_large_object(shared_store, big):
    r = shared_store.put_if_absent("compacted/big.sst", big)
    meta = shared_store.head("compacted/big.sst")
    assert meta.size == SIZE and meta.etag == r.etag
    assert shared_store.get_range("compacted/big.sst", SIZE - 100, SIZE + 100) == big[-100:].tobytes()
    assert shared_store.get_range("compacted/big.sst", (32 << 20) - 7, (32 << 20) + 9) == big[(32 << 20) - 7 : (32 << 20) + 9].tobytes()
    data = shared_store.get("compacted/big.sst")
    assert len(data) == SIZE
    assert hashlib.sha256(data).digest() == hashlib.sha256(big).digest()
    assert [(m.key, m.size) for m in shared_store.list("compacted/")] == [("compacted/big.sst", SIZE)]
