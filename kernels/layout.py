"""Kept until kernels/arena.py moves; use shaledb.format.record (the owner of the record layout)."""

from __future__ import annotations

# kept until kernels/arena.py moves; use shaledb.format.record
from shaledb.format.record import KEY_LEN_OFF  # noqa: F401
from shaledb.format.record import KIND_DELETE  # noqa: F401
from shaledb.format.record import KIND_PUT  # noqa: F401
from shaledb.format.record import MAX_KEY_BYTES as MAX_KEY_LEN  # noqa: F401
from shaledb.format.record import MAX_SEQ  # noqa: F401
from shaledb.format.record import RECORD_ALIGN  # noqa: F401
from shaledb.format.record import RECORD_HEADER  # noqa: F401
from shaledb.format.record import TRAILER_OFF  # noqa: F401
from shaledb.format.record import VALUE_LEN_OFF  # noqa: F401
from shaledb.format.record import pack_trailer  # noqa: F401
from shaledb.format.record import record_size  # noqa: F401

__all__: list[str] = []  # nothing new may import from here
