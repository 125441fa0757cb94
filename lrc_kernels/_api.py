"""Public metric functions, gathered from their modules.

- :mod:`lrc_kernels._spec`: the vocabulary (policies, levels, backends, m columns);
- :mod:`lrc_kernels._stream`: the pass over a source (batches, backend, accumulators);
- :mod:`lrc_kernels._backends`: the typed backend protocol and the cpu / gpu / reference
  backends;
- :mod:`lrc_kernels._reduce`: tables to numbers (best F1, curves, bootstrap);
- :mod:`lrc_kernels._srp_api` and :mod:`lrc_kernels._cache_api`: the front ends.
"""

from __future__ import annotations

from ._cache_api import hit_curve, sch
from ._spec import ALL_POLICIES, BACKENDS, LEVELS_CACHE, LEVELS_SRP, POLICIES
from ._srp_api import domain_specialization, load_balance, srp, srp_from_histogram

__all__ = [
    "srp",
    "srp_from_histogram",
    "sch",
    "hit_curve",
    "load_balance",
    "domain_specialization",
    "BACKENDS",
    "LEVELS_SRP",
    "LEVELS_CACHE",
    "POLICIES",
    "ALL_POLICIES",
]
