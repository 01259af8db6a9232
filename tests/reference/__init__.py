"""Plain-Python reference implementations of the kernels: slow, obviously correct."""
