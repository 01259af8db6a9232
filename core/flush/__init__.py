"""The flusher process (``python -m shaledb.flush``): WAL uploads, L0 builds,
manifest updates; recovery at open; the control channel to it.
See docs/architecture.md."""
