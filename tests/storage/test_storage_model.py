"""Random operation sequences: every backend must behave like a plain dict."""

from __future__ import annotations

import shutil
import tempfile
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shaledb.errors import ObjectNotFound, PreconditionFailed
from shaledb.storage import LocalStore, MemoryStore, S3Store

KEYS = ["a", "b", "c/1", "c/2", "c/3/x", "d.e"]
PREFIXES = ["", "c", "c/", "c/3", "d", "z"]

ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=20)),
    st.tuples(st.just("put_if_absent"), st.sampled_from(KEYS), st.binary(max_size=20)),
    st.tuples(st.just("cas_fresh"), st.sampled_from(KEYS), st.binary(max_size=20)),
    st.tuples(st.just("cas_stale"), st.sampled_from(KEYS), st.binary(max_size=20)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just(b"")),
    st.tuples(st.just("get"), st.sampled_from(KEYS), st.just(b"")),
    st.tuples(st.just("range"), st.sampled_from(KEYS), st.tuples(st.integers(0, 25), st.integers(0, 25))),
    st.tuples(st.just("list"), st.sampled_from(PREFIXES), st.just(b"")),
)


def run_against_model(store, seq):
    model: dict[str, bytes] = {}
    etags: dict[str, list[str]] = {}  # every etag a key ever had, newest last
    for op, key, arg in seq:
        if op == "put":
            etags.setdefault(key, []).append(store.put(key, arg).etag)
            model[key] = arg
        elif op == "put_if_absent":
            if key in model:
                with pytest.raises(PreconditionFailed):
                    store.put_if_absent(key, arg)
            else:
                etags.setdefault(key, []).append(store.put_if_absent(key, arg).etag)
                model[key] = arg
        elif op == "cas_fresh":
            if key in model:
                etags[key].append(store.put_if_match(key, arg, store.head(key).etag).etag)
                model[key] = arg
        elif op == "cas_stale":
            old = [e for e in etags.get(key, [])[:-1] if key not in model or e != store.head(key).etag]
            if old:
                with pytest.raises(PreconditionFailed):
                    store.put_if_match(key, arg, old[0])
        elif op == "delete":
            store.delete(key)
            model.pop(key, None)
        elif op == "get":
            if key in model:
                assert store.get(key) == model[key]
            else:
                with pytest.raises(ObjectNotFound):
                    store.get(key)
        elif op == "range":
            start, end = min(arg), max(arg)
            if key in model:
                assert store.get_range(key, start, end) == model[key][start:end]
        elif op == "list":
            got = [(m.key, m.size) for m in store.list(key)]
            assert got == sorted((k, len(v)) for k, v in model.items() if k.startswith(key))


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(seq=st.lists(ops, max_size=30))
def test_memory_matches_model(seq):
    run_against_model(MemoryStore(), seq)


@SETTINGS
@given(seq=st.lists(ops, max_size=30))
def test_local_matches_model(seq):
    root = tempfile.mkdtemp(prefix="shaledb-model-")
    try:
        run_against_model(LocalStore(root, fsync=False), seq)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.s3
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.lists(ops, max_size=20))
def test_s3_matches_model(moto_server, storage_bucket, seq):
    store = S3Store(storage_bucket, f"model/{uuid.uuid4().hex}", endpoint_url=moto_server.endpoint_url)
    try:
        run_against_model(store, seq)
    finally:
        store.close()
