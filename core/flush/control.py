"""The flusher's control channel: ``shaledb.ipc.control``, named here for
the flusher's modules (the channel itself is generic and lives in
``shaledb.ipc``, so that the compactor uses it too).  New code imports
``shaledb.ipc.control``."""

from shaledb.ipc.control import (
    ControlAddress,
    ControlClient,
    ControlServer,
    new_control_address,
    remove_control_address,
    remove_stale_control_dirs,
)

__all__ = [
    "ControlAddress",
    "ControlClient",
    "ControlServer",
    "new_control_address",
    "remove_control_address",
    "remove_stale_control_dirs",
]
