"""Persisted enum values are frozen: this test fails when one changes."""

from shaledb.enums import ValueKind

PINNED = {
    ValueKind: {"DELETE": 0, "PUT": 1},
}


def test_persisted_enums_are_pinned():
    for enum, members in PINNED.items():
        assert {m.name: int(m) for m in enum} == members, enum.__name__
