"""The manifest codec: round trips, golden bytes, strict decoding."""

from __future__ import annotations

import os
import struct

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shaledb.errors import Corruption, InvalidArgument
from shaledb.format.keys import new_sst_id
from shaledb.manifest.model import (
    MAGIC,
    MAX_SEQ,
    Checkpoint,
    Manifest,
    SortedRun,
    SstRef,
    decode_manifest,
    encode_manifest,
)

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def ulid(n: int) -> str:
    return new_sst_id(now_ms=1_700_000_000_000 + n, rand=n.to_bytes(10, "big"))


def sst(n: int, first: bytes = b"a", last: bytes = b"z", seq: tuple[int, int] = (1, 10)) -> SstRef:
    return SstRef(ulid(n), first, last, size=1000 + n, min_seq=seq[0], max_seq=seq[1], num_entries=n + 1)


def full_manifest() -> Manifest:
    return Manifest(
        writer_epoch=7,
        compactor_epoch=3,
        next_wal_id=42,
        replay_after_wal_id=40,
        last_l0_seq=1 << 40,
        l0=(sst(3, b"k3", b"k9", (500, 900)), sst(2, b"\x00", b"\xff" * 3, (100, 499))),
        sorted_runs=(
            SortedRun(5, (sst(10, b"a", b"f"), sst(11, b"g", b"m"), sst(12, b"n", b"z"))),
            SortedRun(1, (sst(20, b"", b"zz", (0, 0)),)),
        ),
        checkpoints=(
            Checkpoint(ulid(100), manifest_id=9, expires_at_ms=0, name=""),
            Checkpoint(ulid(101), manifest_id=12, expires_at_ms=1_700_000_900_000, name="nightly-é"),
        ),
        extensions=((40, b"future field"), (300, b"")),
    )


GOLDEN_CASES = {
    "new_db.manifest": Manifest(),
    "full.manifest": full_manifest(),
}


# ----------------------------------------------------------------- golden


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_writer_reproduces_golden_bytes(name, rewrite_golden):
    path = os.path.join(GOLDEN, name)
    data = encode_manifest(GOLDEN_CASES[name])
    if rewrite_golden:
        with open(path, "wb") as f:
            f.write(data)
    with open(path, "rb") as f:
        golden = f.read()
    assert data == golden, f"encoder output differs from {path}; rerun with --rewrite-manifest-golden if intended"
    assert decode_manifest(golden, name) == GOLDEN_CASES[name]


def test_golden_header_layout():
    data = encode_manifest(Manifest())
    magic, version, flags, body_len = struct.unpack_from("<4sHHI", data)
    assert (magic, version, flags) == (MAGIC, 1, 0)
    assert len(data) == 12 + body_len + 8
    assert struct.unpack_from("<Q", data, len(data) - 8)[0] == xxhash.xxh64_intdigest(data[:-8])


# ----------------------------------------------------------------- round trip

keys = st.binary(max_size=12)
seqs = st.integers(0, MAX_SEQ)


@st.composite
def sst_refs(draw, counter):
    a, b = sorted([draw(keys), draw(keys)])
    lo, hi = sorted([draw(seqs), draw(seqs)])
    counter[0] += 1
    return SstRef(
        ulid(counter[0] + draw(st.integers(0, 1000)) * 100000),
        a,
        b,
        size=draw(st.integers(1, 2**63)),
        min_seq=lo,
        max_seq=hi,
        num_entries=draw(st.integers(1, 2**40)),
    )


