"""One place that owns every Numba option, so no kernel hard-codes them.

- ``cache=True``: compiled kernels are stored next to the sources (or in
  ``NUMBA_CACHE_DIR``), so only the first run on a machine pays the compile time.
- ``fastmath`` stays off: every kernel works on integer counts, and results must be
  bit-identical to the reference.
- ``error_model="numpy"``: no Python exception machinery inside kernels.
"""

from __future__ import annotations

import numba

__all__ = ["jit", "prange", "num_threads"]

prange = numba.prange


def jit(*, parallel: bool = False, inline: str = "never"):
    """Decorator factory for every CPU kernel of the package."""
    return numba.njit(
        cache=True,
        nogil=True,
        parallel=parallel,
        fastmath=False,
        error_model="numpy",
        boundscheck=False,
        inline=inline,
    )


def num_threads() -> int:
    """Threads the parallel kernels use now (``numba.get_num_threads()``)."""
    return int(numba.get_num_threads())
