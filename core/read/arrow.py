"""Arrow interop (the optional ``shaledb[arrow]`` extra): batches to a
``pyarrow.Table`` and pyarrow binary arrays to packed ``(data, offsets)``.

pyarrow is imported only inside these functions, when the user asks for
Arrow; ``import shaledb`` and every other call leave it unloaded.

* ``table_from_batches(batches)``: scan batches (``shaledb.read.scan``) as
  a Table with ``large_binary`` columns ``key`` and ``value``, one record
  batch per scan batch; the Arrow buffers are the numpy arrays themselves
  (int64 offsets are Arrow's large_binary layout: nothing is copied).
* ``is_arrow(x)`` / ``packed_from_arrow(x, what)``: a pyarrow ``binary``,
  ``large_binary``, ``string`` or ``large_string`` Array (or ChunkedArray)
  as ``(uint8 data, int64 offsets)`` for ``put_many``: the data buffer is
  used in place; int32 offsets are widened (one small copy).  Nulls are
  refused.
"""

from __future__ import annotations

import numpy as np

from shaledb.errors import InvalidArgument

__all__ = ["is_arrow", "packed_from_arrow", "table_from_batches"]


def _pa():
    try:
        import pyarrow
    except ImportError:
        raise InvalidArgument(
            "Arrow support needs pyarrow: pip install 'shaledb[arrow]' (or pip install pyarrow)"
        ) from None
    return pyarrow


def table_from_batches(batches):
    pa = _pa()
    schema = pa.schema([("key", pa.large_binary()), ("value", pa.large_binary())])
    out = []
    for kd, ko, vd, vo in batches:
        n = len(ko) - 1
        keys = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(ko), pa.py_buffer(kd)])
        values = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(vo), pa.py_buffer(vd)])
        out.append(pa.RecordBatch.from_arrays([keys, values], schema=schema))
    return pa.Table.from_batches(out, schema=schema)


def is_arrow(x) -> bool:
    """Whether ``x`` is a pyarrow Array or ChunkedArray (pyarrow not imported)."""
    return type(x).__module__.startswith("pyarrow") and hasattr(x, "type") and hasattr(x, "null_count")


def packed_from_arrow(x, what: str) -> tuple[np.ndarray, np.ndarray]:
    pa = _pa()
    if isinstance(x, pa.ChunkedArray):
        x = x.combine_chunks() if x.num_chunks != 1 else x.chunk(0)
    if not isinstance(x, pa.Array):
        raise InvalidArgument(f"{what}: expected a pyarrow Array, got {type(x).__name__}")
    t = x.type
    if pa.types.is_binary(t) or pa.types.is_string(t):
        odt = np.int32
    elif pa.types.is_large_binary(t) or pa.types.is_large_string(t):
        odt = np.int64
    else:
        raise InvalidArgument(f"{what}: a pyarrow array of binary or string type is needed, got {t}")
    if x.null_count:
        raise InvalidArgument(f"{what}: the pyarrow array holds {x.null_count} null(s); nulls cannot be stored")
    n = len(x)
    _validity, obuf, dbuf = x.buffers()
    offs = np.frombuffer(obuf, dtype=odt)[x.offset : x.offset + n + 1].astype(np.int64, copy=False)
    data = np.frombuffer(dbuf, dtype=np.uint8) if dbuf is not None else np.empty(0, dtype=np.uint8)
    return data, offs
