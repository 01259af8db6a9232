"""Memory primitives every kernel uses: fixed-width loads and stores, memcpy,
prefetch, and the array views the wrappers hand to kernels.

* ``load_u32`` / ``load_u64`` (little-endian, as uint64), ``load_u64_be``,
  ``store_u32`` / ``store_u64``: one unaligned access each (LLVM intrinsics);
* ``memcpy(dst, dst_off, src, src_off, n)`` on 1-D uint8 arrays;
* ``prefetch(buf, pos)``: a cache hint that never faults, even out of bounds.

None of them checks bounds.  REQUIRES: the caller has checked every range.
With ``NUMBA_DISABLE_JIT=1`` each has a plain-Python twin of the same meaning.
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import InvalidArgument
from shaledb.kernels._jit import kernel  # noqa: F401  (first: it settles numba's cache directory)

from numba.core import config  # noqa: E402,I001

__all__ = [
    "as_u8",
    "load_u32",
    "load_u64",
    "load_u64_be",
    "memcpy",
    "prefetch",
    "readonly",
    "store_u32",
    "store_u64",
    "unowned",
]


if config.DISABLE_JIT:  # the kernels run as plain Python

    def _load_le(buf, p, n):
        x = np.uint64(0)
        for j in range(n - 1, -1, -1):
            x = (x << np.uint64(8)) | np.uint64(buf[p + j])
        return x

    def load_u64(buf, p):
        """Little-endian u64 at ``buf[p:p+8]``."""
        return _load_le(buf, p, 8)

    def load_u32(buf, p):
        """Little-endian u32 at ``buf[p:p+4]``, as uint64."""
        return _load_le(buf, p, 4)

    def load_u64_be(buf, p):
        """Big-endian u64 at ``buf[p:p+8]``."""
        x = np.uint64(0)
        for j in range(8):
            x = (x << np.uint64(8)) | np.uint64(buf[p + j])
        return x

    def _store_le(buf, p, v, n):
        v = int(v)
        for j in range(n):
            buf[p + j] = (v >> (8 * j)) & 0xFF

    def store_u64(buf, p, v):
        """Store ``v`` little-endian at ``buf[p:p+8]``."""
        _store_le(buf, p, v, 8)

    def store_u32(buf, p, v):
        """Store the low 32 bits of ``v`` little-endian at ``buf[p:p+4]``."""
        _store_le(buf, p, v, 4)

    def memcpy(dst, dst_off, src, src_off, n):
        """``dst[dst_off:dst_off+n] = src[src_off:src_off+n]``."""
        dst[dst_off : dst_off + n] = src[src_off : src_off + n]

    def prefetch(buf, pos):
        """A cache hint: nothing to do without jit."""

    def unowned(arr):
        """The array itself (see the jitted version)."""
        return arr

else:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    def _gep_i8(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(arr.data, [args[1]])
        return builder.bitcast(ptr, ir.IntType(8).as_pointer())

    def _unaligned_load(builder, ptr8, bits):
        ity = ir.IntType(bits)
        return builder.load(builder.bitcast(ptr8, ity.as_pointer()), align=1)

    def _load_intrinsic(name, bits, bswap, doc):
        """An intrinsic ``(buf, p) -> uint64``: one unaligned load of ``bits``."""

        def load(typingctx, buf, p):
            if not isinstance(buf, types.Array):
                return None

            def codegen(context, builder, signature, args):
                val = _unaligned_load(builder, _gep_i8(context, builder, signature, args), bits)
                if bswap:
                    fn = builder.module.declare_intrinsic("llvm.bswap", [ir.IntType(bits)])
                    val = builder.call(fn, [val])
                if bits < 64:
                    val = builder.zext(val, ir.IntType(64))
                return val

            return types.uint64(buf, types.int64), codegen

        load.__name__ = load.__qualname__ = name
        load.__doc__ = doc
        return intrinsic(load)

    def _store_intrinsic(name, bits, doc):
        """An intrinsic ``(buf, p, v)``: one unaligned store of the low ``bits`` of ``v``."""

        def store(typingctx, buf, p, v):
            if not isinstance(buf, types.Array) or not isinstance(v, types.Integer):
                return None

            def codegen(context, builder, signature, args):
                ptr8 = _gep_i8(context, builder, signature, args)
                ity = ir.IntType(bits)
                val = context.cast(builder, args[2], signature.args[2], types.uint64)
                if bits < 64:
                    val = builder.trunc(val, ity)
                builder.store(val, builder.bitcast(ptr8, ity.as_pointer()), align=1)
                return context.get_dummy_value()

            return types.void(buf, types.int64, v), codegen

        store.__name__ = store.__qualname__ = name
        store.__doc__ = doc
        return intrinsic(store)

    load_u64 = _load_intrinsic("load_u64", 64, False, "Little-endian u64 at ``buf[p:p+8]`` (one unaligned load).")
    load_u32 = _load_intrinsic("load_u32", 32, False, "Little-endian u32 at ``buf[p:p+4]`` as uint64 (one unaligned load).")
    load_u64_be = _load_intrinsic("load_u64_be", 64, True, "Big-endian u64 at ``buf[p:p+8]`` (unaligned load + byte swap).")
    store_u64 = _store_intrinsic("store_u64", 64, "Store ``v`` (as uint64) little-endian at ``buf[p:p+8]``.")
    store_u32 = _store_intrinsic("store_u32", 32, "Store the low 32 bits of ``v`` little-endian at ``buf[p:p+4]``.")

    @intrinsic
    def memcpy(typingctx, dst, dst_off, src, src_off, n):
        """memcpy(dst + dst_off, src + src_off, n) on 1-D uint8 arrays.

        REQUIRES: the ranges are in bounds and do not overlap (callers check).
        """
        sig = types.void(dst, types.intp, src, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            d, doff, s, soff, nbytes = args
            darr = context.make_array(signature.args[0])(context, builder, d)
            sarr = context.make_array(signature.args[2])(context, builder, s)
            dptr = builder.gep(darr.data, [doff])
            sptr = builder.gep(sarr.data, [soff])
            cgutils.raw_memcpy(builder, dptr, sptr, nbytes, 1)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def prefetch(typingctx, buf, pos):
        """Hint the CPU to load the cache line of ``buf[pos]`` (never faults).

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


