"""The read path of a writer's Db: arenas, then L0 newest first, then sorted
runs.  See docs/architecture.md."""
