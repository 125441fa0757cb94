"""Cache front end: :func:`hit_curve` and :func:`sch`.

The pass over the source is :class:`lrc_kernels._stream.Stream`; the stack-depth tables
come from the backend; the mean curves from :func:`lrc_kernels._reduce.curves`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import _cache_sizes, _reduce
from . import _validate as _v
from ._backends import no_gpu_kernel
from ._results import HitCurve
from ._spec import ALL_POLICIES, BACKENDS, LEVELS_CACHE, SIZE_POLICIES
from ._stream import GroupSum, Step, Stream
from ._trace import LabelCodes

__all__ = ["hit_curve", "sch"]

# largest cache (ids in one stack) the engine accepts
_MAX_CACHE_IDS = 1 << 24


def _check_ms(policy: str, m: Any) -> tuple[np.ndarray, bool]:
    if policy == "sch":
        if m is None:
            raise ValueError("policy='sch' needs the future window m (e.g. m=16)")
        return _v.check_windows(m)
    if m is not None:
        raise ValueError(f"m applies only to policy='sch', not {policy!r}; drop m=")
    return np.zeros(1, np.int64), True


def _check_size(batch: Any, level: str) -> None:
    """Refuse, before allocating, a stack too large for the engine or for memory."""
    model_level = level == "model"
    n_cache = batch.num_experts * (batch.num_layers if model_level else 1)
    if n_cache > _MAX_CACHE_IDS:
        raise ValueError(
            f"a {level}-level cache over {n_cache:,} experts is beyond the stack engine's "
            f"limit of {_MAX_CACHE_IDS:,} ids (its state is O(ids) per thread); is "
            "num_experts right?"
        )
    Lo = 1 if model_level else batch.num_layers
    _v.check_memory(
        (Lo * (n_cache + 1) + 5 * n_cache * (os.cpu_count() or 1)) * 8,
        f"the {level}-level stack-depth tables ({Lo} x {n_cache + 1} int64, and five "
        "int64 per cache id and thread)",
        "use level='layer' or check num_experts",
    )


def _accumulate(
    stream: Stream, policy: str, ms: np.ndarray, level: str, warm_start: bool
) -> tuple[list[GroupSum], LabelCodes]:
    """Per-m stack-depth tables summed per (domain, length) class of sequences."""
    lens = LabelCodes()  # sequences are averaged per (domain, length) class: exact sums
    tables = [GroupSum() for _ in range(ms.shape[0])]
    step: Step
    for step in stream:
        _check_size(step.batch, level)
        b = step.batch
        group = lens.codes(zip(step.domains.tolist(), b.lengths.tolist(), strict=True))
        for acc, mm in zip(tables, ms.tolist(), strict=True):
            acc.add(
                step.backend.stack_stats_table(
                    step.ids,
                    b.offsets,
                    b.num_experts,
                    policy,
                    int(mm) if policy == "sch" else None,
                    level == "model",
                    bool(warm_start),
                    group,
                    len(lens.index),
                )
            )
    return tables, lens


def hit_curve(
    trace: Any,
    policy: str,
    m: Any = None,
    *,
    level: str = "layer",
    warm_start: bool = True,
    sizes: Any = None,
    rho: Any = None,
    decay: float | None = None,
    window: int | None = None,
    prefix: int | None = None,
    pinned: float | None = None,
    num_experts: int | None = None,
    by_domain: bool = False,
    backend: str = "auto",
    progress: Any = False,
    client: Any = None,
) -> HitCurve:
    """Hit rate of an expert cache at every cache size (or a grid), for one policy.

    Parameters
    ----------
    trace : Trace, array_like, path or list of paths
        As for :func:`srp`.
    policy : str
        Replacement policy, one of ``lrc_kernels.ALL_POLICIES``. Stack policies (every size
        from one pass): ``"lru"``, ``"lfu"``, ``"belady"`` (the optimal offline policy,
        MIN), ``"sch"`` (the segment oracle that knows the next ``m`` tokens; needs ``m``).
        Per-size policies (one simulation per cache size): ``"fifo"``, ``"clock"``,
        ``"sieve"``, ``"s3fifo"``, ``"arc"`` (libCacheSim's defaults), ``"lfu-decay"``,
        ``"lfu-window"``, ``"static-oracle"``, ``"static-prefix"``, ``"pinned-lru"``.
    m : int or sequence of int, optional
        Future window of SCH (a sequence adds a leading axis). Only for ``"sch"``.
        Positional (after ``policy``) or keyword, as in :func:`srp` and :func:`sch`.
    level : {"layer", "model"}
        ``"layer"`` (the default): one cache per MoE layer (curves over C = 1..E, shape
        ``(L, E)``); ``"model"``: one cache shared by all layers (C = 1..L*E, shape
        ``(L*E,)``). Keyword-only, as in :func:`srp` and :func:`sch`.
    warm_start : bool
        True (the paper's choice): while the cache has free room, a first access costs
        nothing. False: every first access is a miss (cold start). For the static
        placements, warm: the placement is loaded for free; cold: the first access of each
        placed expert misses.
    sizes : sequence of int, optional
        Only these cache sizes (each in ``1 .. E``, model level ``1 .. L*E``; sorted, repeats
        dropped). Default: every size at layer level. A per-size policy at model level needs
        ``sizes`` or ``rho``.
    rho : float or sequence of float, optional
        Only the sizes of these cache ratios, ``C = rho * k`` (model level ``rho * L * k``),
        converted as :meth:`HitCurve.at` does. Give ``sizes`` or ``rho``, not both.
    decay : float, optional
        ``"lfu-decay"`` only: every count is multiplied by ``decay`` in (0, 1) after each
        token (default 0.95).
    window : int, optional
        ``"lfu-window"`` only: counts cover the last ``window`` tokens (default 16).
    prefix : int, optional
        ``"static-prefix"`` only: the placement is the most used experts of the first
        ``prefix`` tokens of each sequence (default 64).
    pinned : float, optional
        ``"pinned-lru"`` only: share of the cache in [0, 1] pinned to the most used experts
        (``floor(pinned * C)`` of them; default 0.5); LRU runs the rest.
    num_experts, by_domain, backend, progress, client
        As for :func:`srp`. The per-size policies run on the CPU (or the reference):
        ``backend="gpu"`` is a ``ValueError`` for them. ``client=`` runs every policy (with
        its ``sizes``/``rho`` and parameter), bit-identical to one process.

    Returns
    -------
    HitCurve

    Notes
    -----
    Definitions: ``docs/metrics.md``, "The priority stack" and "Policies without the stack
    property". Per-sequence curves are averaged with equal weight; empty sequences have no
    curve and are skipped (all-empty: NaN).
    """
    _v.check_choice(policy, "policy", ALL_POLICIES)
    ms, single_m = _check_ms(policy, m)
    params = _cache_sizes.check_params(
        policy, {"decay": decay, "window": window, "prefix": prefix, "pinned": pinned}
    )
    _v.check_choice(level, "level", LEVELS_CACHE)
    _v.check_bool(warm_start, "warm_start")
    request = _cache_sizes.SizeRequest(policy, level, sizes, rho)
    by_domain = _v.check_bool(by_domain, "by_domain")
    _v.check_choice(backend, "backend", BACKENDS)
    if backend == "gpu" and policy in SIZE_POLICIES:
        raise no_gpu_kernel(policy)
    if client is not None:
        from .cluster import run

        kw = dict(m=m, level=level, warm_start=warm_start, num_experts=num_experts)
        kw.update(by_domain=by_domain, backend=backend, policy=policy, sizes=sizes, rho=rho)
        kw.update(params)  # the policy's parameter (checked, default filled in)
        return run(client, "curve", trace, kw, progress)

    stream = Stream(trace, num_experts, by_domain, backend, progress)
    if policy in SIZE_POLICIES:
        return _cache_sizes.size_policy_curve(
            stream, policy, request, level, bool(warm_start), params
        )
    tables, lens = _accumulate(stream, policy, ms, level, warm_start)
    curve = _result(stream, tables, lens, policy, ms, single_m, level, bool(warm_start))
    return _cache_sizes.select_sizes(curve, request)


def _result(
    stream: Stream,
    tables: list[GroupSum],
    lens: LabelCodes,
    policy: str,
    ms: np.ndarray,
    single_m: bool,
    level: str,
    warm_start: bool,
) -> HitCurve:
    """Mean curves of every m, packed into a :class:`HitCurve`."""
    first = stream.first
    by_domain = stream.by_domain
    model_level = level == "model"
    L, E, k = first.num_layers, first.num_experts, first.top_k
    A = k * (L if model_level else 1)
    n_ids = L * E if model_level else E
    D = len(stream.domains.index) if by_domain else 1
    rates_all, stats_all = [], []
    nseq = np.zeros(D, np.int64)
    for acc in tables:
        tab = acc.table
        if tab is None or tab.shape[0] == 0:
            tab = np.zeros((0, 1 if model_level else L, n_ids + 1), np.int64)
        rates, stat_sum, nseq = _reduce.curves(tab, lens.names, A, D, model_level, L, n_ids)
        rates_all.append(rates if by_domain else rates[0])
        stats_all.append(stat_sum if by_domain else stat_sum[0])
    return HitCurve(
        rates=rates_all[0] if single_m else np.stack(rates_all),
        policy=policy,
        m=(int(ms[0]) if single_m else [int(v) for v in ms]) if policy == "sch" else None,
        level=level,
        warm_start=warm_start,
        num_experts=E,
        top_k=k,
        num_layers=L,
        domains=stream.domain_names,
        sequences=nseq if by_domain else nseq[0],
        stat=stats_all[0] if single_m else np.stack(stats_all),
    )


def sch(
    trace: Any,
    m: Any,
    *,
    level: str = "layer",
    warm_start: bool = True,
    num_experts: int | None = None,
    by_domain: bool = False,
    backend: str = "auto",
    progress: Any = False,
    client: Any = None,
) -> HitCurve:
    """Segment cache best hit rate (SCH): hit curve of the m-token future oracle cache.

    Equivalent to ``hit_curve(trace, "sch", m, ...)``; see :func:`hit_curve` for the
    parameters (``m`` positional or keyword, ``level`` keyword-only with default
    ``"layer"``). ``curve.at(2)`` is SCH at the paper's recommended cache ratio rho = 2.

    Notes
    -----
    Definition: ``docs/metrics.md``, "The priority stack" (SCH priority).
    """
    return hit_curve(
        trace,
        "sch",
        m,
        level=level,
        warm_start=warm_start,
        num_experts=num_experts,
        by_domain=by_domain,
        backend=backend,
        progress=progress,
        client=client,
    )
