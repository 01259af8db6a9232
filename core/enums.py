"""Every enum whose values reach disk, object storage or shared memory.

These numbers are persistent: never change one, never reuse a retired one.
``tests/test_enums.py`` pins them.  Add new members (or new enums) at the end.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ValueKind"]


class ValueKind(IntEnum):
    """Kind of a record: the low byte of its trailer (see docs/format/record.md)."""

    DELETE = 0  # tombstone: hides older versions of the key
    PUT = 1
