"""The ``shaledb`` command, run as a real subprocess (``python -m shaledb``)
against one small local database and one small S3 (moto) database per module.

Damage tests corrupt a copy (local) or a chosen object (S3) at a chosen
offset, like LevelDB's corruption_test: verify must exit 1 naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

import shaledb
from shaledb.format.keys import manifest_key, parse_manifest_key, parse_wal_key, wal_key
from shaledb.storage import open_store

TIMEOUT = 120  # seconds per command; every subprocess is bounded

_BUILD = r"""
import sys, shaledb
url, endpoint = sys.argv[1], sys.argv[2]
# compactor=False: the tests check the shape the writer left (L0, compactor epoch 0) and run `compact` themselves
opts = dict(arena_bytes=1 << 20, l0_sst_bytes=1 << 14, flush_interval=0.02, compactor=False)
if endpoint:
    opts["store_options"] = {"endpoint_url": endpoint}
with shaledb.open(url, **opts) as db:
    for i in range(1500):
        db.put(b"key%05d" % i, b"value-%d" % i, await_durable=False)
    db.flush(memtable=True)
    for i in range(40):
        db.put(b"tail%03d" % i, b"t")
    db.delete(b"key00007")
"""


def run(*args, check_rc: int | None = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m shaledb ARGS``; asserts the exit code (unless None) and that
    no traceback reached stderr."""
    p = subprocess.run(
        [sys.executable, "-m", "shaledb", *map(str, args)],
        capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in p.stderr, p.stderr
    if check_rc is not None:
        assert p.returncode == check_rc, f"rc {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def run_json(*args, **kw):
    return json.loads(run(*args, "--json", **kw).stdout)


def build(url: str, endpoint: str = "") -> None:
    subprocess.run([sys.executable, "-c", _BUILD, url, endpoint], check=True, timeout=TIMEOUT)


def flip(store, key: str, offset: int) -> None:
    """Invert one byte of ``key`` (a negative offset counts from the end)."""
    data = bytearray(store.get(key))
    data[offset] ^= 0xFF
    store.put(key, bytes(data))


def add_replay_wal(store) -> str:
    """Leave a WAL object after the replay point, as a writer that crashed
    after a WAL upload would: a copy of the newest non-empty WAL object at
    the next free id.  Returns its key."""
    ids = sorted(i for i in (parse_wal_key(m.key) for m in store.list("wal/")) if i is not None)
    src = next(i for i in reversed(ids) if store.head(wal_key(i)).size > 0)
    key = wal_key(ids[-1] + 1)
    store.put(key, store.get(wal_key(src)))
    return key


def latest_manifest_key(store) -> str:
    return manifest_key(max(i for i in (parse_manifest_key(m.key) for m in store.list("manifest/")) if i))


def one_line_error(p) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shaledb"), p.stderr
    return lines[0]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def local_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "db")
    build(path)
    return path


@pytest.fixture
def local_copy(local_db, tmp_path) -> str:
    dst = str(tmp_path / "copy")
    shutil.copytree(local_db, dst)
    return dst


@pytest.fixture(scope="module")
def s3_db(moto_server):
    bucket = "cli-" + uuid.uuid4().hex[:16]
    moto_server.create_bucket(bucket)
    url = f"s3://{bucket}/db"
    build(url, moto_server.endpoint_url)
    return url, moto_server.endpoint_url


# ------------------------------------------------------------ local: reading


