"""Bulk loads on Dask (docs/bulk.md, "Dask"): ``bulk_load(url, data, ...)``.

Needs the ``dask`` extra (``pip install shaledb[dask]``: ``dask[dataframe]``
and ``distributed``); the engine itself never imports this package.  Every
import here is absolute, so ``import dask`` inside is the real Dask.
"""

from __future__ import annotations

from shaledb.dask.load import LoadReport, bulk_load

__all__ = ["LoadReport", "bulk_load"]
