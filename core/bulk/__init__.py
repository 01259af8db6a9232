"""Bulk loads: build SSTs in any process, ingest them atomically (docs/bulk.md).

``SstWriter(url, ...)`` sorts, encodes and uploads one key-range partition
and returns picklable ``SstDescriptor`` s; ``Db.ingest(descriptors)`` makes
them visible in one fenced manifest update, as a sorted run newer than
everything before.  ``new_load_id()`` names a load (and sets how long GC
leaves its uploads alone).  ``shaledb.dask.bulk_load`` runs a load on Dask.
"""

from __future__ import annotations

from shaledb.bulk.descriptor import SstDescriptor
from shaledb.bulk.ids import DEFAULT_LEASE, bulk_sst_id, lease_end_ms, new_load_id
from shaledb.bulk.ingest import check_descriptors, prepare_ingest, verify_descriptor
from shaledb.bulk.writer import SstWriter

__all__ = [
    "DEFAULT_LEASE",
    "SstDescriptor",
    "SstWriter",
    "bulk_sst_id",
    "check_descriptors",
    "lease_end_ms",
    "new_load_id",
    "prepare_ingest",
    "verify_descriptor",
]
