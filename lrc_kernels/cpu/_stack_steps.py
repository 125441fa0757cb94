"""Steps of one priority-stack stream shared by the stack engines.

The id of an access (layer level or the shared cache's ``l*E + e``), the per-stream reset
(Belady's next uses, SCH's first window counts) and the token-batched look-up with SPEC's
warm-start rule. The scan of :mod:`._stack` and the engines of :mod:`._stack_belady` use
them; they live here so that neither imports the other.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

__all__ = ["_access_id", "_init_stream", "_look_up"]


@jit()
def _access_id(x, row, l, j, k, E, model):
    if model:
        lay = j // k
        return lay * E + np.int64(x[row, lay, j % k])
    return np.int64(x[row, l, j])


@jit()
def _init_stream(x, a, T, l, model, E, k, A, policy, m, pos, aux, nxt, last_seen):
    """Reset per-stream state; Belady's next positions or SCH's first window counts."""
    N = pos.shape[0]
    for i in range(N):
        pos[i] = -1
        aux[i] = 0
    if policy == 2:  # Belady: next flat position (1-based) of each access
        for i in range(N):
            last_seen[i] = T * A + 1 + i  # never again
        for t in range(T - 1, -1, -1):
            for j in range(A - 1, -1, -1):
                y = _access_id(x, a + t, l, j, k, E, model)
                nxt[t * A + j] = last_seen[y]
                last_seen[y] = t * A + j + 1
    elif policy == 3:  # SCH: future[x] = tokens among [0, m) that use x
        for t in range(min(m, T)):
            for j in range(A):
                aux[_access_id(x, a + t, l, j, k, E, model)] += 1


@jit()
def _look_up(x, row, l, model, E, k, A, warm, pos, size, stat):
    """Step 1: a token's accesses against the stack as it was before the token."""
    N = pos.shape[0]
    u = size  # distinct ids first-accessed so far, this token's earlier ones included
    for j in range(A):
        y = _access_id(x, row, l, j, k, E, model)
        d = pos[y]
        if d >= 0:
            stat[d] += 1
        else:
            if warm:
                stat[u] += 1
            else:
                stat[N] += 1
            u += 1
