"""A study's outputs: Parquet tables and the HTML report (with the cross-model summary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._reduce import load_balance_of, specialization_of
from .._results import cache_size_for
from ._manifest import Manifest
from ._run import REPORT_POLICIES, study_ms

__all__ = ["write_tables", "report_models", "add_comparison", "RHO_SUMMARY"]

#: the cache ratio of the summary (the paper's recommended size)
RHO_SUMMARY = 2.0


def _table(blocks: list[dict[str, Any]]) -> Any:
    """One Arrow table from column blocks (columns missing from a block are null)."""
    import pyarrow as pa

    names: list[str] = []
    for b in blocks:
        names.extend(k for k in b if k not in names)
    cols: dict[str, list[Any]] = {k: [] for k in names}
    for b in blocks:
        n = len(next(iter(b.values())))
        for k in names:
            v = b.get(k)
            cols[k].extend(np.asarray(v).tolist() if v is not None else [None] * n)
    return pa.table(cols)


def _block(model: str, cols: dict[str, Any], **extra: Any) -> dict[str, Any]:
    n = len(next(iter(cols.values())))
    head = {"model": [model] * n, **{k: [v] * n for k, v in extra.items()}}
    return {**head, **cols}


def _rhos(curve: Any, wanted: list[float]) -> list[float]:
    ok = []
    for r in wanted:
        try:
            cache_size_for(r, curve.per_unit, curve.num_sizes)
        except ValueError:
            continue
        ok.append(r)
    return ok


def _layer_mean_at(curve: Any, rho: float) -> Any:
    try:
        v = np.asarray(curve.at(rho), dtype=np.float64)
    except ValueError:
        return None
    return v.mean(axis=-1)  # over layers (a domain axis stays)


def write_tables(man: Manifest, results: dict[str, Any], out: Path) -> list[str]:
    """``srp.parquet``, ``curves.parquet``, ``summary.parquet``, ``domains.parquet``."""
    import pyarrow.parquet as pq

    srp, curves, summary, domains = [], [], [], []
    for model, res in results.items():
        lay, lay_dom = res["srp_layer"]
        srp.append(_block(model, lay._columns()))
        srp.append(_block(model, lay_dom._columns()))
        if "srp_boot" in res:
            srp.append(_block(model, res["srp_boot"][0]._columns()))
        else:  # model level = the layer histograms pooled (bit-identical to level="model")
            from ..report._compute import _pool_layers

            srp.append(_block(model, _pool_layers(lay)._columns()))
        srp.append(_block(model, res["srp_model"][1]._columns()))
        for pol in REPORT_POLICIES:
            c, c_dom = res[f"curve_{pol}"]
            for cc in (c, c_dom):
                rh = _rhos(cc, man.rho)
                if rh:
                    curves.append(_block(model, cc._columns(rh), policy=pol))
        summary.append(_summary_row(man, model, res))
        domains.extend(_domain_rows(man, model, res))
    written = []
    for name, blocks in (("srp", srp), ("curves", curves)):
        pq.write_table(_table(blocks), out / f"{name}.parquet")
        written.append(f"{name}.parquet")
    for name, rows in (("summary", summary), ("domains", domains)):
        pq.write_table(
            _table([{k: [r[k] for r in rows] for k in rows[0]}]), out / f"{name}.parquet"
        )
        written.append(f"{name}.parquet")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return written


def _srp_at(res: Any, m: int) -> float:
    ms = res.m if isinstance(res.m, list) else [res.m]
    v = np.asarray(res.value, dtype=np.float64)
    return float(v[ms.index(m)] if isinstance(res.m, list) else v)


def _summary_row(man: Manifest, model: str, res: dict[str, Any]) -> dict[str, Any]:
    sch, _ = res["curve_sch"]
    row: dict[str, Any] = {
        "model": model,
        "sequences": int(np.asarray(sch.sequences)),
        "m": man.sch_m,
        "srp": _srp_at(res["srp_model"][0], man.sch_m),
    }
    for pol in REPORT_POLICIES:
        v = _layer_mean_at(res[f"curve_{pol}"][0], RHO_SUMMARY)
        row[f"{pol}_rho{RHO_SUMMARY:g}"] = None if v is None else float(v)
    exp, exp_dom = res["srp_expert"]
    row["load_balance"] = load_balance_of(exp.activation_ratio)
    ds = specialization_of(exp_dom.activation_ratio, 1e-5)[0]
    row["domain_specialization"] = ds if len(exp_dom.domains) > 1 else None
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def _domain_rows(man: Manifest, model: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    _, srp_dom = res["srp_model"]
    _, sch_dom = res["curve_sch"]
    sch_v = _layer_mean_at(sch_dom, RHO_SUMMARY)
    vals = np.asarray(srp_dom.value, dtype=np.float64)
    rows = []
    for i, dom in enumerate(srp_dom.domains):
        rows.append(
            {
                "model": model,
                "domain": dom,
                "sequences": int(np.asarray(sch_dom.sequences)[i]),
                "m": man.sch_m,
                "srp": float(vals[i]),
                f"sch_rho{RHO_SUMMARY:g}": None if sch_v is None else float(sch_v[i]),
            }
        )
    return rows


def report_models(man: Manifest, results: dict[str, Any]) -> list[Any]:
    """One :class:`lrc_kernels.report.ModelResults` per model, from the finished results."""
    from .. import io as trace_io
    from ..report import ModelResults
    from ..report._compute import _notes, _pool_layers

    models = []
    for model, res in results.items():
        files = [f for fs in man.models[model].values() for f in fs]
        with trace_io.TraceReader(files) as reader:
            src = trace_io.TraceSource(f"{len(files)} files", model, reader)
            info = src.info()
            meta = reader.meta
            max_len = int(reader.lengths().max()) if reader.num_sequences else 0
        lay = res["srp_layer"][0]
        sch_dom = res["curve_sch"][1]
        info["domains"] = ", ".join(
            f"{d} ({int(n)})" for d, n in zip(sch_dom.domains, sch_dom.sequences, strict=True)
        )
        info["num_domains"] = len(sch_dom.domains)
        ds = specialization_of(res["srp_expert"][1].activation_ratio, 1e-5)[0]
        r = ModelResults(
            name=model,
            info=info,
            ms=study_ms(man),
            srp_model=res["srp_boot"][0] if "srp_boot" in res else _pool_layers(lay),
            srp_layer=lay,
            curves={p: res[f"curve_{p}"][0] for p in REPORT_POLICIES},
            sch_m=man.sch_m,
            srp_domain=res["srp_model"][1],
            sch_domain=sch_dom,
            load_balance=load_balance_of(res["srp_expert"][0].activation_ratio),
            domain_specialization=ds if len(sch_dom.domains) > 1 else None,
            synthetic=meta.get("generator") == "lrc_kernels.synthetic_trace",
        )
        r.notes.extend(_notes(r, study_ms(man), max_len))
        models.append(r)
    return models


def add_comparison(models: list[Any], out: Path) -> None:
    """``models.png`` (SRP at sch_m against SCH at rho = 2, one point per model) written and
    embedded in the report's "At a glance" section."""
    from ..report._figures import figure_models
    from ..report._render import _figure_html, _png_bytes

    fig = figure_models(models)
    if fig is None:
        return
    png = _png_bytes(fig)
    (out / "models.png").write_bytes(png)
    m = models[0].sch_m
    html = _figure_html(
        png,
        "models.png",
        "models compared: SRP against SCH",
        f"The study's models compared: SRP at m = {m} (model level) against the SCH hit rate "
        f"at ρ = {RHO_SUMMARY:g} (mean over layers). Up and to the right: routing that suits "
        "expert offloading.",
    )
    index = out / "index.html"
    page = index.read_text(encoding="utf-8")
    mark = "<h2>Traces</h2>"
    if mark in page:
        index.write_text(page.replace(mark, html + "\n" + mark, 1), encoding="utf-8")
