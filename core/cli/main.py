"""The ``shaledb`` command: argument parsing and one small function per command.

Every command returns an exit code: 0 done (or healthy), 1 a check found
problems (``verify``, ``check-store``), 2 an error (one line on stderr,
never a traceback; set ``SHALEDB_TRACEBACK=1`` to see one).  See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from shaledb.cli.common import decode_arg, open_root, render_bytes, root_url, store_options
from shaledb.errors import InvalidArgument, ObjectNotFound, ShaleDBError

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


class _Usage(Exception):
    """A usage error argparse would report (raised instead of exiting)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, our exit code
        raise _Usage(f"{self.prog}: {message}")


def _out(args, data, text: str | None = None) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=False))
    elif text is not None:
        print(text)


def _enc(args) -> str:
    return "hex" if args.hex else "base64" if args.base64 else "utf8"


def _store(args, *, create: bool = False):
    return open_root(args.url, args.endpoint, create=create)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ----------------------------------------------------------------- commands


def cmd_info(args) -> int:
    from shaledb.cli.info import database_info

    with _store(args) as store:
        d = database_info(store, encoding=_enc(args), what=args.url)
    lines = [
        f"format version   {d['format_version']}",
        f"manifest id      {d['manifest_id']}",
        f"writer epoch     {d['writer_epoch']}",
        f"compactor epoch  {d['compactor_epoch']}",
        f"last L0 seq      {d['last_l0_seq']}",
        f"WAL              replay after {d['wal']['replay_after_id']}, next {d['wal']['next_id']}, "
        f"{d['wal']['objects_to_replay']} to replay (ids {d['wal']['first_id']}..{d['wal']['last_id']} in store)",
        f"L0               {d['l0']['count']} SSTs, {_fmt_bytes(d['l0']['bytes'])}, "
        f"keys {d['l0']['first_key']!r}..{d['l0']['last_key']!r}",
    ]
    for r in d["sorted_runs"]:
        lines.append(
            f"sorted run {r['run_id']:<5} {r['count']} SSTs, {_fmt_bytes(r['bytes'])}, "
            f"keys {r['first_key']!r}..{r['last_key']!r}"
        )
    if not d["sorted_runs"]:
        lines.append("sorted runs      none")
    b = d["compaction_backlog"]
    lines.append(f"backlog          {b['jobs']} compaction jobs, {b['sources']} sources, {_fmt_bytes(b['bytes'])}")
    lines.append(f"checkpoints      {len(d['checkpoints'])}")
    for c in d["checkpoints"]:
        lines.append(f"  {c['id']}  manifest {c['manifest_id']}  {c['name']!r}{'  (expired)' if c['expired'] else ''}")
    s = d["store"]
    lines.append(f"store            {s['objects']} objects, {_fmt_bytes(s['bytes'])}")
    for k, t in s["by_kind"].items():
        lines.append(f"  {k:<9} {t['objects']:>7} objects  {_fmt_bytes(t['bytes'])}")
    _out(args, d, "\n".join(lines))
    return EXIT_OK


def cmd_manifest(args) -> int:
    from shaledb.cli.info import load_latest, manifest_dict
    from shaledb.format.keys import manifest_key
    from shaledb.manifest.model import decode_manifest

    with _store(args) as store:
        ms = load_latest(store, args.url)
        if args.id is None:
            mid, m = ms.manifest_id, ms.current
        else:
            key = manifest_key(args.id)
            try:
                mid, m = args.id, decode_manifest(store.get(key), key)
            except ObjectNotFound:
                raise InvalidArgument(f"manifest {args.id} does not exist (latest is {ms.manifest_id})") from None
    print(json.dumps(manifest_dict(m, mid, encoding=_enc(args)), indent=2))
    return EXIT_OK


