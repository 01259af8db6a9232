"""Plain-Python deduplication of a sorted record run."""

from __future__ import annotations

from reference.sort import decode_record


def dedupe_offsets(buf, offs, snapshot_seq=None):
    """Offsets that survive: newest per key; with a snapshot, also every version
    newer than it and the newest version at or below it."""
    out = []
    prev_key = None
    seen_visible = False
    for off in (int(o) for o in offs):
        key, seq, _, _ = decode_record(buf, off)
        if key != prev_key:
            out.append(off)
            prev_key = key
            seen_visible = snapshot_seq is None or seq <= snapshot_seq
        elif snapshot_seq is not None:
            if seq > snapshot_seq:
                out.append(off)
            elif not seen_visible:
                out.append(off)
                seen_visible = True
    return out
