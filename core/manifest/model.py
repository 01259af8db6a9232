"""The manifest: a full snapshot of a database's durable state, and its codec.

A manifest object lives at ``manifest/<20-digit id>.manifest`` (see
docs/format/bucket.md); its id is the object's name and is not repeated in the
bytes.  This module is a pure codec: no I/O.  Versioning, fencing and the
update protocol live in :mod:`shaledb.manifest.versioned` and
:mod:`shaledb.manifest.store`.

Byte grammar (format V1; all fixed-width integers little-endian; see
docs/format/manifest.md for the field table)::

    manifest  := header body checksum
    header    := magic:"SHMF" version:u16 flags:u16(=0) body_len:u32
    body      := field*                      (exactly body_len bytes)
    field     := tag:uvarint len:uvarint payload[len]
    checksum  := xxh64(seed=0) of header+body, u64

    payload of a scalar field   := uvarint filling the payload exactly
    payload of a bytes field    := the bytes
    payload of a ULID field     := 16 bytes, the 128-bit ULID big-endian
    payload of a message field  := field*   (nested, same field grammar)

    uvarint := LEB128, 7 bits a byte, low group first, at most 10 bytes,
               canonical (no redundant trailing 0x80/0x00 groups), < 2**64

Fields appear in non-decreasing tag order; a singular field exactly once
(an optional one at most once), a repeated field as a contiguous group.  Tags are the IntEnums
``ManifestField`` (top level), ``ManifestSstField``, ``ManifestRunField``
``ManifestCheckpointField`` and ``ManifestWatermarkField`` in :mod:`shaledb.format.enums`.  A decoder skips
fields with tags it does not know; top-level ones are kept verbatim in
:attr:`Manifest.extensions` and written back, so an older writer carries a
newer writer's additions forward.  A field that an older writer must not
carry blindly needs a new format version instead.

Decoding is strict: wrong magic, unknown version, non-zero flags, a length
that does not match, a bad checksum, a malformed or non-canonical varint, a
duplicate or missing singular field, fields out of order, and impossible
values (a key range backwards, seq beyond 56 bits, overlapping SSTs in a
sorted run, an SST listed twice, ...) all raise :class:`shaledb.Corruption`
naming the object.  The same value checks guard construction of the
dataclasses (as :class:`shaledb.InvalidArgument`), so an invalid manifest is
never encoded.

Thread safety: everything here is immutable or pure; safe to share.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

import xxhash

from shaledb.format.enums import (
    ManifestCheckpointField,
    ManifestField,
    ManifestFormat,
    ManifestRunField,
    ManifestSstField,
    ManifestWatermarkField,
)
from shaledb.errors import Corruption, InvalidArgument

__all__ = [
    "MAGIC",
    "MAX_SEQ",
    "Checkpoint",
    "Manifest",
    "SortedRun",
    "SstRef",
    "SstWatermark",
    "decode_manifest",
    "encode_manifest",
]

MAGIC = b"SHMF"
#: Sequence numbers are 56-bit (the low byte of a record trailer is the kind).
MAX_SEQ = (1 << 56) - 1
_U64_MAX = (1 << 64) - 1
_HEADER = struct.Struct("<4sHHI")
_CHECKSUM = struct.Struct("<Q")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_INDEX = {c: i for i, c in enumerate(_CROCKFORD)}
_ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


# --------------------------------------------------------------------------
# value checks shared by the dataclasses (InvalidArgument) and the decoder
# (which turns them into Corruption naming the object)


def _check_uint(name: str, value: object, hi: int = _U64_MAX, lo: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidArgument(f"{name} must be an int in {lo}..{hi}, got {value!r}")


def _check_ulid(name: str, value: object) -> None:
    if not isinstance(value, str) or not _ULID_RE.match(value):
        raise InvalidArgument(f"{name} must be a 26-character ULID string, got {value!r}")


def _check_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise InvalidArgument(f"{name} must be bytes, got {type(value).__name__}")


def ulid_to_bytes(ulid: str) -> bytes:
    """The 16 big-endian bytes of a ULID string (REQUIRES: a valid ULID)."""
    value = 0
    for ch in ulid:
        value = (value << 5) | _CROCKFORD_INDEX[ch]
    return value.to_bytes(16, "big")


def ulid_from_bytes(raw: bytes) -> str:
    value = int.from_bytes(raw, "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


# --------------------------------------------------------------------------
# the dataclasses


@dataclass(frozen=True, slots=True)
class SstRef:
    """One SST as the manifest knows it: enough to skip it without a read.

    ``first_key``/``last_key`` are inclusive; ``min_seq``/``max_seq`` bound
    the sequence numbers of its records.  ``global_seq`` (bulk ingest,
    docs/bulk.md): when nonzero every record of the SST reads as having this
    seq, and ``min_seq == max_seq == global_seq``; a manifest holding such an
    SST is format V2.
    """

    sst_id: str
    first_key: bytes
    last_key: bytes
    size: int
    min_seq: int
    max_seq: int
    num_entries: int
    global_seq: int = 0

    def __post_init__(self) -> None:
        _check_ulid("sst_id", self.sst_id)
        _check_bytes("first_key", self.first_key)
        _check_bytes("last_key", self.last_key)
        if self.first_key > self.last_key:
            raise InvalidArgument(f"SST {self.sst_id}: first_key > last_key")
        _check_uint("size", self.size, lo=1)
        _check_uint("min_seq", self.min_seq, MAX_SEQ)
        _check_uint("max_seq", self.max_seq, MAX_SEQ)
        if self.min_seq > self.max_seq:
            raise InvalidArgument(f"SST {self.sst_id}: min_seq {self.min_seq} > max_seq {self.max_seq}")
        _check_uint("num_entries", self.num_entries, lo=1)
        _check_uint("global_seq", self.global_seq, MAX_SEQ)
        if self.global_seq and not self.min_seq == self.max_seq == self.global_seq:
            raise InvalidArgument(f"SST {self.sst_id}: global_seq {self.global_seq} needs min_seq == max_seq == it")

    @classmethod
    def from_info(cls, info) -> "SstRef":
        """From anything with the SstInfo attributes (``shaledb.sst.writer.SstInfo``)."""
        return cls(
            sst_id=info.sst_id,
            first_key=bytes(info.first_key),
            last_key=bytes(info.last_key),
            size=int(info.size),
            min_seq=int(info.min_seq),
            max_seq=int(info.max_seq),
            num_entries=int(info.num_entries),
        )


@dataclass(frozen=True, slots=True)
class SortedRun:
    """Non-overlapping SSTs in key order covering part of the key space."""

    run_id: int
    ssts: tuple[SstRef, ...]

    def __post_init__(self) -> None:
        _check_uint("run_id", self.run_id)
        if not isinstance(self.ssts, tuple) or not all(isinstance(s, SstRef) for s in self.ssts):
            raise InvalidArgument("SortedRun.ssts must be a tuple of SstRef")
        if not self.ssts:
            raise InvalidArgument(f"sorted run {self.run_id} is empty")
        for a, b in zip(self.ssts, self.ssts[1:]):
            if not a.last_key < b.first_key:
                raise InvalidArgument(
                    f"sorted run {self.run_id}: SSTs {a.sst_id} and {b.sst_id} overlap or are out of key order"
                )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A named pin on one manifest id: GC keeps that manifest and its objects."""

    id: str
    manifest_id: int
    expires_at_ms: int = 0  # 0 = never expires
    name: str = ""

    def __post_init__(self) -> None:
        _check_ulid("checkpoint id", self.id)
        _check_uint("manifest_id", self.manifest_id, lo=1)
        _check_uint("expires_at_ms", self.expires_at_ms)
        if not isinstance(self.name, str):
            raise InvalidArgument("checkpoint name must be a str")
        try:
            self.name.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidArgument(f"checkpoint name is not encodable as UTF-8: {e}") from None

    def expired(self, now_ms: int) -> bool:
        return self.expires_at_ms != 0 and self.expires_at_ms <= now_ms

    def replace_expiry(self, expires_at_ms: int) -> "Checkpoint":
        """This checkpoint with another expiry (a refresh)."""
        return dataclasses.replace(self, expires_at_ms=expires_at_ms)