def test_info_reports_shape_and_totals(local_db):
    d = run_json("info", local_db)
    assert d["format_version"] == 1 and d["writer_epoch"] == 1 and d["compactor_epoch"] == 0
    assert d["l0"]["count"] >= 2 and d["l0"]["first_key"] == "key00000" and d["l0"]["last_key"] == "tail039"
    assert d["sorted_runs"] == [] and d["checkpoints"] == []
    n, b = d["l0"]["count"], d["compaction_backlog"]  # size-tiered: one job of the oldest <= 8 once L0 has 4
    assert b["jobs"] == (n >= 4) and b["sources"] == (min(n, 8) if n >= 4 else 0)
    assert 0 < b["bytes"] <= d["l0"]["bytes"] if n >= 4 else b["bytes"] == 0
    ls = run_json("ls", local_db)
    assert d["store"]["objects"] == len(ls)
    assert d["store"]["bytes"] == sum(r["size"] for r in ls)
    assert d["store"]["by_kind"]["sst"]["objects"] == d["l0"]["count"]
    text = run("info", local_db).stdout
    assert f"manifest id      {d['manifest_id']}" in text


def test_manifest_latest_and_by_id(local_db):
    m = run_json("manifest", local_db)
    assert m["manifest_id"] == run_json("info", local_db)["manifest_id"]
    assert m["last_l0_seq"] == 1541  # 1500 puts, 40 puts, 1 delete
    assert "key00000" in {s["first_key"] for s in m["l0"]} and "tail039" in {s["last_key"] for s in m["l0"]}
    first = json.loads(run("manifest", local_db, "--id", 1).stdout)
    assert first["manifest_id"] == 1 and first["l0"] == []
    p = run("manifest", local_db, "--id", 10**6, check_rc=2)
    assert "does not exist" in one_line_error(p)


def test_ls_by_kind(local_db):
    rows = run_json("ls", local_db, "--kind", "sst")
    assert rows and all(r["kind"] == "sst" and r["key"].startswith("compacted/") and r["size"] > 0 for r in rows)
    assert all(r["age_seconds"] >= 0 for r in rows)
    kinds = {r["kind"] for r in run_json("ls", local_db)}
    assert kinds == {"wal", "sst", "manifest"}


def test_sst_dump_file_and_store_key(local_db):
    m = run_json("manifest", local_db)
    sst = next(s for s in m["l0"] if s["first_key"] == "key00000")
    key = f"compacted/{sst['sst_id']}.sst"
    by_key = run_json("sst", "dump", local_db, key)
    by_file = run_json("sst", "dump", os.path.join(local_db, key))
    assert by_file.pop("object") == os.path.join(local_db, key) and by_key.pop("object") == key
    assert by_key == by_file
    assert by_key["sst_id"] == sst["sst_id"] and by_key["num_entries"] == sst["num_entries"] == len(by_key["records"])
    assert by_key["blocks"] and by_key["blocks"][-1]["index_key"] == sst["last_key"]
    assert by_key["records"][0] == {"key": "key00000", "seq": 1, "kind": "put", "value": "value-0"}
    limited = run_json("sst", "dump", local_db, sst["sst_id"], "--limit", 2, "--hex", "--keys-only")
    assert limited["records"] == [{"key": b"key00000".hex(), "seq": 1, "kind": "put"},
                                  {"key": b"key00001".hex(), "seq": 2, "kind": "put"}]
    tomb = next(s for s in m["l0"] if s["first_key"] <= "key00007" <= s["last_key"] and s["min_seq"] > 1500)
    recs = run_json("sst", "dump", local_db, tomb["sst_id"])["records"]
    assert {"key": "key00007", "seq": 1541, "kind": "delete"} in recs
    text = run("sst", "dump", local_db, key, "--limit", 1).stdout
    assert "'key00000' @ 1 : put => 'value-0'" in text


def test_verify_healthy(local_db):
    assert run("verify", local_db).stdout.startswith("OK:")
    d = json.loads(run("verify", local_db, "--deep", "--json").stdout)
    assert d["ok"] and d["problems"] == [] and d["checked"] >= 3


# ------------------------------------------------------------- local: damage


def _l0(path):
    return run_json("manifest", path)["l0"]


def test_verify_names_sst_with_damaged_footer(local_copy):
    store = open_store(local_copy)
    key = f"compacted/{_l0(local_copy)[0]['sst_id']}.sst"
    flip(store, key, -40)  # inside the footer, before the 32-byte trailer
    p = run("verify", local_copy, check_rc=1)
    assert p.stdout.startswith("CORRUPT") and key in p.stdout
    d = json.loads(run("verify", local_copy, "--json", check_rc=1).stdout)
    assert [x["object"] for x in d["problems"]] == [key]


