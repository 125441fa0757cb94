"""lrc_kernels: exact, fast local routing consistency metrics for Mixture-of-Experts models.

The metrics (segment routing best performance, SRP; segment cache best hit rate, SCH; and
LRU / LFU / Belady hit curves from one priority-stack engine) are those of *Not All Models
Suit Expert Offloading* (Liang et al., ICLR 2026, arXiv 2505.16056); ``docs/metrics.md``
defines every number.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._api import (
    ALL_POLICIES,
    domain_specialization,
    hit_curve,
    load_balance,
    sch,
    srp,
    srp_from_histogram,
)
from ._results import HitCurve, SRPResult
from ._trace import Trace, as_trace
from .diagnose import Diagnosis, diagnose

__version__ = "0.1.0"

# Names provided by optional or heavier submodules, imported on first use.
_LAZY = {
    # trace files (lrc_kernels.io)
    "read_trace": "io",
    "write_trace": "io",
    "TraceWriter": "io",
    "TraceReader": "io",
    "iter_trace_batches": "io",
    "repair_trace": "io",
    "TraceFileError": "io",
    "IncompleteTraceError": "io",
    "IncompleteTraceWarning": "io",
    "synthetic_trace": "synthetic",
    # capture from Hugging Face transformers models (imports torch)
    "capture": "torch",
    "capture_model": "torch",
    # the offloading planner and its replay check (replay imports torch when run)
    "plan_budget": "plan",
    "BudgetPlan": "plan",
    "predict_decode": "plan",
    "calibrate_decode": "plan",
    "expert_bytes": "plan",
    "moe_config": "plan",
    "plan_deployment": "plan",
    "replay": "offload",
    "ReplayResult": "offload",
    "measure_copy_bandwidth": "offload",
    # the HTML / PNG report (imports matplotlib)
    "write_report": "report",
    # partial results of shards, merged exactly (lrc_kernels.partial), and studies
    "Partial": "partial",
    "srp_partial": "partial",
    "curve_partial": "partial",
    "run_study": "study",
}

__all__ = [
    "Trace",
    "as_trace",
    "srp",
    "srp_from_histogram",
    "sch",
    "hit_curve",
    "load_balance",
    "domain_specialization",
    "SRPResult",
    "HitCurve",
    "diagnose",
    "Diagnosis",
    "ALL_POLICIES",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'lrc_kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value
