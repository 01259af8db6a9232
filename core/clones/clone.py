"""``shaledb.clone(source_url, dest_url)``: a writable database that shares
its source's SSTs without copying them (docs/readers.md, "Clones").

Steps, each idempotent, so a clone killed at any point and run again with
the same arguments finishes the same clone:

1. **Descriptor** (``clone/source.json`` in the destination, create-only,
   written before anything else of the clone): the source url, the source
   checkpoint that keeps the shared SSTs alive, the manifest it pins and
   that manifest's SST ids.  Without ``checkpoint`` a checkpoint of the
   source's latest manifest is created first (a reader-role update: the
   source's writer is not fenced).  A retry reads the descriptor back and
   reuses its checkpoint.
2. **WAL** (only without ``checkpoint``): the source's WAL objects after the
   pinned manifest's replay point, a contiguous prefix up to the first id
   that does not exist, are copied to WAL ids 1, 2, ... of the destination
   (create-only; an object already copied by an earlier attempt is kept).
   A checkpoint given by id is what its manifest's SSTs hold (as a
   checkpoint reader sees it), so no WAL is copied then.
3. **Manifest 1** of the destination (create-only): the pinned manifest's
   L0 and sorted runs and ``last_l0_seq``, no checkpoints, epochs 0,
   ``replay_after_wal_id = 0`` and ``next_wal_id`` past the copied WAL; the
   first writer that opens the clone replays that WAL as recovery does.

Reads of the shared SSTs go to the source through
:class:`shaledb.storage.overlay.OverlayStore`, which ``options.wrap_store``
installs in every process of the clone when the descriptor exists.  The
clone's GC lists only the clone's root, so it never deletes a source object.

Thread safety: no state; two concurrent clones to one destination settle on
the one descriptor that was created first.
"""

from __future__ import annotations

from dataclasses import dataclass

from shaledb.errors import InvalidArgument, ObjectNotFound, PreconditionFailed

__all__ = ["CloneResult", "clone", "release_source"]


@dataclass(frozen=True)
class CloneResult:
    """What ``clone`` made: ``checkpoint`` (of the source) keeps
    ``shared_ssts`` alive; ``wal_objects`` were copied."""

    source: str
    dest: str
    checkpoint: str
    manifest_id: int
    shared_ssts: int
    wal_objects: int


def clone(source_url, dest_url, *, checkpoint: str | None = None, options=None, **overrides) -> CloneResult:
    """Create a writable database at ``dest_url`` sharing ``source_url``'s SSTs.

    ``checkpoint``: clone exactly that checkpoint of the source; default: a
    new checkpoint of the source's latest manifest plus the source's WAL
    past it (every write durable in the source's WAL when the clone ran).
    The destination must be empty, or hold this same clone (then nothing is
    done again).  ``options``/``overrides``: engine options for both stores
    (``store_options``).  InvalidArgument for a bad source, checkpoint or
    destination.
    """
    from shaledb.checkpoints.api import create_in, find_live, open_root
    from shaledb.failpoints import Failpoints
    from shaledb.format.clone import CLONE_DESCRIPTOR_KEY, CloneDescriptor, decode_clone_descriptor, encode_clone_descriptor
    from shaledb.format.keys import MANIFEST_PREFIX, manifest_key
    from shaledb.manifest.model import decode_manifest
    from shaledb.storage import open_store
    from shaledb.storage.wrappers import RetryingStore

    src, opts = open_root(source_url, options, **overrides)
    src_url = _normal(source_url)
    dst_url = _normal(dest_url)
    if src_url == dst_url:
        raise InvalidArgument("a clone needs a destination other than its source")
    fp = Failpoints(opts.failpoints)
    # the destination without wrap_store: it must not route to a source before the clone is complete
    dst = RetryingStore(open_store(dst_url, **dict(opts.store_options)), deadline=min(30.0, opts.request_timeout))
    try:
        d = _read_descriptor(dst, decode_clone_descriptor, CLONE_DESCRIPTOR_KEY)
        has_manifest = next(iter(dst.list(MANIFEST_PREFIX)), None) is not None
        if d is None:
            if has_manifest or next(iter(dst.list("")), None) is not None:
                raise InvalidArgument(f"the clone destination {dst_url} is not empty")
            from shaledb.manifest.store import ManifestStore

            ms = ManifestStore(src)
            if not ms.exists():
                raise InvalidArgument(f"no ShaleDB database at {src_url} (no manifest)")
            if checkpoint is None:
                cp = create_in(src, name=f"clone {dst_url}"[:200])
                cp_id, pin = cp.id, cp.manifest_id
            else:
                c = find_live(ms.current, checkpoint, ms.clock.now_ms(), src_url)
                cp_id, pin = c.id, c.manifest_id
            m = decode_manifest(src.get(manifest_key(pin)), manifest_key(pin))
            d = CloneDescriptor(src_url, cp_id, pin, tuple(sorted(m.sst_ids())), checkpoint is None)
            try:
                dst.put_if_absent(CLONE_DESCRIPTOR_KEY, encode_clone_descriptor(d))
            except PreconditionFailed:  # a concurrent clone won: follow its descriptor
                d = _read_descriptor(dst, decode_clone_descriptor, CLONE_DESCRIPTOR_KEY)
        asked = d.copy_wal if checkpoint is None else d.checkpoint == checkpoint and not d.copy_wal
        if d.source != src_url or not asked:
            raise InvalidArgument(
                f"{dst_url} holds a clone of {d.source} at checkpoint {d.checkpoint}, not the one asked for")
        if has_manifest:  # complete (and maybe opened and written since): change nothing
            first = decode_manifest(dst.get(manifest_key(1)), manifest_key(1))
            return CloneResult(src_url, dst_url, d.checkpoint, d.manifest_id, len(d.ssts), first.next_wal_id - 1)
        m = decode_manifest(src.get(manifest_key(d.manifest_id)), manifest_key(d.manifest_id))
        nwal = _copy_wal(src, dst, m.replay_after_wal_id + 1, fp) if d.copy_wal else 0
        fp.hit("clone-before-manifest")
        _write_manifest(dst, m, nwal)
        return CloneResult(src_url, dst_url, d.checkpoint, d.manifest_id, len(d.ssts), nwal)
    finally:
        dst.close()
        src.close()