def cmd_ls(args) -> int:
    from shaledb.cli.info import KINDS, kind_of, load_latest

    with _store(args) as store:
        load_latest(store, args.url)
        now = time.time()
        rows = [
            {"key": m.key, "kind": kind_of(m.key), "size": m.size, "age_seconds": round(now - m.last_modified, 1)}
            for m in store.list(KINDS[args.kind] if args.kind else "")
        ]
    text = "\n".join(f"{r['size']:>12}  {_age(r['age_seconds']):>8}  {r['key']}" for r in rows)
    _out(args, rows, text or "(no objects)")
    return EXIT_OK


def _age(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s / n:.1f}{unit}"
    return f"{max(0.0, s):.0f}s"


def cmd_verify(args) -> int:
    from shaledb.cli.progress import Progress
    from shaledb.cli.verify import verify_database

    bar = Progress("verify")
    try:
        with _store(args) as store:
            rep = verify_database(store, deep=args.deep, progress=bar)
    finally:
        bar.close()
    if rep.ok:
        text = f"OK: {rep.checked} objects checked (manifests {rep.manifests}){' deep' if args.deep else ''}"
    else:
        text = "\n".join(
            [f"CORRUPT: {len(rep.problems)} problem(s) in {rep.checked} objects checked"]
            + [f"  {p.object}: {p.error.removeprefix(p.object + ': ')}" for p in rep.problems]
        )
    _out(args, rep.as_dict(), text)
    return EXIT_OK if rep.ok else EXIT_PROBLEMS


def cmd_check_store(args) -> int:
    from shaledb.cli.check_store import check_store, scratch_prefix
    from shaledb.storage import LocalStore

    url = root_url(args.url)
    fresh = url.startswith("/") and not os.path.exists(url)
    prefix = scratch_prefix()
    with _store(args, create=True) as store:
        rows = check_store(store, prefix)
        if isinstance(store, LocalStore):
            _remove_local_scratch(store.root, prefix, fresh)
    width = max(len(r.name) for r in rows)
    text = "\n".join(
        f"{'PASS' if r.ok else 'FAIL'}  {r.name:<{width}}{'  ' + r.detail if r.detail else ''}" for r in rows
    )
    ok = all(r.ok for r in rows)
    _out(args, {"ok": ok, "checks": [r.__dict__ for r in rows]}, text)
    return EXIT_OK if ok else EXIT_PROBLEMS


def _remove_local_scratch(root: str, prefix: str, fresh: bool) -> None:
    """A local store keeps empty directories after deletes: remove the scratch
    tree's, and the root itself when this command created it."""
    import shutil

    top = os.path.join(root, prefix.rstrip("/"))
    for d, _, files in sorted(os.walk(top), key=lambda t: -len(t[0])):
        if not files:
            try:
                os.rmdir(d)
            except OSError:
                pass
    if fresh and set(os.listdir(root)) <= {".shaledb-lock"}:
        shutil.rmtree(root, ignore_errors=True)


def cmd_sst_dump(args) -> int:
    from shaledb.cli.sst_dump import dump_sst

    store, key, label = _sst_source(args)
    with store:
        d = dump_sst(store, key, encoding=_enc(args), limit=args.limit, values=not args.keys_only)
    d["object"] = label
    lines = [f"{k:<17}{d[k]}" for k in (
        "object", "size", "format_version", "sst_id", "num_entries", "min_seq", "max_seq",
        "first_key", "last_key", "compression", "block_size", "restart_interval", "data_bytes")]
    lines.append(f"{'index':<17}offset {d['index']['offset']}, {d['index']['bytes']} bytes")
    b = d["bloom"]
    lines.append(f"{'bloom':<17}" + (f"offset {b['offset']}, {b['bytes']} bytes, {b['bits_per_key']} bits/key" if b else "none"))
    lines.append(f"blocks ({len(d['blocks'])}):")
    lines += [f"  {x['block']:>5}  offset {x['offset']:>10}  {x['bytes']:>8} bytes  index key {x['index_key']!r}"
              for x in d["blocks"]]
    lines.append(f"records ({len(d['records'])} shown):")
    for r in d["records"]:
        v = f" => {r['value']!r}" if "value" in r else ""
        lines.append(f"  {r['key']!r} @ {r['seq']} : {r['kind']}{v}")
    _out(args, d, "\n".join(lines))
    return EXIT_OK


