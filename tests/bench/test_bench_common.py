"""Unit tests of the benchmark helpers (data, plans, checks, request-counting proxy).

No engine and no timing is involved.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

# `bench` lives at the repository root (not installed); `python -m pytest` has it on
# sys.path already, a bare `pytest` does not.
_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench._peers.base import ScanCheck, expected_digest  # noqa: E402
from bench.common import (  # noqa: E402
    Dataset,
    format_table,
    generate_dataset,
    latency_summary,
    load_dataset,
    op_plan,
    probe_local_write_bandwidth,
    probe_s3_put_bandwidth,
    read_indices,
)
from bench.plot import timeline_series  # noqa: E402


def _keys(ds: Dataset) -> list[bytes]:
    return [ds.key(i) for i in range(ds.n)]


@pytest.mark.parametrize("key_size", [1, 2, 7, 8, 16, 33])
def test_dataset_keys_unique_and_sized(key_size):
    n = 200 if key_size == 1 else 5000
    ds = generate_dataset(n, key_size=key_size, value_size=10, seed=3)
    keys = _keys(ds)
    assert len(set(keys)) == n
    assert all(len(k) == key_size for k in keys)
    assert all(len(ds.value(i)) == 10 for i in range(n))
    assert ds.payload_bytes == n * (key_size + 10)


def test_dataset_too_many_keys_for_key_size():
    with pytest.raises(ValueError):
        generate_dataset(300, key_size=1)


def test_dataset_deterministic_and_seed_dependent(tmp_path):
    a = generate_dataset(1000, seed=7)
    b = generate_dataset(1000, seed=7)
    c = generate_dataset(1000, seed=8)
    assert _keys(a) == _keys(b) and a.vals_data.tobytes() == b.vals_data.tobytes()
    assert _keys(a) != _keys(c)
    a.save(tmp_path)
    m = load_dataset(tmp_path)
    assert _keys(m) == _keys(a) and m.value(999) == a.value(999)


def test_dataset_key_order_is_not_insertion_order():
    keys = _keys(generate_dataset(1000, seed=1))
    assert keys != sorted(keys)


def test_pairs_and_bytes_lists_agree():
    ds = generate_dataset(100, key_size=16, value_size=5, seed=2)
    (kd, ko), (vd, vo) = ds.pairs(10, 20)
    assert ko[0] == 0 and vo[0] == 0 and len(ko) == len(vo) == 11
    assert ko.dtype == np.int64 and kd.dtype == np.uint8
    keys, vals = ds.bytes_lists(10, 20)
    assert keys == [kd[ko[i] : ko[i + 1]].tobytes() for i in range(10)]
    assert vals == [vd[vo[i] : vo[i + 1]].tobytes() for i in range(10)]
    assert keys == [ds.key(i) for i in range(10, 20)]


def test_plans_are_deterministic():
    p1, p2 = op_plan(5, 100, 30.0, 1000), op_plan(5, 100, 30.0, 1000)
    for _ in range(3):
        (a, ia), (b, ib) = next(p1), next(p2)
        assert (a == b).all() and (ia == ib).all()
        assert ia.min() >= 0 and ia.max() < 100
    is_put, _ = next(op_plan(5, 100, 30.0, 100_000))
    assert 0.28 < is_put.mean() < 0.32
    assert (read_indices(1, 50, 10) == read_indices(1, 50, 10)).all()


def test_scan_check_digest_is_order_independent():
    ds = generate_dataset(500, seed=4)
    pairs = sorted(zip(_keys(ds), [ds.value(i) for i in range(ds.n)]))
    chk = ScanCheck()
    for k, v in pairs:
        chk.add(k, v)
    assert chk.result() == {"in_order": True, "digest": expected_digest(ds, ds.n)}
    shuffled = ScanCheck()
    random.Random(0).shuffle(pairs)
    for k, v in pairs:
        shuffled.add(k, v)
    assert shuffled.digest == chk.digest and not shuffled.in_order
    wrong = ScanCheck()
    for k, v in pairs[1:]:
        wrong.add(k, v)
    assert wrong.digest != chk.digest


def test_latency_summary_and_table():
    s = latency_summary(list(range(1, 101)))
    assert s["count"] == 100 and s["max_ns"] == 100 and 50 <= s["p50_ns"] <= 51
    assert latency_summary([])["p50_ns"] is None
    text = format_table(["a", "b"], [["x", 1], ["yy", None]], "T")
    assert text.splitlines()[0] == "T" and "yy" in text and text.splitlines()[-1].endswith("-")


@pytest.mark.s3
def test_counting_proxy_counts_by_kind(moto_server, s3_bucket):
    import boto3

    from bench.s3count import CountingProxy, fetch_counts

    proxy = CountingProxy(moto_server.endpoint_url).start()
    try:
        c = boto3.client("s3", endpoint_url=proxy.endpoint_url)
        c.put_object(Bucket=s3_bucket, Key="a/1", Body=b"x" * 10_000)
        c.put_object(Bucket=s3_bucket, Key="a/2", Body=b"y", IfNoneMatch="*")
        assert c.get_object(Bucket=s3_bucket, Key="a/1", Range="bytes=0-9")["Body"].read() == b"x" * 10
        assert c.get_object(Bucket=s3_bucket, Key="a/2")["Body"].read() == b"y"
        assert c.head_object(Bucket=s3_bucket, Key="a/1")["ContentLength"] == 10_000
        assert c.list_objects_v2(Bucket=s3_bucket, Prefix="a/")["KeyCount"] == 2
        c.delete_object(Bucket=s3_bucket, Key="a/2")
        counts = fetch_counts(proxy.endpoint_url)
        assert counts == proxy.snapshot()
        assert counts == {"PUT": 1, "PUT_IF_ABSENT": 1, "GET_RANGE": 1, "GET": 1, "HEAD": 1, "LIST": 1, "DELETE": 1}
    finally:
        proxy.stop()


def test_local_write_probe_writes_fsyncs_and_leaves_nothing(tmp_path):
    r = probe_local_write_bandwidth(tmp_path, 3 << 20)
    assert r["bytes"] == 3 << 20 and r["seconds"] > 0 and r["mb_per_s"] > 0
    assert "fsync" in r["method"] and "median of 3" in r["method"]
    assert len(r["runs_mb_per_s"]) == 3 and r["mb_per_s"] == sorted(r["runs_mb_per_s"])[1]
    assert list(tmp_path.iterdir()) == []


def test_s3_put_probe_puts_8mib_objects_and_deletes_them(moto_server, s3_bucket):
    import boto3

    r = probe_s3_put_bandwidth(s3_bucket, "p", moto_server.endpoint_url, 16 << 20, threads=2)
    assert r["bytes"] == 16 << 20 and r["mb_per_s"] > 0
    assert r["method"].startswith("2 PUTs of 8 MiB")
    listed = boto3.client("s3", endpoint_url=moto_server.endpoint_url).list_objects_v2(Bucket=s3_bucket, Prefix="p/")
    assert listed["KeyCount"] == 0


def test_timeline_series_rates_cuts_and_spans():
    samples = [
        {"t": 0.0, "phase": "prefill", "records": 0, "l0": 0},
        {"t": 1.0, "phase": "prefill", "records": 1000, "l0": 1},
        {"t": 2.0, "phase": "flush", "records": 1500, "l0": 2},
        {"t": 12.0, "phase": "compact", "records": None, "l0": 0, "sorted_runs": 1},  # 10 s of other phases
        {"t": 13.0, "phase": "compact", "records": None, "l0": 0, "sorted_runs": 1},
    ]
    d = timeline_series(samples)
    assert d["rate"] == [None, 1000.0, 500.0, None, None]
    # the 10 s between flush and compact are cut to 1 s
    assert d["x"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert d["cuts"] == [2.5]
    assert d["spans"] == [("prefill", 0.0, 1.0), ("flush", 1.0, 2.0), ("compact", 2.5, 4.0)]
    assert d["l0"] == [0, 1, 2, 0, 0] and d["sorted_runs"] == [None, None, None, 1, 1]
