"""ShaleDB numba kernels (see issue: kernels)."""
