"""Logging (docs/operations.md, "Logging"): records the flusher and the
compactor processes log under ``shaledb`` reach the opener's handlers, with
the child's pid and process name; nothing is printed when the application
configured no logging."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import shaledb

from engine_util import open_db

TIMEOUT = 60


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.cond = threading.Condition()

    def emit(self, record):
        with self.cond:
            self.records.append(record)
            self.cond.notify_all()

    def wait_for(self, pred, what: str) -> logging.LogRecord:
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while True:
                hit = next((r for r in self.records if pred(r)), None)
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                assert left > 0, f"no log record {what}: {[r.getMessage() for r in self.records]}"
                self.cond.wait(left)


def _capturing():
    logger = logging.getLogger("shaledb")
    cap = Capture()
    old = logger.level
    logger.addHandler(cap)
    logger.setLevel(logging.INFO)
    return logger, cap, old


def test_flusher_and_compactor_records_reach_the_parent(tmp_path):
    logger, cap, old = _capturing()
    try:
        with open_db(str(tmp_path / "db"), compactor=True, compaction_workers=1) as db:
            for i in range(200):
                db.put(b"k%04d" % i, b"v", await_durable=False)
            db.flush(memtable=True)
            db.put(b"k", b"v")
            db.flush(memtable=True)
            db.compact(full=True)
            st = db.status()
            opened = cap.wait_for(lambda r: r.name == "shaledb.flush" and "opened manifest" in r.getMessage(),
                                  "from the flusher's open")
            assert opened.process == st.flusher.pid and opened.processName == "shaledb-flusher"
            assert opened.levelno == logging.INFO
            done = cap.wait_for(lambda r: r.name == "shaledb.compact" and "jobs" in r.getMessage(),
                                "from the compactor's job")
            assert done.process == st.compactor.pid and done.processName == "shaledb-compactor"
    finally:
        logger.removeHandler(cap)
        logger.setLevel(old)


def test_a_fenced_flusher_warns_the_parent(tmp_path):
    root = str(tmp_path / "db")
    logger, cap, old = _capturing()
    try:
        with open_db(root, compactor=False) as first:
            first.put(b"a", b"1")
            pid = first.status().flusher.pid
            with open_db(root, compactor=False) as second:
                second.put(b"b", b"2")
                try:
                    first.put(b"c", b"3")  # its WAL upload meets the newer writer's fence
                except shaledb.Fenced:
                    pass
                rec = cap.wait_for(lambda r: r.process == pid and r.levelno == logging.WARNING, "about the fence")
                assert "Fenced" in rec.getMessage() and rec.name == "shaledb.flush"
    finally:
        logger.removeHandler(cap)
        logger.setLevel(old)


_SILENT = r"""
import sys, shaledb
root = sys.argv[1]
opts = dict(compactor=True, compaction_workers=1, flush_interval=0.02)
with shaledb.open(root, **opts) as first:
    first.put(b"a", b"1")
    with shaledb.open(root, **opts) as second:   # fences the first: its flusher logs a warning
        second.put(b"b", b"2")
        try:
            first.put(b"c", b"3")
        except shaledb.Fenced:
            pass
        second.compact(full=True)                 # the compactor logs at INFO
print("done")
"""


def test_silent_without_logging_configuration(tmp_path):
    p = subprocess.run([sys.executable, "-c", _SILENT, str(tmp_path / "db")], capture_output=True, text=True,
                       timeout=TIMEOUT * 3)
    assert p.returncode == 0 and p.stdout.strip() == "done", p.stderr
    assert p.stderr == ""


def test_events_cross_the_log_pipe_in_order_with_records():
    """A child's events (``LogForwarder.send_event``) reach the parent's
    ``on_event`` after the records logged before them."""
    from multiprocessing import Pipe

    from shaledb.ipc.logs import LogForwarder, receive_logs

    logger = logging.getLogger("shaledb")
    level, propagate = logger.level, logger.propagate
    cap = Capture()
    parent_end, child_end = Pipe(duplex=False)
    seen: list = []
    got = threading.Event()

    def on_event(name, value):
        seen.append((name, value, [r.getMessage() for r in cap.records]))
        got.set()

    fwd = LogForwarder(child_end, "shaledb-test")
    try:
        fwd.start()
        logging.getLogger("shaledb.test").info("before the event")
        fwd.send_event("warm", 1.5)
        # the parent's handler sees the forwarded record (the forwarder's own
        # handler is removed first, so the record is not sent back again)
        logger.removeHandler(fwd.handler)
        logger.addHandler(cap)
        thread = receive_logs(parent_end, "test", on_event=on_event)
        assert got.wait(TIMEOUT)
        assert seen == [("warm", 1.5, ["before the event"])]
    finally:
        fwd.stop()
        child_end.close()
        logger.removeHandler(cap)
        logger.setLevel(level)
        logger.propagate = propagate
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_the_compactor_starts_once_the_flusher_is_warm(tmp_path):
    """The compactor process starts without being asked, after the flusher's
    "warm" event (docs/architecture.md); a call that needs it does not wait
    for that."""
    with open_db(str(tmp_path / "a"), compactor=True) as db:
        deadline = time.monotonic() + TIMEOUT
        while db._cproc is None:
            assert time.monotonic() < deadline, "the compactor never started by itself"
            time.sleep(0.02)
        assert db._cgo.is_set()
        assert db.status().compactor.pid == db._cproc.pid
    with open_db(str(tmp_path / "b"), compactor=True) as db:
        db.put(b"k", b"v")
        assert db.compact(full=True)["jobs"] >= 0  # at once after open: starts it now
