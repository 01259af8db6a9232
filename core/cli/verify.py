"""``verify_database``: check that a database root is whole.

What is checked (docs/cli.md):

* the latest manifest and every manifest a checkpoint pins decode (their
  checksums hold); when the latest does not, the newest one that does is
  used for the rest of the checks;
* every SST those manifests reference exists and opens at the size the
  manifest says (trailer, footer, index and bloom checksums); its footer
  agrees with the manifest entry; with ``deep`` every data block is read
  and checked and the record count must match;
* sorted runs are in key order and do not overlap;
* every WAL object after each manifest's replay point decodes (header,
  trailer and body checksums), and none between the replay point and
  ``next_wal_id`` is missing.

Each defect is a :class:`Problem` naming the object; nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from shaledb.errors import Corruption, ObjectNotFound, ShaleDBError
from shaledb.format.keys import MANIFEST_PREFIX, WAL_PREFIX, manifest_key, parse_manifest_key, parse_wal_key, sst_key
from shaledb.format.wal import decode_wal
from shaledb.manifest.model import Manifest, decode_manifest
from shaledb.sst.reader import SstReader

__all__ = ["Problem", "VerifyReport", "verify_database"]


@dataclass(frozen=True)
class Problem:
    """One bad object: its key and what is wrong with it."""

    object: str
    error: str


@dataclass
class VerifyReport:
    """The outcome of one verification: objects checked and problems found."""

    checked: int = 0
    manifests: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "manifests": self.manifests,
            "problems": [{"object": p.object, "error": p.error} for p in self.problems],
        }


def _err(e: BaseException) -> str:
    return str(e) or type(e).__name__


def verify_database(store, *, deep: bool = False, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Verify the database at ``store`` (see the module docstring).

    ``progress(done, total)`` is called as objects are checked.  Raises
    InvalidArgument when no manifest exists at all; storage failures
    (Unavailable) propagate.
    """
    from shaledb.errors import InvalidArgument

    rep = VerifyReport()
    mids = sorted(i for i in (parse_manifest_key(o.key) for o in store.list(MANIFEST_PREFIX)) if i is not None)
    if not mids:
        raise InvalidArgument(f"no ShaleDB database at {store!r} (no manifest)")
    wal_present = {
        i: o.size for i, o in ((parse_wal_key(o.key), o) for o in store.list(WAL_PREFIX)) if i is not None
    }

    def load(mid: int) -> Manifest | None:
        key = manifest_key(mid)
        rep.checked += 1
        try:
            return decode_manifest(store.get(key), key)
        except ObjectNotFound:
            rep.problems.append(Problem(key, "referenced manifest is missing"))
        except Corruption as e:
            rep.problems.append(Problem(key, _err(e)))
        return None

    # the latest manifest, or the newest that decodes
    manifests: dict[int, Manifest] = {}
    for mid in reversed(mids):
        m = load(mid)
        if m is not None:
            manifests[mid] = m
            break
    if not manifests:
        return rep
    latest_id = next(iter(manifests))
    for c in manifests[latest_id].checkpoints:
        if c.manifest_id not in manifests:
            m = load(c.manifest_id)
            if m is not None:
                manifests[c.manifest_id] = m
    rep.manifests = sorted(manifests)

    # what to read
    ssts = {}
    wals = set()
    for mid, m in manifests.items():
        for run in m.sorted_runs:
            for a, b in zip(run.ssts, run.ssts[1:]):
                if not a.last_key < b.first_key:
                    rep.problems.append(
                        Problem(manifest_key(mid), f"sorted run {run.run_id}: {a.sst_id} and {b.sst_id} overlap")
                    )
        for s in m.all_ssts():
            ssts.setdefault(s.sst_id, s)
        for i in range(m.replay_after_wal_id + 1, m.next_wal_id):
            if i not in wal_present:
                rep.problems.append(Problem(f"{WAL_PREFIX}{i:020d}.sst", "WAL object below next_wal_id is missing"))
        wals.update(i for i in wal_present if i > m.replay_after_wal_id)
    total = len(ssts) + len(wals)
    done = 0
    if progress:
        progress(done, total)

    for ref in ssts.values():
        key = sst_key(ref.sst_id)
        try:
            _check_sst(store, key, ref, deep)
        except ShaleDBError as e:
            if isinstance(e, ObjectNotFound):
                e = Corruption(f"{key}: referenced SST is missing")
            if not isinstance(e, (Corruption, ObjectNotFound)):
                raise
            rep.problems.append(Problem(key, _err(e)))
        rep.checked += 1
        done += 1
        if progress:
            progress(done, total)

    for i in sorted(wals):
        key = f"{WAL_PREFIX}{i:020d}.sst"
        try:
            decode_wal(store.get(key), key)
        except ObjectNotFound:
            rep.problems.append(Problem(key, "WAL object vanished while being verified"))
        except Corruption as e:
            rep.problems.append(Problem(key, _err(e)))
        rep.checked += 1
        done += 1
        if progress:
            progress(done, total)
    return rep


def _check_sst(store, key: str, ref, deep: bool) -> None:
    """Open (and with ``deep`` read through) one SST; Corruption on any defect."""
    r = SstReader(store, key, size=ref.size)
    i = r.info
    mine = (i.sst_id, i.first_key, i.last_key, i.num_entries, i.min_seq, i.max_seq)
    want = (ref.sst_id, ref.first_key, ref.last_key, ref.num_entries, ref.min_seq, ref.max_seq)
    if mine != want:
        raise Corruption(f"{key}: footer (id, key range, entries, seqs) disagrees with the manifest entry")
    if deep:
        n = sum(len(offs) for _, offs in r.iter_range())
        if n != ref.num_entries:
            raise Corruption(f"{key}: holds {n} records, the footer says {ref.num_entries}")