def test_verify_deep_names_sst_with_damaged_block(local_copy):
    store = open_store(local_copy)
    key = f"compacted/{_l0(local_copy)[0]['sst_id']}.sst"
    flip(store, key, 100)  # inside data block 0: only a deep read sees it
    run("verify", local_copy)
    p = run("verify", local_copy, "--deep", check_rc=1)
    assert key in p.stdout and "block 0" in p.stdout


def test_verify_names_damaged_wal_after_replay_point(local_copy):
    store = open_store(local_copy)
    key = add_replay_wal(store)
    assert run("verify", local_copy).stdout.startswith("OK:")
    flip(store, key, 20)  # inside the body
    p = run("verify", local_copy, check_rc=1)
    assert key in p.stdout and "checksum" in p.stdout


def test_verify_names_damaged_manifest(local_copy):
    store = open_store(local_copy)
    key = latest_manifest_key(store)
    flip(store, key, 10)
    p = run("verify", local_copy, check_rc=1)
    assert key in p.stdout
    d = json.loads(run("verify", local_copy, "--json", check_rc=1).stdout)
    assert [x["object"] for x in d["problems"]] == [key]  # the older manifest still checks out


# ---------------------------------------------------------- local: operating


def test_check_store_local_passes_and_cleans_up(tmp_path):
    root = tmp_path / "bucket"
    d = json.loads(run("check-store", root, "--json").stdout)
    assert d["ok"] and len(d["checks"]) == 8 and all(c["ok"] for c in d["checks"])
    assert not root.exists()  # created for the check, removed after it
    root.mkdir()
    (root / "keep").write_bytes(b"x")
    run("check-store", root)
    assert sorted(os.listdir(root)) == [".shaledb-lock", "keep"]


def test_gc_dry_run_then_real(local_copy):
    keys = lambda: [(r["key"], r["size"]) for r in run_json("ls", local_copy)]  # noqa: E731
    before = keys()
    dry = run_json("gc", local_copy, "--dry-run", "--min-age", 0)
    assert dry["dry_run"] and dry["counts"]["wal"] > 0
    assert keys() == before
    real = run_json("gc", local_copy, "--min-age", 0)
    assert real["keys"]["wal"] == dry["keys"]["wal"]
    left = {r["key"] for r in run_json("ls", local_copy)}
    assert not left & set(real["keys"]["wal"])
    run("verify", local_copy, "--deep")


def test_compact_full_then_verify(local_copy):
    rep = run_json("compact", local_copy, "--full")
    assert rep["jobs"] >= 1 and rep["compactor_epoch"] == 1
    d = run_json("info", local_copy)
    assert d["l0"]["count"] == 0 and len(d["sorted_runs"]) == 1 and d["compactor_epoch"] == 1
    assert d["compaction_backlog"] == {"jobs": 0, "sources": 0, "bytes": 0}
    run("verify", local_copy, "--deep")


def test_put_and_delete_open_a_writer(local_copy):
    run("put", local_copy, "hello", "world")
    assert run_json("info", local_copy)["compactor_epoch"] == 0  # no compactor service: none fenced
    run("put", local_copy, "--hex", "00ff", "0102")
    run("put", local_copy, "--base64", "AAE=", "YmluYXJ5")
    run("delete", local_copy, "key00001")
    assert "fences" in run("put", "--help").stdout.lower()
    with shaledb.open(local_copy) as db:
        assert db.get(b"hello") == b"world"
        assert db.get(b"\x00\xff") == b"\x01\x02"
        assert db.get(b"\x00\x01") == b"binary"
        assert db.get(b"key00001") is None
        assert db.get(b"key00002") == b"value-2"


