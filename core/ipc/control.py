"""The authenticated control channel between a Db's processes: writers and
the flusher, the Db and the compactor.

A server (the flusher, the compactor) listens on a unix socket in a fresh private directory (mode 0700)
with ``multiprocessing.connection`` and a random 32-byte authkey: a client
must prove it knows the key (HMAC challenge) before any request is read.  The
address and key travel inside the picklable writer handle (:class:`ControlAddress`).

Requests are tuples ``(op, *args)`` with ``op`` an int (a member of the
server's request enum: ``shaledb.flush.requests.Request``,
``shaledb.compact.requests.CompactorRequest``); replies are
``("ok", value)`` or ``("err", kind, message)``, ``kind`` naming a class of the
shaledb error tree, re-raised on the client side.  Every client call has a
timeout; a peer that hangs up (the server died) raises Unavailable at once, a
late answer when the timeout passes, and the connection is then dropped.

One Db's servers share one private directory: the flusher's address is made
by :func:`new_control_address`, the compactor's by :func:`sibling_address`,
and :func:`remove_control_address` of the first removes both.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.connection import Client, Listener
from multiprocessing import AuthenticationError
from typing import Any, Callable

import shaledb.errors as errors
from shaledb.errors import Closed, InvalidArgument, ShaleDBError, Unavailable

__all__ = [
    "ControlAddress",
    "ControlClient",
    "ControlServer",
    "new_control_address",
    "remove_control_address",
    "remove_stale_control_dirs",
    "sibling_address",
]

#: Control directories are ``<tmp>/shaledb-ctl-<owner pid>-<random>``: the pid
#: of the process that opened the Db, so a later open can tell a dead owner's
#: directory (left behind by a SIGKILL) from a live one.
_CTL_PREFIX = "shaledb-ctl-"


@dataclass(frozen=True)
class ControlAddress:
    """Where a server listens and the key that opens the door."""

    path: str
    authkey: bytes

    def __repr__(self) -> str:  # never print the key
        return f"ControlAddress(path={self.path!r})"


#: A Unix socket path must fit ``sun_path`` (108 bytes on Linux, 104 on macOS).
_MAX_SOCKET_PATH = 100
#: The longest socket name in a control directory (``compactor.sock``), with room.
_LONGEST_NAME = 16


def control_base() -> str:
    """The directory control directories go in: the temporary directory, or
    ``/tmp`` when a socket path under the temporary directory would be too
    long for a Unix socket (a deep ``TMPDIR``)."""
    base = tempfile.gettempdir()
    longest = len(os.path.join(base, f"{_CTL_PREFIX}{os.getpid()}-{'x' * 8}")) + 1 + _LONGEST_NAME
    if longest <= _MAX_SOCKET_PATH:
        return base
    for alt in ("/tmp", "/var/tmp"):
        if os.path.isdir(alt) and os.access(alt, os.W_OK | os.X_OK):
            return alt
    raise InvalidArgument(
        f"the temporary directory {base!r} is too long for the control socket's path "
        f"(at most {_MAX_SOCKET_PATH} bytes); set TMPDIR to a shorter directory"
    )


def new_control_address(name: str = "flusher") -> ControlAddress:
    """A fresh socket path (``<name>.sock``) in a private directory named
    after this process (under :func:`control_base`), and a random key.
    Removes stale directories of dead owners first."""
    base = control_base()
    remove_stale_control_dirs(base)
    d = tempfile.mkdtemp(prefix=f"{_CTL_PREFIX}{os.getpid()}-", dir=base)
    os.chmod(d, 0o700)
    return ControlAddress(os.path.join(d, f"{name}.sock"), os.urandom(32))


def sibling_address(addr: ControlAddress, name: str) -> ControlAddress:
    """Another server's address (``<name>.sock``, its own random key) in
    ``addr``'s private directory."""
    return ControlAddress(os.path.join(os.path.dirname(addr.path), f"{name}.sock"), os.urandom(32))


def remove_control_address(addr: ControlAddress) -> None:
    """Remove ``addr``'s directory (every sibling's socket with it)."""
    shutil.rmtree(os.path.dirname(addr.path), ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_control_dirs(tmpdir: str | None = None) -> list[str]:
    """Remove this user's control directories whose owner process is dead.

    A directory is stale when the pid in its name is no longer running.  A
    directory without a pid (older naming) is stale when nothing listens on
    its socket.  Returns the directories removed.  Never raises.
    """
    base = tmpdir if tmpdir is not None else control_base()
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    uid = os.getuid()
    for e in entries:
        if not e.name.startswith(_CTL_PREFIX):
            continue
        try:
            if not e.is_dir(follow_symlinks=False) or e.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        head = e.name[len(_CTL_PREFIX):].split("-", 1)[0]
        if head.isdigit() and "-" in e.name[len(_CTL_PREFIX):]:
            stale = not _pid_alive(int(head))
        else:
            socks = [n for n in _names(e.path) if n.endswith(".sock")] or ["flusher.sock"]
            stale = not any(_listening(os.path.join(e.path, n)) for n in socks)
        if stale:
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(e.path)
    return removed


def _names(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _listening(path: str) -> bool:
    """True if a process accepts connections on the unix socket ``path``."""
    if not os.path.exists(path):
        # a directory being set up has no socket yet: keep it unless old
        try:
            import time

            return time.time() - os.stat(os.path.dirname(path)).st_mtime < 600
        except OSError:
            return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
        return True
    except OSError:
        return False


def _label(op: int) -> str:
    """``op`` as messages name it (``flush_wal``)."""
    name = getattr(op, "name", None)
    return name.lower() if isinstance(name, str) else str(op)


def _error_reply(exc: BaseException) -> tuple:
    if isinstance(exc, ShaleDBError):
        return ("err", type(exc).__name__, str(exc))
    return ("err", "Internal", f"{type(exc).__name__}: {exc}")


def _raise_reply(reply: Any) -> Any:
    if not isinstance(reply, tuple) or not reply:
        raise errors.Internal(f"malformed control reply {reply!r}")
    if reply[0] == "ok":
        return reply[1]
    kind, message = reply[1], reply[2]
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, ShaleDBError)):
        cls = errors.Internal
    raise cls(message)


