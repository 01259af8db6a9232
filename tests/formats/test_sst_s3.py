"""SST and WAL objects round trip through S3 (a moto server over HTTP)."""

from __future__ import annotations

import pytest
from formats_testlib import golden_records, ids, model_get, run_arrays
from reference.block import read_run

from shaledb.sst.block_cache import BlockCache
from shaledb.format.keys import sst_key
from shaledb.sst.reader import SstReader
from shaledb.sst.writer import build_ssts
from shaledb.format.wal import decode_wal, encode_wal


@pytest.mark.s3
def test_sst_and_wal_round_trip_on_s3(moto_server, s3_bucket):
    from shaledb.format.keys import wal_key
    from shaledb.storage import open_store

    store = open_store(f"s3://{s3_bucket}/db", endpoint_url=moto_server.endpoint_url)
    recs = golden_records(3000)
    ssts = build_ssts(*run_arrays(recs), target_bytes=60_000, block_size=2048, compression="zstd", new_id=ids())
    out = []
    for sid, data, info in ssts:
        store.put(sst_key(sid), data)
        r = SstReader(store, sst_key(sid), block_cache=BlockCache(1 << 20))
        assert r.info == info
        for buf, offs in r.iter_range():
            out += read_run(buf, offs)
        assert r.get(info.last_key) == model_get(recs, info.last_key)
    assert out == recs
    store.put(wal_key(1), encode_wal(*run_arrays(recs[:100])))
    assert read_run(*decode_wal(store.get(wal_key(1)), wal_key(1))) == recs[:100]
