"""shaledb.kernels.point.sort_keys against Python's sort (the order get_many
walks keys in), including keys that tie on long prefixes, prefixes of each
other, trailing zero bytes, duplicates and one outlier that makes the common
prefix empty (a case that once made the sort quadratic)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shaledb.kernels.point import sort_keys

STEMS = [b"a", b"ab", b"ab\x00", b"key0000", b"key00000000", b"key00000000\x00", b"nope", b"\xff", b"k" * 20]
KEYS = st.builds(lambda s, t: s + t, st.sampled_from(STEMS), st.binary(max_size=12))


def _packed(keys):
    offs = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum([len(k) for k in keys], out=offs[1:])
    return np.frombuffer(b"".join(keys), dtype=np.uint8), offs


@settings(max_examples=200, deadline=None)
@given(st.lists(KEYS, max_size=80))
def test_sort_keys_is_bytewise(keys):
    order = sort_keys(*_packed(keys))
    assert sorted(order.tolist()) == list(range(len(keys)))
    assert [keys[i] for i in order] == sorted(keys)


def test_many_keys_with_one_outlier():
    keys = [b"key%013d" % i for i in range(20000, 0, -1)] + [b"nope"]
    order = sort_keys(*_packed(keys))
    assert [keys[i] for i in order] == sorted(keys)
