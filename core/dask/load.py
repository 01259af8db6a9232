"""``bulk_load``: a bulk load run as a Dask graph (docs/bulk.md, "Dask").

The graph, for ``I`` input partitions and ``P`` output partitions::

    input i --> sample i --(to the client: a few hundred keys each)--> P-1 key boundaries
    input i --> split i  (rows into P buckets by key range, input order kept)
    bucket (0..I-1, p) --> write p  (one SstWriter: sort, spill, encode, upload)
    write 0..P-1 --(descriptors only)--> client: one db.ingest

Rows move between workers only (Dask's task graph is the shuffle); the client
sees samples and descriptors, never the data.  A write task concatenates its
buckets in input-partition order, each in row order, so "the last by input
order wins" holds across the shuffle.  Object names are fixed by (load id,
partition, attempt 0), and a task's output bytes by its input, so a retried
or speculative task writes the same objects again and the single ingest at
the end lists each once.

A column travels as a 2-D uint8 array (fixed width) or a 1-D object array of
bytes: both take NumPy fancy indexing.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

import numpy as np

from shaledb.bulk import SstWriter, new_load_id
from shaledb.errors import InvalidArgument

__all__ = ["LoadReport", "bulk_load"]

_SAMPLES_PER_PARTITION = 256


@dataclass(frozen=True)
class LoadReport:
    """What :func:`bulk_load` did: the load id, the partitions written, the
    SSTs, records and bytes ingested and the ingest's answer (``seq``,
    ``run_id``, ``manifest_id``)."""

    load_id: str
    partitions: int
    ssts: int
    records: int
    bytes: int
    ingest: dict


# ----------------------------------------------------------------- columns


def _bytes_column(values) -> np.ndarray:
    """A 1-D object array of bytes (str encoded as UTF-8)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if isinstance(v, str):
            v = v.encode("utf-8")
        elif isinstance(v, (bytearray, memoryview)):
            v = bytes(v)
        elif not isinstance(v, bytes):
            raise InvalidArgument(f"keys and values must be bytes or str, got {type(v).__name__}")
        out[i] = v
    return out


def _frame_part(df, key: str, value: str):
    return _bytes_column(df[key].tolist()), _bytes_column(df[value].tolist())


def _bag_part(items):
    items = list(items)
    return _bytes_column([k for k, _ in items]), _bytes_column([v for _, v in items])


def _array_part(block, key: slice, value: slice):
    block = np.asarray(block)
    if block.dtype != np.uint8 or block.ndim != 2:
        raise InvalidArgument(f"a dask array of records must be 2-D uint8, got {block.dtype}[{block.ndim}d]")
    return np.ascontiguousarray(block[:, key]), np.ascontiguousarray(block[:, value])


def _as_s(col: np.ndarray) -> np.ndarray:
    """Keys as a NumPy ``S`` array (orders like bytes except that trailing
    NULs compare equal; :func:`_buckets` repairs those ties)."""
    if col.dtype == object:
        return col.astype(bytes) if len(col) else np.zeros(0, "S1")
    return col.view(f"S{col.shape[1]}").ravel()


def _key(col: np.ndarray, i: int) -> bytes:
    return col[i] if col.dtype == object else col[i].tobytes()


# ------------------------------------------------------------------- tasks


def _sample(part, seed: int) -> list[bytes]:
    keys, _ = part
    n = len(keys)
    rng = random.Random(seed)
    idx = range(n) if n <= _SAMPLES_PER_PARTITION else rng.sample(range(n), _SAMPLES_PER_PARTITION)
    return [_key(keys, i) for i in idx]


def _buckets(keys: np.ndarray, bounds: list[bytes]) -> np.ndarray:
    """Bucket of each key: how many boundaries are <= it (bytewise)."""
    if not bounds:
        return np.zeros(len(keys), dtype=np.int64)
    sk = _as_s(keys)
    sb = np.array(bounds, dtype=f"S{max(len(b) for b in bounds)}")
    b = np.searchsorted(sb, sk, side="right").astype(np.int64)
    # S comparison ignores trailing NULs: redo the keys equal (as S) to a boundary
    tie = np.flatnonzero((b > 0) & (sk == sb[np.maximum(b - 1, 0)]))
    for i in tie:
        b[i] = bisect.bisect_right(bounds, _key(keys, int(i)))
    return b


def _split(part, bounds: list[bytes]) -> list:
    """The rows of one input partition in ``len(bounds) + 1`` buckets, each
    ``(keys, values)`` in input order."""
    keys, values = part
    b = _buckets(keys, bounds)
    order = np.argsort(b, kind="stable")
    edges = np.searchsorted(b[order], np.arange(len(bounds) + 2))
    return [(keys[order[lo:hi]], values[order[lo:hi]]) for lo, hi in zip(edges[:-1], edges[1:])]


def _pick(buckets: list, p: int):
    return buckets[p]


