"""Offloading planner: per-layer cache budgets, decode speed, and expert sizes.

``docs/planning.md`` ("Planning an offloading deployment") walks through it. The planner
sits on the public API (:func:`lrc_kernels.hit_curve`); :mod:`lrc_kernels.offload` checks
its predictions on a real two-tier expert store.
"""

from __future__ import annotations

from ._budget import BudgetPlan, layer_tables, optimal_allocation, plan_budget
from ._config import FAMILIES, expert_bytes, moe_config
from ._decode import calibrate_decode, experts_per_step, predict_decode
from ._deploy import GIB, OPTIONS, plan_deployment

__all__ = [
    "BudgetPlan",
    "plan_budget",
    "layer_tables",
    "optimal_allocation",
    "predict_decode",
    "calibrate_decode",
    "experts_per_step",
    "expert_bytes",
    "moe_config",
    "FAMILIES",
    "plan_deployment",
    "OPTIONS",
    "GIB",
]