def _sst_source(args):
    """(store, key, label) for ``sst dump``: a local file (an object of a local
    store, or raw SST bytes), or a store URL and an SST key or id."""
    from shaledb.errors import Corruption
    from shaledb.format.keys import parse_sst_key, sst_key

    src = args.source
    if args.key is None:
        if "://" in src and not src.lower().startswith("file://"):
            raise InvalidArgument("sst dump of a store URL needs the SST key or id: sst dump URL KEY")
        path = root_url(src[len("file://"):] if src.lower().startswith("file://") else src)
        if not os.path.isfile(path):
            raise InvalidArgument(f"{src}: no such file")
        from shaledb.storage import LocalStore, MemoryStore

        local = LocalStore(os.path.dirname(path))
        name = os.path.basename(path)
        try:
            local.head(name)
            return local, name, path
        except (Corruption, InvalidArgument):  # not an object of a local store: raw SST bytes
            local.close()
        with open(path, "rb") as fh:
            raw = fh.read()
        mem = MemoryStore()
        mem.put(name, raw)
        return mem, name, path
    key = args.key
    if parse_sst_key(key) is None and parse_sst_key(f"compacted/{key}") is None:
        key = sst_key(key[:-4] if key.endswith(".sst") else key)
    elif parse_sst_key(key) is None:
        key = f"compacted/{key}"
    return open_root(src, args.endpoint), key, key


def cmd_gc(args) -> int:
    from shaledb.cli.info import load_latest
    from shaledb.gc import collect
    from shaledb.options import Options

    min_age = Options().gc_min_age if args.min_age is None else args.min_age
    with _store(args) as store:
        load_latest(store, args.url)
        res = collect(store, min_age=min_age, dry_run=args.dry_run)
    d = {"dry_run": res.dry_run, "counts": res.counts, "bytes": res.bytes, "keys": res.keys,
         "expired_checkpoints": res.expired_checkpoints, "skipped": res.skipped}
    verb = "would delete" if res.dry_run else "deleted"
    lines = [f"{verb} {res.total} objects (min age {min_age:g}s)"]
    lines += [f"  {k:<9} {res.counts[k]:>6} objects  {_fmt_bytes(res.bytes[k])}" for k in res.counts]
    if res.expired_checkpoints:
        lines.append(f"expired checkpoints {'to drop' if res.dry_run else 'dropped'}: {', '.join(res.expired_checkpoints)}")
    lines += [f"skipped: {s}" for s in res.skipped]
    _out(args, d, "\n".join(lines))
    return EXIT_OK


def cmd_compact(args) -> int:
    from shaledb.cli.info import load_latest
    from shaledb.compact import Compactor
    from shaledb.options import Options, wrap_store

    opts = Options(store_options=store_options(root_url(args.url), args.endpoint), compaction_workers=args.workers)
    with _store(args) as raw:
        load_latest(raw, args.url)
        store = wrap_store(raw, opts)
        with Compactor(store, opts) as c:
            rep = c.compact_once(full=args.full)
            epoch = c.epoch
    d = {"compactor_epoch": epoch, "jobs": rep.jobs, "trivial_moves": rep.trivial_moves,
         "bytes_in": rep.bytes_in, "bytes_out": rep.bytes_out, "seconds": round(rep.seconds, 3)}
    _out(args, d, f"{rep.jobs} jobs ({rep.trivial_moves} trivial moves), {_fmt_bytes(rep.bytes_in)} in, "
                  f"{_fmt_bytes(rep.bytes_out)} out, {rep.seconds:.2f}s (compactor epoch {epoch})")
    return EXIT_OK


def _checkpoint_dict(c) -> dict:
    return {"id": c.id, "manifest_id": c.manifest_id, "name": c.name, "expires_at_ms": c.expires_at_ms or None}


