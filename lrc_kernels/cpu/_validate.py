"""Validation kernels: fast scans used by the public boundary (never by other kernels)."""

from __future__ import annotations

import numpy as np

from ._jit import jit


@jit()
def _first_duplicate(x):
    N, L, k = x.shape
    for r in range(N):
        for l in range(L):
            for j in range(1, k):
                v = x[r, l, j]
                for i in range(j):
                    if x[r, l, i] == v:
                        return r, l, j
    return -1, -1, -1


def first_duplicate(x: np.ndarray) -> tuple[int, int, int]:
    """(row, layer, slot) of the first id repeated within its token, or (-1, -1, -1)."""
    r, l, j = _first_duplicate(x)
    return int(r), int(l), int(j)
