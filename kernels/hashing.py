"""xxHash64 (XXH64) in numba, bit-exact with the ``xxhash`` package.

``_xxh64(buf, start, length, seed) -> uint64`` is a jitted kernel that other
kernels call (bloom filters, block checksums, arena hash index);
``xxh64(data, seed=0) -> int`` is the validating Python wrapper.

The loads ``_load_u32`` / ``_load_u64`` (little-endian) and ``_load_u64_be``,
the stores ``_store_u32`` / ``_store_u64`` (one unaligned access each, as LLVM
intrinsics; byte by byte when numba is disabled) and the ``_prefetch`` hint
are shared by the other kernels that read
the record layout (``kernels/layout.py``).  None of them checks bounds.

All arithmetic is on ``np.uint64`` with explicit casts: numba turns a mix of
int64 and uint64 into float64, which would silently break the hash.
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.kernels._jit import kernel  # first: it settles numba's cache directory

from numba.core import config  # noqa: E402,I001

__all__ = ["xxh64"]

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_U64_MASK = (1 << 64) - 1


if config.DISABLE_JIT:  # the kernels run as plain Python

    def _load_u64(buf, p):
        """Little-endian u64 at ``buf[p:p+8]``."""
        return (
            np.uint64(buf[p])
            | (np.uint64(buf[p + 1]) << np.uint64(8))
            | (np.uint64(buf[p + 2]) << np.uint64(16))
            | (np.uint64(buf[p + 3]) << np.uint64(24))
            | (np.uint64(buf[p + 4]) << np.uint64(32))
            | (np.uint64(buf[p + 5]) << np.uint64(40))
            | (np.uint64(buf[p + 6]) << np.uint64(48))
            | (np.uint64(buf[p + 7]) << np.uint64(56))
        )

    def _load_u32(buf, p):
        """Little-endian u32 at ``buf[p:p+4]``, as uint64."""
        return (
            np.uint64(buf[p])
            | (np.uint64(buf[p + 1]) << np.uint64(8))
            | (np.uint64(buf[p + 2]) << np.uint64(16))
            | (np.uint64(buf[p + 3]) << np.uint64(24))
        )

    def _load_u64_be(buf, p):
        """Big-endian u64 at ``buf[p:p+8]``."""
        x = np.uint64(0)
        for j in range(8):
            x = (x << np.uint64(8)) | np.uint64(buf[p + j])
        return x

    def _prefetch(buf, pos):
        pass

    def _store_u64(buf, p, v):
        """Store ``v`` little-endian at ``buf[p:p+8]``."""
        v = int(v)
        for j in range(8):
            buf[p + j] = (v >> (8 * j)) & 0xFF

    def _store_u32(buf, p, v):
        """Store the low 32 bits of ``v`` little-endian at ``buf[p:p+4]``."""
        v = int(v)
        for j in range(4):
            buf[p + j] = (v >> (8 * j)) & 0xFF

else:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    def _gep_i8(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(arr.data, [args[1]])
        return builder.bitcast(ptr, ir.IntType(8).as_pointer())

    def _unaligned_load(builder, ptr8, bits):
        ity = ir.IntType(bits)
        return builder.load(builder.bitcast(ptr8, ity.as_pointer()), align=1)

    @intrinsic
    def _load_u64(typingctx, buf, p):
        """Little-endian u64 at ``buf[p:p+8]`` (one unaligned load; no bounds check)."""
        if not isinstance(buf, types.Array):
            return None

        def codegen(context, builder, signature, args):
            return _unaligned_load(builder, _gep_i8(context, builder, signature, args), 64)

        return types.uint64(buf, types.int64), codegen

    @intrinsic
    def _load_u32(typingctx, buf, p):
        """Little-endian u32 at ``buf[p:p+4]`` as uint64 (one unaligned load)."""
        if not isinstance(buf, types.Array):
            return None

        def codegen(context, builder, signature, args):
            val = _unaligned_load(builder, _gep_i8(context, builder, signature, args), 32)
            return builder.zext(val, ir.IntType(64))

        return types.uint64(buf, types.int64), codegen

    @intrinsic
    def _load_u64_be(typingctx, buf, p):
        """Big-endian u64 at ``buf[p:p+8]`` (unaligned load + byte swap)."""
        if not isinstance(buf, types.Array):
            return None

        def codegen(context, builder, signature, args):
            val = _unaligned_load(builder, _gep_i8(context, builder, signature, args), 64)
            fn = builder.module.declare_intrinsic("llvm.bswap", [ir.IntType(64)])
            return builder.call(fn, [val])

        return types.uint64(buf, types.int64), codegen

    def _unaligned_store(context, builder, signature, args, bits):
        ptr8 = _gep_i8(context, builder, signature, args)
        ity = ir.IntType(bits)
        val = context.cast(builder, args[2], signature.args[2], types.uint64)
        if bits < 64:
            val = builder.trunc(val, ity)
        builder.store(val, builder.bitcast(ptr8, ity.as_pointer()), align=1)
        return context.get_dummy_value()

    @intrinsic
    def _store_u64(typingctx, buf, p, v):
        """Store ``v`` (as uint64) little-endian at ``buf[p:p+8]`` (one unaligned store; no bounds check)."""
        if not isinstance(buf, types.Array) or not isinstance(v, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return _unaligned_store(context, builder, signature, args, 64)

        return types.void(buf, types.int64, v), codegen

    @intrinsic
    def _store_u32(typingctx, buf, p, v):
        """Store the low 32 bits of ``v`` little-endian at ``buf[p:p+4]`` (one unaligned store)."""
        if not isinstance(buf, types.Array) or not isinstance(v, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return _unaligned_store(context, builder, signature, args, 32)

        return types.void(buf, types.int64, v), codegen

    @intrinsic
    def _prefetch(typingctx, buf, pos):
        """Hint the CPU to load the cache line of ``buf[pos]`` (never faults, even out of bounds).

        Kernels that walk records in sorted order (random addresses) prefetch a
        few records ahead so that memory latency overlaps.
        """
        if not isinstance(buf, types.Array):
            return None

        def codegen(context, builder, signature, args):
            ptr = _gep_i8(context, builder, signature, args)
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
            fn = builder.module.declare_intrinsic("llvm.prefetch", [ptr.type], fnty)
            builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, keep in all caches, data
            return context.get_dummy_value()

        return types.void(buf, types.int64), codegen


@kernel
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@kernel
def _round(acc, lane):
    acc = acc + lane * _P2
    acc = _rotl(acc, 31)
    return acc * _P1


@kernel
def _merge_round(acc, val):
    acc = acc ^ _round(np.uint64(0), val)
    return acc * _P1 + _P4


@kernel
def _xxh64(buf, start, length, seed):
    """XXH64 of ``buf[start:start+length]`` with a uint64 ``seed``.

    REQUIRES: 0 <= start, start + length <= len(buf).
    """
    seed = np.uint64(seed)
    p = start
    end = start + length
    if length >= 32:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        limit = end - 32
        while p <= limit:
            v1 = _round(v1, _load_u64(buf, p))
            v2 = _round(v2, _load_u64(buf, p + 8))
            v3 = _round(v3, _load_u64(buf, p + 16))
            v4 = _round(v4, _load_u64(buf, p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge_round(h, v1)
        h = _merge_round(h, v2)
        h = _merge_round(h, v3)
        h = _merge_round(h, v4)
    else:
        h = seed + _P5
    h = h + np.uint64(length)
    while p + 8 <= end:
        h = h ^ _round(np.uint64(0), _load_u64(buf, p))
        h = _rotl(h, 27) * _P1 + _P4
        p += 8
    if p + 4 <= end:
        h = h ^ (_load_u32(buf, p) * _P1)
        h = _rotl(h, 23) * _P2 + _P3
        p += 4
    while p < end:
        h = h ^ (np.uint64(buf[p]) * _P5)
        h = _rotl(h, 11) * _P1
        p += 1
    h = h ^ (h >> np.uint64(33))
    h = h * _P2
    h = h ^ (h >> np.uint64(29))
    h = h * _P3
    h = h ^ (h >> np.uint64(32))
    return h


def as_u8(data, name: str = "data") -> np.ndarray:
    """View ``data`` (bytes-like or uint8 array) as a contiguous 1-D uint8 array.

    The result is always a read-only view (no copy unless ``data`` is not
    contiguous), so the read-only kernels are compiled for one array type
    whether the caller holds an arena (writable) or ``bytes`` (read-only).
    """
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise InvalidArgument(f"{name} must be a 1-D uint8 array, got {data.dtype}[{data.ndim}d]")
        return readonly(np.ascontiguousarray(data))
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            return readonly(np.frombuffer(data, dtype=np.uint8))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"{name}: {exc}") from None
    raise InvalidArgument(f"{name} must be bytes-like or a uint8 array, not {type(data).__name__}")


def readonly(arr: np.ndarray) -> np.ndarray:
    """A read-only view of ``arr`` (free: no copy)."""
    if arr.flags.writeable:
        arr = arr.view()
        arr.flags.writeable = False
    return arr


def xxh64(data, seed: int = 0) -> int:
    """XXH64 of ``data`` (bytes-like or 1-D uint8 array) as a Python int."""
    arr = as_u8(data)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= _U64_MASK:
        raise InvalidArgument(f"seed must be an int in [0, 2**64), got {seed!r}")
    return int(_xxh64(arr, 0, arr.shape[0], np.uint64(seed)))
