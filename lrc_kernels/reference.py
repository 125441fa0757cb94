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
# One simulation per cache size C (docs/metrics.md, "Policies without the stack
# property"). Each ``_Policy`` subclass follows libCacheSim's algorithm with its default
# parameters; ``process(x)`` is one libCacheSim ``get`` (a miss evicts, then inserts).
# Queues are Python lists ordered oldest first (libCacheSim's tail is index 0, its head
# the end of the list).


class _Policy:
    def __init__(self, C: int) -> None:
        self.C = C

    def contains(self, x: int) -> bool:  # is x cached (ghost entries are not)?
        raise NotImplementedError

    def process(self, x: int) -> None:
        raise NotImplementedError


class _LRU(_Policy):
    """Plain per-size LRU, only to check this simulation against the stack engine."""

    def __init__(self, C):
        super().__init__(C)
        self.q = []

    def contains(self, x):
        return x in self.q

    def process(self, x):
        if x in self.q:
            self.q.remove(x)
        elif len(self.q) + 1 > self.C:
            self.q.pop(0)
        self.q.append(x)


class _FIFO(_Policy):
    def __init__(self, C):
        super().__init__(C)
        self.q = []

    def contains(self, x):
        return x in self.q

    def process(self, x):
        if x in self.q:
            return  # a hit changes nothing
        if len(self.q) + 1 > self.C:
            self.q.pop(0)
        self.q.append(x)


class _Clock(_Policy):
    """libCacheSim Clock, n_bit_counter = 1: FIFO with one reference bit per object."""

    def __init__(self, C):
        super().__init__(C)
        self.q = []
        self.ref = {}

    def contains(self, x):
        return x in self.q

    def process(self, x):
        if x in self.q:
            self.ref[x] = 1
            return
        if len(self.q) + 1 > self.C:
            while self.ref[self.q[0]] >= 1:  # second chance: clear, move to the head
                y = self.q.pop(0)
                self.ref[y] = 0
                self.q.append(y)
            self.q.pop(0)
        self.q.append(x)
        self.ref[x] = 0


class _Sieve(_Policy):
    """SIEVE: a hand moves from the oldest towards the newest object, clearing bits."""

    def __init__(self, C):
        super().__init__(C)
        self.q = []
        self.visited = {}
        self.hand = None  # index into q, or None (start at the oldest)

    def contains(self, x):
        return x in self.q

    def process(self, x):
        if x in self.q:
            self.visited[x] = 1
            return
        if len(self.q) + 1 > self.C:
            i = 0 if self.hand is None else self.hand
            while self.visited[self.q[i]]:
                self.visited[self.q[i]] = 0
                i = i + 1 if i + 1 < len(self.q) else 0
            # the hand moves on to the next newer object (None past the newest)
            self.hand = i if i + 1 < len(self.q) else None
            self.q.pop(i)
        self.q.append(x)
        self.visited[x] = 0


class _S3FIFO(_Policy):
    """S3-FIFO: small FIFO (10 %), main FIFO with reinsertion, ghost FIFO (90 %)."""

    SMALL_RATIO = 0.1
    GHOST_RATIO = 0.9
    MOVE_TO_MAIN = 2

    def __init__(self, C):
        super().__init__(C)
        # C's double product, truncated as libCacheSim does; at least one slot (see docs)
        self.s_size = max(int(C * self.SMALL_RATIO), 1)
        self.m_size = C - self.s_size
        self.g_size = int(C * self.GHOST_RATIO)
        self.small = []
        self.main = []
        self.ghost = []
        self.freq = {}
        self.has_evicted = False  # before the first eviction a full small queue spills

    def contains(self, x):
        return x in self.small or x in self.main

    def process(self, x):
        if x in self.small:
            self.freq[x] += 1
            return
        hit_on_ghost = False
        if self.g_size > 0 and x in self.ghost:
            self.ghost.remove(x)
            hit_on_ghost = True
        if x in self.main:
            self.freq[x] += 1
            return
        while len(self.small) + len(self.main) + 1 > self.C:
            self._evict()
        if hit_on_ghost:
            self.main.append(x)
        elif not self.has_evicted and len(self.small) >= self.s_size:
            self.main.append(x)  # cache still filling: a full small queue spills to main
        else:
            self.small.append(x)
        self.freq[x] = 0

    def _evict(self):
        self.has_evicted = True
        if len(self.main) > self.m_size or not self.small:
            self._evict_main()
        else:
            self._evict_small()

    def _evict_small(self):
        while self.small:
            y = self.small.pop(0)
            if self.freq[y] >= self.MOVE_TO_MAIN:
                self.main.append(y)
                self.freq[y] = 0
            else:
                if self.g_size > 0 and y not in self.ghost:
                    if len(self.ghost) + 1 > self.g_size:
                        self.ghost.pop(0)
                    self.ghost.append(y)
                return

    def _evict_main(self):
        while self.main:
            y = self.main.pop(0)
            if self.freq[y] >= 1:
                self.main.append(y)
                self.freq[y] = min(self.freq[y], 3) - 1
            else:
                return


