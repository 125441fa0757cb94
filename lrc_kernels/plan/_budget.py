"""Per-layer cache budgets: the exact optimum of a total expert-slot budget over layers.

Built on the public API only: the per-layer integer hit tables come from
:func:`lrc_kernels.hit_curve` (``HitCurve`` columns ``hits`` and ``accesses``), so every
policy ``hit_curve`` knows is planned the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import lrc_kernels as lk

from .._spec import POLICY_PARAMS
from .._validate import check_bool, check_int

__all__ = ["BudgetPlan", "plan_budget", "layer_tables", "optimal_allocation"]


@dataclass(repr=False, eq=False)
class BudgetPlan:
    """Result of :func:`plan_budget`: where ``budget`` expert slots go, and what they buy.

    Attributes
    ----------
    budget : int
        Total expert slots (fast-memory experts) over all layers.
    policy, m : str, int or None
        The replacement policy (and SCH window) the curves were computed with.
    allocation : ndarray of int64, shape (L,)
        Optimal cache size of every layer (0 .. E each, summing to at most ``budget``).
    hit_rate : float
        Mean over layers of the per-layer hit rate at ``allocation`` (size 0: rate 0).
    layer_rates : ndarray of float64, shape (L,)
        Each layer's hit rate at its size.
    hits, accesses, misses : ndarray of int64, shape (L,)
        Integer look-up counts at ``allocation``, summed over the sequences
        (``misses = accesses - hits``): what a replay of the trace must count.
    uniform_allocation : ndarray of int64, shape (L,)
        The uniform split: ``min(budget // L, E)`` slots in every layer.
    uniform_hit_rate : float
        Its mean hit rate.
    uniform_misses : ndarray of int64, shape (L,)
        Its integer misses.
    shared_size : int
        One cache shared by all layers: ``min(budget, L * E)`` slots.
    shared_hit_rate : float
        Its hit rate (model level); NaN when not computed (``shared=False``).
    shared_misses : int
        Its integer misses (-1 when not computed).
    best_rates : ndarray of float64, shape (budget + 1,)
        The optimal mean hit rate for every total budget ``0 .. budget`` (non-decreasing).
    num_layers, num_experts, top_k : int
        Shape of the trace.
    policy_params : dict
        Extra keyword arguments given to :func:`lrc_kernels.hit_curve`.
    """

    budget: int
    policy: str
    m: Any
    allocation: np.ndarray
    hit_rate: float
    layer_rates: np.ndarray
    hits: np.ndarray
    accesses: np.ndarray
    misses: np.ndarray
    uniform_allocation: np.ndarray
    uniform_hit_rate: float
    uniform_misses: np.ndarray
    shared_size: int
    shared_hit_rate: float
    shared_misses: int
    best_rates: np.ndarray
    num_layers: int
    num_experts: int
    top_k: int
    policy_params: dict

    def __repr__(self) -> str:
        return (
            f"BudgetPlan(policy={self.policy!r}, budget={self.budget}, "
            f"hit_rate={self.hit_rate:.6f}, uniform={self.uniform_hit_rate:.6f}, "
            f"shared={self.shared_hit_rate:.6f})"
        )

    def smallest_budget(self, hit_rate: float) -> int:
        """Fewest slots (``<= budget``) whose optimal allocation reaches ``hit_rate``; -1 if
        none does."""
        ok = np.flatnonzero(self.best_rates >= hit_rate)
        return int(ok[0]) if ok.size else -1


def _table(curve: Any, level: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``sizes`` (n,), ``rates``, ``hits`` (rows, n) and ``accesses`` (rows,) of one curve."""
    if curve.level != level:
        raise ValueError(f"need a {level}-level hit curve, got level={curve.level!r}")
    if curve.domains is not None or np.ndim(curve.m) > 0:
        raise ValueError("need a hit curve of one m without by_domain")
    sizes = np.asarray(curve.sizes, np.int64)
    rows = curve.num_layers if level == "layer" else 1
    rates = np.asarray(curve.rates, np.float64).reshape(rows, sizes.size)
    hits = np.asarray(curve.hits, np.int64).reshape(rows, sizes.size)
    acc = np.asarray(curve.accesses, np.int64).reshape(rows)
    return sizes, rates, hits, acc


def layer_tables(curve: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer tables of sizes 0 .. E from a full layer-level :class:`HitCurve`.

    Returns ``rates`` (L, E+1) float64, ``hits`` (L, E+1) int64 (column 0: size 0, no hits)
    and ``accesses`` (L,) int64.
    """
    sizes, rates, hits, acc = _table(curve, "layer")
    E = curve.num_experts
    if not np.array_equal(sizes, np.arange(1, E + 1)):
        raise ValueError(f"need the layer-level curve at every size 1 .. {E}")
    if not np.all(np.isfinite(rates)):
        raise ValueError("the trace has no tokens: nothing to plan")
    z = np.zeros((rates.shape[0], 1))
    return np.hstack([z, rates]), np.hstack([z.astype(np.int64), hits]), acc


def optimal_allocation(rates: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact dynamic programme over layers: sizes maximising the summed per-layer rate.

    ``rates`` is (L, N+1), column c the rate at size c (need not be concave or monotone).
    Returns the allocation (L,) summing to at most ``budget`` (the smallest size wins ties
    within a layer) and the optimal sum for every total budget ``0 .. budget``.
    """
    L, n1 = rates.shape
    val = np.zeros(budget + 1)
    choice = np.zeros((L, budget + 1), np.int64)
    for layer in range(L):
        new = np.full(budget + 1, -np.inf)
        for c in range(min(n1 - 1, budget) + 1):
            cand = val[: budget + 1 - c] + rates[layer, c]
            better = cand > new[c:]
            new[c:][better] = cand[better]
            choice[layer, c:][better] = c
        val = new
    alloc = np.zeros(L, np.int64)
    b = budget
    for layer in range(L - 1, -1, -1):
        alloc[layer] = choice[layer, b]
        b -= alloc[layer]
    return alloc, val


def own_params(policy: str, kw: dict) -> dict:
    """``kw`` without the parameters of other policies (``decay=`` only for lfu-decay...)."""
    theirs = {name for p, (name, _) in POLICY_PARAMS.items() if p != policy}
    return {k: v for k, v in kw.items() if k not in theirs}


def _hit_curve(trace: Any, policy: str, m: Any, level: str, size: int | None, kw: dict) -> Any:
    """``lk.hit_curve`` at one level (only cache size ``size`` when given)."""
    kw = own_params(policy, kw)
    if size is not None:
        kw = {**kw, "sizes": [size]}
    if m is not None:
        kw = {**kw, "m": m}
    return lk.hit_curve(trace, policy, level=level, **kw)


def plan_budget(
    trace: Any,
    budget: int,
    policy: str = "lru",
    m: Any = None,
    *,
    shared: Any = True,
    **policy_params: Any,
) -> BudgetPlan:
    """Split ``budget`` expert slots over the MoE layers for the highest mean hit rate.

    Parameters
    ----------
    trace : Trace, array_like, path, or HitCurve
        A routing trace (as for :func:`lrc_kernels.hit_curve`), or an already computed
        layer-level :class:`~lrc_kernels.HitCurve` at every size 1 .. E (then ``policy``
        and ``m`` are read from it).
    budget : int
        Total fast-memory expert slots over all layers (>= 0).
    policy : str
        Any policy of :func:`lrc_kernels.hit_curve`.
    m : int, optional
        SCH's future window (``policy="sch"`` only).
    shared : bool or HitCurve
        Also compute one cache of ``min(budget, L*E)`` slots shared by all layers (a second
        pass over the trace at model level); a model-level ``HitCurve`` is used as is;
        False skips it (``shared_hit_rate`` NaN).
    **policy_params
        Passed to :func:`lrc_kernels.hit_curve` (``warm_start``, ``backend``, and the
        parameters of the policy).

    Returns
    -------
    BudgetPlan

    Notes
    -----
    The per-layer curves need not be concave (FIFO and the static placements are not even
    monotone), so greedy marginal gains can miss the optimum; the dynamic programme over
    layers (``O(L * budget * E)``) is exact. ``docs/planning.md`` walks through it.
    """
    budget = check_int(budget, "budget", 0)
    if isinstance(trace, lk.HitCurve):
        curve = trace
        policy, m = curve.policy, curve.m
    else:
        curve = _hit_curve(trace, policy, m, "layer", None, policy_params)
    rates, hits, acc = layer_tables(curve)
    L, E, k = curve.num_layers, curve.num_experts, curve.top_k
    alloc, val = optimal_allocation(rates, budget)
    rows = np.arange(L)
    uni = np.full(L, min(budget // L, E), np.int64)
    s_size = min(budget, L * E)
    s_rate, s_miss = _shared(trace, shared, policy, m, s_size, policy_params)
    if s_size == 0 and s_miss == -1 and shared is not False:
        s_miss = int(acc.sum())  # no slot: every look-up misses
    return BudgetPlan(
        budget=budget,
        policy=policy,
        m=m,
        allocation=alloc,
        hit_rate=float(val[budget]) / L,
        layer_rates=rates[rows, alloc],
        hits=hits[rows, alloc],
        accesses=acc,
        misses=acc - hits[rows, alloc],
        uniform_allocation=uni,
        uniform_hit_rate=float(rates[rows, uni].sum()) / L,
        uniform_misses=acc - hits[rows, uni],
        shared_size=s_size,
        shared_hit_rate=s_rate,
        shared_misses=s_miss,
        best_rates=val / L,
        num_layers=L,
        num_experts=E,
        top_k=k,
        policy_params=dict(policy_params),
    )


def _shared(trace: Any, shared: Any, policy: str, m: Any, size: int, kw: dict) -> tuple[float, int]:
    """Hit rate and integer misses of one shared cache of ``size`` slots."""
    if isinstance(shared, lk.HitCurve):
        curve = shared
    else:
        if not check_bool(shared, "shared"):
            return float("nan"), -1
        if isinstance(trace, lk.HitCurve):
            raise ValueError(
                "shared=True needs the trace (a layer-level HitCurve was given): pass a "
                "model-level HitCurve as shared=, or shared=False"
            )
        if size == 0:
            return 0.0, -1
        curve = _hit_curve(trace, policy, m, "model", size, kw)
    sizes, rates, hits, acc = _table(curve, "model")
    if size == 0:
        return 0.0, int(acc[0])
    where = np.flatnonzero(sizes == size)
    if not where.size:
        raise ValueError(f"the shared hit curve has no cache size {size}")
    return float(rates[0, where[0]]), int(acc[0] - hits[0, where[0]])
