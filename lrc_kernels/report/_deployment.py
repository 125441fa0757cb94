"""The report's "Deployment" section: predicted decode tokens/s against memory budget.

Built on the public planner (:func:`lrc_kernels.plan_budget`, :func:`lrc_kernels.
predict_decode`) over the layer-level curves the report already has: for every policy, the
optimal per-layer split of every budget (one dynamic programme gives them all), and the
uniform split for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import lrc_kernels as lk

from ._compute import POLICY_ORDER, ModelResults, _policy_name

#: Deployment assumed when the caller gives none: an expert of Qwen3-30B-A3B's size
#: (3 x 2048 x 768 weights) at 4.5 bits per weight, a 25 GB/s link (PCIe 4.0 x16 in
#: practice), 10 ms per token with every expert resident (100 tokens/s at best). These
#: are stated assumptions, not measurements: set your own (``lrc plan`` calibrates them).
DEFAULT_DEPLOYMENT = {"expert_bytes": 2_654_208, "link_gbps": 25.0, "base_ms": 10.0}
SHARES = (0.125, 0.25, 0.5)  # budgets of the table, as shares of all L * E experts
GIB = float(1 << 30)


def _settings(deployment: dict | None) -> dict:
    d = {**DEFAULT_DEPLOYMENT, **(deployment or {})}
    unknown = set(d) - set(DEFAULT_DEPLOYMENT)
    if unknown:
        raise ValueError(f"unknown deployment settings {sorted(unknown)}; use expert_bytes, "
                         "link_gbps, base_ms")  # fmt: skip
    return d


def curves_tps(r: ModelResults, deployment: dict | None) -> dict[str, tuple[Any, Any, Any]]:
    """Per policy: budget (GiB) for every slot count 0 .. L*E, optimal and uniform tokens/s."""
    d = _settings(deployment)
    out = {}
    for pol in POLICY_ORDER:
        c = r.curves[pol]
        L, E, k = c.num_layers, c.num_experts, c.top_k
        plan = lk.plan_budget(c, L * E, shared=False)
        kw = dict(num_layers=L, top_k=k, expert_bytes=d["expert_bytes"],
                  link_gbps=d["link_gbps"], base_ms=d["base_ms"])  # fmt: skip
        slots = np.arange(L * E + 1)
        uni = np.concatenate([[0.0], np.asarray(c.rates).mean(0)])[np.minimum(slots // L, E)]
        out[pol] = (
            slots * d["expert_bytes"] / GIB,
            lk.predict_decode(plan.best_rates, **kw),
            lk.predict_decode(uni, **kw),
        )
    return out


def figure_deployment(models: Sequence[ModelResults], deployment: dict | None) -> Any:
    from ._figures import POLICY_STYLE, _grid, _new_figure, _panels

    rows, cols = _grid(len(models))
    fig = _new_figure(4.2 * cols, 3.2 * rows)
    for ax, r in zip(_panels(fig, rows, cols, len(models)), models, strict=True):
        for pol, (gib, opt, uni) in curves_tps(r, deployment).items():
            style = POLICY_STYLE.get(pol, {})
            ax.plot(gib, opt, label=_policy_name(pol, r.sch_m), **style)
            if pol == "lru":
                ax.plot(gib, uni, color=style.get("color"), ls=":", lw=1.2, label="lru, uniform")
        ax.set_title(r.name, fontsize=10)
        ax.set_xlabel("fast memory for experts (GiB)")
        ax.set_ylabel("predicted decode tokens/s")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    return fig


def deployment_rows(models: Sequence[ModelResults], deployment: dict | None) -> list[dict]:
    """Tidy rows of the table: model, policy, share of experts, GiB, hit rates, tokens/s."""
    d = _settings(deployment)
    out = []
    for r in models:
        for pol in POLICY_ORDER:
            c = r.curves[pol]
            L, E = c.num_layers, c.num_experts
            for share in SHARES:
                s = int(round(share * L * E))
                p = lk.plan_budget(c, s, shared=False)
                kw = dict(num_layers=L, top_k=c.top_k, expert_bytes=d["expert_bytes"],
                          link_gbps=d["link_gbps"], base_ms=d["base_ms"])  # fmt: skip
                out.append({
                    "model": r.name, "policy": pol, "label": _policy_name(pol, r.sch_m),
                    "share": share,
                    "slots": s, "budget_gib": s * d["expert_bytes"] / GIB,
                    "hit_rate_uniform": p.uniform_hit_rate, "hit_rate_optimal": p.hit_rate,
                    "tokens_per_s_uniform": lk.predict_decode(p.uniform_hit_rate, **kw),
                    "tokens_per_s_optimal": lk.predict_decode(p.hit_rate, **kw),
                })  # fmt: skip
    return out


def deployment_section(
    models: Sequence[ModelResults], deployment: dict | None, figure_html: str
) -> list[str]:
    """The section's HTML parts: heading, assumptions, figure, table."""
    from ._tables import _table

    d = _settings(deployment)
    rows = deployment_rows(models, deployment)
    body = [
        [r["model"], r["label"], f"{100 * r['share']:g} %", r["slots"],
         f"{r['budget_gib']:.3f}", r["hit_rate_uniform"], r["hit_rate_optimal"],
         f"{r['tokens_per_s_uniform']:.2f}", f"{r['tokens_per_s_optimal']:.2f}"]
        for r in rows
    ]  # fmt: skip
    head = ["model", "policy", "experts", "slots", "GiB", "hit (uniform)", "hit (optimal)",
            "tok/s (uniform)", "tok/s (optimal)"]  # fmt: skip
    return [
        "<h2>Deployment</h2>",
        "<p>Predicted decode tokens/s against the fast memory given to routed experts, for "
        "each policy with the optimal per-layer split of the budget (exact, "
        "<code>lk.plan_budget</code>) and, dotted, LRU with the same slots in every layer. "
        f"Assumed: experts of {d['expert_bytes']:,} bytes, a {d['link_gbps']:g} GB/s link, "
        f"{d['base_ms']:g} ms per token with every expert resident (<code>lk.predict_decode"
        "</code>; set them with <code>write_report(..., deployment=...)</code> or "
        "<code>lrc report --expert-bytes --link-gbps --base-ms</code>, and see "
        "<code>lrc plan</code> for calibration on a real runtime).</p>",
        figure_html,
        _table(head, body),
    ]
