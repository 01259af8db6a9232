"""Checks a bulk ingest makes before it commits (docs/bulk.md).

``prepare_ingest(store, descriptors, verify=...)`` returns the descriptors'
manifest entries in key order after checking that they are descriptors, that
no SST is listed twice, that no two key ranges overlap (InvalidArgument
naming both), and that every object exists with the recorded size and
checksum: the footer and trailer by default (one ranged GET per SST), the
whole object with ``verify="full"``, nothing with ``verify="none"``.  The
object checks run on 16 threads; a missing or short object raises
InvalidArgument, a checksum mismatch Corruption.

Thread safety: pure apart from the store reads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import xxhash

from shaledb.bulk.descriptor import SstDescriptor
from shaledb.errors import Corruption, InvalidArgument, ObjectNotFound
from shaledb.manifest.model import SstRef

__all__ = ["VERIFY_MODES", "check_descriptors", "prepare_ingest", "verify_descriptor"]

VERIFY_MODES = ("tail", "full", "none")
_THREADS = 16


def check_descriptors(descriptors) -> list[SstDescriptor]:
    """The descriptors sorted by first key; InvalidArgument if one is not a
    descriptor, an SST is listed twice, or two key ranges overlap."""
    try:
        descs = list(descriptors)
    except TypeError:
        raise InvalidArgument(f"ingest takes an iterable of SstDescriptor, got {type(descriptors).__name__}") from None
    for d in descs:
        if not isinstance(d, SstDescriptor):
            raise InvalidArgument(f"ingest takes SstDescriptor objects (from SstWriter.finish), got {type(d).__name__}")
    seen: dict[str, SstDescriptor] = {}
    for d in descs:
        if d.sst_id in seen:
            raise InvalidArgument(f"{d.where()} is listed twice")
        seen[d.sst_id] = d
    descs.sort(key=lambda d: (d.first_key, d.last_key))
    for a, b in zip(descs, descs[1:]):
        if not a.last_key < b.first_key:
            raise InvalidArgument(
                f"key ranges overlap: {a.where()} holds {a.first_key!r}..{a.last_key!r} and {b.where()} holds "
                f"{b.first_key!r}..{b.last_key!r}; one ingest must be one key-ordered run (partition by key range)"
            )
    return descs


def verify_descriptor(store, d: SstDescriptor, verify: str = "tail") -> None:
    """Check that ``d``'s object exists with its size and checksum (see module docstring).

    ``"tail"`` costs one ranged GET when all is well (its bytes end at the
    recorded size, so a shorter or longer object cannot match); a HEAD
    follows only to explain a mismatch.
    """
    if verify == "none":
        return
    try:
        if verify == "full":
            data, want = store.get(d.key), d.checksum
        else:
            data, want = store.get_range(d.key, d.size - d.tail_len, d.size), d.tail_checksum
    except ObjectNotFound:
        raise InvalidArgument(f"{d.where()}: the object {d.key} does not exist (not uploaded, or collected)") from None
    except InvalidArgument:
        data, want = b"", None  # a range past the end of a shorter object
    expected = d.size if verify == "full" else d.tail_len
    if len(data) == expected and xxhash.xxh64_intdigest(data) == want:
        return
    try:
        size = store.head(d.key).size
    except ObjectNotFound:
        raise InvalidArgument(f"{d.where()}: the object {d.key} does not exist (not uploaded, or collected)") from None
    if size != d.size:
        raise InvalidArgument(f"{d.where()}: the object has {size} bytes, the descriptor says {d.size}")
    raise Corruption(f"{d.where()}: checksum mismatch ({verify}): the object's bytes differ from the descriptor's")


def prepare_ingest(store, descriptors, *, verify: str = "tail") -> tuple[SstRef, ...]:
    """Check ``descriptors`` (see module docstring); their SstRefs in key order."""
    if verify not in VERIFY_MODES:
        raise InvalidArgument(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    descs = check_descriptors(descriptors)
    if not descs:
        raise InvalidArgument("ingest needs at least one SST descriptor")
    if verify != "none":
        with ThreadPoolExecutor(min(_THREADS, len(descs))) as pool:
            for f in [pool.submit(verify_descriptor, store, d, verify) for d in descs]:
                f.result()
    return tuple(d.to_ref() for d in descs)
