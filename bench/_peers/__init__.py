"""Engine adapters for ``bench.ingest``: one module per engine, one driver.

``python -m bench._peers.driver SPEC RESULT`` runs every phase against one
engine in its own process (so its memory is measured on its own) and writes
the figures to RESULT as JSON.  Adapters:

* :mod:`bench._peers.shaledb_peer`  - ShaleDB (``shaledb.open``, ``put_many``
  of numpy pairs, ``db.writer()`` handles in writer processes)
* :mod:`bench._peers.rocksdict_peer` - RocksDB through ``rocksdict``
* :mod:`bench._peers.slatedb_peer`  - SlateDB through its ``slatedb`` binding
"""

ENGINES = ("shaledb", "rocksdict", "slatedb")
PEERS = ("slatedb", "rocksdict")


def adapter_class(engine: str):
    if engine == "shaledb":
        from bench._peers.shaledb_peer import ShaleDBAdapter

        return ShaleDBAdapter
    if engine == "rocksdict":
        from bench._peers.rocksdict_peer import RocksdictAdapter

        return RocksdictAdapter
    if engine == "slatedb":
        from bench._peers.slatedb_peer import SlateDBAdapter

        return SlateDBAdapter
    raise ValueError(f"unknown engine {engine!r}")