def cmd_checkpoint_create(args) -> int:
    from shaledb.cli.info import load_latest

    lifetime = None if args.lifetime is None else int(args.lifetime * 1000)
    if lifetime is not None and lifetime <= 0:
        raise InvalidArgument("--lifetime must be > 0 seconds")
    with _store(args) as store:
        ms = load_latest(store, args.url)
        cp = ms.add_checkpoint(lifetime_ms=lifetime, name=args.name)
    _out(args, _checkpoint_dict(cp), f"{cp.id}  manifest {cp.manifest_id}  {cp.name!r}")
    return EXIT_OK


def cmd_checkpoint_list(args) -> int:
    from shaledb.cli.info import load_latest

    with _store(args) as store:
        cps = load_latest(store, args.url).current.checkpoints
    rows = [_checkpoint_dict(c) for c in cps]
    text = "\n".join(
        f"{r['id']}  manifest {r['manifest_id']}  {r['name']!r}"
        + (f"  expires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(r['expires_at_ms'] / 1000))}" if r["expires_at_ms"] else "")
        for r in rows
    )
    _out(args, rows, text or "(no checkpoints)")
    return EXIT_OK


def cmd_checkpoint_delete(args) -> int:
    from shaledb.cli.info import load_latest

    with _store(args) as store:
        ms = load_latest(store, args.url)
        if all(c.id != args.id for c in ms.current.checkpoints):
            raise InvalidArgument(f"no checkpoint {args.id!r} in {args.url}")
        ms.remove_checkpoint(args.id)
    _out(args, {"deleted": args.id}, f"deleted checkpoint {args.id}")
    return EXIT_OK


def _open_writer(args):
    import shaledb
    from shaledb.cli.info import load_latest

    if not args.create:
        with _store(args) as store:
            load_latest(store, args.url)
    opts = store_options(root_url(args.url), args.endpoint)
    # no compactor service: one write does not need one, and opening one
    # would bump the compactor epoch and fence a running compactor
    kw = {"compactor": False, **({"store_options": opts} if opts else {})}
    return shaledb.open(root_url(args.url), **kw)


#: request_timeout of the CLI's reader: a store that stops answering ends a
#: command within this many seconds (a dead endpoint fails at open, within
#: the S3 probe timeout)
CLI_REQUEST_TIMEOUT = 20.0


def _open_reader(args):
    """A read-only reader (``shaledb.open_reader``): never writes, never fences
    a writer.  Follows the latest manifest and the WAL past it, or pins
    ``--checkpoint``; no background polling (one command, one view)."""
    import shaledb
    from shaledb.cli.info import load_latest

    url = root_url(args.url)
    with _store(args) as store:  # a clear "no database" error before anything else
        load_latest(store, args.url)
    kw = dict(checkpoint=args.checkpoint, poll_interval=3600.0, wal_tail=not args.no_wal,
              request_timeout=CLI_REQUEST_TIMEOUT)
    opts = store_options(url, args.endpoint)
    if opts:
        kw["store_options"] = opts
    return shaledb.open_reader(url, **kw)


def _text(data: bytes, enc: str) -> str:
    """``render_bytes`` for one line of text output: control characters
    (tab, newline ...) escaped as ``\\xNN`` so a record stays on one line."""
    out = render_bytes(data, enc)
    if enc != "utf8":
        return out
    return "".join(c if c >= " " and c != "\x7f" else f"\\x{ord(c):02x}" for c in out)


def cmd_get(args) -> int:
    enc = _enc(args)
    key = decode_arg(args.key, enc, "key")
    with _open_reader(args) as r:
        value = r.get(key)
    if args.json:
        _out(args, {"key": render_bytes(key, enc), "value": None if value is None else render_bytes(value, enc)})
    elif value is not None:
        print(_text(value, enc))
    else:
        print(f"shaledb: {args.key}: not found", file=sys.stderr)
    return EXIT_OK if value is not None else EXIT_PROBLEMS


