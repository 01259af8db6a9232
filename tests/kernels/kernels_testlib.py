"""Shared helpers for the kernel tests (not a test module).

``examples(n)`` scales hypothesis example counts down when the kernels run as
plain Python (``NUMBA_DISABLE_JIT=1``), so that run stays around half a minute.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

NOJIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")


def examples(n: int) -> int:
    return max(3, n // 25) if NOJIT else n


def hsettings(n: int):
    """Hypothesis settings for a kernel property test with about ``n`` examples.

    No explain phase: it re-runs the shrunk failure under ``sys.settrace``,
    which took a failing block test past the 300 s test timeout, so the
    falsifying example was never printed."""
    return settings(
        max_examples=examples(n),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    )