def test_checkpoint_and_gc_never_fence_a_running_writer(local_copy):
    with shaledb.open(local_copy, flush_interval=0.02) as db:
        db.put(b"before", b"1")
        cp = run_json("checkpoint", "create", local_copy, "--name", "nightly", "--lifetime", 3600)
        assert cp["name"] == "nightly" and cp["expires_at_ms"]
        listed = run_json("checkpoint", "list", local_copy)
        assert [c["id"] for c in listed] == [cp["id"]]
        run("gc", local_copy, "--dry-run")
        run("verify", local_copy)  # the checkpoint's manifest is checked too
        db.put(b"after", b"2")  # not fenced
        run("checkpoint", "delete", local_copy, cp["id"])
        assert run_json("checkpoint", "list", local_copy) == []
        db.put(b"later", b"3")
        assert db.get(b"after") == b"2"
    p = run("checkpoint", "delete", local_copy, cp["id"], check_rc=2)
    assert "no checkpoint" in one_line_error(p)


# ---------------------------------------------------- local: get and scan


def test_get_and_scan(local_db):
    assert run("get", local_db, "key00000").stdout == "value-0\n"
    assert run("get", local_db, "tail039").stdout == "t\n"  # written after the last L0 flush: in the WAL
    p = run("get", local_db, "key00007", check_rc=1)  # deleted
    assert p.stdout == "" and "not found" in one_line_error(p)
    assert run_json("get", local_db, "nope", check_rc=1) == {"key": "nope", "value": None}
    assert run_json("get", local_db, "--hex", b"key00002".hex()) == {"key": b"key00002".hex(),
                                                                     "value": b"value-2".hex()}
    lines = run("scan", local_db, "--start", "key00005", "--end", "key00010").stdout.splitlines()
    assert lines == [f"key{i:05d}\tvalue-{i}" for i in (5, 6, 8, 9)]  # 7 is deleted
    assert run("scan", local_db, "--limit", 3, "--keys-only").stdout.split() == ["key00000", "key00001", "key00002"]
    rows = run_json("scan", local_db, "--start", "dGFpbA==", "--base64")  # "tail"
    assert len(rows) == 40 and rows[0] == {"key": "dGFpbDAwMA==", "value": "dA=="}
    assert run_json("scan", local_db, "--start", "z") == []
    everything = run_json("scan", local_db, "--keys-only")
    assert len(everything) == 1500 - 1 + 40 and all(set(r) == {"key"} for r in everything)


def test_get_and_scan_never_fence_a_running_writer(local_copy):
    with shaledb.open(local_copy, flush_interval=0.02, compactor=False) as db:
        epoch = run_json("info", local_copy)["writer_epoch"]
        db.put(b"fresh", b"in the WAL only")  # durable: a WAL object past the manifest's replay point
        db.put(b"tab\tkey", b"two\nlines")
        assert run("get", local_copy, "fresh").stdout == "in the WAL only\n"
        run("get", local_copy, "fresh", "--no-wal", check_rc=1)  # the manifest alone does not have it yet
        out = run("scan", local_copy, "--start", "t", "--end", "tail").stdout
        assert out == "tab\\x09key\ttwo\\x0alines\n"  # one record, one line
        cp = run_json("checkpoint", "create", local_copy)["id"]
        db.put(b"after-checkpoint", b"1")
        db.flush(memtable=True)
        assert run("get", local_copy, "after-checkpoint", "--no-wal").stdout == "1\n"
        run("get", local_copy, "after-checkpoint", "--checkpoint", cp, check_rc=1)
        assert run("get", local_copy, "key00001", "--checkpoint", cp).stdout == "value-1\n"
        db.put(b"still", b"the writer")  # not fenced
        assert db.get(b"still") == b"the writer"
        assert run_json("info", local_copy)["writer_epoch"] == epoch
    p = run("get", local_copy, "k", "--checkpoint", "no-such-checkpoint", check_rc=2)
    assert "checkpoint" in one_line_error(p)


# ------------------------------------------------------------------- errors


