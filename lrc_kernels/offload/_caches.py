"""Online expert caches, written the way a runtime would write them.

Deliberately independent of the metric kernels and of ``reference.py``: each cache holds
at most ``capacity`` expert ids and answers one access at a time (:meth:`access`: a hit
updates the policy state, a miss evicts when full and inserts). The replay checks that
these, run token by token, count exactly the misses the hit curves predict.

Policies (``docs/metrics.md`` defines them):

- ``lru``: evict the least recently used resident expert;
- ``fifo``: evict the resident expert inserted longest ago (hits change nothing);
- ``lfu``: evict the resident expert with the fewest accesses so far in the sequence
  (counted for every expert, resident or not), the least recently used among equals.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

__all__ = ["OnlineCache", "LRUCache", "FIFOCache", "LFUCache", "make_cache", "CACHES"]


class OnlineCache:
    """An expert cache of ``capacity`` slots (0: nothing is ever resident)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)

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


CACHES: dict[str, type[OnlineCache]] = {"lru": LRUCache, "fifo": FIFOCache, "lfu": LFUCache}


def make_cache(policy: str, capacity: int) -> OnlineCache:
    """A fresh online cache of ``policy`` with ``capacity`` slots."""
    try:
        return CACHES[policy](capacity)
    except KeyError:
        raise ValueError(
            f"replay has no online cache for policy {policy!r}; choose one of {', '.join(CACHES)}"
        ) from None