@st.composite
def manifests(draw):
    counter = [0]
    l0 = draw(st.lists(sst_refs(counter), max_size=4, unique_by=lambda s: s.sst_id))
    runs = []
    used = {s.sst_id for s in l0}
    run_ids = sorted(draw(st.sets(st.integers(0, 2**32), max_size=3)), reverse=True)
    for rid in run_ids:
        n = draw(st.integers(1, 4))
        bounds = sorted(draw(st.sets(st.binary(min_size=1, max_size=6), min_size=2 * n, max_size=2 * n)))
        ssts = []
        for i in range(n):
            s = draw(sst_refs(counter))
            s = SstRef(s.sst_id, bounds[2 * i], bounds[2 * i + 1], s.size, s.min_seq, s.max_seq, s.num_entries)
            ssts.append(s)
        if any(s.sst_id in used for s in ssts):
            continue
        used.update(s.sst_id for s in ssts)
        runs.append(SortedRun(rid, tuple(ssts)))
    every = l0 + [s for r in runs for s in r.ssts]
    last_l0_seq = max([s.max_seq for s in every], default=0)
    last_l0_seq = draw(st.integers(last_l0_seq, MAX_SEQ))
    nxt = draw(st.integers(1, 2**64 - 1))
    cps = draw(
        st.lists(
            st.builds(
                Checkpoint,
                id=st.integers(0, 10**6).map(lambda n: ulid(10**7 + n)),
                manifest_id=st.integers(1, 2**64 - 1),
                expires_at_ms=st.integers(0, 2**64 - 1),
                name=st.text(max_size=8),
            ),
            max_size=3,
            unique_by=lambda c: c.id,
        )
    )
    ext_tags = sorted(draw(st.sets(st.integers(11, 2**20), max_size=3)))
    return Manifest(
        writer_epoch=draw(st.integers(0, 2**64 - 1)),
        compactor_epoch=draw(st.integers(0, 2**64 - 1)),
        next_wal_id=nxt,
        replay_after_wal_id=draw(st.integers(0, nxt - 1)),
        last_l0_seq=last_l0_seq,
        l0=tuple(l0),
        sorted_runs=tuple(runs),
        checkpoints=tuple(cps),
        extensions=tuple((t, draw(st.binary(max_size=5))) for t in ext_tags),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_round_trip(m):
    data = encode_manifest(m)
    assert decode_manifest(data, "x") == m
    assert encode_manifest(decode_manifest(data, "x")) == data  # deterministic


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests(), st.data())
def test_any_corrupted_byte_is_detected(m, data):
    raw = bytearray(encode_manifest(m))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(Corruption, match="manifest/7"):
        decode_manifest(bytes(raw), "manifest/7")


def test_every_single_bit_flip_is_detected():
    raw = encode_manifest(full_manifest())
    for i in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            with pytest.raises(Corruption):
                decode_manifest(bytes(bad), "m")


# ----------------------------------------------------------------- strictness


def reseal(body: bytes, *, version: int = 1, flags: int = 0) -> bytes:
    """A well-framed object (right length and checksum) around ``body``."""
    head = struct.pack("<4sHHI", MAGIC, version, flags, len(body)) + body
    return head + struct.pack("<Q", xxhash.xxh64_intdigest(head))


def body_of(m: Manifest) -> bytes:
    return encode_manifest(m)[12:-8]


def test_trailing_and_truncated():
    raw = encode_manifest(full_manifest())
    with pytest.raises(Corruption, match="trailing"):
        decode_manifest(raw + b"\x00", "m")
    for n in (0, 5, 19, len(raw) - 1):
        with pytest.raises(Corruption):
            decode_manifest(raw[:n], "m")


def test_wrong_magic_version_flags():
    body = body_of(Manifest())
    good = reseal(body)
    assert decode_manifest(good, "m") == Manifest()
    with pytest.raises(Corruption, match="magic"):
        decode_manifest(b"XXXX" + good[4:], "m")
    with pytest.raises(Corruption, match="version 3"):  # V2 exists: bulk-ingested SSTs
        decode_manifest(reseal(body, version=3), "m")
    with pytest.raises(Corruption, match="flags"):
        decode_manifest(reseal(body, flags=1), "m")


def field(tag: int, payload: bytes) -> bytes:
    assert tag < 128 and len(payload) < 128
    return bytes([tag, len(payload)]) + payload


SCALARS = [field(t, b"\x00") for t in (1, 2)] + [field(3, b"\x01")] + [field(t, b"\x00") for t in (4, 5)]