def test_error_missing_database(tmp_path):
    missing = tmp_path / "nope"
    for cmd in (("info",), ("verify",), ("ls",), ("manifest",), ("gc",), ("compact",), ("checkpoint", "list"),
                ("scan",)):
        p = run(*cmd, missing, check_rc=2)
        assert "no ShaleDB database" in one_line_error(p)
    assert not missing.exists()  # reading never creates the directory
    for cmd in (("put", missing, "k", "v"), ("get", missing, "k")):
        p = run(*cmd, check_rc=2)
        assert "no ShaleDB database" in one_line_error(p)
    (tmp_path / "empty").mkdir()
    p = run("info", tmp_path / "empty", check_rc=2)
    assert "no manifest" in one_line_error(p)


def test_error_bad_url_and_usage(tmp_path):
    assert "unknown store url scheme" in one_line_error(run("info", "ftp://host/db", check_rc=2))
    assert "unknown store url scheme" in one_line_error(run("get", "ftp://host/db", "k", check_rc=2))
    assert "s3:// URLs only" in one_line_error(run("info", tmp_path, "--endpoint", "http://x", check_rc=2))
    assert "required" in one_line_error(run("info", check_rc=2))
    assert "no such file" in one_line_error(run("sst", "dump", tmp_path / "x.sst", check_rc=2))


def test_error_bad_key_encoding(local_db):
    assert "not valid hex" in one_line_error(run("put", local_db, "--hex", "zz", "00", check_rc=2))
    assert "not valid base64" in one_line_error(run("delete", local_db, "--base64", "!!", check_rc=2))
    assert "not valid hex" in one_line_error(run("get", local_db, "--hex", "0g", check_rc=2))
    assert "not valid base64" in one_line_error(run("scan", local_db, "--base64", "--start", "%%", check_rc=2))
    assert "--limit" in one_line_error(run("scan", local_db, "--limit", -1, check_rc=2))


def test_error_dead_endpoint_fails_fast(moto_server):
    # a loopback port nobody listens on: refused at once, Unavailable, no retries
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for cmd in ("info", "get", "scan"):
        args = (cmd, "s3://bucket/db") + (("k",) if cmd == "get" else ())
        p = run(*args, "--endpoint", f"http://127.0.0.1:{port}", check_rc=2)
        assert "Unavailable" in one_line_error(p) and str(port) in p.stderr


# ----------------------------------------------------------------------- S3


@pytest.mark.s3
def test_s3_read_commands(s3_db):
    url, ep = s3_db
    d = run_json("info", url, "--endpoint", ep)
    assert d["l0"]["count"] >= 2 and d["store"]["objects"] == len(run_json("ls", url, "--endpoint", ep))
    m = run_json("manifest", url, "--endpoint", ep)
    sst = m["l0"][0]["sst_id"]
    dump = run_json("sst", "dump", url, sst, "--endpoint", ep)
    assert dump["num_entries"] == len(dump["records"]) == m["l0"][0]["num_entries"]
    run("verify", url, "--deep", "--endpoint", ep)
    # the endpoint may also come from the environment
    assert run_json("info", url, env={"AWS_ENDPOINT_URL": ep}) == d
    assert run("get", url, "key00003", "--endpoint", ep).stdout == "value-3\n"
    assert run("get", url, "tail000", env={"AWS_ENDPOINT_URL": ep}).stdout == "t\n"
    run("get", url, "key00007", "--endpoint", ep, check_rc=1)
    rows = run_json("scan", url, "--endpoint", ep, "--start", "key01495", "--limit", 10)
    assert [r["key"] for r in rows] == [f"key0{i}" for i in range(1495, 1500)] + [f"tail{i:03d}" for i in range(5)]


