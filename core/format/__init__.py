"""Byte formats that every layer shares: the record layout, bucket object
names (``keys``), persisted enums and the WAL object codec.  Pure code, no I/O.
See docs/format/."""
