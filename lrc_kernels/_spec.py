"""The package's vocabulary: one fact in one place.

Policies and their integer codes (the CPU kernels and the CUDA sources read the codes from
here; :func:`cuda_defines` writes the ``#define`` lines the CUDA loader prepends), metric
levels, backends, the column layout of several segment lengths in one histogram table, and
the id dtypes of trace storage. Nothing here imports another module of the package.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "POLICIES",
    "STACK_POLICIES",
    "SIZE_POLICIES",
    "ALL_POLICIES",
    "POLICY_PARAMS",
    "POLICY_CODES",
    "LEVELS_SRP",
    "LEVELS_CACHE",
    "BACKENDS",
    "m_columns",
    "id_dtype_for",
    "cuda_defines",
]

#: The stack policies of :func:`lrc_kernels.hit_curve` (every cache size from one pass), in
#: the order the CLI and report list them; :data:`ALL_POLICIES` adds the per-size ones.
POLICIES: tuple[str, ...] = ("lru", "lfu", "belady", "sch")
#: Policies the one-pass priority-stack engine computes (every size from one pass).
STACK_POLICIES: tuple[str, ...] = POLICIES
#: Integer code of each stack policy inside the kernels (CPU and CUDA).
POLICY_CODES: dict[str, int] = {"lru": 0, "lfu": 1, "belady": 2, "sch": 3}
#: Aggregation levels of SRP, and of the cache metrics.
LEVELS_SRP: tuple[str, ...] = ("model", "layer", "expert")
LEVELS_CACHE: tuple[str, ...] = ("layer", "model")
#: Backends of every metric function.
BACKENDS: tuple[str, ...] = ("auto", "cpu", "gpu", "reference")


def m_columns(ms: Iterable[int]) -> tuple[list[int], int]:
    """First column of each segment length's block in a histogram table, and the width.

    The table of several m holds, per m, the counts ``c = 0 .. m`` side by side: m's block
    starts where the previous one ended and has ``m + 1`` columns.
    """
    cols: list[int] = []
    c = 0
    for m in ms:
        cols.append(c)
        c += int(m) + 1
    return cols, c


def id_dtype_for(num_experts: int) -> np.dtype:
    """Narrowest unsigned dtype that holds every id in ``[0, num_experts)``."""
    if num_experts <= 256:
        return np.dtype(np.uint8)
    if num_experts <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def cuda_defines() -> str:
    """``#define LRC_POLICY_<NAME> <code>`` lines for the CUDA sources."""
    return "".join(f"#define LRC_POLICY_{p.upper()} {c}\n" for p, c in POLICY_CODES.items())


#: Policies without the stack property: one simulation per cache size (``docs/metrics.md``,
#: "Policies without the stack property"): the libCacheSim policies with libCacheSim's
#: default parameters, then the frequency variants and the static placements.
SIZE_POLICIES: tuple[str, ...] = (
    "fifo",
    "clock",
    "sieve",
    "s3fifo",
    "arc",
    "lfu-decay",
    "lfu-window",
    "static-oracle",
    "static-prefix",
    "pinned-lru",
)
#: Every policy of :func:`lrc_kernels.hit_curve`, in the order the CLI and the report list them.
ALL_POLICIES: tuple[str, ...] = STACK_POLICIES + SIZE_POLICIES
#: The one parameter of a parameterised per-size policy: (keyword, default).
#: ``decay``: factor per token in (0, 1); ``window``: tokens (>= 1); ``prefix``: tokens
#: (>= 1); ``pinned``: share of the cache in [0, 1] (``docs/metrics.md``).
POLICY_PARAMS: dict[str, tuple[str, float]] = {
    "lfu-decay": ("decay", 0.95),
    "lfu-window": ("window", 16),
    "static-prefix": ("prefix", 64),
    "pinned-lru": ("pinned", 0.5),
}
