"""The record format has one owner (shaledb.format.record): its constants are
pinned to the persisted ValueKind enum, to docs/format/record.md and to what
the compiled kernels enforce."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from shaledb.format import record as R
from shaledb.format.enums import ValueKind

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "format" / "record.md").read_text()


def test_value_kinds_are_the_enum():
    assert R.KIND_DELETE == ValueKind.DELETE == 0
    assert R.KIND_PUT == ValueKind.PUT == 1
    assert R.MAX_KIND == max(ValueKind)
    # plain ints, so numba folds them as compile-time constants
    assert type(R.KIND_PUT) is int and type(R.KIND_DELETE) is int


def test_header_layout_is_pinned():
    assert R.HEADER_FORMAT == "<IIQ" and R.HEADER.size == R.RECORD_HEADER == 16
    assert (R.KEY_LEN_OFF, R.VALUE_LEN_OFF, R.TRAILER_OFF, R.RECORD_ALIGN) == (0, 4, 8, 8)
    assert R.KIND_BITS == 8 and R.KIND_MASK == 0xFF and R.MAX_SEQ == (1 << 56) - 1
    assert R.pack_trailer(R.MAX_SEQ, R.KIND_PUT) == (1 << 64) - 255
    assert R.unpack_trailer(R.pack_trailer(12345, R.KIND_DELETE)) == (12345, R.KIND_DELETE)
    # golden bytes: key b"k", value b"vv", seq 5, PUT
    rec = R.encode_record(b"k", b"vv", 5, R.KIND_PUT)
    assert rec == bytes.fromhex("01000000" "02000000" "0105000000000000" "6b7676" "0000000000")
    assert len(rec) == R.record_size(1, 2) == 24
    assert R.unpack_header(rec) == (1, 2, 5, R.KIND_PUT)
    assert [R.record_size(k, 0) for k in (1, 8, 9)] == [24, 24, 32]


def test_docs_state_the_same_numbers():
    assert "`shaledb.format.record`" in DOC
    header = re.search(r"offset 0\s+4\s+8\s+16", DOC)
    assert header, "the header diagram of docs/format/record.md moved"
    assert re.search(rf"1 to {R.MAX_KEY_BYTES} \(`MAX_KEY_BYTES`\)", DOC)
    assert re.search(rf"0 to {R.MAX_VALUE_BYTES} \(`MAX_VALUE_BYTES`", DOC)
    assert "0 to 2^56-1" in DOC and R.MAX_SEQ == 2**56 - 1
    kinds = dict(re.findall(r"`(DELETE|PUT) = (\d+)`", DOC))
    assert {k: int(v) for k, v in kinds.items()} == {m.name: int(m) for m in ValueKind}
    assert f'`"{R.HEADER_FORMAT}"`' in DOC


def test_owner_imports_neither_numpy_nor_numba():
    code = "import sys, shaledb.format.record; assert not {'numpy', 'numba'} & set(sys.modules), sorted(sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_kernel_modules_take_the_layout_from_the_owner():
    """No kernel module but the kept shim re-derives or re-imports the layout elsewhere."""
    offenders = []
    for path in sorted((ROOT / "kernels").glob("*.py")):
        text = path.read_text()
        if "kernels.layout" in text or "<IIQ" in text or re.search(r"^(RECORD_HEADER|MAX_SEQ|KIND_\w+) = ", text, re.M):
            offenders.append(path.name)
    assert not offenders, offenders


def test_no_second_layout_module():
    """The record layout has one owner; the kernels' old layout module is gone."""
    assert not (ROOT / "kernels" / "layout.py").exists()


def _run(records):
    raw = b"".join(R.encode_record(k, v, s, kind) for k, v, s, kind in records)
    buf = np.frombuffer(raw, dtype=np.uint8)
    offs, pos = [], 0
    for k, v, _, _ in records:
        offs.append(pos)
        pos += R.record_size(len(k), len(v))
    return buf, np.array(offs, dtype=np.int64)


def test_compiled_kernels_see_the_same_constants():
    from shaledb.kernels import record as KR
    from shaledb.kernels.block import block_get, encode_blocks

    buf, offs = _run([(b"a", b"xyz", R.MAX_SEQ, R.KIND_PUT), (b"b", b"", 7, R.KIND_DELETE)])
    assert int(KR.key_len(buf, offs[0])) == 1 and int(KR.value_len(buf, offs[0])) == 3
    assert int(KR.trailer(buf, offs[1])) == R.pack_trailer(7, R.KIND_DELETE)
    block = encode_blocks(buf, offs).block(0)
    assert block_get(block, b"a") == (R.KIND_PUT, R.MAX_SEQ, b"xyz")
    assert block_get(block, b"b") == (R.KIND_DELETE, 7, None)
    # the key limit the kernels enforce is MAX_KEY_BYTES
    big, boffs = _run([(b"k" * R.MAX_KEY_BYTES, b"", 1, R.KIND_PUT)])
    assert bool(KR.record_ok(big, boffs[0]))
    hdr = bytearray(big.tobytes())
    R.HEADER.pack_into(hdr, 0, R.MAX_KEY_BYTES + 1, 0, R.pack_trailer(1, R.KIND_PUT))
    hdr += bytes(8)
    assert not bool(KR.record_ok(np.frombuffer(bytes(hdr), dtype=np.uint8), 0))


@pytest.mark.parametrize("kind", [R.MAX_KIND + 1, 0xFF])
def test_a_kind_past_the_enum_is_rejected_by_the_kernels(kind):
    from shaledb.errors import InvalidArgument
    from shaledb.kernels.block import gather_records

    buf, offs = _run([(b"a", b"v", 1, kind)])
    with pytest.raises(InvalidArgument, match="kind"):
        gather_records(buf, offs)
