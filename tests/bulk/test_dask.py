"""shaledb.dask.bulk_load on a distributed LocalCluster (2 worker processes):
a load equals a dict, duplicates resolve by input order, a task that fails
once is retried into a correct load, a load that fails for good changes
nothing visible (docs/bulk.md, "Dask")."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import dask.bag as dbag  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402

from shaledb.dask import bulk_load  # noqa: E402

from bulk_util import open_db, scan_all  # noqa: E402

# distributed's own start-up/shutdown chatter must not fail the run
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning",
                                        "ignore::UserWarning", "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def client(moto_server):  # first: the workers inherit the S3 test credentials from the environment
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                       worker_dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close(timeout=30)
        cluster.close(timeout=30)


def test_dataframe_load_equals_a_dict_and_duplicates_resolve_by_input_order(tmp_path, client):
    root = str(tmp_path / "db")
    n = 200_000
    keys = [b"k%09d" % ((i * 7919) % 150_000) for i in range(n)]  # 50k keys appear twice
    values = [b"v%d" % i for i in range(n)]
    model = dict(zip(keys, values))  # the last by input order wins
    with open_db(root, compactor=False) as db:
        db.put(b"k000000003", b"older")
        pdf = pd.DataFrame({"key": keys, "value": values})
        rep = bulk_load(root, dd.from_pandas(pdf, npartitions=6), db=db, partitions=4, client=client,
                        sst_target_bytes=256 << 10)
        assert rep.partitions == 4 and rep.records == len(model)
        assert scan_all(db) == model
    with open_db(root, compactor=False) as db:  # durable
        assert db.get(b"k000000003") == model[b"k000000003"]
        assert len(scan_all(db)) == len(model)


def test_string_columns_and_duplicate_error(tmp_path, client):
    root = str(tmp_path / "db")
    with open_db(root, compactor=False) as db:
        pdf = pd.DataFrame({"k": ["a", "b", "c", "é"], "v": ["1", "2", "3", "4"]})
        bulk_load(root, dd.from_pandas(pdf, npartitions=2), key="k", value="v", db=db, client=client)
        assert scan_all(db) == {b"a": b"1", b"b": b"2", b"c": b"3", "é".encode(): b"4"}
        dup = dbag.from_sequence([(b"x", b"1"), (b"y", b"2"), (b"x", b"3")], npartitions=2)
        with pytest.raises(Exception, match="duplicate key"):
            bulk_load(root, dup, db=db, client=client, on_duplicate="error", retries=0)
        assert db.get(b"x") is None


def test_a_task_that_fails_once_is_retried(tmp_path, client):
    root = str(tmp_path / "db")
    marker = str(tmp_path / "failed-once")

    def flaky(pair):  # a local function: pickled by value, so the workers need no test module
        if pair[0] == b"p00500" and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected: fails once")
        return pair

    pairs = [(b"p%05d" % i, b"v%05d" % i) for i in range(3000)]
    with open_db(root, compactor=False) as db:
        bulk_load(root, dbag.from_sequence(pairs, npartitions=4).map(flaky), db=db, client=client, retries=2)
        assert os.path.exists(marker)
        assert scan_all(db) == dict(pairs)


def test_a_load_that_fails_for_good_changes_nothing(tmp_path, client):
    root = str(tmp_path / "db")

    def broken(pair):
        if pair[0] == b"p02500":
            raise RuntimeError("injected: always fails")
        return pair

    pairs = [(b"p%05d" % i, b"v") for i in range(3000)]
    with open_db(root, compactor=False) as db:
        db.put(b"p00001", b"before")
        with pytest.raises(RuntimeError, match="always fails"):
            bulk_load(root, dbag.from_sequence(pairs, npartitions=4).map(broken), db=db, client=client, retries=1)
        assert scan_all(db) == {b"p00001": b"before"}


@pytest.mark.s3
def test_load_into_s3(moto_server, s3_bucket, client):
    url = f"s3://{s3_bucket}/db"
    so = {"endpoint_url": moto_server.endpoint_url}
    pairs = [(b"s%06d" % i, b"v%06d" % i) for i in range(5_000)]
    with open_db(url, compactor=False, store_options=so) as db:
        rep = bulk_load(url, dbag.from_sequence(pairs, npartitions=4), db=db, client=client, store_options=so)
        assert rep.records == len(pairs)
        assert scan_all(db) == dict(pairs)
