"""Online expert caches, written the way a runtime would write them.

Deliberately independent of the metric kernels and of ``reference.py``: each cache holds
at most ``capacity`` expert ids and answers one access at a time (:meth:`access`: a hit
updates the policy state, a miss evicts when full and inserts). The replay checks that
these, run token by token, count exactly the misses the hit curves predict.

Policies (``docs/metrics.md`` defines them):

- ``lru``: evict the least recently used resident expert;
- ``fifo``: evict the resident expert inserted longest ago (hits change nothing);
- ``lfu``: evict the resident expert with the fewest accesses so far in the sequence
  (counted for every expert, resident or not), the least recently used among equals;
- ``static-oracle``: the C experts used by most tokens of the sequence (ties to the
  smaller id), placed before it and never changed; ``static-prefix``: the same ranked on
  the first ``prefix`` tokens (unused ids after, by id); ``pinned-lru``: the
  ``floor(pinned * C)`` most used experts pinned, an LRU cache of the other slots for the
  rest.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from typing import Any

__all__ = [
    "OnlineCache",
    "LRUCache",
    "FIFOCache",
    "LFUCache",
    "StaticCache",
    "PinnedLRUCache",
    "make_cache",
    "CACHES",
    "HIT",
    "WARM",
    "MISS",
]


def _first_distinct(stream: list[list[int]], n: int, skip: Any = ()) -> list[int]:
    """The first ``n`` distinct ids of a stream of tokens (ids in ``skip`` left out)."""
    out: dict[int, None] = {}
    for token in stream:
        for x in token:
            if len(out) >= n:
                return list(out)
            if x not in skip:
                out.setdefault(x, None)
    return list(out)[:n]


def _most_used(stream: list[list[int]], n: int, tokens: int | None = None) -> list[int]:
    """The ``n`` ids used by most tokens (of the first ``tokens``), ties to the smaller id."""
    counts: dict[int, int] = {}
    for token in stream[:tokens]:
        for x in token:
            counts[x] = counts.get(x, 0) + 1
    return sorted(counts, key=lambda x: (-counts[x], x))[:n]


HIT, WARM, MISS = 0, 1, 2  # how a look-up is served


class OnlineCache:
    """An expert cache of ``capacity`` slots (0: nothing is ever resident), for one sequence.

    :meth:`lookup` answers a token's look-ups against the cache before the token (and
    tracks first accesses for the warm-start rule); :meth:`access` then serves each access
    in order; :meth:`prefill` names what a warm start loads before the sequence.
    """

    #: a placement loaded before the sequence (always prefilled under warm start)
    static = False

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.seen: set[int] = set()

    def lookup(self, token: list[int], warm: bool) -> list[int]:
        """HIT, WARM (a free first access while the cache fills) or MISS per access."""
        out = []
        for x in token:
            if x in self:
                out.append(HIT)
            elif warm and x not in self.seen and len(self.seen) < self.capacity:
                out.append(WARM)
            else:
                out.append(MISS)
            self.seen.add(x)
        return out

    def prefill(self, stream: list[list[int]]) -> list[int]:
        """The experts a warm start loads: the first ``capacity`` distinct ones used."""
        return _first_distinct(stream, self.capacity)

    def __contains__(self, x: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def access(self, x: int) -> int | None:
        """Serve one access of ``x``; return the id evicted to make room, if any."""
        raise NotImplementedError  # pragma: no cover - abstract


class LRUCache(OnlineCache):
    """Least recently used: an ordered dict, oldest first."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.order: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, x: int) -> bool:
        return x in self.order

    def __len__(self) -> int:
        return len(self.order)

    def access(self, x: int) -> int | None:
        if x in self.order:
            self.order.move_to_end(x)
            return None
        if self.capacity == 0:
            return None
        out = None
        if len(self.order) >= self.capacity:
            out, _ = self.order.popitem(last=False)
        self.order[x] = None
        return out


class FIFOCache(LRUCache):
    """First in, first out: LRU's queue without the move on a hit."""

    def access(self, x: int) -> int | None:
        if x in self.order:
            return None
        return super().access(x)