def cmd_scan(args) -> int:
    import itertools

    enc = _enc(args)
    start = None if args.start is None else decode_arg(args.start, enc, "--start")
    end = None if args.end is None else decode_arg(args.end, enc, "--end")
    if args.limit is not None and args.limit < 0:
        raise InvalidArgument("--limit must be >= 0")
    n = 0
    with _open_reader(args) as r:
        it = r.scan(start, end)
        if args.limit is not None:
            it = itertools.islice(it, args.limit)
        if args.json:  # streamed: one JSON array, written as the scan goes
            sys.stdout.write("[")
            for k, v in it:
                row = {"key": render_bytes(k, enc)} if args.keys_only else {"key": render_bytes(k, enc),
                                                                           "value": render_bytes(v, enc)}
                sys.stdout.write(("," if n else "") + "\n  " + json.dumps(row))
                n += 1
            sys.stdout.write("\n]\n" if n else "]\n")
        else:
            for k, v in it:
                print(_text(k, enc) if args.keys_only else f"{_text(k, enc)}\t{_text(v, enc)}")
                n += 1
    return EXIT_OK


def cmd_put(args) -> int:
    key = decode_arg(args.key, _enc(args), "key")
    value = decode_arg(args.value, _enc(args), "value")
    with _open_writer(args) as db:
        seq = db.put(key, value)
    _out(args, {"key": render_bytes(key, _enc(args)), "seq": seq}, f"ok (seq {seq})")
    return EXIT_OK


def cmd_delete(args) -> int:
    key = decode_arg(args.key, _enc(args), "key")
    with _open_writer(args) as db:
        seq = db.delete(key)
    _out(args, {"key": render_bytes(key, _enc(args)), "seq": seq}, f"ok (seq {seq})")
    return EXIT_OK


# ------------------------------------------------------------------- parser