def _write(url, store_options, load_id: str, p: int, writer_options: dict, *buckets) -> list:
    """Output partition ``p``: its buckets from every input partition, in order."""
    with SstWriter(url, store_options=store_options, load_id=load_id, partition=p, attempt=0,
                   **writer_options) as w:
        for keys, values in buckets:
            if len(keys):
                w.add(_col_arg(keys), _col_arg(values))
        return w.finish()


def _col_arg(col: np.ndarray):
    return col.tolist() if col.dtype == object else col


# -------------------------------------------------------------------- API


def _parts(data, key, value):
    """``data`` as delayed ``(keys, values)`` parts."""
    import dask
    import dask.array as da
    import dask.bag as db
    import dask.dataframe as dd

    if isinstance(data, dd.DataFrame):
        for c in (key, value):
            if c not in data.columns:
                raise InvalidArgument(f"the dataframe has no column {c!r} (columns: {list(data.columns)})")
        return [dask.delayed(_frame_part)(d, key, value) for d in data.to_delayed()]
    if isinstance(data, db.Bag):
        return [dask.delayed(_bag_part)(d) for d in data.to_delayed()]
    if isinstance(data, da.Array):
        if data.ndim != 2:
            raise InvalidArgument("a dask array of records must be 2-D (one row per record)")
        if not (isinstance(key, slice) and isinstance(value, slice)):
            raise InvalidArgument("for a dask array, key= and value= are column slices of each record, e.g. "
                                  "key=slice(0, 16), value=slice(16, 116)")
        blocks = data.rechunk({1: -1}).to_delayed()[:, 0]
        return [dask.delayed(_array_part)(b, key, value) for b in blocks]
    raise InvalidArgument(
        f"bulk_load takes a dask DataFrame, a dask Bag of (key, value) pairs or a 2-D dask array, "
        f"got {type(data).__name__}"
    )


def _boundaries(samples: list[list[bytes]], partitions: int) -> list[bytes]:
    keys = sorted(set(k for s in samples for k in s))
    if not keys:
        return []
    cuts = [keys[len(keys) * j // partitions] for j in range(1, partitions)]
    return sorted(set(cuts) - {keys[0]})


def _compute(tasks, client, retries: int):
    if client is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            client = None
    if client is None:
        import dask

        return list(dask.compute(*tasks))
    return client.gather(client.compute(list(tasks), retries=retries))


def bulk_load(
    url,
    data,
    *,
    key="key",
    value="value",
    partitions: int | None = None,
    db=None,
    store_options: dict | None = None,
    db_options: dict | None = None,
    load_id: str | None = None,
    client=None,
    retries: int = 2,
    verify: str = "tail",
    **writer_options,
) -> LoadReport:
    """Load ``data`` into the database at ``url`` on Dask and ingest it once.

    ``data``: a ``dask.dataframe.DataFrame`` (``key``/``value`` name binary
    or string columns), a ``dask.bag.Bag`` of ``(key, value)`` pairs, or a
    2-D uint8 ``dask.array`` of fixed-size records (``key``/``value`` are
    column slices).  ``partitions``: output key ranges (default: as many as
    input partitions).  ``db``: an open Db of ``url`` to ingest through
    (default: open one here with ``db_options``, which fences any other
    writer of ``url``).  ``client``: a ``distributed.Client`` (default: the
    current one, else Dask's local scheduler); ``retries`` per task.
    ``writer_options`` go to every :class:`~shaledb.bulk.SstWriter`
    (``memory_bytes``, ``sst_target_bytes``, ``on_duplicate``, ...).  On
    any failure nothing is ingested (uploads are left to GC).
    """
    import dask

    if partitions is not None and (isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1):
        raise InvalidArgument(f"partitions must be an int >= 1, got {partitions!r}")
    if isinstance(url, str) is False:
        raise InvalidArgument("bulk_load needs the database url (workers open the store themselves)")
    load_id = load_id or new_load_id()
    parts = _parts(data, key, value)
    if not parts:
        raise InvalidArgument("bulk_load got no input partitions")
    n_out = partitions or len(parts)
    samples = _compute([dask.delayed(_sample)(p, i) for i, p in enumerate(parts)], client, retries)
    bounds = _boundaries(samples, n_out)
    n_out = len(bounds) + 1
    splits = [dask.delayed(_split, nout=None)(p, bounds) for p in parts]
    writes = [
        dask.delayed(_write)(url, store_options, load_id, p, writer_options,
                             *[dask.delayed(_pick)(s, p) for s in splits])
        for p in range(n_out)
    ]
    results = _compute(writes, client, retries)
    descs = [d for r in results for d in r]
    if not descs:
        raise InvalidArgument("bulk_load: the input holds no records")
    if db is not None:
        out = db.ingest(descs, verify=verify)
    else:
        import shaledb

        opts = dict(db_options or {})
        if store_options:
            opts.setdefault("store_options", store_options)
        with shaledb.open(url, **opts) as own:
            out = own.ingest(descs, verify=verify)
    return LoadReport(load_id, n_out, len(descs), sum(d.num_entries for d in descs), sum(d.size for d in descs), out)
