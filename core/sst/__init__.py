"""SST objects: the byte format, the writer (builder), the reader and the
block cache.  See docs/format/sst.md and docs/format/block.md."""