class ControlServer:
    """Accepts authenticated connections; each is served by its own thread.

    ``handler(op, args)`` (``op`` a plain int) runs on the connection's thread
    and may block (a flush request waits for the flusher's worker, a
    compaction for the compactor); its return value is the reply, an
    exception becomes an error reply.
    """

    def __init__(self, addr: ControlAddress, handler: Callable[[int, tuple], Any]):
        self.addr = addr
        self._handler = handler
        self._listener = Listener(addr.path, family="AF_UNIX", authkey=addr.authkey)
        os.chmod(addr.path, 0o600)
        self._stopping = threading.Event()
        self._conns: set = set()
        self._lock = threading.Lock()
        self._busy = 0
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._accept_loop, name="shaledb-control-accept", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn = self._listener.accept()
            except (AuthenticationError, EOFError, ConnectionError):
                continue  # a client without the key, or one that went away
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            with self._lock:
                if self._stopping.is_set():
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="shaledb-control-conn", daemon=True).start()

    def _serve(self, conn) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    req = conn.recv()
                except Exception:  # noqa: BLE001 - EOF, or closed under us by close()
                    return
                with self._lock:
                    self._busy += 1
                if not isinstance(req, tuple) or not req or type(req[0]) is not int:
                    reply = ("err", "InvalidArgument", f"malformed request {req!r}")
                else:
                    try:
                        reply = ("ok", self._handler(req[0], tuple(req[1:])))
                    except BaseException as exc:  # noqa: BLE001 - every failure becomes a reply
                        reply = _error_reply(exc)
                try:
                    conn.send(reply)
                except Exception:  # noqa: BLE001 - the client went away
                    return
                finally:
                    with self._lock:
                        self._busy -= 1
                        self._idle.notify_all()
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let answers in flight go out (up to ``grace`` s), hang up."""
        with self._lock:
            self._idle.wait_for(lambda: self._busy <= 0, timeout=grace)
        self._stopping.set()
        try:
            # wake accept(): connect once without the key; the handshake fails.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(self.addr.path)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            try:
                c.close()
            except OSError:
                pass
        self._thread.join(timeout=5)


class ControlClient:
    """One process's channel to a server (``peer`` names it in messages:
    "flusher", "compactor"); one connection per thread.

    Thread-safe.  Pickling sends only the address (each process connects on
    first use).
    """

    def __init__(self, addr: ControlAddress, timeout: float, peer: str = "flusher"):
        if not isinstance(addr, ControlAddress):
            raise InvalidArgument("ControlClient needs a ControlAddress")
        self.addr = addr
        self.timeout = timeout
        self.peer = peer
        self._local = threading.local()
        self._closed = False
        self._all: list = []
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"addr": self.addr, "timeout": self.timeout, "peer": self.peer}

    def __setstate__(self, state):
        self.__init__(state["addr"], state["timeout"], state.get("peer", "flusher"))

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise Closed("control channel is closed")
            try:
                conn = Client(self.addr.path, family="AF_UNIX", authkey=self.addr.authkey)
            except (FileNotFoundError, ConnectionRefusedError, EOFError, ConnectionError) as exc:
                raise Unavailable(f"cannot reach the {self.peer} at {self.addr.path}: {exc}") from None
            except AuthenticationError:
                raise Unavailable(f"the {self.peer} refused the control-channel key") from None
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def call(self, op: int, *args: Any, timeout: float | None = None) -> Any:
        """Send one request (``op`` an IntEnum member, e.g. a ``Request``) and
        wait (at most ``timeout``) for its answer."""
        timeout = self.timeout if timeout is None else timeout
        conn = self._conn()
        label = _label(op)
        try:
            conn.send((int(op), *args))
            if not conn.poll(timeout):
                self._drop()
                raise Unavailable(f"the {self.peer} did not answer {label!r} within {timeout:g} s")
            reply = conn.recv()
        except (EOFError, ConnectionError, BrokenPipeError, OSError) as exc:
            self._drop()
            raise Unavailable(f"the {self.peer} process is gone ({label!r} got {type(exc).__name__})") from None
        return _raise_reply(reply)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass
        self._local = threading.local()
