"""The reference of the per-size cache policies: plain Python, one simulation per size.

Part of :mod:`lrc_kernels.reference` (which re-exports :func:`policy_hits` and
:func:`policy_hits_table`), split out to keep each module small. ``docs/metrics.md``,
"Policies without the stack property" and "Frequency and static policies", is the
definition; this module follows it line by line and is never optimised.

Each ``_Policy`` subclass simulates one cache of size ``C`` over one stream (one sequence
of one layer, or of the whole model). ``process(x)`` is one access in stored order (for the
libCacheSim policies one libCacheSim ``get``: a miss evicts, then inserts); ``lookup``
answers a look-up against the cache as it is before the token; ``end_token`` runs after
each token. Queues are Python lists ordered oldest first (libCacheSim's tail is index 0,
its head the end of the list).

Every count, set and window is per stream, that is per sequence (and per layer at layer
level): the hindsight counts of static-oracle and pinned-lru, static-prefix's prefix, the
LFU counts. Per sequence keeps a trace one pass (streamed files) and every sequence's curve
its own, averaged with equal weight like the stack policies'. Ties: LFU variants evict the
lowest (count, last access); static sets rank ids by count, ties to the smaller id.
"""

from __future__ import annotations

import numpy as np

from ._spec import POLICY_PARAMS, SIZE_POLICIES

__all__ = ["policy_hits", "policy_hits_table", "static_ranking"]


class _Policy:
    def __init__(self, C: int, stream=None, param=None) -> None:
        self.C = C
        self.u = 0  # distinct ids first-accessed so far in the stream

    def lookup(self, x: int, first: bool, warm: bool) -> bool:
        """Look-up of ``x`` before the token: cached, or a warm first access with room."""
        hit = self.contains(x) or (first and warm and self.u < self.C)
        if first:
            self.u += 1
        return hit

    def end_token(self) -> None:
        """After each token (the LFU variants decay or slide their counts here)."""

    def contains(self, x: int) -> bool:  # is x cached (ghost entries are not)?
        raise NotImplementedError

    def process(self, x: int) -> None:
        raise NotImplementedError


class _LRU(_Policy):
    """Plain per-size LRU, only to check this simulation against the stack engine."""

    def __init__(self, C, stream=None, param=None):
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
    def __init__(self, C, stream=None, param=None):
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

    def __init__(self, C, stream=None, param=None):
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

    def __init__(self, C, stream=None, param=None):
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

    def __init__(self, C, stream=None, param=None):
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

    def __init__(self, C, stream=None, param=None):
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


class _LFUCounts(_Policy):
    """Perfect LFU over the counts of the subclass (every access of the stream counts, cached
    or not). A miss inserts the accessed id, evicting the cached id of lowest
    ``(count, last)``: lowest count, and among equal counts the least recently used."""

    def __init__(self, C, stream=None, param=None):
        super().__init__(C)
        self.cache = set()
        self.count = {}
        self.last = {}
        self.ts = 0

    def contains(self, x):
        return x in self.cache

    def process(self, x):
        self.ts += 1
        self.last[x] = self.ts
        self.count[x] = self.count.get(x, 0) + 1
        if x in self.cache:
            return
        if len(self.cache) + 1 > self.C:
            victim = min(self.cache, key=lambda y: (self.count[y], self.last[y]))
            self.cache.remove(victim)
        self.cache.add(x)


class _LFUDecay(_LFUCounts):
    """lfu-decay: after every token each count is multiplied by ``decay`` (float64)."""

    def __init__(self, C, stream=None, param=None):
        super().__init__(C)
        self.decay = float(param)

    def process(self, x):
        self.count[x] = float(self.count.get(x, 0.0))
        super().process(x)

    def end_token(self):
        for y in self.count:
            self.count[y] = self.count[y] * self.decay


class _LFUWindow(_LFUCounts):
    """lfu-window: counts over the last ``window`` tokens (the current one included)."""

    def __init__(self, C, stream=None, param=None):
        super().__init__(C)
        self.window = int(param)
        self.stream = stream
        self.i = 0  # index of the current token

    def end_token(self):
        old = self.i - self.window + 1  # leaves the window after this token
        if old >= 0:
            for y in self.stream[old]:
                self.count[y] -= 1
        self.i += 1


def static_ranking(counts: dict[int, int], num_ids: int) -> list[int]:
    """Ids ``0 .. num_ids-1`` by count (descending), ties to the smaller id."""
    return sorted(range(num_ids), key=lambda x: (-counts.get(x, 0), x))


def _num_ids(stream) -> int:
    return 1 + max((x for token in stream for x in token), default=-1)