def release_source(dest_url, *, options=None, **overrides) -> bool:
    """Delete the source checkpoint of the clone at ``dest_url`` once the
    clone no longer needs it: no manifest the clone still stores (the
    latest, those its checkpoints pin, older ones its GC has not collected)
    lists a shared SST.  Returns whether the checkpoint was deleted (False:
    still needed; call again after the clone's compactions and GC).  The
    clone keeps reading its own SSTs only.  InvalidArgument when ``dest_url``
    is not a clone."""
    from shaledb.checkpoints.api import delete_in, list_in, open_root
    from shaledb.format.clone import CLONE_DESCRIPTOR_KEY, decode_clone_descriptor
    from shaledb.format.keys import MANIFEST_PREFIX, parse_manifest_key
    from shaledb.manifest.model import decode_manifest

    dst, opts = open_root(dest_url, options, **overrides)
    try:
        d = _read_descriptor(dst, decode_clone_descriptor, CLONE_DESCRIPTOR_KEY)
        if d is None:
            raise InvalidArgument(f"{_normal(dest_url)} is not a clone (no {CLONE_DESCRIPTOR_KEY})")
        shared = set(d.ssts)
        for meta in dst.list(MANIFEST_PREFIX):
            if parse_manifest_key(meta.key) is None:
                continue
            try:
                m = decode_manifest(dst.get(meta.key), meta.key)
            except ObjectNotFound:
                continue  # collected meanwhile
            if shared & m.sst_ids():
                return False
        src, _ = open_root(d.source, opts)
        try:
            if any(c.id == d.checkpoint for c in list_in(src)):
                delete_in(src, d.checkpoint)
        finally:
            src.close()
        return True
    finally:
        dst.close()


def _normal(url) -> str:
    import os

    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url:
        raise InvalidArgument(f"a database root must be a non-empty path or url, got {url!r}")
    return url if "://" in url else os.path.abspath(url)


def _read_descriptor(store, decode, key):
    try:
        return decode(store.get(key), key)
    except ObjectNotFound:
        return None


def _copy_wal(src, dst, first: int, fp) -> int:
    """Copy the source's WAL ids ``first, first+1, ...`` (up to the first
    missing one) to the destination's ids 1, 2, ...; returns how many.
    Ids the destination already holds (an earlier attempt) are kept."""
    from shaledb.format.keys import wal_key

    n = 0
    while True:
        to = wal_key(n + 1)
        try:
            dst.head(to)
        except ObjectNotFound:
            try:
                data = src.get(wal_key(first + n))
            except ObjectNotFound:
                return n
            try:
                dst.put_if_absent(to, data)
            except PreconditionFailed:
                pass  # an earlier attempt's copy (the same bytes)
            if n == 0:
                fp.hit("clone-mid-wal-copy")
        n += 1


def _write_manifest(dst, m, nwal: int) -> None:
    from shaledb.format.keys import manifest_key
    from shaledb.manifest.model import Manifest, encode_manifest

    new = Manifest(
        next_wal_id=nwal + 1,
        replay_after_wal_id=0,
        last_l0_seq=m.last_l0_seq,
        l0=m.l0,
        sorted_runs=m.sorted_runs,
        format_version=m.format_version,
    )
    try:
        dst.put_if_absent(manifest_key(1), encode_manifest(new))
    except PreconditionFailed:
        pass  # a concurrent clone of the same descriptor wrote the same manifest
