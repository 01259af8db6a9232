"""The numba XXH64 against the xxhash package and the plain-Python reference."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st
from kernels_testlib import NOJIT, hsettings
from reference.hashing import xxh64 as ref_xxh64

from shaledb.errors import InvalidArgument
from shaledb.kernels.hashing import xxh64, xxh64_range

pytestmark = pytest.mark.nojit

SEEDS = [0, 1, 0x9E3779B1, 2**63, 2**64 - 1]


def test_empty_and_one_byte():
    for seed in SEEDS:
        assert xxh64(b"", seed) == xxhash.xxh64_intdigest(b"", seed)
        for b in (b"\x00", b"\x7f", b"\xff"):
            assert xxh64(b, seed) == xxhash.xxh64_intdigest(b, seed)


def test_every_length_up_to_256():
    rng = random.Random(7)
    data = rng.randbytes(256)
    lengths = range(0, 257) if not NOJIT else range(0, 257, 7)
    for n in lengths:
        for seed in (0, 2**64 - 1):
            assert xxh64(data[:n], seed) == xxhash.xxh64_intdigest(data[:n], seed), n


def test_long_inputs():
    rng = random.Random(8)
    sizes = [1000, 4096, 65537, 1 << 20] if not NOJIT else [1000, 4099]
    for n in sizes:
        data = rng.randbytes(n)
        assert xxh64(data) == xxhash.xxh64_intdigest(data)
        assert xxh64(data, 42) == xxhash.xxh64_intdigest(data, 42)


def test_reference_matches_package():
    rng = random.Random(9)
    for n in (0, 1, 3, 4, 7, 8, 31, 32, 33, 100, 1000):
        data = rng.randbytes(n)
        assert ref_xxh64(data, 5) == xxhash.xxh64_intdigest(data, 5)


@hsettings(200)
@given(st.binary(max_size=300), st.integers(0, 2**64 - 1))
def test_random_inputs(data, seed):
    assert xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed) == ref_xxh64(data, seed)


@hsettings(100)
@given(st.binary(min_size=0, max_size=200), st.data())
def test_kernel_on_a_slice(data, d):
    start = d.draw(st.integers(0, len(data)))
    length = d.draw(st.integers(0, len(data) - start))
    arr = np.frombuffer(data, dtype=np.uint8)  # read-only
    got = int(xxh64_range(arr, start, length, np.uint64(3)))
    assert got == xxhash.xxh64_intdigest(data[start : start + length], 3)


def test_accepts_arrays_and_buffers():
    data = os.urandom(77)
    want = xxhash.xxh64_intdigest(data)
    writable = np.frombuffer(bytearray(data), dtype=np.uint8)
    assert writable.flags.writeable
    assert xxh64(writable) == want
    assert xxh64(np.frombuffer(data, dtype=np.uint8)) == want
    assert xxh64(bytearray(data)) == want
    assert xxh64(memoryview(data)) == want
    strided = np.frombuffer(data + data, dtype=np.uint8)[::2]
    assert xxh64(strided) == xxhash.xxh64_intdigest(bytes(strided))


@pytest.mark.parametrize("bad", ["text", 3, np.zeros(4, dtype=np.int32), np.zeros((2, 2), dtype=np.uint8)])
def test_rejects_bad_data(bad):
    with pytest.raises(InvalidArgument):
        xxh64(bad)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "1"])
def test_rejects_bad_seed(seed):
    with pytest.raises(InvalidArgument):
        xxh64(b"x", seed)


def test_unaligned_loads_and_stores():
    from shaledb.kernels._jit import kernel
    from shaledb.kernels.mem import load_u32, load_u64, load_u64_be, store_u32, store_u64

    @kernel
    def roundtrip(buf, p, v):
        store_u64(buf, p, v)
        store_u32(buf, p + 8, v)
        return load_u64(buf, p), load_u32(buf, p + 8), load_u64_be(buf, p)

    for p in range(0, 9):
        for v in (0, 1, 0x0102030405060708, 2**64 - 1):
            buf = np.zeros(24, np.uint8)
            le, lo, be = roundtrip(buf, p, np.uint64(v))
            assert bytes(buf[p : p + 8]) == v.to_bytes(8, "little")
            assert bytes(buf[p + 8 : p + 12]) == (v & 0xFFFFFFFF).to_bytes(4, "little")
            assert not buf[:p].any() and not buf[p + 12 :].any()
            assert (int(le), int(lo), int(be)) == (v, v & 0xFFFFFFFF, int.from_bytes(v.to_bytes(8, "little"), "big"))
