import pytest

from shaledb.format import keys as layout
from shaledb.errors import InvalidArgument


def test_keys_sort_numerically():
    keys = [layout.wal_key(i) for i in (1, 9, 10, 11, 100, 10**19)]
    assert sorted(keys) == keys
    assert [layout.parse_wal_key(k) for k in keys] == [1, 9, 10, 11, 100, 10**19]
    assert layout.manifest_key(7) == "manifest/00000000000000000007.manifest"
    assert layout.parse_manifest_key(layout.manifest_key(42)) == 42


def test_parse_rejects_foreign_keys():
    assert layout.parse_wal_key("wal/1.sst") is None
    assert layout.parse_manifest_key("manifest/00000000000000000007.manifest.tmp") is None
    assert layout.parse_sst_key("compacted/notaulid.sst") is None


@pytest.mark.parametrize("bad", [0, -1, 10**20, 1.0, True, "1"])
def test_bad_ids(bad):
    with pytest.raises(InvalidArgument):
        layout.wal_key(bad)


def test_ulid_is_time_ordered_and_roundtrips():
    a = layout.new_sst_id(now_ms=1000, rand=b"\xff" * 10)
    b = layout.new_sst_id(now_ms=1001, rand=b"\x00" * 10)
    assert len(a) == 26 and a < b
    assert layout.parse_sst_key(layout.sst_key(a)) == a