class LFUCache(OnlineCache):
    """Least frequently used, ties to the least recently used; a heap with stale entries."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.count: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.resident: set[int] = set()
        self.heap: list[tuple[int, int, int]] = []
        self.clock = 0

    def __contains__(self, x: int) -> bool:
        return x in self.resident

    def __len__(self) -> int:
        return len(self.resident)

    def access(self, x: int) -> int | None:
        self.clock += 1
        self.count[x] = self.count.get(x, 0) + 1
        self.last[x] = self.clock
        out = None
        if x not in self.resident:
            if self.capacity == 0:
                return None
            if len(self.resident) >= self.capacity:
                out = self._evict()
            self.resident.add(x)
        heapq.heappush(self.heap, (self.count[x], self.clock, x))
        return out

    def _evict(self) -> int:
        while True:
            c, t, y = heapq.heappop(self.heap)
            if y in self.resident and self.last[y] == t:  # the entry is current
                self.resident.remove(y)
                return y


class StaticCache(OnlineCache):
    """A fixed placement ``members``, loaded before the sequence (warm start) or on the
    first access of each member (cold start: that access misses); other experts pass
    through without being kept."""

    static = True

    def __init__(self, capacity: int, members: list[int]) -> None:
        super().__init__(capacity)
        self.members = list(members)
        self.member_set = set(self.members)
        self.loaded: set[int] = set()
        self.started = False

    def __contains__(self, x: int) -> bool:
        return x in self.loaded

    def __len__(self) -> int:
        return len(self.loaded)

    def lookup(self, token: list[int], warm: bool) -> list[int]:
        if warm and not self.started:  # warm start: the placement is there from the start
            self.loaded = set(self.member_set)
        self.started = True
        return [HIT if x in self.loaded else MISS for x in token]

    def access(self, x: int) -> int | None:
        if x in self.member_set:
            self.loaded.add(x)
        return None

    def prefill(self, stream: list[list[int]]) -> list[int]:
        return self.members


class PinnedLRUCache(OnlineCache):
    """``len(pinned)`` slots hold the most used experts (a static placement); an LRU cache
    of the other slots serves the rest, with its own warm-start count."""

    static = True

    def __init__(self, capacity: int, pinned: list[int]) -> None:
        super().__init__(capacity)
        self.pin = StaticCache(len(pinned), pinned)
        self.rest = LRUCache(capacity - len(pinned))

    def __contains__(self, x: int) -> bool:
        return x in self.pin or x in self.rest

    def __len__(self) -> int:
        return len(self.pin) + len(self.rest)

    def lookup(self, token: list[int], warm: bool) -> list[int]:
        pinned = self.pin.member_set
        a = self.pin.lookup([x for x in token if x in pinned], warm)
        b = self.rest.lookup([x for x in token if x not in pinned], warm)
        ia, ib = iter(a), iter(b)
        return [next(ia) if x in pinned else next(ib) for x in token]

    def access(self, x: int) -> int | None:
        if x in self.pin.member_set:
            return self.pin.access(x)
        return self.rest.access(x)

    def prefill(self, stream: list[list[int]]) -> list[int]:
        pinned = self.pin.member_set
        return self.pin.members + _first_distinct(stream, self.rest.capacity, pinned)


CACHES: dict[str, type[OnlineCache]] = {
    "lru": LRUCache,
    "fifo": FIFOCache,
    "lfu": LFUCache,
    "static-oracle": StaticCache,
    "static-prefix": StaticCache,
    "pinned-lru": PinnedLRUCache,
}
#: the one parameter of each parameterised policy, and its default (as ``hit_curve``'s)
PARAMS: dict[str, tuple[str, float]] = {
    "static-prefix": ("prefix", 64),
    "pinned-lru": ("pinned", 0.5),
}


def make_cache(
    policy: str,
    capacity: int,
    stream: list[list[int]] | None = None,
    universe: int = 0,
    **params: Any,
) -> OnlineCache:
    """A fresh online cache of ``policy`` with ``capacity`` slots for one sequence.

    The static placements rank experts on the sequence's ``stream`` (its tokens' ids);
    ``universe`` is the number of ids (static-prefix ranks ids unused in its prefix by id).
    """
    if policy not in CACHES:
        raise ValueError(
            f"replay has no online cache for policy {policy!r}; choose one of {', '.join(CACHES)}"
        )
    name, default = PARAMS.get(policy, (None, None))
    extra = set(params) - {name}
    if extra:
        raise ValueError(f"policy {policy!r} takes no parameter {sorted(extra)[0]!r}")
    value = params.get(name, default) if name else None
    C = int(capacity)
    if policy == "static-oracle":
        return StaticCache(C, _most_used(stream or [], C))
    if policy == "static-prefix":
        ranked = _most_used(stream or [], C, int(value))
        used = set(ranked)
        rest = [x for x in range(universe) if x not in used]
        return StaticCache(C, (ranked + rest)[:C])
    if policy == "pinned-lru":
        P = math.floor(float(value) * C)
        return PinnedLRUCache(C, _most_used(stream or [], P))
    return CACHES[policy](C)