@pytest.mark.parametrize(
    "body, what",
    [
        (b"".join(SCALARS[:4]), "missing"),
        (b"".join(SCALARS) + field(5, b"\x00"), "twice"),
        (b"".join(SCALARS[1:2] + SCALARS[:1] + SCALARS[2:]), "out of order"),
        (b"".join(SCALARS[:2]) + field(3, b"\x81\x00") + b"".join(SCALARS[3:]), "non-canonical"),
        (b"".join(SCALARS[:2]) + field(3, b"\x01\x00") + b"".join(SCALARS[3:]), "trailing bytes"),
        (b"".join(SCALARS[:2]) + field(3, b"\xff" * 11) + b"".join(SCALARS[3:]), "varint"),
        (b"".join(SCALARS[:2]) + field(3, b"\x00") + b"".join(SCALARS[3:]), "next_wal_id"),
        (b"".join(SCALARS[:3]) + field(4, b"\x05") + SCALARS[4], "replay_after_wal_id"),
        (b"".join(SCALARS) + b"\x06\x7f", "runs past"),
        (b"".join(SCALARS) + field(0, b""), "tag 0"),
        (b"".join(SCALARS) + field(6, b"\x01\x03abc"), "missing field"),
    ],
)
def test_malformed_bodies(body, what):
    with pytest.raises(Corruption, match=what):
        decode_manifest(reseal(body), "manifest/00000000000000000003.manifest")


def test_impossible_values_in_well_formed_bytes():
    # an L0 SST whose key range is backwards, framed and checksummed correctly
    s = sst(1)
    raw_sst = body_of(Manifest(last_l0_seq=10, l0=(s,)))
    bad = raw_sst.replace(b"\x02\x01a\x03\x01z", b"\x02\x01z\x03\x01a")
    assert bad != raw_sst
    with pytest.raises(Corruption, match="first_key > last_key"):
        decode_manifest(reseal(bad), "m")
    # seq above last_l0_seq
    body = body_of(Manifest(last_l0_seq=10, l0=(s,))).replace(field(5, b"\x0a"), field(5, b"\x09"), 1)
    with pytest.raises(Corruption, match="above last_l0_seq"):
        decode_manifest(reseal(body), "m")


def test_unknown_fields_are_kept_and_nested_ones_skipped():
    m = Manifest(last_l0_seq=10, l0=(sst(1),))
    body = body_of(m)
    # splice an unknown tag (15) inside the SST message: skipped
    sst_payload = body_of(Manifest(last_l0_seq=10, l0=(sst(1),)))[len(b"".join(SCALARS)) :]
    assert sst_payload[0] == 6
    inner = sst_payload[2:] + field(15, b"new")
    body2 = body[: len(body) - len(sst_payload)] + bytes([6, len(inner)]) + inner + field(99, b"top")
    got = decode_manifest(reseal(body2), "m")
    assert got.l0 == m.l0
    assert got.extensions == ((99, b"top"),)
    assert decode_manifest(encode_manifest(got), "m") == got


@pytest.mark.parametrize(
    "make",
    [
        lambda: SstRef("not-a-ulid", b"a", b"b", 1, 0, 0, 1),
        lambda: SstRef(ulid(1), b"b", b"a", 1, 0, 0, 1),
        lambda: SstRef(ulid(1), b"a", b"b", 0, 0, 0, 1),
        lambda: SstRef(ulid(1), b"a", b"b", 1, 5, 4, 1),
        lambda: SstRef(ulid(1), b"a", b"b", 1, 0, MAX_SEQ + 1, 1),
        lambda: SstRef(ulid(1), "a", b"b", 1, 0, 0, 1),
        lambda: SortedRun(1, ()),
        lambda: SortedRun(1, (sst(1, b"a", b"m"), sst(2, b"m", b"z"))),
        lambda: Manifest(next_wal_id=0),
        lambda: Manifest(next_wal_id=3, replay_after_wal_id=3),
        lambda: Manifest(l0=(sst(1),)),  # seq 10 above last_l0_seq 0
        lambda: Manifest(last_l0_seq=10, l0=(sst(1), sst(1))),
        lambda: Manifest(sorted_runs=(SortedRun(1, (sst(1, seq=(0, 0)),)), SortedRun(2, (sst(2, seq=(0, 0)),)))),
        lambda: Manifest(checkpoints=(Checkpoint(ulid(1), 1), Checkpoint(ulid(1), 2))),
        lambda: Manifest(extensions=((3, b""),)),
        lambda: Manifest(extensions=((20, b""), (10, b""))),
        lambda: Manifest(format_version=3),
        lambda: Manifest(writer_epoch=-1),
        lambda: Manifest(l0=[]),
    ],
)
def test_constructors_refuse_impossible_values(make):
    with pytest.raises(InvalidArgument):
        make()
