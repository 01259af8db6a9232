"""The descriptor of one uploaded, not yet ingested SST (docs/bulk.md).

Picklable (a frozen dataclass of plain values), so Dask tasks return them to
the client.  ``checksum`` is the XXH64 of the whole object, ``tail_checksum``
that of its last ``tail_len`` bytes (footer and trailer): ``db.ingest``
checks the tail by default (one ranged GET per SST) and the whole object
with ``verify="full"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from shaledb.errors import InvalidArgument
from shaledb.format.keys import sst_key
from shaledb.manifest.model import SstRef

__all__ = ["SstDescriptor"]


@dataclass(frozen=True)
class SstDescriptor:
    """One SST of a bulk load, as :meth:`SstWriter.finish` reports it."""

    sst_id: str
    size: int
    first_key: bytes
    last_key: bytes
    num_entries: int
    checksum: int
    tail_len: int
    tail_checksum: int
    load_id: str
    partition: int
    attempt: int

    def __post_init__(self) -> None:
        self.to_ref()  # validates id, keys, size and count
        if not 32 <= self.tail_len <= self.size:
            raise InvalidArgument(f"SST {self.sst_id}: tail_len {self.tail_len} is impossible for {self.size} bytes")

    @property
    def key(self) -> str:
        """The object key under the database root."""
        return sst_key(self.sst_id)

    def where(self) -> str:
        """Where it came from, for messages."""
        return f"SST {self.sst_id} (load {self.load_id}, partition {self.partition}, attempt {self.attempt})"

    def to_ref(self, seq: int = 0) -> SstRef:
        """The manifest entry (seqs filled in by the ingest)."""
        return SstRef(self.sst_id, self.first_key, self.last_key, self.size, seq, seq, self.num_entries)
