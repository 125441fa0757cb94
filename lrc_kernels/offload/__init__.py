"""Offloading check: replay a trace through a real two-tier expert store.

:func:`replay` runs a routing trace through online caches (``_caches``, written apart from
the metric kernels) over expert weights in torch (``_store``: a slow tier on disk or in
host memory, a fast tier of the planned size), copying real bytes on every miss. torch is
imported only when a store is made.
"""

from __future__ import annotations

from ._caches import CACHES, make_cache
from ._run import ReplayResult, replay
from ._store import SLOW_TIERS, TwoTierStore, measure_copy_bandwidth

__all__ = [
    "replay",
    "ReplayResult",
    "measure_copy_bandwidth",
    "TwoTierStore",
    "make_cache",
    "CACHES",
    "SLOW_TIERS",
]
