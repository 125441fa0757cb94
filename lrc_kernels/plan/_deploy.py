"""The deployment table behind ``lrc plan`` and the report's "Deployment" section: hit
rate, bytes per token and predicted tokens/s per policy, memory budget and placement
(uniform split, optimal per-layer split, one shared cache)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import lrc_kernels as lk

from .._spec import SIZE_POLICIES
from .._validate import check_int
from ._budget import _hit_curve, _table, layer_tables, own_params
from ._decode import calibrate_decode, experts_per_step, predict_decode

__all__ = ["plan_deployment", "OPTIONS", "GIB"]

OPTIONS = ("uniform", "optimal", "shared")
GIB = float(1 << 30)


def _shared_curve(trace: Any, policy: str, m: Any, sizes: list[int], kw: dict) -> Any:
    """Model-level curve: every size for a stack policy, only ``sizes`` for a per-size one."""
    if policy in SIZE_POLICIES:
        if not sizes:
            return None
        return lk.hit_curve(trace, policy, level="model", sizes=sizes, **own_params(policy, kw))
    return _hit_curve(trace, policy, m, "model", None, kw)


def _m(m: Any) -> dict:
    return {} if m is None else {"m": m}


def _decode_fit(decode: dict, L: int, k: int, eb: int) -> dict:
    """``decode`` with ``calibrate`` replaced by the fitted ``base_ms`` and ``link_gbps``."""
    d = dict(decode)
    cal = d.pop("calibrate", None)
    if cal is not None:
        d["base_ms"], d["link_gbps"] = calibrate_decode(
            cal, num_layers=L, top_k=k, expert_bytes=eb,
            batch_size=d.get("batch_size", 1), num_experts=d.get("num_experts"),
        )  # fmt: skip
    return d


def plan_deployment(
    trace: Any,
    budgets_gib: Any,
    *,
    expert_bytes: int,
    policies: Any = ("lru",),
    m: Any = None,
    shared: bool = True,
    target_tps: float | None = None,
    decode: dict | None = None,
    curves: dict | None = None,
    **policy_params: Any,
) -> tuple[list[dict], list[dict], dict]:
    """Plan an offloading deployment for several memory budgets and policies.

    Parameters
    ----------
    trace : Trace, array_like or path
        The routing trace (a workload like the deployment's).
    budgets_gib : sequence of float
        Fast-memory budgets for routed experts, in GiB (2**30 bytes).
    expert_bytes : int
        Bytes of one routed expert (:func:`lrc_kernels.expert_bytes`).
    policies : sequence of str
        Policies of :func:`lrc_kernels.hit_curve` (``m`` for SCH).
    shared : bool
        Include one cache shared by all layers (a model-level pass per policy).
    target_tps : float, optional
        Also report, per policy and placement, the smallest budget reaching this speed.
    decode : dict
        Keywords of :func:`predict_decode` (``link_gbps``, ``base_ms`` or ``calibrate``,
        ``overlap``, ``host_ms``, ``batch_size``, ``num_experts``).
    curves : dict, optional
        Already computed layer-level curves by policy (the report passes its own).
    **policy_params
        Passed to :func:`lrc_kernels.hit_curve` (``warm_start``, ``backend``...).

    Returns
    -------
    (rows, targets, fit) : list of dict, list of dict, dict
        ``rows``: per policy, budget and placement: ``policy, option, budget_gib, slots,
        hit_rate, bytes_per_token, tokens_per_s``. ``targets``: per policy and placement,
        ``min_budget_gib`` and ``min_slots`` reaching ``target_tps`` (NaN / -1: none
        does). ``fit``: the decode parameters used (after calibration).
    """
    eb = check_int(expert_bytes, "expert_bytes", 1)
    gibs = [float(g) for g in np.atleast_1d(np.asarray(budgets_gib, dtype=np.float64))]
    if any(not math.isfinite(g) or g < 0 for g in gibs):
        raise ValueError("memory budgets must be finite and >= 0 GiB")
    rows: list[dict] = []
    targets: list[dict] = []
    fit: dict = {}
    for policy in dict.fromkeys(policies):
        pm = m if policy == "sch" else None
        lay = (curves or {}).get(policy) or _hit_curve(
            trace, policy, pm, "layer", None, policy_params
        )
        L, E, k = lay.num_layers, lay.num_experts, lay.top_k
        fit = _decode_fit(decode or {}, L, k, eb)
        slots = [min(int(g * GIB // eb), L * E) for g in gibs]
        model = (
            _shared_curve(trace, policy, pm, sorted(set(s for s in slots if s)), policy_params)
            if shared
            else None
        )
        per = _Policy(lay, model, L, k, eb, fit)
        for g, s in zip(gibs, slots, strict=True):
            for option, h in per.rates(s).items():
                rows.append({"policy": policy, "option": option, "budget_gib": g, "slots": s,
                             "hit_rate": h, "bytes_per_token": per.bytes(h),
                             "tokens_per_s": per.tps(h)})  # fmt: skip
        if target_tps is not None:
            targets += per.targets(policy, float(target_tps))
    return rows, targets, fit


class _Policy:
    """One policy's curves, turned into hit rates, bytes and tokens/s per budget."""

    def __init__(self, lay: Any, model: Any, L: int, k: int, eb: int, fit: dict) -> None:
        from ._budget import optimal_allocation

        self.R, _, _ = layer_tables(lay)
        E = self.R.shape[1] - 1
        _, val = optimal_allocation(self.R, L * E)
        self.best = val / L
        self.L, self.E, self.k, self.eb, self.fit = L, E, k, eb, fit
        self.model = None
        if model is not None:
            sizes, rates, _, _ = _table(model, "model")
            self.model = (np.concatenate([[0], sizes]), np.concatenate([[0.0], rates[0]]))

    def rates(self, s: int) -> dict[str, float]:
        out = {
            "uniform": float(self.R[:, min(s // self.L, self.E)].mean()),
            "optimal": float(self.best[s]),
        }
        if self.model is not None:
            sizes, rates = self.model
            out["shared"] = float(rates[np.flatnonzero(sizes == s)[0]])
        return out

    def tps(self, h: Any) -> Any:
        return predict_decode(h, num_layers=self.L, top_k=self.k, expert_bytes=self.eb, **self.fit)

    def bytes(self, h: float) -> float:
        B = self.fit.get("batch_size", 1)
        d = experts_per_step(self.k, B, self.fit.get("num_experts"))
        return (1.0 - h) * self.L * d * self.eb / B

    def targets(self, policy: str, target: float) -> list[dict]:
        c = np.arange(self.E + 1)
        cands = {
            "uniform": (c * self.L, self.R.mean(0)),
            "optimal": (np.arange(self.best.size), self.best),
        }
        if self.model is not None:
            cands["shared"] = self.model
        out = []
        for option, (slots, rates) in cands.items():
            ok = np.flatnonzero(np.asarray(self.tps(rates)) >= target)
            s = int(slots[ok[0]]) if ok.size else -1
            gib = s * self.eb / GIB if s >= 0 else float("nan")
            out.append({"policy": policy, "option": option, "target_tps": target,
                        "min_slots": s, "min_budget_gib": gib})  # fmt: skip
        return out