@pytest.mark.s3
def test_s3_verify_names_damaged_objects(s3_db):
    url, ep = s3_db
    store = open_store(url, endpoint_url=ep)
    # the oldest SST: the manifest before the damaged latest one lists it too
    l0 = run_json("manifest", url, "--endpoint", ep)["l0"]
    sst_key = f"compacted/{next(s['sst_id'] for s in l0 if s['first_key'] == 'key00000')}.sst"
    wal = add_replay_wal(store)
    man = latest_manifest_key(store)
    saved = {k: store.get(k) for k in (sst_key, man)}
    try:
        flip(store, sst_key, -40)
        flip(store, wal, 20)
        flip(store, man, 10)
        d = json.loads(run("verify", url, "--endpoint", ep, "--json", check_rc=1).stdout)
        assert {x["object"] for x in d["problems"]} == {sst_key, wal, man}
    finally:
        for k, v in saved.items():
            store.put(k, v)
        store.delete(wal)
    run("verify", url, "--endpoint", ep)


@pytest.mark.s3
def test_s3_check_store_passes_and_cleans_up(s3_db):
    url, ep = s3_db
    bucket = url.split("/")[2]
    scratch = f"s3://{bucket}/scratch"
    p = run("check-store", scratch, "--endpoint", ep)
    assert p.stdout.count("PASS") == 8 and "FAIL" not in p.stdout
    assert list(open_store(scratch, endpoint_url=ep).list("")) == []


@pytest.mark.s3
def test_s3_errors(s3_db):
    url, ep = s3_db
    bucket = url.split("/")[2]
    p = run("info", f"s3://{bucket}/nothing-here", "--endpoint", ep, check_rc=2)
    assert "no ShaleDB database" in one_line_error(p)
    p = run("info", "s3://no-such-bucket-cli/db", "--endpoint", ep, check_rc=2)
    assert "does not exist" in one_line_error(p)
    for cmd in (("get", f"s3://{bucket}/nothing-here", "k"), ("scan", f"s3://{bucket}/nothing-here")):
        assert "no ShaleDB database" in one_line_error(run(*cmd, "--endpoint", ep, check_rc=2))


def _s3_fresh_db(moto_server) -> tuple[str, tuple[str, str]]:
    bucket = "cli-op-" + uuid.uuid4().hex[:12]
    moto_server.create_bucket(bucket)
    url = f"s3://{bucket}/db"
    build(url, moto_server.endpoint_url)
    return url, ("--endpoint", moto_server.endpoint_url)


@pytest.mark.s3
def test_s3_operating_commands(moto_server):
    """checkpoint create/list/delete, compact, gc and a checkpoint read on a
    moto database of its own (the module's is shared by the reading tests)."""
    url, e = _s3_fresh_db(moto_server)
    cp = run_json("checkpoint", "create", url, "--name", "before", *e)
    rep = run_json("compact", url, "--full", *e)
    assert rep["jobs"] >= 1 and rep["compactor_epoch"] == 1
    d = run_json("info", url, *e)
    assert d["l0"]["count"] == 0 and len(d["sorted_runs"]) == 1 and d["writer_epoch"] == 1
    gc = run_json("gc", url, "--min-age", 0, *e)
    assert not gc["dry_run"] and gc["counts"]["wal"] > 0
    assert run("get", url, "key00001", "--checkpoint", cp["id"], "--no-wal", *e).stdout == "value-1\n"
    assert [c["id"] for c in run_json("checkpoint", "list", url, *e)] == [cp["id"]]
    run("checkpoint", "delete", url, cp["id"], *e)
    assert run_json("checkpoint", "list", url, *e) == []
    run("verify", url, "--deep", *e)


@pytest.mark.s3
@pytest.mark.slow
def test_s3_put_and_delete(moto_server):
    """put and delete open a writer (no compactor service) on S3."""
    url, e = _s3_fresh_db(moto_server)
    run("put", url, "hello", "world", *e)
    run("delete", url, "key00001", *e)
    d = run_json("info", url, *e)
    assert d["writer_epoch"] == 3 and d["compactor_epoch"] == 0  # they fence the writer, never a compactor
    assert run("get", url, "hello", *e).stdout == "world\n"
    run("get", url, "key00001", *e, check_rc=1)
