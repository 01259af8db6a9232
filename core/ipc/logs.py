"""Log records of a child process (the flusher, the compactor), forwarded to
the process that started it over the child's ready pipe (docs/operations.md,
"Logging").

Child side, :class:`LogForwarder`: a ``logging.handlers.QueueHandler`` on the
``shaledb`` logger (level INFO, not propagated) whose bounded queue a sender
thread drains onto the ready pipe as ``("log", record dict)`` messages.  The
sender starts only after the ``("ready", ...)`` message went (so the
opener reads its answer first); records logged before wait in the queue.
A logging call never blocks on the pipe: when the queue is full the record
is dropped and counted.

The same queue carries events (``LogForwarder.send_event``: ``("event",
name, value)``), e.g. the flusher's "kernels warm", in order with the
records.

Parent side, :func:`receive_logs`: a daemon thread reading its own
duplicate of the pipe (closing the child's ``conn`` does not disturb it)
until the child exits, handing each record to the parent's logger of the
same name when that logger is enabled for its level, and each event to its
``on_event`` callback.  Handlers see
``record.process`` (the child's pid) and ``record.processName``
(``shaledb-flusher`` / ``shaledb-compactor``).

Thread safety: a forwarder's ``start``/``stop`` are for one thread (the
child's main thread); its handler may be called from any thread.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import threading

__all__ = ["FORWARD_LEVEL", "LOGGER", "LogForwarder", "receive_logs"]

#: the root of every ShaleDB logger
LOGGER = "shaledb"
#: the lowest level a child process forwards
FORWARD_LEVEL = logging.INFO

_QUEUE_RECORDS = 10_000
_STOP = None


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that drops (and counts) a record instead of blocking
    or printing an error when its queue is full."""

    def __init__(self, q: queue.Queue, process_name: str):
        super().__init__(q)
        self.process_name = process_name
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = super().prepare(record)  # message formatted, exc_info turned into text
        record.processName = self.process_name
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class LogForwarder:
    """Forwards the ``shaledb`` records of this (child) process to its parent.

    ``conn``: the child's end of the ready pipe (a ``multiprocessing``
    Connection).  REQUIRES: :meth:`start` only after the ready message was
    sent; :meth:`stop` before ``conn`` is closed.
    """

    def __init__(self, conn, process_name: str):
        self.conn = conn
        self._queue: queue.Queue = queue.Queue(_QUEUE_RECORDS)
        self.handler = _DroppingQueueHandler(self._queue, process_name)
        self._thread: threading.Thread | None = None
        logger = logging.getLogger(LOGGER)
        logger.addHandler(self.handler)
        logger.setLevel(FORWARD_LEVEL)
        logger.propagate = False  # nothing reaches this process's stderr

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full."""
        return self.handler.dropped

    def start(self) -> None:
        """Start sending (queued records first)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._send, name="shaledb-log-forward", daemon=True)
            self._thread.start()

    def send_event(self, name: str, value=None) -> None:
        """Send ``("event", name, value)`` after the records queued so far
        (dropped and counted when the queue is full, as a record is)."""
        try:
            self._queue.put_nowait(("event", name, value))
        except queue.Full:
            self.handler.dropped += 1

    def _send(self) -> None:
        while True:
            record = self._queue.get()
            if record is _STOP:
                return
            try:
                self.conn.send(record if isinstance(record, tuple) else ("log", dict(record.__dict__)))
            except Exception:  # noqa: BLE001 - the record does not pickle, or the parent is gone
                if self.conn.closed:
                    return

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued (waiting at most ``timeout``), then detach."""
        logging.getLogger(LOGGER).removeHandler(self.handler)
        if self._thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout)
            self._thread = None


def _dispatch(message, on_event) -> None:
    if isinstance(message, tuple) and len(message) == 3 and message[0] == "event":
        if on_event is not None:
            on_event(message[1], message[2])
        return
    if not (isinstance(message, tuple) and len(message) == 2 and message[0] == "log"):
        return
    record = logging.makeLogRecord(message[1])
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def receive_logs(conn, label: str, on_event=None) -> threading.Thread:
    """Hand the records a child forwards on ``conn`` (the parent's end of
    its ready pipe, after the ready message) to this process's loggers, and
    its events to ``on_event(name, value)``, on a daemon thread that ends
    when the child's end closes.  Returns the thread."""
    from multiprocessing.connection import Connection

    own = Connection(os.dup(conn.fileno()), writable=False)

    def run() -> None:
        try:
            while True:
                try:
                    message = own.recv()
                except (EOFError, OSError):
                    return
                try:
                    _dispatch(message, on_event)
                except Exception:  # noqa: BLE001 - a broken handler must not stop the drain
                    pass
        finally:
            own.close()

    t = threading.Thread(target=run, name=f"shaledb-logs-{label}", daemon=True)
    t.start()
    return t