_FENCES_WRITER = (
    "Opens the database as its writer with shaledb.open, which FENCES any running writer "
    "(its next write raises Fenced). Do not use on a database an application holds open."
)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--endpoint", metavar="URL", help="S3 endpoint URL (else AWS_ENDPOINT_URL, else AWS)")
    common.add_argument("--json", action="store_true", help="print data as JSON")
    enc = common.add_mutually_exclusive_group()
    enc.add_argument("--hex", action="store_true", help="keys and values in hex")
    enc.add_argument("--base64", action="store_true", help="keys and values in base64")

    ap = _Parser(prog="shaledb", description="Inspect, verify and operate a ShaleDB database.")
    import shaledb

    ap.add_argument("--version", action="version", version=f"shaledb {shaledb.__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name, fn, help, url=True, **kw):
        p = sub.add_parser(name, parents=[common], help=help, description=kw.pop("description", help))
        if url:
            p.add_argument("url", metavar="URL", help="database: a directory, file:///dir or s3://bucket/prefix")
        p.set_defaults(fn=fn)
        return p

    cmd("info", cmd_info, "epochs, manifest id, L0 and sorted runs, WAL range, checkpoints, store totals")
    p = cmd("manifest", cmd_manifest, "the manifest, decoded, as JSON")
    p.add_argument("--id", type=int, help="a manifest id (default: the latest)")
    p = cmd("ls", cmd_ls, "objects of the database with size and age")
    p.add_argument("--kind", choices=("wal", "sst", "manifest"))
    p = cmd("verify", cmd_verify, "check every referenced object and checksum; exit 1 naming each bad object")
    p.add_argument("--deep", action="store_true", help="also read and check every data block")
    cmd("check-store", cmd_check_store,
        "check that a store behaves as ShaleDB needs (conditional writes, consistency, ranged GETs, deletes); "
        "writes only under a scratch prefix and removes it")
    p = cmd("gc", cmd_gc, "delete objects no live manifest needs (never fences a writer)")
    p.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    p.add_argument("--min-age", type=float, help="seconds an object stays after it becomes garbage (default 300)")
    p = cmd("compact", cmd_compact, "run one compaction pass",
            description="Run one compaction pass. Opening the compactor bumps the compactor epoch, which fences "
                        "a running compactor (it stops cleanly); writers are never fenced.")
    p.add_argument("--full", action="store_true", help="merge everything into one sorted run")
    p.add_argument("--workers", type=int, default=1, help="compaction worker processes (default 1)")

    sst = sub.add_parser("sst", help="SST tools").add_subparsers(dest="sst_command", metavar="SUBCOMMAND",
                                                                parser_class=_Parser)
    sst.required = True
    p = sst.add_parser("dump", parents=[common], help="blocks, index, bloom, key range and records of one SST")
    p.add_argument("source", metavar="FILE_OR_URL", help="an SST file, or a database URL followed by KEY")
    p.add_argument("key", nargs="?", metavar="KEY", help="the SST's key (compacted/<id>.sst) or id")
    p.add_argument("--limit", type=int, help="show at most this many records")
    p.add_argument("--keys-only", action="store_true", help="do not print values")
    p.set_defaults(fn=cmd_sst_dump)

    cps = sub.add_parser("checkpoint", help="create, list or delete checkpoints (never fences a writer)")
    cpsub = cps.add_subparsers(dest="cp_command", metavar="SUBCOMMAND", parser_class=_Parser)
    cpsub.required = True
    for name, fn, help in (("create", cmd_checkpoint_create, "pin the current manifest"),
                           ("list", cmd_checkpoint_list, "list checkpoints"),
                           ("delete", cmd_checkpoint_delete, "remove a checkpoint")):
        p = cpsub.add_parser(name, parents=[common], help=help, description=help)
        p.add_argument("url", metavar="URL")
        p.set_defaults(fn=fn)
        if name == "create":
            p.add_argument("--name", default="", help="a label")
            p.add_argument("--lifetime", type=float, help="seconds until it expires (default: never)")
        if name == "delete":
            p.add_argument("id", metavar="ID")

    def reader_opts(p):
        p.add_argument("--checkpoint", metavar="ID", help="read this checkpoint instead of the latest state")
        p.add_argument("--no-wal", action="store_true",
                       help="read what the manifest holds only (skip WAL objects past its replay point)")

    p = cmd("get", cmd_get, "print the value of one key (exit 1 when absent); never fences a writer",
            description="Print the value of KEY (exit 1 when it is absent).  A read-only reader: it never "
                        "writes to the store and never fences a running writer.  It sees every write "
                        "durable in the store (the manifest, and WAL objects past it unless --no-wal).")
    p.add_argument("key", metavar="KEY")
    reader_opts(p)
    p = cmd("scan", cmd_scan, "print key/value pairs in key order; never fences a writer",
            description="Print KEY<TAB>VALUE lines (or KEY with --keys-only) with START <= key < END in key "
                        "order.  A read-only reader: it never writes and never fences a running writer.")
    p.add_argument("--start", metavar="KEY", help="first key (inclusive)")
    p.add_argument("--end", metavar="KEY", help="end key (exclusive)")
    p.add_argument("--limit", type=int, metavar="N", help="print at most N records")
    p.add_argument("--keys-only", action="store_true", help="print keys only")
    reader_opts(p)

    for name, fn, help in (("put", cmd_put, "write one key"), ("delete", cmd_delete, "delete one key")):
        p = cmd(name, fn, help + " (fences a running writer)", description=f"{help[0].upper()}{help[1:]}. {_FENCES_WRITER}")
        p.add_argument("key", metavar="KEY")
        if name == "put":
            p.add_argument("value", metavar="VALUE")
        p.add_argument("--create", action="store_true", help="create the database if it does not exist")
    return ap


def main(argv=None) -> int:
    """Run the ``shaledb`` command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        return args.fn(args)
    except _Usage as e:
        print(str(e), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("shaledb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:
        if os.environ.get("SHALEDB_TRACEBACK"):
            raise
        if isinstance(e, ShaleDBError):
            msg = f"shaledb: {type(e).__name__}: {' '.join(str(e).split())}"
        else:
            msg = f"shaledb: internal error ({type(e).__name__}): {' '.join(str(e).split())}"
        print(msg, file=sys.stderr)
        return EXIT_ERROR