@dataclass(frozen=True, slots=True)
class SstWatermark:
    """A publishing role's promise to GC (docs/gc.md): every SST that the
    writer (or compactor) of ``epoch`` may still publish has an id >= ``sst_id``.

    Only meaningful while ``epoch`` is that role's current epoch: a fenced
    epoch can publish nothing, so a newer epoch's watermark supersedes it.
    """

    epoch: int
    sst_id: str

    def __post_init__(self) -> None:
        _check_uint("watermark epoch", self.epoch)
        _check_ulid("watermark sst_id", self.sst_id)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A full snapshot of the durable state of one database.

    * ``writer_epoch`` / ``compactor_epoch``: bumped by every writer /
      compactor open; a handle whose epoch is older is fenced.
    * ``next_wal_id``: one past the last WAL object known flushed.
    * ``replay_after_wal_id``: WAL objects with ids above it are replayed on
      recovery; everything at or below it is in L0 or deeper.
    * ``last_l0_seq``: highest seq in L0 and below; replay skips seq <= it.
    * ``l0``: L0 SSTs, newest first.  ``sorted_runs``: highest run id first
      (that is read precedence).  ``checkpoints``: in creation order.
    * ``writer_sst_watermark`` / ``compactor_sst_watermark``: optional
      :class:`SstWatermark` of each publishing role (None: never set, e.g. a
      manifest written before the field existed).
    * ``extensions``: top-level fields of a newer format revision that this
      version does not understand, ``(tag, payload)`` in tag order, carried
      through unchanged.
    """

    writer_epoch: int = 0
    compactor_epoch: int = 0
    next_wal_id: int = 1
    replay_after_wal_id: int = 0
    last_l0_seq: int = 0
    l0: tuple[SstRef, ...] = ()
    sorted_runs: tuple[SortedRun, ...] = ()
    checkpoints: tuple[Checkpoint, ...] = ()
    extensions: tuple[tuple[int, bytes], ...] = ()
    format_version: int = ManifestFormat.V1
    writer_sst_watermark: SstWatermark | None = None
    compactor_sst_watermark: SstWatermark | None = None

    def __post_init__(self) -> None:
        if self.format_version not in ManifestFormat.__members__.values():
            raise InvalidArgument(f"unknown manifest format version {self.format_version!r}")
        _check_uint("writer_epoch", self.writer_epoch)
        _check_uint("compactor_epoch", self.compactor_epoch)
        _check_uint("next_wal_id", self.next_wal_id, lo=1)
        _check_uint("replay_after_wal_id", self.replay_after_wal_id)
        if self.replay_after_wal_id >= self.next_wal_id:
            raise InvalidArgument(
                f"replay_after_wal_id {self.replay_after_wal_id} must be below next_wal_id {self.next_wal_id}"
            )
        _check_uint("last_l0_seq", self.last_l0_seq, MAX_SEQ)
        for name, items, typ in (
            ("l0", self.l0, SstRef),
            ("sorted_runs", self.sorted_runs, SortedRun),
            ("checkpoints", self.checkpoints, Checkpoint),
        ):
            if not isinstance(items, tuple) or not all(isinstance(x, typ) for x in items):
                raise InvalidArgument(f"Manifest.{name} must be a tuple of {typ.__name__}")
        seen: set[str] = set()
        for sst in self.all_ssts():
            if sst.sst_id in seen:
                raise InvalidArgument(f"SST {sst.sst_id} is listed twice")
            seen.add(sst.sst_id)
            if sst.max_seq > self.last_l0_seq:
                raise InvalidArgument(
                    f"SST {sst.sst_id} holds seq {sst.max_seq} above last_l0_seq {self.last_l0_seq}"
                )
        if self.format_version < ManifestFormat.V2 and any(s.global_seq for s in self.all_ssts()):
            raise InvalidArgument("an SST with a global_seq needs manifest format V2")
        run_ids = [r.run_id for r in self.sorted_runs]
        if any(a <= b for a, b in zip(run_ids, run_ids[1:])):
            raise InvalidArgument(f"sorted runs must be in strictly descending run id order, got {run_ids}")
        for f in ("writer_sst_watermark", "compactor_sst_watermark"):
            wm = getattr(self, f)
            if wm is not None and not isinstance(wm, SstWatermark):
                raise InvalidArgument(f"Manifest.{f} must be an SstWatermark or None")
        cp_ids = [c.id for c in self.checkpoints]
        if len(set(cp_ids)) != len(cp_ids):
            raise InvalidArgument("checkpoint ids must be unique")
        if not isinstance(self.extensions, tuple):
            raise InvalidArgument("Manifest.extensions must be a tuple of (tag, bytes)")
        last_tag = 0
        for ext in self.extensions:
            if not (isinstance(ext, tuple) and len(ext) == 2 and isinstance(ext[1], bytes)):
                raise InvalidArgument("Manifest.extensions must be a tuple of (tag, bytes)")
            tag = ext[0]
            _check_uint("extension tag", tag, lo=1)
            if tag in ManifestField.__members__.values():
                raise InvalidArgument(f"extension tag {tag} is a known manifest field")
            if tag < last_tag:
                raise InvalidArgument("extensions must be in tag order")
            last_tag = tag

    # ---- queries

    def all_ssts(self) -> Iterator[SstRef]:
        """Every SST referenced: L0 newest first, then sorted runs in order."""
        yield from self.l0
        for run in self.sorted_runs:
            yield from run.ssts

    def sst_ids(self) -> set[str]:
        return {s.sst_id for s in self.all_ssts()}

    def replace(self, **changes) -> "Manifest":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------
# encoding


def _uvarint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _uvarint_bytes(value: int) -> bytes:
    out = bytearray()
    _uvarint(value, out)
    return bytes(out)


def _field(out: bytearray, tag: int, payload: bytes) -> None:
    _uvarint(tag, out)
    _uvarint(len(payload), out)
    out += payload


def _encode_sst(s: SstRef) -> bytes:
    out = bytearray()
    _field(out, ManifestSstField.SST_ID, ulid_to_bytes(s.sst_id))
    _field(out, ManifestSstField.FIRST_KEY, s.first_key)
    _field(out, ManifestSstField.LAST_KEY, s.last_key)
    _field(out, ManifestSstField.SIZE, _uvarint_bytes(s.size))
    _field(out, ManifestSstField.MIN_SEQ, _uvarint_bytes(s.min_seq))
    _field(out, ManifestSstField.MAX_SEQ, _uvarint_bytes(s.max_seq))
    _field(out, ManifestSstField.NUM_ENTRIES, _uvarint_bytes(s.num_entries))
    if s.global_seq:  # optional: omitted when 0, so older entries keep their bytes
        _field(out, ManifestSstField.GLOBAL_SEQ, _uvarint_bytes(s.global_seq))
    return bytes(out)


def _encode_run(r: SortedRun) -> bytes:
    out = bytearray()
    _field(out, ManifestRunField.RUN_ID, _uvarint_bytes(r.run_id))
    for s in r.ssts:
        _field(out, ManifestRunField.SST, _encode_sst(s))
    return bytes(out)


def _encode_checkpoint(c: Checkpoint) -> bytes:
    out = bytearray()
    _field(out, ManifestCheckpointField.ID, ulid_to_bytes(c.id))
    _field(out, ManifestCheckpointField.MANIFEST_ID, _uvarint_bytes(c.manifest_id))
    _field(out, ManifestCheckpointField.EXPIRES_AT_MS, _uvarint_bytes(c.expires_at_ms))
    _field(out, ManifestCheckpointField.NAME, c.name.encode("utf-8"))
    return bytes(out)


def _encode_watermark(w: SstWatermark) -> bytes:
    out = bytearray()
    _field(out, ManifestWatermarkField.EPOCH, _uvarint_bytes(w.epoch))
    _field(out, ManifestWatermarkField.SST_ID, ulid_to_bytes(w.sst_id))
    return bytes(out)


def encode_manifest(m: Manifest) -> bytes:
    """The V1 bytes of ``m`` (deterministic: equal manifests, equal bytes)."""
    if not isinstance(m, Manifest):
        raise InvalidArgument(f"encode_manifest needs a Manifest, got {type(m).__name__}")
    known: list[tuple[int, bytes]] = [
        (ManifestField.WRITER_EPOCH, _uvarint_bytes(m.writer_epoch)),
        (ManifestField.COMPACTOR_EPOCH, _uvarint_bytes(m.compactor_epoch)),
        (ManifestField.NEXT_WAL_ID, _uvarint_bytes(m.next_wal_id)),
        (ManifestField.REPLAY_AFTER_WAL_ID, _uvarint_bytes(m.replay_after_wal_id)),
        (ManifestField.LAST_L0_SEQ, _uvarint_bytes(m.last_l0_seq)),
    ]
    known += [(ManifestField.L0_SST, _encode_sst(s)) for s in m.l0]
    known += [(ManifestField.SORTED_RUN, _encode_run(r)) for r in m.sorted_runs]
    known += [(ManifestField.CHECKPOINT, _encode_checkpoint(c)) for c in m.checkpoints]
    # optional fields are omitted when unset: a manifest without them has
    # the same bytes as before they existed
    if m.writer_sst_watermark is not None:
        known.append((ManifestField.WRITER_SST_WATERMARK, _encode_watermark(m.writer_sst_watermark)))
    if m.compactor_sst_watermark is not None:
        known.append((ManifestField.COMPACTOR_SST_WATERMARK, _encode_watermark(m.compactor_sst_watermark)))
    # stable sort: repeated fields keep their order, extensions slot in by tag
    fields = sorted(known + [(int(t), p) for t, p in m.extensions], key=lambda f: f[0])
    body = bytearray()
    for tag, payload in fields:
        _field(body, tag, payload)
    out = bytearray(_HEADER.pack(MAGIC, m.format_version, 0, len(body)))
    out += body
    out += _CHECKSUM.pack(xxhash.xxh64_intdigest(bytes(out)))
    return bytes(out)


# --------------------------------------------------------------------------
# decoding


class _Bad(Exception):
    """Internal: a decode failure, turned into Corruption with the object name."""


def _read_uvarint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _Bad(f"truncated varint at offset {start}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise _Bad(f"varint longer than 10 bytes at offset {start}")
    if pos - start > 1 and buf[pos - 1] == 0:
        raise _Bad(f"non-canonical varint at offset {start}")
    if value > _U64_MAX:
        raise _Bad(f"varint beyond 64 bits at offset {start}")
    return value, pos


def _fields(buf: memoryview, pos: int, end: int, base: int) -> Iterator[tuple[int, int, int]]:
    """Yield (tag, payload_start, payload_end) in non-decreasing tag order."""
    last_tag = 0
    while pos < end:
        at = pos
        tag, pos = _read_uvarint(buf, pos, end)
        length, pos = _read_uvarint(buf, pos, end)
        if tag == 0:
            raise _Bad(f"field tag 0 at offset {base + at}")
        if tag < last_tag:
            raise _Bad(f"field tag {tag} out of order at offset {base + at}")
        if length > end - pos:
            raise _Bad(f"field {tag} at offset {base + at} runs past its end")
        last_tag = tag
        yield tag, pos, pos + length
        pos += length


class _Message:
    """Collects the fields of one message, enforcing singular/repeated rules."""

    def __init__(
        self, buf: memoryview, start: int, end: int, base: int, singular, repeated, what: str, optional=()
    ):
        self.single: dict[int, tuple[int, int]] = {}
        self.multi: dict[int, list[tuple[int, int]]] = {t: [] for t in repeated}
        self.unknown: list[tuple[int, bytes]] = []
        self.buf = buf
        self.base = base
        for tag, a, b in _fields(buf, start, end, base):
            if tag in singular:
                if tag in self.single:
                    raise _Bad(f"{what}: field {singular(tag).name} appears twice")
                self.single[tag] = (a, b)
            elif tag in self.multi:
                self.multi[tag].append((a, b))
            else:
                self.unknown.append((tag, bytes(buf[a:b])))
        missing = [
            singular(t).name for t in singular.__members__.values() if t not in self.single and t not in optional
        ]
        if missing:
            raise _Bad(f"{what}: missing field(s) {', '.join(missing)}")

    def uint(self, tag: int) -> int:
        a, b = self.single[tag]
        value, pos = _read_uvarint(self.buf, a, b)
        if pos != b:
            raise _Bad(f"scalar field {tag} at offset {self.base + a} has trailing bytes")
        return value

    def raw(self, tag: int) -> bytes:
        a, b = self.single[tag]
        return bytes(self.buf[a:b])

    def ulid(self, tag: int) -> str:
        raw = self.raw(tag)
        if len(raw) != 16:
            raise _Bad(f"ULID field {tag} has {len(raw)} bytes, not 16")
        return ulid_from_bytes(raw)


class _TagSet:
    """Singular tags of a message: membership, name lookup and iteration."""

    def __init__(self, enum, repeated: Iterable[int] = ()):
        rep = set(repeated)
        self.enum = enum
        self.__members__ = {k: v for k, v in enum.__members__.items() if v not in rep}
        self._values = set(self.__members__.values())

    def __contains__(self, tag) -> bool:
        return tag in self._values

    def __call__(self, tag):
        return self.enum(tag)


_SST_SINGULAR = _TagSet(ManifestSstField)
_SST_OPTIONAL = (ManifestSstField.GLOBAL_SEQ,)
_WM_SINGULAR = _TagSet(ManifestWatermarkField)
_RUN_SINGULAR = _TagSet(ManifestRunField, [ManifestRunField.SST])
_CP_SINGULAR = _TagSet(ManifestCheckpointField)
_TOP_REPEATED = (ManifestField.L0_SST, ManifestField.SORTED_RUN, ManifestField.CHECKPOINT)
_TOP_SINGULAR = _TagSet(ManifestField, _TOP_REPEATED)
_TOP_OPTIONAL = (ManifestField.WRITER_SST_WATERMARK, ManifestField.COMPACTOR_SST_WATERMARK)


def _decode_sst(buf: memoryview, a: int, b: int, what: str) -> SstRef:
    msg = _Message(buf, a, b, 0, _SST_SINGULAR, (), what, _SST_OPTIONAL)
    gseq = msg.uint(ManifestSstField.GLOBAL_SEQ) if ManifestSstField.GLOBAL_SEQ in msg.single else 0
    return SstRef(
        sst_id=msg.ulid(ManifestSstField.SST_ID),
        first_key=msg.raw(ManifestSstField.FIRST_KEY),
        last_key=msg.raw(ManifestSstField.LAST_KEY),
        size=msg.uint(ManifestSstField.SIZE),
        min_seq=msg.uint(ManifestSstField.MIN_SEQ),
        max_seq=msg.uint(ManifestSstField.MAX_SEQ),
        num_entries=msg.uint(ManifestSstField.NUM_ENTRIES),
        global_seq=gseq,
    )


def _decode_run(buf: memoryview, a: int, b: int, what: str) -> SortedRun:
    msg = _Message(buf, a, b, 0, _RUN_SINGULAR, (ManifestRunField.SST,), what)
    ssts = tuple(
        _decode_sst(buf, x, y, f"{what} SST #{i}") for i, (x, y) in enumerate(msg.multi[ManifestRunField.SST])
    )
    return SortedRun(run_id=msg.uint(ManifestRunField.RUN_ID), ssts=ssts)


def _decode_watermark(msg: "_Message", tag: int, what: str) -> SstWatermark | None:
    if tag not in msg.single:
        return None
    a, b = msg.single[tag]
    w = _Message(msg.buf, a, b, 0, _WM_SINGULAR, (), what)
    return SstWatermark(epoch=w.uint(ManifestWatermarkField.EPOCH), sst_id=w.ulid(ManifestWatermarkField.SST_ID))


def _decode_checkpoint(buf: memoryview, a: int, b: int, what: str) -> Checkpoint:
    msg = _Message(buf, a, b, 0, _CP_SINGULAR, (), what)
    try:
        name = msg.raw(ManifestCheckpointField.NAME).decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad(f"{what}: name is not UTF-8") from None
    return Checkpoint(
        id=msg.ulid(ManifestCheckpointField.ID),
        manifest_id=msg.uint(ManifestCheckpointField.MANIFEST_ID),
        expires_at_ms=msg.uint(ManifestCheckpointField.EXPIRES_AT_MS),
        name=name,
    )


def decode_manifest(data: bytes, name: str) -> Manifest:
    """Parse and validate manifest bytes; ``name`` (the object key) goes in errors.

    Raises :class:`shaledb.Corruption` on any defect; never returns a
    manifest that differs from what was encoded.
    """
    try:
        return _decode(memoryview(bytes(data)))
    except (_Bad, InvalidArgument) as e:
        raise Corruption(f"manifest {name}: {e}") from None


def _decode(buf: memoryview) -> Manifest:
    n = len(buf)
    if n < _HEADER.size + _CHECKSUM.size:
        raise _Bad(f"{n} bytes is shorter than header and checksum")
    magic, version, flags, body_len = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise _Bad(f"bad magic {bytes(magic)!r} (not a ShaleDB manifest)")
    if version not in ManifestFormat.__members__.values():
        raise _Bad(f"unsupported format version {version} (this ShaleDB reads up to {max(ManifestFormat)})")
    if flags != 0:
        raise _Bad(f"unknown header flags {flags:#06x}")
    expected = _HEADER.size + body_len + _CHECKSUM.size
    if n != expected:
        what = "trailing bytes" if n > expected else "truncated"
        raise _Bad(f"{what}: object has {n} bytes, header says {expected}")
    (stored,) = _CHECKSUM.unpack_from(buf, n - _CHECKSUM.size)
    actual = xxhash.xxh64_intdigest(buf[: n - _CHECKSUM.size])
    if stored != actual:
        raise _Bad(f"checksum mismatch (stored {stored:016x}, computed {actual:016x})")
    start, end = _HEADER.size, n - _CHECKSUM.size
    msg = _Message(buf, start, end, 0, _TOP_SINGULAR, _TOP_REPEATED, "manifest", _TOP_OPTIONAL)
    l0 = tuple(_decode_sst(buf, a, b, f"L0 SST #{i}") for i, (a, b) in enumerate(msg.multi[ManifestField.L0_SST]))
    runs = tuple(
        _decode_run(buf, a, b, f"sorted run #{i}") for i, (a, b) in enumerate(msg.multi[ManifestField.SORTED_RUN])
    )
    cps = tuple(
        _decode_checkpoint(buf, a, b, f"checkpoint #{i}")
        for i, (a, b) in enumerate(msg.multi[ManifestField.CHECKPOINT])
    )
    return Manifest(
        format_version=ManifestFormat(version),
        writer_epoch=msg.uint(ManifestField.WRITER_EPOCH),
        compactor_epoch=msg.uint(ManifestField.COMPACTOR_EPOCH),
        next_wal_id=msg.uint(ManifestField.NEXT_WAL_ID),
        replay_after_wal_id=msg.uint(ManifestField.REPLAY_AFTER_WAL_ID),
        last_l0_seq=msg.uint(ManifestField.LAST_L0_SEQ),
        l0=l0,
        sorted_runs=runs,
        checkpoints=cps,
        extensions=tuple(msg.unknown),
        writer_sst_watermark=_decode_watermark(msg, ManifestField.WRITER_SST_WATERMARK, "writer watermark"),
        compactor_sst_watermark=_decode_watermark(msg, ManifestField.COMPACTOR_SST_WATERMARK, "compactor watermark"),
    )