def _counts(stream) -> dict[int, int]:
    c: dict[int, int] = {}
    for token in stream:
        for x in token:
            c[x] = c.get(x, 0) + 1
    return c


class _Static(_Policy):
    """A fixed set ``S`` of ``C`` ids, loaded before the stream and never changed. Warm
    start: an access hits iff its id is in S (loading S is free). Cold start: the same, but
    the first access of each id in the stream misses (loading S costs one miss per used id
    of S). Subclasses choose S."""

    def __init__(self, C, stream=None, param=None):
        super().__init__(C)
        self.pinned = set(static_ranking(self._rank_counts(stream, param), _num_ids(stream))[:C])

    def _rank_counts(self, stream, param):
        return _counts(stream)

    def contains(self, x):
        return x in self.pinned

    def lookup(self, x, first, warm):
        return x in self.pinned and (warm or not first)

    def process(self, x):
        pass


class _StaticOracle(_Static):
    """static-oracle: S = the C most used ids of the stream (hindsight)."""


class _StaticPrefix(_Static):
    """static-prefix: S = the C most used ids of the first ``prefix`` tokens."""

    def _rank_counts(self, stream, param):
        return _counts(stream[: int(param)])


class _PinnedLRU(_Policy):
    """pinned-lru: the ``P = floor(pinned * C)`` most used ids of the stream (static-oracle's
    set of size P) are pinned as in ``_Static``; the other ``C - P`` slots are an LRU cache
    over the other ids, with the usual first-access rule counted over those ids only."""

    def __init__(self, C, stream=None, param=None):
        super().__init__(C)
        P = int(float(param) * C)
        self.pinned = set(static_ranking(_counts(stream), _num_ids(stream))[:P])
        self.lru = _LRU(C - P)  # its own u counts the non-pinned first accesses

    def contains(self, x):
        return x in self.pinned or x in self.lru.q

    def lookup(self, x, first, warm):
        if x in self.pinned:
            return warm or not first
        return self.lru.lookup(x, first, warm)

    def process(self, x):
        if x not in self.pinned and self.lru.C > 0:
            self.lru.process(x)


_SIZE_POLICY_CLASSES = {
    "lru": _LRU,
    "lfu": _LFUCounts,
    "fifo": _FIFO,
    "clock": _Clock,
    "sieve": _Sieve,
    "s3fifo": _S3FIFO,
    "arc": _ARC,
    "lfu-decay": _LFUDecay,
    "lfu-window": _LFUWindow,
    "static-oracle": _StaticOracle,
    "static-prefix": _StaticPrefix,
    "pinned-lru": _PinnedLRU,
}


def _param(policy: str, param):
    """The policy's parameter, its documented default when None (``_spec.POLICY_PARAMS``)."""
    if policy in POLICY_PARAMS:
        return POLICY_PARAMS[policy][1] if param is None else param
    return None


def policy_hits(stream, policy: str, C: int, warm_start: bool = True, param=None) -> int:
    """Hits of one stream in a cache of size ``C`` run by ``policy``.

    ``stream`` is a list of tokens, each a list of ids. A token's look-ups are answered
    against the cache as it was before the token; then its ids are processed in order, then
    the policy's end-of-token step runs. With ``warm_start``, a first access in the stream
    is a hit while fewer than ``C`` distinct ids were first-accessed before it (static
    placements: see ``_Static``; pinned-lru: see ``_PinnedLRU``). ``param`` is the policy's
    parameter (``decay``, ``window``, ``prefix`` or ``pinned``; None: the default).
    ``"lru"`` and ``"lfu"`` (perfect LFU) are here only to check this simulation against
    the stack engine.
    """
    if policy not in SIZE_POLICIES and policy not in ("lru", "lfu"):
        raise ValueError(f"unknown policy {policy!r}")
    if C < 1:
        raise ValueError(f"cache size must be >= 1, got {C}")
    cache = _SIZE_POLICY_CLASSES[policy](C, stream, _param(policy, param))
    seen = set()
    hits = 0
    for token in stream:
        for x in token:  # 1. look-up against the cache before the token
            first = x not in seen
            seen.add(x)
            hits += bool(cache.lookup(x, first, warm_start))
        for x in token:  # 2. process in stored order
            cache.process(x)
        cache.end_token()  # 3. the policy's step after the token
    return hits


def policy_hits_table(
    experts, offsets, num_experts, policy, sizes, model_level, warm_start, group, n_groups,
    param=None,
):  # fmt: skip
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
                out[group[s], lo, ci] += policy_hits(stream, policy, int(C), warm_start, param)
    return out
