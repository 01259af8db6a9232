"""Plumbing between the processes of one Db (docs/architecture.md): the
authenticated control channel (``control``) and child processes with their
parent-death watch (``child``), and their log records forwarded to
the parent (``logs``).  Generic: the flusher and the compactor both
use it, and it knows neither.
"""

from shaledb.ipc.child import ChildProcess, OrphanGuardStore, ParentWatch, error_message, read_child_config
from shaledb.ipc.logs import LogForwarder, receive_logs
from shaledb.ipc.control import (
    ControlAddress,
    ControlClient,
    ControlServer,
    new_control_address,
    remove_control_address,
    remove_stale_control_dirs,
    sibling_address,
)

__all__ = [
    "ChildProcess",
    "ControlAddress",
    "ControlClient",
    "ControlServer",
    "LogForwarder",
    "OrphanGuardStore",
    "ParentWatch",
    "error_message",
    "new_control_address",
    "read_child_config",
    "receive_logs",
    "remove_control_address",
    "remove_stale_control_dirs",
    "sibling_address",
]
