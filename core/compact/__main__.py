"""``python -m shaledb.compact URL [--workers N] [--interval S]``: run the
compactor of the database at URL until SIGTERM/SIGINT or a fence
(:func:`shaledb.compact.run`).  Store options come from the environment
(e.g. ``AWS_ENDPOINT_URL``).

``python -m shaledb.compact --serve <config fd> <ready fd>``: the service
mode ``shaledb.open`` starts (``shaledb.compact.service``)."""

import argparse
import sys

from shaledb.compact import run


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        from shaledb.compact.service import main as serve

        serve(argv[1:])
        from shaledb.ipc.child import exit_child

        exit_child(0)  # the service stopped in order: skip interpreter teardown
    ap = argparse.ArgumentParser(prog="python -m shaledb.compact")
    ap.add_argument("url")
    ap.add_argument("--workers", type=int, default=None, help="compaction worker processes")
    ap.add_argument("--interval", type=float, default=None, help="seconds between polls")
    ap.add_argument("--sst-target-bytes", type=int, default=None)
    ap.add_argument("--l0-threshold", type=int, default=None)
    a = ap.parse_args(argv)
    opts = {}
    for name, val in (
        ("compaction_workers", a.workers),
        ("compaction_interval", a.interval),
        ("sst_target_bytes", a.sst_target_bytes),
        ("l0_compaction_threshold", a.l0_threshold),
    ):
        if val is not None:
            opts[name] = val
    run(a.url, **opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
