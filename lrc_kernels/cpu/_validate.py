"""Validation kernels: the fast scans behind the public boundary (never used by other kernels)."""

from __future__ import annotations

import numpy as np

from ._jit import jit, prange

# Above this many experts the per-chunk stamp tables (E int64 each) cost more than the
# O(k^2) pairwise scan they replace.
_STAMP_MAX_EXPERTS = 1 << 16


@jit(parallel=True)
def _first_duplicate_stamped(x, E):  # pragma: no cover - compiled
    # O(k) per (token, layer): stamp each id with a per-(token, layer) tag; ids < E
    N, L, k = x.shape
    n_chunks = min(N, 256)
    size = (N + n_chunks - 1) // n_chunks
    found = np.full(n_chunks, -1, np.int64)
    slot = np.zeros(n_chunks, np.int64)
    for c in prange(n_chunks):
        stamp = np.zeros(E, np.int64)
        tag = 0
        for r in range(c * size, min(N, (c + 1) * size)):
            for l in range(L):
                tag += 1
                for j in range(k):
                    e = x[r, l, j]
                    if stamp[e] == tag:
                        found[c] = r * L + l
                        slot[c] = j
                        break
                    stamp[e] = tag
                if found[c] >= 0:
                    break
            if found[c] >= 0:
                break
    for c in range(n_chunks):
        if found[c] >= 0:
            return found[c] // L, found[c] % L, slot[c]
    return -1, -1, -1


@jit()
def _first_duplicate_pairwise(x):  # pragma: no cover - compiled
    N, L, k = x.shape
    for r in range(N):
        for l in range(L):
            for j in range(1, k):
                v = x[r, l, j]
                for i in range(j):
                    if x[r, l, i] == v:
                        return r, l, j
    return -1, -1, -1


def first_duplicate(y: np.ndarray, num_experts: int) -> tuple[int, int, int]:
    """(row, layer, slot) of the first id repeated within its token, or (-1, -1, -1).

    ``y`` is a C-contiguous ``(N, L, k)`` array of ids already checked to lie in
    ``[0, num_experts)``. Rows are scanned in parallel chunks with an O(k) stamp per token;
    above 65,536 experts a pairwise O(k^2) scan per token is used instead. Both return the
    first (row, layer) in order and the first slot there that repeats an earlier one.
    """
    if y.size == 0 or y.shape[2] < 2:
        return -1, -1, -1
    if num_experts <= _STAMP_MAX_EXPERTS:
        r, l, j = _first_duplicate_stamped(y, num_experts)
    else:
        r, l, j = _first_duplicate_pairwise(y)
    return int(r), int(l), int(j)
