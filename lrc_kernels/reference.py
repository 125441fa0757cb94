"""The reference implementation: plain Python that follows ``docs/metrics.md`` line by line.

This module is deliberately slow and obvious. Every backend (Numba CPU, CuPy GPU, the
host-compiled CUDA sources) is tested against it; it is never optimised. Windows are
counted one by one, and the priority stack is a Python list moved exactly as the
definition says.

The integer tables computed here (window histograms, stack-depth counts) are the same
tables every backend produces, so ``backend="reference"`` runs the whole public API
through this file.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ._spec import POLICIES, m_columns

__all__ = [
    "POLICIES",
    "window_histogram",
    "srp_from_histogram",
    "stack_depth_counts",
    "hit_rates",
    "window_hist_table",
    "stack_stats_table",
    "policy_hits",
    "policy_hits_table",
]


# ------------------------------------------------------------------------------ SRP
def window_histogram(tokens, num_experts: int, m: int) -> list[list[int]]:
    """``H[e][c]``: windows of ``m`` tokens in which expert ``e`` is used by ``c`` tokens.

    ``tokens`` is one sequence of one layer: a list of T tokens, each a list of k ids.
    Windows slide one token at a time: starts ``t = 0 .. T-m``. A sequence shorter than
    ``m`` has no window.
    """
    T = len(tokens)
    H = [[0] * (m + 1) for _ in range(num_experts)]
    for t in range(0, T - m + 1):
        for e in range(num_experts):
            c = 0
            for i in range(t, t + m):
                if e in tokens[i]:
                    c += 1
            H[e][c] += 1
    return H


def srp_from_histogram(H: list[int], m: int) -> tuple[Fraction, int, Fraction | None]:
    """Best segment-router F1 from one histogram ``H[c]``, ``c = 0..m``.

    Returns ``(SRP, p*, preds(p*)/acts)``. ``p*`` is the smallest threshold reaching the
    maximum. F1 is 0 where its denominator is 0; the ratio is None when ``acts == 0``.
    """
    acts = sum(c * H[c] for c in range(m + 1))
    best = None
    best_p = 0
    best_preds = 0
    for p in range(0, m + 1):
        matches = sum(c * H[c] for c in range(p, m + 1))
        preds = m * sum(H[c] for c in range(p, m + 1))
        den = preds + acts
        f1 = Fraction(2 * matches, den) if den else Fraction(0)
        if best is None or f1 > best:
            best, best_p, best_preds = f1, p, preds
    ratio = Fraction(best_preds, acts) if acts else None
    return best, best_p, ratio


# ---------------------------------------------------------------------- stack engine
def _next_positions(stream, num_ids: int) -> list[list[int]]:
    """For Belady: next flat position (1-based) of each access's id, or never-again value."""
    T = len(stream)
    A = len(stream[0]) if T else 0
    nxt = [[0] * len(tok) for tok in stream]
    for t in range(T):
        for j, x in enumerate(stream[t]):
            value = T * A + 1 + x  # never again
            found = False
            for t2 in range(t, T):
                for j2, y in enumerate(stream[t2]):
                    if (t2 > t or j2 > j) and y == x:
                        value = t2 * A + j2 + 1
                        found = True
                        break
                if found:
                    break
            nxt[t][j] = value
    return nxt