class _ARC(_Policy):
    """ARC as libCacheSim implements it (T1/T2 data, B1/B2 ghosts, float target p)."""

    def __init__(self, C):
        super().__init__(C)
        self.t1, self.t2, self.b1, self.b2 = [], [], [], []  # oldest first
        self.p = 0.0

    def contains(self, x):
        return x in self.t1 or x in self.t2

    def process(self, x):
        if x in self.t1:
            self.t1.remove(x)
            self.t2.append(x)
            return
        if x in self.t2:
            self.t2.remove(x)
            self.t2.append(x)
            return
        ghost = 0
        if x in self.b1:
            self.p = min(self.p + max(len(self.b2) / len(self.b1), 1), self.C)
            self.b1.remove(x)
            ghost = 1
        elif x in self.b2:
            self.p = max(self.p - max(len(self.b1) / len(self.b2), 1), 0)
            self.b2.remove(x)
            ghost = 2
        while len(self.t1) + len(self.t2) + 1 > self.C:
            if ghost:
                self._replace(ghost == 2)
            else:
                self._evict_new()
        if ghost:
            self.t2.append(x)
        else:
            self.t1.append(x)

    def _replace(self, in_b2):
        n1 = len(self.t1)
        if (n1 > 0 and (n1 > self.p or (n1 == self.p and in_b2))) or not self.t2:
            self.b1.append(self.t1.pop(0))
        else:
            self.b2.append(self.t2.pop(0))

    def _evict_new(self):  # ARC's case IV: x is in no list
        if len(self.t1) + len(self.b1) + 1 > self.C:
            if self.b1:
                self.b1.pop(0)
                self._replace(False)
            else:
                self.t1.pop(0)
        else:
            total = len(self.t1) + len(self.b1) + len(self.t2) + len(self.b2)
            if total >= 2 * self.C and self.b2:
                self.b2.pop(0)
            self._replace(False)


_SIZE_POLICY_CLASSES = {
    "lru": _LRU,
    "fifo": _FIFO,
    "clock": _Clock,
    "sieve": _Sieve,
    "s3fifo": _S3FIFO,
    "arc": _ARC,
}


def policy_hits(stream, policy: str, C: int, warm_start: bool = True) -> int:
    """Hits of one stream in a cache of size ``C`` run by ``policy``.

    ``stream`` is a list of tokens, each a list of ids. A token's look-ups are answered
    against the cache as it was before the token; then its ids are processed in order. With
    ``warm_start``, a first access in the stream is a hit while fewer than ``C`` distinct ids
    were first-accessed before it.
    """
    from ._spec import SIZE_POLICIES

    if policy not in SIZE_POLICIES and policy != "lru":
        raise ValueError(f"unknown policy {policy!r}")
    if C < 1:
        raise ValueError(f"cache size must be >= 1, got {C}")
    cache = _SIZE_POLICY_CLASSES[policy](C)
    seen = set()
    hits = 0
    for token in stream:
        for x in token:  # 1. look-up against the cache before the token
            if cache.contains(x):
                hits += 1
            elif x not in seen:
                if warm_start and len(seen) < C:
                    hits += 1
            if x not in seen:
                seen.add(x)
        for x in token:  # 2. process in stored order
            cache.process(x)
    return hits


def policy_hits_table(
    experts, offsets, num_experts, policy, sizes, model_level, warm_start, group, n_groups
):
    """Backend table for per-size policies: int64 hits ``(G, L or 1, len(sizes))``."""
    experts = np.asarray(experts)
    N, L, k = experts.shape
    Lo = 1 if model_level else L
    out = np.zeros((n_groups, Lo, len(sizes)), dtype=np.int64)
    for s in range(len(offsets) - 1):
        a, b = int(offsets[s]), int(offsets[s + 1])
        if model_level:
            streams = [
                [
                    [l * num_experts + int(experts[r, l, j]) for l in range(L) for j in range(k)]
                    for r in range(a, b)
                ]
            ]
        else:
            streams = [[list(map(int, experts[r, l])) for r in range(a, b)] for l in range(L)]
        for lo, stream in enumerate(streams):
            for ci, C in enumerate(sizes):
                out[group[s], lo, ci] += policy_hits(stream, policy, int(C), warm_start)
    return out
