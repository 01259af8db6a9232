"""``check_store``: does an object store behave as ShaleDB needs?

Every check runs under a fresh scratch prefix (``check-store-<hex>/``) of the
store and the prefix is emptied afterwards.  The checks: create-only writes
refuse a second create, ``put_if_match`` refuses a stale etag, of two
threads racing to create one key exactly one wins, reads and listings see a
write at once, ranged GETs return the right bytes, deletes take effect.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass

from shaledb.errors import ObjectNotFound, PreconditionFailed

__all__ = ["CheckResult", "check_store", "scratch_prefix"]

#: Rounds of the two-thread create race.
RACE_ROUNDS = 8


@dataclass(frozen=True)
class CheckResult:
    """One row of the table: the check's name, whether it passed, and why not."""

    name: str
    ok: bool
    detail: str = ""


class _Fail(Exception):
    pass


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise _Fail(msg)


def _refused(fn, what: str) -> None:
    try:
        fn()
    except PreconditionFailed:
        return
    raise _Fail(f"{what} was accepted; the store lacks conditional writes")


def _create_only(store, p: str) -> None:
    k = p + "create-only"
    store.put_if_absent(k, b"first")
    _refused(lambda: store.put_if_absent(k, b"second"), "a second create-only write (If-None-Match: *)")
    _expect(store.get(k) == b"first", "the refused create changed the object")


def _if_match(store, p: str) -> None:
    k = p + "if-match"
    old = store.put(k, b"v1").etag
    new = store.put_if_match(k, b"v2", old).etag
    _expect(new != old, "the etag did not change on write")
    _refused(lambda: store.put_if_match(k, b"v3", old), "a write with a stale etag (If-Match)")
    _expect(store.get(k) == b"v2", "the refused If-Match write changed the object")
    _refused(lambda: store.put_if_match(p + "if-match-missing", b"x", old), "If-Match on a missing object")


def _race(store, p: str) -> None:
    for r in range(RACE_ROUNDS):
        k = f"{p}race-{r}"
        barrier = threading.Barrier(2, timeout=30)
        wins: list = [None, None]

        def go(i: int) -> None:
            try:
                barrier.wait()
                store.put_if_absent(k, b"racer-%d" % i)
                wins[i] = True
            except PreconditionFailed:
                wins[i] = False
            except BaseException as e:  # reported below
                wins[i] = e

        ts = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        _expect(not any(t.is_alive() for t in ts), "a racing create did not return within 60 s")
        for w in wins:
            if isinstance(w, BaseException):
                raise w
        _expect(wins.count(True) == 1, f"round {r}: {wins.count(True)} of 2 racing creates won (want exactly 1)")
        _expect(store.get(k) == b"racer-%d" % wins.index(True), f"round {r}: the object is not the winner's")


def _read_after_write(store, p: str) -> None:
    k = p + "raw"
    for i in range(5):
        data = os.urandom(64 + i)
        store.put(k, data)
        _expect(store.get(k) == data, f"write {i}: a read right after the write returned other bytes")
        _expect(store.head(k).size == len(data), f"write {i}: head right after the write has a stale size")


def _list_after_write(store, p: str) -> None:
    keys = [f"{p}law/{i:03d}" for i in range(12)]
    for k in keys:
        store.put(k, b"x")
    listed = [m.key for m in store.list(p + "law/")]
    _expect(listed == keys, f"a listing right after the writes shows {len(listed)} of {len(keys)} keys (or out of order)")


def _ranged_get(store, p: str) -> None:
    k = p + "ranged"
    data = os.urandom(10_000)
    store.put(k, data)
    for a, b in ((0, 1), (0, 10_000), (1234, 5678), (9_999, 10_000), (5000, None), (9_000, 20_000), (10_000, 10_001)):
        got = store.get_range(k, a, b)
        _expect(got == data[a:b], f"get_range({a}, {b}) returned {len(got)} wrong bytes")


def _delete(store, p: str) -> None:
    k = p + "delete"
    store.put(k, b"x")
    store.delete(k)
    try:
        store.get(k)
        raise _Fail("a read after delete still returned the object")
    except ObjectNotFound:
        pass
    _expect(all(m.key != k for m in store.list(p + "delete")), "a listing after delete still shows the object")
    store.delete(k)  # deleting a missing key is not an error


CHECKS = (
    ("create-only write refuses a second create", _create_only),
    ("If-Match refuses a stale etag", _if_match),
    ("racing creates have exactly one winner", _race),
    ("read-after-write consistency", _read_after_write),
    ("list-after-write consistency", _list_after_write),
    ("ranged GETs return the right bytes", _ranged_get),
    ("deletes take effect", _delete),
)


def scratch_prefix() -> str:
    """A fresh scratch prefix (``check-store-<hex>/``)."""
    return f"check-store-{uuid.uuid4().hex[:12]}/"


def check_store(store, prefix: str | None = None) -> list[CheckResult]:
    """Run every check under ``prefix`` (default: a fresh scratch prefix) of
    ``store`` and delete every object under it afterwards.

    A failing check is a row with ``ok=False``; the last row says whether the
    scratch prefix was emptied.  Never raises for a store failure.
    """
    p = prefix or scratch_prefix()
    out = []
    try:
        for name, fn in CHECKS:
            try:
                fn(store, p)
                out.append(CheckResult(name, True))
            except _Fail as e:
                out.append(CheckResult(name, False, str(e)))
            except Exception as e:  # any store error is this check failing
                out.append(CheckResult(name, False, f"{type(e).__name__}: {e}"))
    finally:
        try:
            for m in list(store.list(p)):
                store.delete(m.key)
            left = [m.key for m in store.list(p)]
            out.append(CheckResult("scratch prefix removed", not left, f"{len(left)} objects left" if left else ""))
        except Exception as e:
            out.append(CheckResult("scratch prefix removed", False, f"{type(e).__name__}: {e}"))
    return out