def stack_depth_counts(
    stream, num_ids: int, policy: str, m: int | None = None, warm_start: bool = True
) -> list[int]:
    """Run the priority stack over one stream and return ``stat`` (length ``num_ids + 1``).

    ``stream`` is a list of T tokens, each a list of the ids accessed for that token, in
    order (k ids at layer level; L*k ids ``l*E + e`` at model level). ``stat[d]`` counts
    accesses that hit for every cache size ``C > d``; ``stat[num_ids]`` counts accesses
    that miss at every size (first accesses with ``warm_start=False``).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    T = len(stream)
    stat = [0] * (num_ids + 1)
    stack: list[int] = []  # stack[0] is the top
    last = {}
    count = {}
    nxt_val = {}
    future = {}
    nxt = _next_positions(stream, num_ids) if policy == "belady" else None
    if policy == "sch":
        for x in range(num_ids):
            future[x] = sum(1 for i in range(min(m, T)) if x in stream[i])

    def priority(x):
        if policy == "lru":
            return (last[x],)
        if policy == "lfu":
            return (count[x], last[x])
        if policy == "belady":
            return (-nxt_val[x],)
        return (future[x], last[x])

    ts = 0
    u = 0
    for i in range(T):
        # 1. look-up against the stack as it was before token i
        for x in stream[i]:
            if x in stack:
                stat[stack.index(x)] += 1
            else:
                if warm_start:
                    stat[u] += 1
                else:
                    stat[num_ids] += 1
                u += 1
        # 2. update, in stored order
        for j, x in enumerate(stream[i]):
            ts += 1
            last[x] = ts
            count[x] = count.get(x, 0) + 1
            if policy == "belady":
                nxt_val[x] = nxt[i][j]
            if policy == "sch":
                future[x] -= 1
            if x in stack:
                old = stack.index(x)
            else:
                stack.append(x)  # a new bottom slot
                old = len(stack) - 1
            if old == 0:
                continue
            carried = stack[0]
            stack[0] = x
            for depth in range(1, old):
                if priority(carried) > priority(stack[depth]):
                    carried, stack[depth] = stack[depth], carried
            stack[old] = carried
        # 3. SCH: the window slides
        if policy == "sch" and i + m < T:
            for y in stream[i + m]:
                future[y] += 1
    return stat


def hit_rates(stat: list[int], accesses: int) -> list[Fraction]:
    """``h(C) = (stat[0] + ... + stat[C-1]) / accesses`` for ``C = 1 .. len(stat)-1``."""
    out = []
    run = 0
    for C in range(1, len(stat)):
        run += stat[C - 1]
        out.append(Fraction(run, accesses))
    return out


# ------------------------------------------------------- whole-trace integer tables
def window_hist_table(experts, offsets, num_experts, ms, group, n_groups, per_expert):
    """Backend table for SRP: int64 ``(G, L, E or 1, sum(m+1))``, summed per group.

    ``group[s]`` is the output row of sequence ``s``. The histograms of the m values in
    ``ms`` lie side by side in the last axis.
    """
    experts = np.asarray(experts)
    N, L, k = experts.shape
    cols, width = m_columns(ms)
    Eo = num_experts if per_expert else 1
    out = np.zeros((n_groups, L, Eo, width), dtype=np.int64)
    for s in range(len(offsets) - 1):
        a, b = int(offsets[s]), int(offsets[s + 1])
        for l in range(L):
            tokens = [list(map(int, experts[r, l])) for r in range(a, b)]
            for mi, m in enumerate(ms):
                H = window_histogram(tokens, num_experts, int(m))
                for e in range(num_experts):
                    for c in range(int(m) + 1):
                        out[group[s], l, e if per_expert else 0, cols[mi] + c] += H[e][c]
    return out


def stack_stats_table(
    experts, offsets, num_experts, policy, m, model_level, warm_start, group, n_groups
):
    """Backend table for hit curves: int64 ``(G, L or 1, N+1)`` of stack-depth counts."""
    experts = np.asarray(experts)
    N, L, k = experts.shape
    if model_level:
        n_ids = L * num_experts
        out = np.zeros((n_groups, 1, n_ids + 1), dtype=np.int64)
    else:
        n_ids = num_experts
        out = np.zeros((n_groups, L, n_ids + 1), dtype=np.int64)
    for s in range(len(offsets) - 1):
        a, b = int(offsets[s]), int(offsets[s + 1])
        if model_level:
            stream = [
                [l * num_experts + int(experts[r, l, j]) for l in range(L) for j in range(k)]
                for r in range(a, b)
            ]
            stat = stack_depth_counts(stream, n_ids, policy, m, warm_start)
            out[group[s], 0] += np.asarray(stat, dtype=np.int64)
        else:
            for l in range(L):
                stream = [list(map(int, experts[r, l])) for r in range(a, b)]
                stat = stack_depth_counts(stream, n_ids, policy, m, warm_start)
                out[group[s], l] += np.asarray(stat, dtype=np.int64)
    return out


# ------------------------------------------- policies without the stack property
# Defined in lrc_kernels._reference_policies (docs/metrics.md, "Policies without the
# stack property"); re-exported here so ``lrc_kernels.reference.*`` names keep working.
from ._reference_policies import policy_hits, policy_hits_table  # noqa: E402
