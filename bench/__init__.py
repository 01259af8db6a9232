"""ShaleDB benchmarks: python -m bench.<name>."""
