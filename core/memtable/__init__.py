"""Shared-memory memtables: segments (``shm``), the arena pool every writer
process appends into (``arena_pool``) and the writer handles (``writer``).
See docs/format/arena.md."""