if not config.DISABLE_JIT:
    from numba import carray

    from shaledb.kernels._jit import inline_kernel

    @intrinsic
    def _data_ptr(typingctx, arr):
        """A C-contiguous array's data pointer, typed by its dtype (an array
        not typed C-contiguous does not compile: its view would be wrong)."""
        if not isinstance(arr, types.Array) or arr.layout != "C":
            return None

        def codegen(context, builder, signature, args):
            return context.make_array(signature.args[0])(context, builder, args[0]).data

        return types.CPointer(arr.dtype)(arr), codegen

    @inline_kernel
    def unowned(arr):
        """``arr`` (C-contiguous) viewed through its data pointer: a view with
        no owner, so the helpers it is passed to do no atomic reference
        counting (numba increments and decrements an owned array's count on
        every call that takes it: a tenth of a sort's time was those atomic
        operations).  REQUIRES: the caller keeps ``arr`` alive while the view
        is used; the view is writable whatever ``arr`` is."""
        return carray(_data_ptr(arr), arr.shape)


def readonly(arr: np.ndarray) -> np.ndarray:
    """A read-only view of ``arr`` (free: no copy)."""
    if arr.flags.writeable:
        arr = arr.view()
        arr.flags.writeable = False
    return arr


def as_u8(data, name: str = "data") -> np.ndarray:
    """View ``data`` (bytes-like or uint8 array) as a read-only contiguous 1-D uint8 array.

    No copy unless ``data`` is not contiguous; read-only always, so the kernels
    are compiled for one array type whether the caller holds an arena
    (writable) or ``bytes`` (read-only).
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
