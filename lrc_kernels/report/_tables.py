"""The report's HTML tables: the numbers behind every figure, and the trace metadata."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._spec import ALL_POLICIES
from ._compute import (
    POLICY_ORDER,
    RHO_MARK,
    RHO_TABLE,
    SIZE_POLICY_RHO,
    ModelResults,
    _policy_name,
)
from ._figures import _srp_values


def _cell(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, (float, np.floating)):
        return "–" if not math.isfinite(float(v)) else f"{float(v):.{digits}f}"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{int(v):,}"
    return html.escape(str(v))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _meta_table(models: Sequence[ModelResults]) -> str:
    keys = [
        ("path", "path"),
        ("num_experts", "experts E"),
        ("top_k", "top-k"),
        ("num_layers", "MoE layers L"),
        ("layer_ids", "layer ids"),
        ("sequences", "sequences"),
        ("tokens", "tokens"),
        ("activations", "activations"),
        ("domains", "domains"),
        ("file_bytes", "file bytes"),
        ("bytes_per_activation", "bytes / activation"),
        ("producer", "producer"),
        ("created", "created"),
    ]
    rows = [[label] + [r.info.get(k) for r in models] for k, label in keys]
    return _table(["", *[r.name for r in models]], rows, "meta")


def _srp_table(models: Sequence[ModelResults]) -> str:
    ms = sorted({m for r in models for m in r.ms})
    header = ["m"]
    boot = any(r.srp_model.ci is not None for r in models)
    for r in models:
        header += [f"{r.name} SRP", "p*", "preds/acts"] + (["CI"] if boot else [])
    rows = []
    for m in ms:
        row: list[Any] = [m]
        for r in models:
            if m not in r.ms:
                row += [None, None, None] + ([None] if boot else [])
                continue
            i = r.ms.index(m)
            v, w = _srp_values(r.srp_model)
            row += [
                float(v[i]),
                int(np.asarray(r.srp_model.threshold)[i]) if np.isfinite(v[i]) else None,
                float(np.asarray(r.srp_model.ratio)[i]),
            ]
            if boot:
                ci = r.srp_model.ci
                row.append(
                    None
                    if ci is None or not np.isfinite(v[i])
                    else f"[{float(ci[0][i]):.4f}, {float(ci[1][i]):.4f}]"
                )
        rows.append(row)
    return _table(header, rows)


def _summary_table(models: Sequence[ModelResults]) -> str:
    m = models[0].sch_m
    header = [
        "model", f"SRP (m={m})", f"SCH (ρ={RHO_MARK:g}, m={m})", f"Belady (ρ={RHO_MARK:g})",
        f"LRU (ρ={RHO_MARK:g})", f"LFU (ρ={RHO_MARK:g})", "load balance ×100",
        "domain specialisation",
    ]  # fmt: skip
    rows = []
    for r in models:
        v, _ = _srp_values(r.srp_model)
        srp = float(v[r.ms.index(r.sch_m)]) if r.sch_m in r.ms else None
        rows.append([
            r.name, srp, *[r.hit_at(p, RHO_MARK) for p in ("sch", "belady", "lru", "lfu")],
            100 * r.load_balance, r.domain_specialization,
        ])  # fmt: skip
    return _table(header, rows)


def _hit_table(models: Sequence[ModelResults]) -> str:
    header = ["model", "policy", *[f"ρ={r:g}" for r in RHO_TABLE]]
    rows = []
    for r in models:
        for pol in POLICY_ORDER:
            rows.append(
                [r.name, _policy_name(pol, r.sch_m), *[r.hit_at(pol, rho) for rho in RHO_TABLE]]
            )
    return _table(header, rows)


def _policy_table(models: Sequence[ModelResults]) -> str:
    """Every policy at rho = 2 per layer (layer mean), and on the shared cache where the
    report was made with ``all_policies``."""
    shared = [r for r in RHO_TABLE if any(r in _shared_rhos(m) for m in models)]
    header = ["model", "policy", f"per layer ρ={SIZE_POLICY_RHO:g}"]
    header += [f"shared ρ={r:g}" for r in shared]
    rows = []
    for r in models:
        for pol in ALL_POLICIES:
            row = [r.name, _policy_name(pol, r.sch_m), r.hit_at(pol, SIZE_POLICY_RHO)]
            rows.append(row + [r.hit_at(pol, rho, shared=True) for rho in shared])
    return _table(header, rows)


def _shared_rhos(r: ModelResults) -> list[float]:
    c = next(iter(r.shared.values()), None)
    return [] if c is None else [float(v) for v in c.rho]


def _layer_table(models: Sequence[ModelResults]) -> str:
    parts = []
    for r in models:
        v, _ = _srp_values(r.srp_layer)  # (M, L)
        header = ["layer", *[f"m={m}" for m in r.ms]]
        rows = [[li, *[float(v[j, li]) for j in range(len(r.ms))]] for li in range(v.shape[1])]
        parts.append(f"<h4>{html.escape(r.name)}</h4>" + _table(header, rows))
    return "".join(parts)


def _domain_table(models: Sequence[ModelResults]) -> str:
    rows = []
    for r in models:
        if r.srp_domain is None:
            continue
        vals = np.asarray(r.srp_domain.value, dtype=np.float64)
        win = np.asarray(r.srp_domain.windows)
        try:
            sch_at = np.asarray(r.sch_domain.at(RHO_MARK), dtype=np.float64).mean(axis=-1)
        except ValueError:
            sch_at = np.full(len(r.srp_domain.domains), np.nan)
        seqs = np.asarray(r.sch_domain.sequences)
        for j, d in enumerate(r.srp_domain.domains):
            rows.append(
                [r.name, d, int(seqs[j]), float(vals[j]) if win[j] else None, float(sch_at[j])]
            )
    if not rows:
        return "<p>No trace has domain labels.</p>"
    m = models[0].sch_m
    return _table(
        ["model", "domain", "sequences", f"SRP (m={m})", f"SCH (ρ={RHO_MARK:g}, m={m})"], rows
    )
